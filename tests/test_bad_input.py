"""Bad input: one clear message naming the file or value and the fix, exit status 2, no
traceback, and nothing half-written."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli_cases import fails, folder_dataset, run_args


def _no_results(tmp_path: Path) -> None:
    assert not list((tmp_path / "runs").rglob("results.json"))


@pytest.mark.parametrize(
    "content, fragment",
    [(b"", "is empty (0 bytes); re-copy it or remove it"), (b"this is not an image", "cannot be read as an image (")],
    ids=["zero-byte", "not-an-image"],
)
def test_unreadable_image_files(tmp_path, capsys, content, fragment):
    root = folder_dataset(tmp_path / "data")
    path = root / "images" / "im1.png"
    path.write_bytes(content)
    fails(capsys, run_args(tmp_path, root), f"image {path} {fragment}")
    _no_results(tmp_path)


def test_mask_of_another_size(tmp_path, capsys):
    root = folder_dataset(tmp_path / "data")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(root / "masks" / "im0.png")
    fails(capsys, run_args(tmp_path, root),
          f"mask {root / 'masks' / 'im0.png'} is 10x10 (WxH) but its image {root / 'images' / 'im0.png'} is 40x30")
    _no_results(tmp_path)


def test_mask_with_several_channels(tmp_path, capsys):
    root = folder_dataset(tmp_path / "data")
    rgb = np.zeros((30, 40, 3), np.uint8)
    rgb[..., 0] = 255
    Image.fromarray(rgb).save(root / "masks" / "im1.png")
    fails(capsys, run_args(tmp_path, root), "im1.png", "RGB image with 1 colour ", "grayscale")


def test_image_without_a_mask(tmp_path, capsys):
    root = folder_dataset(tmp_path / "data")
    (root / "masks" / "im2.png").unlink()
    fails(capsys, run_args(tmp_path, root), f"1 of 3 images have no mask in {root / 'masks'} ", "): im2.png ")
    _no_results(tmp_path)


def test_empty_dataset_folder(tmp_path, capsys):
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    fails(capsys, run_args(tmp_path, root), f"no .jpg/.jpeg/.png/.bmp images in {root / 'images'} ")


@pytest.mark.parametrize("limit", ["0", "-3"])
def test_non_positive_limit(tmp_path, capsys, limit):
    fails(capsys, ["run", "--method", "center-prior", "--dataset", "synthetic", "--limit", limit,
                    "--out", str(tmp_path / "runs")], f"--limit {limit}: give a positive number of images")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "args, fragment",
    [(["--method", "center-prio", "--dataset", "synthetic"], "unknown method 'center-prio'. Did you mean 'center-prior'?"),
     (["--method", "center-prior", "--post", "gff", "--dataset", "synthetic"], "'gff'. Did you mean 'gf'?"),
     (["--method", "center-prior", "--dataset", "ecsd"], "unknown dataset 'ecsd'. Did you mean 'ecssd'?"),
     (["--method", "center-prior", "--dataset", "synthetic", "--eval", "salency"], "'salency'. Did you mean 'saliency'?"),
     (["--method", "tokencut", "--backbone", "dino-vits15", "--dataset", "synthetic"],
      "unknown backbone 'dino-vits15'. Did you mean 'dino-vits16' or ")],
    ids=["method", "post", "dataset", "evaluator", "backbone"],
)
def test_unknown_names_get_suggestions(tmp_path, capsys, args, fragment):
    fails(capsys, ["run", *args, "--out", str(tmp_path / "runs")], fragment)
    assert not (tmp_path / "runs").exists()


def test_malformed_method_args(tmp_path, capsys):
    fails(capsys, ["run", "--method", "center-prior", "--dataset", "synthetic", "--method-args", "sigma:0.3"],
           "--method-args 'sigma:0.3': 'sigma:0.3' is not of the form key=value")


def test_checkpoint_that_is_not_a_checkpoint(tmp_path, capsys):
    junk = tmp_path / "model.pt"
    junk.write_bytes(b"\x00" * 64)
    fails(capsys, ["run", "--method", "sempart", "--method-args", f"checkpoint={junk}", "--dataset", "synthetic",
                    "--out", str(tmp_path / "runs")], "is not a harness checkpoint")


def test_output_directory_that_cannot_be_written(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    fails(capsys, ["run", "--method", "center-prior", "--dataset", "synthetic", "--out", str(blocker / "runs")],
           f"cannot write to {blocker / 'runs'}/", f"{blocker} is a file, not a folder; choose another folder with --out")
    assert blocker.read_text() == "" and sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]
