"""Hostile input: files that decode to something else, cache entries that are not what their
key promises, run directories that could mix two runs, and errors that must be one sentence.

Every case runs through the CLI where the promise is about the command: exit status 2, one
line naming the file or value, and nothing written where the README says so.
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.cli import main
from cli_cases import fails, folder_dataset, run_args
from harness.errors import DataError, HarnessError
from harness.imageio import read_mask, read_soft_mask


def _nothing_written(tmp_path: Path) -> None:
    """No run folder (not even an empty or hidden one) and no cache entry."""
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    cache = Path(os.environ["HARNESS_CACHE"])
    assert not cache.exists() or not [p for p in cache.rglob("*") if p.is_file()]


def _flip_in_idat(data: bytes) -> bytes:
    """A PNG with one bit flipped inside its first IDAT chunk's data."""
    start = data.index(b"IDAT") + 4
    out = bytearray(data)
    out[start + 5] ^= 0x10
    return bytes(out)


# ---- files that decode to something else ---------------------------------------------------
def test_palette_ground_truth_is_read_by_colour_not_luminance(tmp_path):
    """VOC style: index 1 drawn as (128, 0, 0). Luminance gives 38 (under the 128 threshold)."""
    index = np.zeros((30, 40), np.uint8)
    index[5:20, 10:30] = 1
    img = Image.fromarray(index, mode="P")
    img.putpalette([0, 0, 0, 128, 0, 0] + [0, 0, 0] * 254)
    img.save(tmp_path / "voc.png")
    mask = read_mask(tmp_path / "voc.png")
    np.testing.assert_array_equal(mask, index * np.uint8(255))


def test_palette_mask_with_several_classes_is_refused(tmp_path):
    index = np.zeros((30, 40), np.uint8)
    index[5:20, 10:20], index[5:20, 20:30], index[0, :] = 1, 2, 255  # two classes and VOC's void border
    img = Image.fromarray(index, mode="P")
    img.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0, 0, 0] * 252 + [224, 224, 192])
    img.save(tmp_path / "classes.png")
    with pytest.raises(DataError, match=r"classes.png is a P image with 4 colours .*grayscale"):
        read_mask(tmp_path / "classes.png")


def test_palette_ground_truth_scores_as_its_foreground(tmp_path, capsys):
    """The palette masks' own foreground, given as predictions, scores IoU 1 (luminance: 0)."""
    root = folder_dataset(tmp_path / "data")
    preds = tmp_path / "preds"
    preds.mkdir()
    for path in (root / "masks").iterdir():
        Image.open(path).save(preds / path.name)
        img = Image.fromarray((np.asarray(Image.open(path)) > 0).astype(np.uint8), mode="P")
        img.putpalette([0, 0, 0, 128, 0, 0] + [0, 0, 0] * 254)
        img.save(path)
    assert main(run_args(tmp_path, root, "--method-args", f"dir={preds}", method="masks")) == 0
    run_dir = next((tmp_path / "runs").iterdir())
    assert json.loads((run_dir / "results.json").read_text())["metrics"]["iou"] == 1.0


def test_png_with_a_flipped_byte_is_refused_not_scored(tmp_path, capsys):
    """A compressible mask whose pixel data has one bit flipped: Pillow alone decodes it to other
    pixels; the harness checks the chunk's CRC and refuses it before writing anything."""
    root = folder_dataset(tmp_path / "data")
    path = root / "masks" / "im1.png"
    original = np.asarray(Image.open(path))
    corrupted = _flip_in_idat(path.read_bytes())
    path.write_bytes(corrupted)
    with Image.open(io.BytesIO(corrupted)) as img:  # the premise: Pillow alone decodes other pixels
        img.load()
        assert np.count_nonzero(np.asarray(img) != original) > 100
    fails(capsys, run_args(tmp_path, root), "im1.png", "corrupted PNG", "checksum")
    _nothing_written(tmp_path)


