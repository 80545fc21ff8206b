"""The plugin contract (issue 14): stateless evaluators with declared keys, the run's stages,
reopening a finished run, backbone features as a core stage, what the caches refuse, required
options, and the run's seed reaching the eigen solvers."""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness import (Backbone, Evaluator, FeatureRequest, Method, Option, PluginError, PostProcessor, Prediction,
                     hookimpl)
from harness.cache import quantize_mask
from harness.cli import main
from harness.errors import HarnessError
from harness.registry import Registry
from harness.runner import RunSpec, reopen, run


# ---- test plugins ----------------------------------------------------------------------------------

class OwnIoU(Evaluator):
    """A third-party evaluator that reports its own ``iou``."""

    name = "own-iou"
    description = "IoU at 0.3"
    metric_keys = ("iou",)
    row_keys = ("own_iou",)

    def process(self, sample, prediction):
        fg, positive = sample.mask > 127, prediction.mask > 0.3
        iou = (fg & positive).sum() / max((fg | positive).sum(), 1)
        return float(iou), {"own_iou": float(iou)}

    def aggregate(self, records):
        return {"iou": float(np.mean(records))}


class Undeclared(Evaluator):
    name = "undeclared"
    description = "emits a column it did not declare"
    row_keys = ("declared",)

    def process(self, sample, prediction):
        return 0, {"declared": 1, "surprise": 2}

    def aggregate(self, records):
        return {}


class UndeclaredMetric(Evaluator):
    name = "undeclared-metric"
    description = "emits a metric it did not declare"
    metric_keys = ("a",)

    def process(self, sample, prediction):
        return 0, {}

    def aggregate(self, records):
        return {"a": 1.0, "b": 2.0}


class OldStyle(Evaluator):
    """The contract before issue 14: process returned the row and kept the record."""

    name = "old-style"
    description = "returns a row only"
    row_keys = ("x",)

    def process(self, sample, prediction):
        return {"x": 1.0}

    def aggregate(self, records):
        return {}


class Prior(Method):
    """Centre prior that counts its predictions."""

    name = "prior"
    description = "test method"
    options = (Option("sigma", 0.3, "width"),)
    calls = 0

    def predict(self, sample):
        from harness.methods.center_prior import center_prior

        Prior.calls += 1
        h, w = sample.image.shape[:2]
        return center_prior(h, w, self.config["sigma"])


class Square(PostProcessor):
    name = "square"
    description = "mask ** 2"

    def __call__(self, image, mask):
        return mask**2


class StubBackbone(Backbone):
    """The mean colour of each 4x4 cell; counts its batches."""

    name = "stub"
    description = "test backbone"
    stride = 4
    digest = "ab" * 32
    calls: list = []

    @property
    def weights_digest(self):
        return self.digest

    @property
    def feature_dim(self):
        return 3

    def load(self, device="cpu"):
        pass

    def features(self, images):
        import torch

        StubBackbone.calls.append(tuple(images.shape))
        return torch.nn.functional.avg_pool2d(images, 4)


class NoDigestBackbone(StubBackbone):
    name = "no-digest"
    digest = None


class FeatureMethod(Method):
    """A third-party method on a backbone: foreground is the patches brighter than the mean,
    through ``context.features``."""

    name = "feature-method"
    description = "bright patches"
    uses_backbone = True
    default_backbone = "stub"
    options = (Option("gain", 1.0, "multiplies the brightness"),)
    contexts: list = []

    def setup(self, context):
        FeatureMethod.contexts.append(context)
        self.features = context.features

    def predict_batch(self, samples):
        requests = [FeatureRequest.of(s, "crop:{}x{}".format(*s.image.shape[:2]),
                                      lambda s=s: s.image.astype(np.float32) / 255) for s in samples]
        out = []
        for sample, grid in zip(samples, self.features.grids(requests)):
            bright = np.clip(grid.mean(axis=0) * self.config["gain"], 0, 1)
            out.append(np.repeat(np.repeat(bright, 4, axis=0), 4, axis=1).astype(np.float32))
        return out


