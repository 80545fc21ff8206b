"""The runner: run directory, cache re-use, resume after an interruption, clear errors."""
from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pytest

from harness import Method, Option, PostProcessor, hookimpl
from harness.cli import main
from harness.errors import HarnessError
from harness.registry import Registry
from harness.runner import RunSpec, run


class CountingMethod(Method):
    """Centre prior that counts its predictions and can be told to die after k images."""

    name = "counting"
    description = "test method"
    options = (Option("sigma", 0.3, "width"),)
    calls = 0
    fail_after: int | None = None  # not an option: does not change the masks

    def predict(self, sample):
        if CountingMethod.fail_after is not None and CountingMethod.calls >= CountingMethod.fail_after:
            raise KeyboardInterrupt  # what Ctrl-C midway looks like
        CountingMethod.calls += 1
        from harness.methods.center_prior import center_prior

        h, w = sample.image.shape[:2]
        return center_prior(h, w, self.config["sigma"])


class Squash(PostProcessor):
    name = "squash"
    description = "test post-processor: mask ** 2"

    def __call__(self, image, mask):
        return mask**2


class NaNMethod(Method):
    name = "nan"
    description = "returns NaN"

    def predict(self, sample):
        return np.full(sample.image.shape[:2], np.nan, np.float32)


def _registry() -> Registry:
    module = types.ModuleType("test_plugins")
    module.harness_methods = hookimpl(lambda: [CountingMethod, NaNMethod])
    module.harness_postprocessors = hookimpl(lambda: [Squash])
    return Registry(autoload=False, extra=[(module, "tests")])


@pytest.fixture
def registry():
    CountingMethod.calls = 0
    CountingMethod.fail_after = None
    return _registry()


def _spec(tmp_path: Path, **kw) -> RunSpec:
    base = dict(method="counting", dataset="synthetic", dataset_args={"count": 6}, out=tmp_path / "runs",
                cache_dir=tmp_path / "cache", progress=False)
    base.update(kw)
    return RunSpec(**base)


def test_run_writes_the_run_directory(registry, tmp_path):
    result = run(_spec(tmp_path), registry)
    files = {p.name for p in result.run_dir.iterdir()}
    assert {"results.json", "per_image.csv", "summary.md"} <= files
    results = json.loads((result.run_dir / "results.json").read_text())
    assert results["schema_version"] == 1
    assert results["protocol"] == {"name": "harness-saliency-corloc", "version": "1.0"}
    assert results["config"]["method"]["config"] == {"sigma": 0.3}
    assert results["counts"]["images"] == 6 and results["seed"] == 0
    for lib in ("python", "numpy", "torch", "timm", "harness"):
        assert results["versions"][lib]
    assert set(results["metrics"]) >= {"acc", "iou", "max_fbeta", "mae", "corloc"}
    rows = (result.run_dir / "per_image.csv").read_text().splitlines()
    assert len(rows) == 7 and rows[0].startswith("id,acc,iou")


def test_second_run_is_served_from_the_cache_with_identical_metrics(registry, tmp_path):
    first = run(_spec(tmp_path), registry)
    assert CountingMethod.calls == 6
    second = run(_spec(tmp_path), registry)
    assert CountingMethod.calls == 6  # nothing recomputed
    assert second.results["counts"]["n_cached"] == 6
    assert second.metrics == first.metrics and second.run_dir == first.run_dir


def test_changing_the_post_chain_reuses_masks_but_an_option_does_not(registry, tmp_path):
    plain = run(_spec(tmp_path), registry)
    squashed = run(_spec(tmp_path, posts=["squash"]), registry)
    assert CountingMethod.calls == 6 and squashed.run_dir != plain.run_dir
    assert squashed.metrics["mae"] != plain.metrics["mae"]
    run(_spec(tmp_path, method_args={"sigma": "0.2"}), registry)
    assert CountingMethod.calls == 12


@pytest.mark.parametrize("workers", [0, 2])
def test_interrupted_run_resumes_without_recomputing(registry, tmp_path, workers):
    """With workers, the images already handed to them when Ctrl-C comes are finished and kept."""
    reference = run(_spec(tmp_path, cache_dir=tmp_path / "other-cache", out=tmp_path / "ref"), registry)
    CountingMethod.calls = 0
    CountingMethod.fail_after = 4
    with pytest.raises(KeyboardInterrupt):
        run(_spec(tmp_path, workers=workers), registry)
    assert not any((tmp_path / "runs").glob("*/results.json"))  # nothing half-written
    CountingMethod.fail_after = None
    resumed = run(_spec(tmp_path, workers=workers), registry)
    assert CountingMethod.calls == 6  # 4 before the interruption + the 2 missing ones
    assert resumed.results["counts"]["n_cached"] == 4
    assert resumed.metrics == reference.metrics
    ref_rows = (reference.run_dir / "per_image.csv").read_text()
    assert (resumed.run_dir / "per_image.csv").read_text() == ref_rows


def test_nan_prediction_is_a_clear_error_and_writes_nothing(registry, tmp_path):
    with pytest.raises(HarnessError, match="method 'nan' produced .* NaN or infinite values for image 'synthetic_0000'"):
        run(_spec(tmp_path, method="nan"), registry)
    assert not any((tmp_path / "runs").glob("*/results.json"))


# unknown names and --limit through the command line: tests/test_bad_input.py
def test_a_backbone_for_a_method_without_one_fails_before_any_work(registry, tmp_path):
    with pytest.raises(HarnessError, match="does not use a backbone"):
        run(_spec(tmp_path, backbone="dino-vits16"), registry)
    assert CountingMethod.calls == 0 and not (tmp_path / "runs").exists()


def test_cli_run_then_report(tmp_path, capsys):
    """The command line prints the metrics and the run directory; a second run is read from the
    cache (counted in the API: test_second_run_is_served_from_the_cache...)."""
    args = ["run", "--method", "center-prior", "--dataset", "synthetic", "--dataset-args", "count=5",
            "--out", str(tmp_path / "runs"), "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    run_dir = next((tmp_path / "runs").iterdir())
    assert "max_fbeta" in out and f"run directory: {run_dir}" in out and "(0 masks from the cache)" in out
    assert main(args) == 0
    assert "(5 masks from the cache)" in capsys.readouterr().out

    assert main(["report", str(tmp_path / "runs"), "-o", str(tmp_path / "report.md")]) == 0
    report = (tmp_path / "report.md").read_text()
    assert "| center-prior" in report and "SYNTHETIC" not in report and "synthetic Acc" in report


def test_a_dataset_without_ground_truth_is_predicted_not_scored(tmp_path, capsys):
    from PIL import Image

    images = tmp_path / "data" / "images"
    images.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((20, 30, 3), 40 * i, np.uint8)).save(images / f"im{i}.png")
    args = ["run", "--method", "center-prior", "--dataset", "folder", "--data-root", str(tmp_path / "data"),
            "--dataset-args", "masks=", "--out", str(tmp_path / "runs"), "--no-progress"]
    assert main(args) == 0
    assert "nothing scored" in capsys.readouterr().out
    results = json.loads(next((tmp_path / "runs").glob("*/results.json")).read_text())
    assert results["metrics"] == {} and results["counts"]["n_computed"] == 3
    assert main(args + ["--eval", "saliency"]) == 2  # asking for a score without ground truth
    assert "needs ground-truth mask" in capsys.readouterr().err