def test_sixteen_bit_files_follow_one_range_rule_as_truth_and_as_prediction(tmp_path):
    values = np.zeros((6, 8), np.uint16)
    values[2:5, 3:7] = 255
    Image.fromarray(values).save(tmp_path / "low16.png")  # 16-bit file holding 0..255
    Image.fromarray(values.astype(np.uint8)).save(tmp_path / "eight.png")
    Image.fromarray(values.astype(np.uint16) * 257).save(tmp_path / "full16.png")  # 0/65535
    for name in ("low16.png", "eight.png", "full16.png"):
        np.testing.assert_array_equal(read_mask(tmp_path / name), values.astype(np.uint8))
        np.testing.assert_array_equal(read_soft_mask(tmp_path / name), values.astype(np.float32) / 255)


def test_run_directory_is_replaced_whole_never_mixed(tmp_path, capsys, monkeypatch):
    """A second run killed after writing per_image.csv, in the folder of an older finished run,
    leaves the older run whole; a second run that finishes replaces it whole."""
    import harness.run_files as results_module

    args = ["run", "--method", "center-prior", "--dataset", "synthetic", "--dataset-args", "count=4",
            "--out", str(tmp_path / "runs"), "--name", "fixed", "--no-progress"]
    assert main(args) == 0
    run_dir = tmp_path / "runs" / "fixed"
    old = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    real_write = results_module.atomic_write_json

    def killed_before_results(path, obj):
        raise KeyboardInterrupt

    monkeypatch.setattr(results_module, "atomic_write_json", killed_before_results)
    assert main([*args[:6], "count=6", *args[7:]]) == 130
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == old
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["fixed"]  # no staging folder left
    monkeypatch.setattr(results_module, "atomic_write_json", real_write)
    assert main([*args[:6], "count=6", *args[7:]]) == 0
    results = json.loads((run_dir / "results.json").read_text())
    assert results["counts"]["images"] == 6 and len((run_dir / "per_image.csv").read_text().splitlines()) == 7
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["fixed"]


def test_data_digest_separates_runs_on_different_bytes(tmp_path, capsys):
    """Same dataset name and path, one mask changed: another data digest, another run folder."""
    root = folder_dataset(tmp_path / "data")
    assert main(run_args(tmp_path, root)) == 0
    mask = np.zeros((30, 40), np.uint8)
    mask[0:10, 0:10] = 255
    Image.fromarray(mask).save(root / "masks" / "im2.png")
    assert main(run_args(tmp_path, root)) == 0
    runs = sorted((tmp_path / "runs").iterdir())
    digests = {json.loads((r / "results.json").read_text())["config"]["dataset"]["data_digest"] for r in runs}
    assert len(runs) == 2 and len(digests) == 2


def test_relative_data_root_is_recorded_absolute(tmp_path, capsys, monkeypatch):
    root = folder_dataset(tmp_path / "data")
    assert main(run_args(tmp_path, root)) == 0
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--method", "center-prior", "--dataset", "folder", "--data-root", "data",
                 "--out", str(tmp_path / "runs"), "--no-progress"]) == 0
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1  # the same run: the same name whatever the directory it was typed in
    results = json.loads((runs[0] / "results.json").read_text())
    assert results["spec"]["data_root"] == str(root) and results["config"]["dataset"]["root"] == str(root)


def test_results_json_is_strict_json(tmp_path):
    from harness.storage import atomic_write_json

    atomic_write_json(tmp_path / "r.json", {"metrics": {"iou": float("nan"), "acc": float("inf"), "n": 1.5}})

    def refuse(token):
        raise ValueError(f"non-JSON constant {token}")

    assert json.loads((tmp_path / "r.json").read_text(), parse_constant=refuse) == {
        "metrics": {"iou": None, "acc": None, "n": 1.5}}


# ---- cache entries must be exactly what their key promises -------------------------------
def _cached_run(tmp_path, capsys) -> tuple[list[str], dict]:
    args = ["run", "--method", "center-prior", "--dataset", "synthetic", "--dataset-args", "count=4",
            "--out", str(tmp_path / "runs"), "--name", "r", "--no-progress"]
    assert main(args) == 0
    capsys.readouterr()
    return args, json.loads((tmp_path / "runs" / "r" / "results.json").read_text())["metrics"]