class FileMethod(Method):
    """Reads a file its cache key does not follow."""

    name = "file-method"
    description = "reads a table"
    options = (Option("table", None, "a table file", type=Path),)

    def predict(self, sample):
        return np.full(sample.image.shape[:2], 0.5, np.float32)


class TokenedFileMethod(FileMethod):
    name = "tokened-file-method"

    def cache_token(self):
        return {"table": hashlib.sha256(Path(self.config["table"]).read_bytes()).hexdigest()}


class UncachedFileMethod(FileMethod):
    name = "uncached-file-method"
    cacheable = False


class NeedsModel(Method):
    name = "needs-model"
    description = "has a required option"
    options = (Option("model", None, "the model file", type=Path, required=True, metavar="FILE"),
               Option("scale", 1.0, "a scale"))

    def predict(self, sample):
        return np.zeros(sample.image.shape[:2], np.float32)


def _registry() -> Registry:
    module = types.ModuleType("contract_plugins")
    module.harness_methods = hookimpl(lambda: [Prior, FeatureMethod, FileMethod, TokenedFileMethod,
                                               UncachedFileMethod, NeedsModel])
    module.harness_postprocessors = hookimpl(lambda: [Square])
    module.harness_evaluators = hookimpl(lambda: [OwnIoU, Undeclared, UndeclaredMetric, OldStyle])
    module.harness_backbones = hookimpl(lambda: [StubBackbone, NoDigestBackbone])
    return Registry(autoload=False, extra=[(module, "contract-dist 1.0")])


@pytest.fixture
def registry():
    Prior.calls = 0
    StubBackbone.calls = []
    FeatureMethod.contexts = []
    return _registry()


def _spec(tmp_path: Path, **kw) -> RunSpec:
    base = dict(method="prior", dataset="synthetic", dataset_args={"count": 4, "height": 48, "width": 64},
                out=tmp_path / "runs", cache_dir=tmp_path / "cache", progress=False)
    base.update(kw)
    return RunSpec(**base)


def _nothing_written(tmp_path: Path) -> bool:
    return not (tmp_path / "runs").exists() and not list((tmp_path / "cache").rglob("*.entry"))


# ---- evaluators: declared keys, no collisions ------------------------------------------------------

def test_a_third_party_evaluator_emitting_iou_beside_saliency_is_refused(registry, tmp_path):
    with pytest.raises(PluginError) as err:
        run(_spec(tmp_path, evaluators=["saliency", "own-iou"]), registry)
    assert str(err.value).startswith("evaluators 'saliency' and 'own-iou' both emit the key 'iou'")
    assert Prior.calls == 0 and _nothing_written(tmp_path)
    # alone, it is scored (its iou is the metric)
    alone = run(_spec(tmp_path, evaluators=["own-iou"]), registry)
    rows = pd.read_csv(alone.run_dir / "per_image.csv")
    assert list(rows.columns) == ["id", "own_iou"]
    assert alone.metrics["iou"] == pytest.approx(rows["own_iou"].mean(), abs=1e-6)


