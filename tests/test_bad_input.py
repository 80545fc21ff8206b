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
    [(b"", "is empty (0 bytes)"), (b"this is not an image", "cannot be read as an image")],
    ids=["zero-byte", "not-an-image"],
)
def test_unreadable_image_files(tmp_path, capsys, content, fragment):
    root = folder_dataset(tmp_path / "data")
    (root / "images" / "im1.png").write_bytes(content)
    fails(capsys, run_args(tmp_path, root), "im1.png", fragment)
    _no_results(tmp_path)


def test_truncated_image(tmp_path, capsys):
    root = folder_dataset(tmp_path / "data", size=(200, 150))
    path = root / "images" / "im2.png"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    fails(capsys, run_args(tmp_path, root), "im2.png")
    _no_results(tmp_path)


def test_mask_of_another_size(tmp_path, capsys):
    root = folder_dataset(tmp_path / "data")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(root / "masks" / "im0.png")
    fails(capsys, run_args(tmp_path, root), "im0.png", "10x10", "40x30")


def test_mask_with_several_channels(tmp_path, capsys):
    root = folder_dataset(tmp_path / "data")
    rgb = np.zeros((30, 40, 3), np.uint8)
    rgb[..., 0] = 255
    Image.fromarray(rgb).save(root / "masks" / "im1.png")
    fails(capsys, run_args(tmp_path, root), "im1.png", "RGB image with 1 colour ", "grayscale")


def test_image_without_a_mask(tmp_path, capsys):
    root = folder_dataset(tmp_path / "data")
    (root / "masks" / "im2.png").unlink()
    fails(capsys, run_args(tmp_path, root), "im2")


def test_empty_dataset_folder(tmp_path, capsys):
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    fails(capsys, run_args(tmp_path, root), str(root / "images"))


@pytest.mark.parametrize("limit", ["0", "-3"])
def test_non_positive_limit(tmp_path, capsys, limit):
    fails(capsys, ["run", "--method", "center-prior", "--dataset", "synthetic", "--limit", limit,
                    "--out", str(tmp_path / "runs")], f"--limit {limit}", "positive")


@pytest.mark.parametrize(
    "args, fragment",
    [(["--method", "center-prio", "--dataset", "synthetic"], "Did you mean 'center-prior'"),
     (["--method", "center-prior", "--post", "gff", "--dataset", "synthetic"], "Did you mean 'gf'"),
     (["--method", "center-prior", "--dataset", "ecsd"], "Did you mean 'ecssd'"),
     (["--method", "center-prior", "--dataset", "synthetic", "--eval", "salency"], "Did you mean 'saliency'"),
     (["--method", "tokencut", "--backbone", "dino-vits15", "--dataset", "synthetic"], "Did you mean 'dino-vits16'")],
    ids=["method", "post", "dataset", "evaluator", "backbone"],
)
def test_unknown_names_get_suggestions(tmp_path, capsys, args, fragment):
    fails(capsys, ["run", *args, "--out", str(tmp_path / "runs")], fragment)


def test_malformed_method_args(tmp_path, capsys):
    fails(capsys, ["run", "--method", "center-prior", "--dataset", "synthetic", "--method-args", "sigma:0.3"],
           "--method-args", "key=value")


def test_option_the_plugin_does_not_have(tmp_path, capsys):
    fails(capsys, ["run", "--method", "center-prior", "--dataset", "synthetic", "--method-args", "sigmaa=0.3"],
           "has no option 'sigmaa'", "Did you mean sigma")


def test_option_of_the_wrong_type(tmp_path, capsys):
    fails(capsys, ["run", "--method", "center-prior", "--dataset", "synthetic", "--method-args", "sigma=wide"],
           "sigma='wide' is not a valid float")


def test_checkpoint_that_is_not_a_checkpoint(tmp_path, capsys):
    junk = tmp_path / "model.pt"
    junk.write_bytes(b"\x00" * 64)
    fails(capsys, ["run", "--method", "sempart", "--method-args", f"checkpoint={junk}", "--dataset", "synthetic",
                    "--out", str(tmp_path / "runs")], "is not a harness checkpoint")


def test_predictions_with_nan_or_inf(tmp_path, capsys):
    preds = tmp_path / "preds"
    preds.mkdir()
    from harness.datasets.synthetic import SyntheticDataset

    for k, sample in enumerate(SyntheticDataset(count=3)):
        mask = np.full(sample.image.shape[:2], 0.5, np.float32)
        if k == 1:
            mask[3, 3] = np.nan
        if k == 2:
            mask[0, 0] = np.inf
        np.save(preds / f"{sample.id}.npy", mask)
    fails(capsys, ["run", "--method", "masks", "--method-args", f"dir={preds}", "--dataset", "synthetic",
                    "--dataset-args", "count=3", "--out", str(tmp_path / "runs"), "--no-progress"],
           "NaN or infinite", "synthetic_0001")
    _no_results(tmp_path)


def test_output_directory_that_cannot_be_written(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    fails(capsys, ["run", "--method", "center-prior", "--dataset", "synthetic", "--out", str(blocker / "runs")],
           "cannot write to", "--out")