def _entries(kind: str) -> list[Path]:
    return sorted((Path(os.environ["HARNESS_CACHE"]) / kind).rglob("*.entry"))


@pytest.mark.parametrize("tamper", ["flip", "truncate", "other-key", "other-size", "not-an-entry"])
def test_mask_cache_entry_that_is_not_what_its_key_promises_is_recomputed(tmp_path, capsys, tamper):
    from harness.cache import MaskCache

    args, metrics = _cached_run(tmp_path, capsys)
    first, second = _entries("masks")[:2]
    data = first.read_bytes()
    if tamper == "flip":
        body = bytearray(data)
        body[-30] ^= 0x01
        first.write_bytes(bytes(body))
    elif tamper == "truncate":
        first.write_bytes(data[: len(data) // 2])
    elif tamper == "other-key":
        first.write_bytes(second.read_bytes())
    elif tamper == "other-size":  # a valid entry under the right key, but of another size
        MaskCache(os.environ["HARNESS_CACHE"], "masks").put(first.stem, np.full((7, 9), 255, np.uint8))
    else:
        first.write_bytes(b"\x89PNG\r\n\x1a\n" + data[:40])
    assert main(args) == 0
    assert "(3 masks from the cache)" in capsys.readouterr().out  # the tampered entry was recomputed
    assert json.loads((tmp_path / "runs" / "r" / "results.json").read_text())["metrics"] == metrics


def test_feature_cache_refuses_nan_wrong_type_wrong_channels_and_other_keys(tmp_path):
    from harness.cache import FeatureCache

    cache = FeatureCache(tmp_path)
    grid = np.linspace(0, 1, 2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    cache.put("aa" * 20, grid)
    np.testing.assert_array_equal(cache.get("aa" * 20, channels=2), grid)
    assert cache.get("aa" * 20, channels=5) is None  # another backbone's width
    cache.put("bb" * 20, np.full((2, 3, 4), np.nan, np.float32))
    assert cache.get("bb" * 20) is None
    cache.write("cc" * 20, np.zeros(24, np.float64).tobytes()[:96], {"dtype": "<f8", "shape": [2, 3, 4]})
    assert cache.get("cc" * 20) is None
    cache.put("dd" * 20, grid)
    cache.path("ee" * 20).parent.mkdir(parents=True, exist_ok=True)
    cache.path("ee" * 20).write_bytes(cache.path("dd" * 20).read_bytes())  # copied under another key
    assert cache.get("ee" * 20) is None and not cache.path("ee" * 20).exists()


def test_backbone_nan_features_are_an_error_and_not_cached(tmp_path):
    from harness.api import Backbone
    from harness.backbones.features import FeatureExtractor, FeatureRequest

    class NaNBackbone(Backbone):
        name = "nan-backbone"
        stride = 4
        feature_dim = 2

        def load(self, device="cpu"):
            pass

        @property
        def weights_digest(self):
            return "x"

        def features(self, images):
            import torch

            return torch.full((images.shape[0], 2, images.shape[2] // 4, images.shape[3] // 4), float("nan"))

    request = FeatureRequest("img", "d", "pad:8x8", lambda: np.zeros((8, 8, 3), np.float32))
    with pytest.raises(HarnessError, match=r"backbone 'nan-backbone' produced NaN .* image 'img'"):
        FeatureExtractor(NaNBackbone(), "cpu", tmp_path).grids([request])
    assert not list(tmp_path.rglob("*.entry"))


@pytest.mark.parametrize("workers", ["0", "2"])
def test_cache_made_read_only_half_way_is_one_error_and_no_run(tmp_path, capsys, monkeypatch, workers):
    import harness.cache as cache_module

    real, calls = cache_module.atomic_write_bytes, tmp_path / "writes"  # a file: the workers share it

    def read_only_after_two(path, data):
        with open(calls, "a") as log:
            log.write(f"{path}\n")
        if len(calls.read_text().splitlines()) > 2:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, data)

    monkeypatch.setattr(cache_module, "atomic_write_bytes", read_only_after_two)
    fails(capsys, ["run", "--method", "center-prior", "--dataset", "synthetic", "--dataset-args", "count=4",
                   "--out", str(tmp_path / "runs"), "--no-progress", "--workers", workers],
          "cannot write cache entry", "--cache-dir")
    assert not (tmp_path / "runs").exists()


# ---- errors that must be one sentence, before anything is written -------------------------
@pytest.mark.parametrize("name", ["../x", "/abs/run", ".", "..", "a/b", ".hidden", "x" * 300])
def test_name_must_be_one_folder_inside_out(tmp_path, capsys, name):
    fails(capsys, ["run", "--method", "center-prior", "--dataset", "synthetic", "--out", str(tmp_path / "runs"),
                    "--name", name, "--no-progress"], "--name")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "x").exists()


def test_truncated_image_found_up_front_leaves_nothing(tmp_path, capsys):
    root = folder_dataset(tmp_path / "data", n=4, size=(200, 150))
    path = root / "images" / "im3.png"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    fails(capsys, run_args(tmp_path, root), "im3.png")
    _nothing_written(tmp_path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_prediction_file_leaves_no_run_folder(tmp_path, capsys, bad):
    preds = tmp_path / "preds"
    root = folder_dataset(tmp_path / "data", n=3)
    preds.mkdir()
    for i in range(3):
        np.save(preds / f"im{i}.npy", np.full((30, 40), 0.5, np.float32))
    broken = np.full((30, 40), 0.5, np.float32)
    broken[3, 3] = bad  # one pixel is enough
    np.save(preds / "im2.npy", broken)
    fails(capsys, run_args(tmp_path, root, "--method-args", f"dir={preds}", "--post", "gf", method="masks"),
           f"{preds / 'im2.npy'}", "NaN or infinite")
    _nothing_written(tmp_path)  # read up front: not even the post cache of im0 and im1


def test_plugin_that_raises_is_named_with_the_image(tmp_path, capsys):
    from harness import Method, hookimpl
    from harness.registry import Registry
    import harness.registry as registry_module
    import types

    class Crashing(Method):
        name = "crashing"
        description = "raises on the second image"

        def predict(self, sample):
            if sample.id.endswith("1"):
                raise ZeroDivisionError("division by zero")
            return np.zeros(sample.image.shape[:2], np.float32)

    module = types.ModuleType("crashing_plugin")
    module.harness_methods = hookimpl(lambda: [Crashing])
    registry_module._REGISTRY = Registry(autoload=False, extra=[(module, "crashing-dist 0.1")])
    fails(capsys, ["run", "--method", "crashing", "--dataset", "synthetic", "--dataset-args", "count=3",
                    "--out", str(tmp_path / "runs"), "--no-progress"],
           "method 'crashing' failed on image 'synthetic_0001'", "ZeroDivisionError")
    assert not (tmp_path / "runs").exists()


def test_decompression_bomb_is_refused_naming_the_image(tmp_path, capsys):
    root = folder_dataset(tmp_path / "data", n=2)
    Image.new("1", (10000, 9000)).save(root / "images" / "im1.png")  # 90 Mpx, a few kB on disk
    Image.new("L", (10000, 9000)).save(root / "masks" / "im1.png")
    fails(capsys, run_args(tmp_path, root), "im1.png", "90000000 pixels", "downscale")
    _nothing_written(tmp_path)


def test_patch_graph_too_large_or_too_small_is_refused_up_front(tmp_path, capsys, monkeypatch):
    from harness.methods.tokencut import TokenCut

    class Stride16:
        stride = 16

    with pytest.raises(HarnessError, match=r"image 'big' is 8000x8000 pixels: 250000 patches .* GiB, above the limit"):
        TokenCut().check_image_sizes({"small": (480, 640), "big": (8000, 8000)}, Stride16())
    root = folder_dataset(tmp_path / "data", n=2, size=(64, 48))
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(root / "images" / "im1.png")
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(root / "masks" / "im1.png")
    fails(capsys, run_args(tmp_path, root, "--backbone", "effnet-lite0", method="tokencut"),
           "image 'im1' is 1x1 pixels", "too few")
    _nothing_written(tmp_path)
    monkeypatch.setenv("HARNESS_MAX_GRAPH_GIB", "0.000001")
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(root / "images" / "im1.png")
    Image.fromarray(np.zeros((48, 64), np.uint8)).save(root / "masks" / "im1.png")
    fails(capsys, run_args(tmp_path, root, "--backbone", "effnet-lite0", method="tokencut"),
           "image 'im0'", "HARNESS_MAX_GRAPH_GIB")


def test_empty_npy_prediction_is_one_sentence(tmp_path, capsys):
    root = folder_dataset(tmp_path / "data", n=2)
    preds = tmp_path / "preds"
    preds.mkdir()
    np.save(preds / "im0.npy", np.full((30, 40), 0.5, np.float32))
    np.save(preds / "im1.npy", np.zeros((0, 0), np.float32))
    fails(capsys, run_args(tmp_path, root, "--method-args", f"dir={preds}", method="masks"), "im1.npy", "non-empty")
    (preds / "im1.npy").write_bytes(b"")
    fails(capsys, run_args(tmp_path, root, "--method-args", f"dir={preds}", method="masks"), "im1.npy", "empty")
    _nothing_written(tmp_path)


def test_unreadable_folder_is_one_sentence(tmp_path, capsys, monkeypatch):
    root = folder_dataset(tmp_path / "data")
    real = Path.iterdir

    def denied(self):
        if self.name == "masks":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "iterdir", denied)
    fails(capsys, run_args(tmp_path, root), str(root / "masks"), "cannot be listed", "Permission denied")


def test_seed_beyond_64_bits_is_refused_by_the_api(tmp_path):
    from harness.runner import RunSpec, run

    with pytest.raises(HarnessError, match=r"--seed .*2\*\*63"):
        run(RunSpec(method="center-prior", dataset="synthetic", seed=2**70, out=tmp_path / "runs"))


def test_transposed_mask_size_mentions_exif_orientation(tmp_path, capsys):
    root = folder_dataset(tmp_path / "data")
    Image.fromarray(np.zeros((40, 30), np.uint8)).save(root / "masks" / "im0.png")
    fails(capsys, run_args(tmp_path, root), "im0.png", "30x40", "EXIF orientation")


def test_report_ignores_staging_folders_and_refuses_a_mixed_run_without_reading_tables(tmp_path, capsys):
    """A staging folder left by a killed run is not a run; a per_image.csv of another run is
    refused even when no table or interval would read it."""
    import shutil

    args = ["run", "--method", "center-prior", "--dataset", "synthetic", "--dataset-args", "count=4",
            "--out", str(tmp_path / "runs"), "--name", "a", "--no-progress"]
    assert main(args) == 0
    assert main([*args[:6], "count=5", *args[7:10], "b", "--no-progress"]) == 0
    shutil.copytree(tmp_path / "runs" / "b", tmp_path / "runs" / ".a.partial-xyz")
    from harness.report import find_runs

    assert sorted(run.path.name for run in find_runs([tmp_path / "runs"])) == ["a", "b"]
    capsys.readouterr()
    assert main(["report", str(tmp_path / "runs"), "--no-intervals", "--no-figures"]) == 0
    assert "partial" not in capsys.readouterr().out
    shutil.copy(tmp_path / "runs" / "b" / "per_image.csv", tmp_path / "runs" / "a" / "per_image.csv")
    fails(capsys, ["report", str(tmp_path / "runs"), "--no-intervals", "--no-figures"],
           "per_image.csv does not belong to", "mixes two runs")


def test_bad_ground_truth_found_before_any_cache_entry(tmp_path, capsys):
    """A mask that only decoding can refuse (a palette of several classes) stops the run before
    the first image is predicted: no cache entry for the images before it."""
    root = folder_dataset(tmp_path / "data", n=4)
    index = np.zeros((30, 40), np.uint8)
    index[5:20, 10:20], index[5:20, 20:30] = 1, 2
    img = Image.fromarray(index, mode="P")
    img.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0, 0, 0] * 253)
    img.save(root / "masks" / "im3.png")
    fails(capsys, run_args(tmp_path, root), "im3.png", "3 colours")
    _nothing_written(tmp_path)
