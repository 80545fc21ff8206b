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


def test_interrupted_run_resumes_without_recomputing(registry, tmp_path):
    reference = run(_spec(tmp_path, cache_dir=tmp_path / "other-cache", out=tmp_path / "ref"), registry)
    CountingMethod.calls = 0
    CountingMethod.fail_after = 4
    with pytest.raises(KeyboardInterrupt):
        run(_spec(tmp_path), registry)
    assert not any((tmp_path / "runs").glob("*/results.json"))  # nothing half-written
    CountingMethod.fail_after = None
    resumed = run(_spec(tmp_path), registry)
    assert CountingMethod.calls == 6  # 4 before the interruption + the 2 missing ones
    assert resumed.results["counts"]["n_cached"] == 4
    assert resumed.metrics == reference.metrics
    ref_rows = (reference.run_dir / "per_image.csv").read_text()
    assert (resumed.run_dir / "per_image.csv").read_text() == ref_rows


def test_truncated_cache_entry_is_recomputed(registry, tmp_path):
    first = run(_spec(tmp_path), registry)
    entry = next((tmp_path / "cache" / "masks").rglob("*.entry"))
    entry.write_bytes(entry.read_bytes()[:20])
    second = run(_spec(tmp_path), registry)
    assert CountingMethod.calls == 7 and second.metrics == first.metrics


def test_nan_prediction_is_a_clear_error_and_writes_nothing(registry, tmp_path):
    with pytest.raises(HarnessError, match="method 'nan' produced .* NaN or infinite values for image 'synthetic_0000'"):
        run(_spec(tmp_path, method="nan"), registry)
    assert not any((tmp_path / "runs").glob("*/results.json"))


@pytest.mark.parametrize(
    "spec_kw, fragment",
    [({"limit": 0}, "--limit 0"), ({"backbone": "dino-vits16"}, "does not use a backbone"),
     ({"evaluators": ["saliencyy"]}, "Did you mean 'saliency'"), ({"dataset": "ecsd"}, "unknown dataset 'ecsd'")],
)
def test_bad_requests_fail_before_any_work(registry, tmp_path, spec_kw, fragment):
    with pytest.raises(HarnessError, match=fragment):
        run(_spec(tmp_path, **spec_kw), registry)
    assert CountingMethod.calls == 0


def test_cli_run_report_and_errors(tmp_path, capsys):
    args = ["run", "--method", "center-prior", "--dataset", "synthetic", "--dataset-args", "count=5",
            "--out", str(tmp_path / "runs"), "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "max_fbeta" in out and "run directory:" in out and "(0 masks from the cache)" in out
    assert main(args) == 0
    assert "(5 masks from the cache)" in capsys.readouterr().out

    assert main(["report", str(tmp_path / "runs"), "-o", str(tmp_path / "report.md")]) == 0
    report = (tmp_path / "report.md").read_text()
    assert "| center-prior" in report and "SYNTHETIC" not in report and "synthetic Acc" in report

    assert main(["run", "--method", "center-prior", "--dataset", "synthetic", "--method-args", "sigma"]) == 2
    err = capsys.readouterr().err
    assert "is not of the form key=value" in err and "Traceback" not in err


def test_unwritable_output_is_a_clear_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code = main(["run", "--method", "center-prior", "--dataset", "synthetic", "--out", str(blocker / "runs")])
    assert code == 2 and "cannot write to" in capsys.readouterr().err


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