def test_the_collision_is_one_line_and_exit_status_2_on_the_command_line(tmp_path, capsys, monkeypatch):
    import harness.registry as registry_module

    monkeypatch.setattr(registry_module, "_REGISTRY", _registry())
    code = main(["run", "--method", "center-prior", "--dataset", "synthetic", "--eval", "saliency",
                 "--eval", "own-iou", "--out", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache"),
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("harness run: error: evaluators 'saliency' and 'own-iou' both emit the key 'iou'")
    assert _nothing_written(tmp_path)


def test_an_evaluator_given_twice_is_refused(registry, tmp_path):
    with pytest.raises(PluginError, match=r"^evaluator 'saliency' is given twice; give each --eval once$"):
        run(_spec(tmp_path, evaluators=["saliency", "saliency"]), registry)


@pytest.mark.parametrize("evaluator, message", [
    ("undeclared", r"evaluator 'undeclared' emitted the per-image column\(s\) 'surprise' for image "
                   r"'synthetic_0000' without declaring them; add them to its row_keys"),
    ("undeclared-metric", r"evaluator 'undeclared-metric' emitted the metric\(s\) 'b' without declaring them"),
    ("old-style", r"evaluator 'old-style' returned dict for image 'synthetic_0000'; process\(\) must return "
                  r"\(record, row\)"),
])
def test_an_evaluator_emitting_what_it_did_not_declare_stops_the_run(registry, tmp_path, evaluator, message):
    with pytest.raises(PluginError, match=message):
        run(_spec(tmp_path, evaluators=["saliency", evaluator]), registry)
    assert not (tmp_path / "runs").exists()


def test_saliency_and_size_iou_score_one_run(registry, tmp_path):
    result = run(_spec(tmp_path, evaluators=["saliency", "size-iou"]), registry)
    rows = pd.read_csv(result.run_dir / "per_image.csv")
    assert list(rows.columns) == ["id", "acc", "iou", "mae", "max_fbeta_per_image", "fg_ratio", "size_fg_ratio",
                                  "size_bin", "size_iou"]
    np.testing.assert_array_equal(rows["iou"], rows["size_iou"])  # one definition, two evaluators
    np.testing.assert_array_equal(rows["fg_ratio"], rows["size_fg_ratio"])
    assert result.metrics["iou"] == pytest.approx(rows["iou"].mean(), abs=1e-6)
    assert sum(v for k, v in result.metrics.items() if k.startswith("size_n_")) == 4
    assert result.metrics["n_images"] == 4 and (result.run_dir / "size_iou.png").is_file()


def test_evaluators_keep_no_state_and_shards_merge_to_the_one_process_result():
    from harness.datasets.synthetic import SyntheticDataset
    from harness.evaluators.corloc import CorLocEvaluator
    from harness.evaluators.saliency import SaliencyEvaluator
    from harness.evaluators.size_iou import SizeBinnedIoU
    from harness.methods.center_prior import center_prior
    from harness.pipeline import EvaluateStage

    evaluators = [SaliencyEvaluator(), CorLocEvaluator(), SizeBinnedIoU()]
    samples = list(SyntheticDataset(count=7, height=40, width=56))
    pairs = [(s, Prediction(quantize_mask(center_prior(40, 56, 0.1 + 0.05 * i)) / np.float32(255)))
             for i, s in enumerate(samples)]
    single = EvaluateStage(evaluators)
    for pair in pairs:
        single(*pair)
    shards = []
    for rank in range(3):  # rank r scores images r, r + 3, ... and sends its rows and records (pickled)
        stage = EvaluateStage(evaluators)
        for pair in pairs[rank::3]:
            stage(*pair)
        shards.append(pickle.loads(pickle.dumps(stage.shard())))
    merged = EvaluateStage(evaluators)
    merged.merge(shards, len(pairs))
    assert [r["id"] for r in merged.rows] == [s.id for s in samples]
    assert pd.DataFrame(merged.rows).equals(pd.DataFrame(single.rows))
    assert merged.aggregate() == single.aggregate()
    assert all(not hasattr(ev, "records") for ev in evaluators)
    assert single.aggregate()["n_images"] == 7


@pytest.mark.skipif(sys.platform == "win32", reason="torchrun with gloo")
def test_a_sharded_run_equals_a_one_process_run(tmp_path):
    args = ["run", "--method", "center-prior", "--dataset", "synthetic", "--dataset-args", "count=5",
            "--eval", "saliency", "--eval", "corloc", "--eval", "size-iou", "--no-progress", "--device", "cpu",
            "--name", "fixed"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "harness"]
    sharded = subprocess.run(torchrun + args + ["--out", str(tmp_path / "sharded")], capture_output=True, text=True,
                             env={**env, "HARNESS_CACHE": str(tmp_path / "cache-a")}, timeout=300)
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    single = subprocess.run([sys.executable, "-m", "harness", *args, "--out", str(tmp_path / "single")],
                            capture_output=True, text=True, env={**env, "HARNESS_CACHE": str(tmp_path / "cache-b")},
                            timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    a, b = tmp_path / "sharded" / "fixed", tmp_path / "single" / "fixed"
    ra, rb = json.loads((a / "results.json").read_text()), json.loads((b / "results.json").read_text())
    assert (ra["world_size"], rb["world_size"]) == (2, 1)
    assert ra["metrics"] == rb["metrics"] and ra["metrics"]["n_images"] == 5
    for name in ("per_image.csv", "saliency_histograms.npz", "size_iou.png"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


# ---- reopening a finished run ----------------------------------------------------------------------

def test_reopen_gives_a_finished_runs_final_masks_from_the_cache(registry, tmp_path):
    from harness.methods.center_prior import center_prior

    result = run(_spec(tmp_path, posts=["square"]), registry)
    assert Prior.calls == 4
    runner = reopen(result.run_dir, registry=registry)
    masks = dict((s.id, m) for s, m in runner.final_masks(["synthetic_0001", "synthetic_0003"]))
    assert Prior.calls == 4  # served from the caches
    assert sorted(masks) == ["synthetic_0001", "synthetic_0003"]
    expected = quantize_mask((quantize_mask(center_prior(48, 64, 0.3)) / np.float32(255)) ** 2)
    assert all(np.array_equal(m, expected) for m in masks.values())


def test_reopen_refuses_a_run_the_installed_plugins_would_not_remake(registry, tmp_path):
    result = run(_spec(tmp_path), registry)
    path = result.run_dir / "results.json"
    data = json.loads(path.read_text())
    data["config"]["method"]["version"] = "0"  # made by another version of the method
    path.write_text(json.dumps(data))
    with pytest.raises(HarnessError, match=r"its method is not what the installed plugins give now .* run it again"):
        reopen(result.run_dir, registry=registry)
    del data["spec"]
    path.write_text(json.dumps(data))
    with pytest.raises(HarnessError, match=r"results.json does not record its request"):
        reopen(result.run_dir, registry=registry)


# ---- features as a core stage ---------------------------------------------------------------------

def test_the_runner_hands_methods_the_feature_stage_of_the_runs_backbone(registry, tmp_path):
    from harness.backbones.features import FeatureExtractor

    first = run(_spec(tmp_path, method="feature-method", batch_size=4), registry)
    (context,) = FeatureMethod.contexts
    assert isinstance(context.features, FeatureExtractor) and context.features.backbone is context.backbone
    assert context.backbone.name == "stub" and len(StubBackbone.calls) == 1  # one batch of four 48x64 images
    assert len(list((tmp_path / "cache" / "features").rglob("*.entry"))) == 4
    # another option: new masks, but the features come from the feature cache
    second = run(_spec(tmp_path, method="feature-method", method_args={"gain": "2"}, batch_size=4), registry)
    assert second.results["counts"]["n_computed"] == 4 and len(StubBackbone.calls) == 1
    assert second.metrics != first.metrics


def test_a_backbone_without_weights_digest_is_refused(registry, tmp_path):
    from harness.backbones.features import FeatureExtractor

    message = r"^backbone 'no-digest' has no weights_digest, so its cached features and masks could not be told apart"
    with pytest.raises(PluginError, match=message):
        run(_spec(tmp_path, method="feature-method", backbone="no-digest"), registry)
    assert FeatureMethod.contexts == [] and _nothing_written(tmp_path)
    with pytest.raises(PluginError, match=message):
        run(_spec(tmp_path, method="tokencut", backbone="no-digest"), registry)
    with pytest.raises(PluginError, match=message):
        FeatureExtractor(NoDigestBackbone(), "cpu", tmp_path / "cache")
    # without a cache there is nothing to tell apart
    request = FeatureRequest("a", "d", "crop:8x8", lambda: np.full((8, 8, 3), 0.25, np.float32))
    (grid,) = FeatureExtractor(NoDigestBackbone(), "cpu", None).grids([request])
    np.testing.assert_array_equal(grid, np.full((3, 2, 2), 0.25, np.float32))


def test_a_cached_method_reading_a_file_needs_a_cache_token(registry, tmp_path):
    table = tmp_path / "table.txt"
    table.write_text("1 2 3")
    with pytest.raises(PluginError, match=r"^method 'file-method' reads the file\(s\) of option 'table' but its "
                                          r"cache_token\(\) is empty"):
        run(_spec(tmp_path, method="file-method", method_args={"table": str(table)}), registry)
    assert _nothing_written(tmp_path)
    run(_spec(tmp_path, method="file-method"), registry)  # no file given: nothing to follow
    tokened = run(_spec(tmp_path, method="tokened-file-method", method_args={"table": str(table)}), registry)
    assert tokened.results["config"]["method_token"]["table"] == hashlib.sha256(b"1 2 3").hexdigest()
    uncached = run(_spec(tmp_path, method="uncached-file-method", method_args={"table": str(table)}), registry)
    assert uncached.results["counts"]["n_computed"] == 4


# ---- required options -----------------------------------------------------------------------------

def test_a_required_option_is_named_when_missing(registry, tmp_path, capsys, monkeypatch):
    with pytest.raises(PluginError, match=r"^method 'needs-model' needs the model file: --method-args model=FILE "
                                          r"\(a required option\)$"):
        NeedsModel(scale=2)
    assert NeedsModel(model="m.pth").config["model"].is_absolute()
    assert "model (path, required): the model file" in [o.describe() for o in NeedsModel.options][0]
    from harness.methods.masks import MaskFolder, MOVEMasks

    with pytest.raises(PluginError, match=r"method 'masks' needs the predictions' folder: --method-args dir=FOLDER"):
        MaskFolder()
    with pytest.raises(PluginError, match=r"method 'move' needs the folder of MOVE's saved masks: --method-args "
                                          r"dir=FOLDER"):
        MOVEMasks()
    import harness.registry as registry_module

    monkeypatch.setattr(registry_module, "_REGISTRY", registry)
    assert main(["run", "--method", "needs-model", "--dataset", "synthetic", "--out", str(tmp_path / "runs")]) == 2
    assert capsys.readouterr().err.strip() == ("harness run: error: method 'needs-model' needs the model file: "
                                               "--method-args model=FILE (a required option)")


# ---- the run's seed reaches the eigen solvers -----------------------------------------------------

def test_the_start_vector_is_seeded_and_seed_0_is_the_earlier_one(monkeypatch):
    import scipy.sparse.linalg

    from harness.methods._spectral import fiedler_vector

    real, starts = scipy.sparse.linalg.eigsh, []
    monkeypatch.setattr(scipy.sparse.linalg, "eigsh", lambda *a, v0, **k: starts.append(v0.copy()) or real(*a, v0=v0, **k))
    rng = np.random.default_rng(11)
    points = rng.random((80, 2))
    W = np.exp(-((points[:, None] - points[None]) ** 2).sum(-1) / 0.05)
    d = W.sum(axis=1)
    u = np.sqrt(d) / np.linalg.norm(np.sqrt(d))
    results = {seed: fiedler_vector(W, seed=seed) for seed in (0, 5)}
    for seed, start in zip((0, 5), starts):
        expected = np.random.default_rng(seed).uniform(-1.0, 1.0, 80)  # seed 0: the vector used before
        np.testing.assert_array_equal(start, expected - u * (u @ expected))
    assert not np.array_equal(starts[0], starts[1])
    # a well-separated eigenvalue: the same pair whatever the start (up to sign)
    assert results[0][0] == pytest.approx(results[5][0], rel=1e-9)
    np.testing.assert_allclose(np.abs(results[0][1]), np.abs(results[5][1]), atol=1e-6)


def test_the_runs_seed_reaches_tokencut_and_deep_spectral_and_keys_their_masks(tmp_path, monkeypatch):
    import harness.methods.deep_spectral as deep_spectral
    import harness.methods.tokencut as tokencut

    seeds = []
    for module in (tokencut, deep_spectral):
        real = module.fiedler_vector
        monkeypatch.setattr(module, "fiedler_vector", lambda W, real=real, **k: seeds.append(k["seed"]) or real(W, **k))
    # --workers 0: the eigen solve runs in this process, where the patched solver records its seed
    common = dict(dataset="synthetic", dataset_args={"count": 2, "height": 64, "width": 96}, backbone="effnet-lite0",
                  out=tmp_path / "runs", cache_dir=tmp_path / "cache", progress=False, workers=0)
    for method in ("tokencut", "deep-spectral"):
        seeds.clear()
        first = run(RunSpec(method=method, seed=7, **common))
        assert seeds == [7, 7] and first.results["counts"]["n_computed"] == 2
        other = run(RunSpec(method=method, seed=8, **common))  # another seed: other masks, not the cached ones
        assert seeds == [7, 7, 8, 8] and other.results["counts"]["n_computed"] == 2
        again = run(RunSpec(method=method, seed=7, **common))
        assert again.results["counts"]["n_cached"] == 2 and again.metrics == first.metrics
    # LOST has no random start: its masks do not depend on the seed
    run(RunSpec(method="lost", seed=7, **common))
    assert run(RunSpec(method="lost", seed=8, **common)).results["counts"]["n_cached"] == 2


# ---- the core does not import the built-in plugins ------------------------------------------------

def test_the_core_imports_no_built_in_plugin_module_but_through_the_builtin_hooks():
    """harness/ reaches methods/ and datasets/ (harness.methods, harness.datasets) only through
    harness/builtin_plugins.py, the way a third party's plugins are reached."""
    import ast

    import harness

    core = Path(harness.__file__).parent
    offenders = []
    for path in sorted(core.rglob("*.py")):
        if path.name == "builtin_plugins.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if isinstance(node, ast.ImportFrom) and node.module == "harness":
                names += [f"harness.{a.name}" for a in node.names]
            offenders += [f"{path.relative_to(core)}:{node.lineno} {n}" for n in names
                          if n.split(".")[:2] in (["harness", "methods"], ["harness", "datasets"])]
    assert offenders == []


def test_report_figures_read_size_iou_columns_and_reopen_runs(registry, tmp_path, monkeypatch):
    """The size curves of a run scored by size-iou alone come from its size_fg_ratio and size_iou
    columns, the same curve as a saliency run's fg_ratio and iou; the qualitative grid's masks
    come from the reopened runs (cache first, the method not called again)."""
    from harness.evaluators.size_iou import per_bin_means
    from harness.figures import _run_masks, size_curves
    from harness.report import find_runs

    sized = run(_spec(tmp_path, evaluators=["size-iou"], out=tmp_path / "a"), registry)
    scored = run(_spec(tmp_path, evaluators=["saliency"], out=tmp_path / "b"), registry)
    assert Prior.calls == 4
    rows = pd.read_csv(sized.run_dir / "per_image.csv")
    bins = np.minimum((rows["size_fg_ratio"].to_numpy() * 20).astype(int), 19)
    means, counts = per_bin_means(bins, rows["size_iou"].to_numpy())
    assert counts.sum() == 4 and np.isfinite(means).sum() >= 1
    for parent in ("a", "b"):
        (record,) = find_runs([tmp_path / parent], resamples=10)
        (made,) = size_curves([record], tmp_path / f"fig-{parent}")
        assert made[1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import harness.registry as registry_module

    monkeypatch.setattr(registry_module, "_REGISTRY", registry)
    (record,) = find_runs([tmp_path / "b"], resamples=10)
    masks = _run_masks(record, ["synthetic_0002"])
    assert Prior.calls == 4 and masks["synthetic_0002"][1].shape == (48, 64)
