"""Sempart and Sempart + crop consistency: training, exact resume, evaluation, distribution.

Small scale on purpose: 64 px inputs, the offline EfficientNet-Lite0 at stride 8 (an 8 x 8
grid), a handful of images.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from harness.api import RunContext
from harness.cli import main
from harness.errors import HarnessError
from harness.registry import get_registry
from harness.training.checkpoint import load_checkpoint
from harness.training.trainer import TrainSpec, train

TINY = {"image_size": "64"}
BACKBONE = dict(backbone="effnet-lite0", backbone_args={"stride": "8"})


def _train(out: Path, method: str = "sempart", epochs: int = 2, resume: bool = False, method_args=None, **kw) -> Path:
    spec = TrainSpec(method=method, dataset="synthetic", dataset_args={"count": "8", "height": "80", "width": "96"},
                     method_args=dict(method_args or TINY), epochs=epochs, batch_size=4, out=out, resume=resume, progress=False,
                     device="cpu", **BACKBONE, **kw)
    return train(spec)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    return _train(tmp_path_factory.mktemp("sempart") / "run", epochs=2)


def _iou_by_hand(method, dataset) -> float:
    """The IoU metric computed here with numpy from the method's own predictions: prediction
    > 0.5 against ground truth >= 128, per image, averaged over images with a non-empty union."""
    samples = [dataset.load(i) for i in dataset.ids()]
    preds = method.predict_batch([s.without_labels() for s in samples])
    ious = []
    for sample, pred in zip(samples, preds):
        fg, gt = np.asarray(pred.mask) > 0.5, np.asarray(sample.mask) >= 128
        if (fg | gt).any():
            ious.append((fg & gt).sum() / (fg | gt).sum())
    return float(np.mean(ious))


def test_checkpoint_holds_model_optimizer_polarity_and_provenance(trained):
    ckpt = load_checkpoint(trained / "checkpoint_last.pt", ("sempart",))
    assert ckpt["epoch"] == 2 and ckpt["backbone"] == "effnet-lite0" and len(ckpt["weights_digest"]) == 64
    # the polarity recomputed here: the saved head's masks of the training images, their mean over
    # a border band 64 / 16 = 4 px wide (numpy), and "flip when above one half"
    method = get_registry().create("method", "sempart", {"checkpoint": str(trained / "checkpoint_last.pt")})
    backbone = _effnet()
    method.setup(RunContext(device="cpu", backbone=backbone))
    dataset = get_registry().create("dataset", "synthetic", {"count": "8", "height": "80", "width": "96"})
    rings = []
    with torch.no_grad():
        for i in dataset.ids():
            image = method._eval_input(dataset.load(i).image, 8, 64)[None]
            fine = method.forward(method.model, backbone, image)[1][0, 0].double().numpy()
            ring = np.ones(fine.shape, bool)
            ring[4:-4, 4:-4] = False
            rings.append(fine[ring].mean())
    assert ckpt["polarity_border_mean"] == pytest.approx(np.mean(rings), abs=1e-6)  # float32 means
    assert ckpt["polarity"] == (-1 if np.mean(rings) > 0.5 else 1)
    assert {"model", "optimizer", "config", "history"} <= set(ckpt)
    assert (trained / "checkpoint_epoch001.pt").is_file()
    log = pd.read_csv(trained / "losses.csv")
    assert list(log.columns) == ["epoch", "ncut", "consistency", "fine_tv", "coarse_tv", "total", "seconds"]


def test_resume_gives_the_same_losses_as_an_uninterrupted_run(trained, tmp_path):
    out = _train(tmp_path / "resumed", epochs=1)
    _train(out, epochs=2, resume=True)
    straight = pd.read_csv(trained / "losses.csv").drop(columns="seconds")
    resumed = pd.read_csv(out / "losses.csv").drop(columns="seconds")
    pd.testing.assert_frame_equal(straight, resumed, check_exact=True)


def test_the_same_seed_gives_the_same_loss_log(trained, tmp_path):
    again = _train(tmp_path / "again", epochs=2)
    pd.testing.assert_frame_equal(pd.read_csv(trained / "losses.csv").drop(columns="seconds"),
                                  pd.read_csv(again / "losses.csv").drop(columns="seconds"), check_exact=True)


def test_training_into_an_existing_run_without_resume_is_refused(trained):
    with pytest.raises(HarnessError, match="already holds a training run; pass --resume"):
        _train(trained, epochs=3)


def test_a_few_steps_on_ecssd_reduce_the_total_loss(ecssd_root, tmp_path):
    spec = TrainSpec(method="sempart", dataset="ecssd", data_root=str(ecssd_root), limit=8, method_args=dict(TINY),
                     epochs=4, batch_size=4, lr=1e-3, out=tmp_path / "ecssd", progress=False, device="cpu", **BACKBONE)
    log = pd.read_csv(train(spec) / "losses.csv")
    assert log["total"].iloc[-1] < log["total"].iloc[0]


def test_crop_consistency_teacher_receives_no_gradient():
    registry = get_registry()
    method = registry.create("method", "sempart-crop", dict(TINY))
    backbone = registry.create("backbone", "effnet-lite0", {"stride": "8"})
    backbone.load("cpu")
    model = method.build_model(backbone)
    images = torch.rand(2, 3, 64, 64)
    _, fine, _ = method.forward(model, backbone, images)
    crop = method.crop_views(model, backbone, images, fine, torch.Generator().manual_seed(0))
    assert crop["student"].requires_grad and crop["student"].shape == (2, 1, 64, 64)
    assert not crop["teacher"].requires_grad and crop["teacher"].grad_fn is None
    assert crop["teacher"].min() >= 1e-6 and crop["teacher"].max() <= 1 - 1e-6
    terms = method.training_losses(model, backbone, {"image": images}, torch.Generator().manual_seed(0))
    assert set(terms) == {"ncut", "consistency", "fine_tv", "coarse_tv", "crop_mse", "crop_ncut"}
    assert method.loss_weights()["crop_mse"] == 0.01 and method.loss_weights()["crop_ncut"] == 0.01


def test_evaluation_through_harness_run(trained, tmp_path, capsys):
    args = ["run", "--method", "sempart", "--method-args", f"checkpoint={trained / 'checkpoint_last.pt'}",
            "--dataset", "synthetic", "--dataset-args", "count=3",
            "--out", str(tmp_path / "runs"), "--no-progress", "--device", "cpu"]
    assert main(args) == 0
    results = json.loads(next((tmp_path / "runs").glob("*/results.json")).read_text())
    assert results["config"]["backbone"]["name"] == "effnet-lite0"  # taken from the checkpoint,
    assert results["config"]["backbone"]["config"] == {"stride": 8}  # with its options
    method = get_registry().create("method", "sempart", {"checkpoint": str(trained / "checkpoint_last.pt")})
    method.setup(RunContext(device="cpu", backbone=_effnet()))
    dataset = get_registry().create("dataset", "synthetic", {"count": "3"})
    assert results["metrics"]["iou"] == pytest.approx(_iou_by_hand(method, dataset), abs=1e-12)


def test_evaluation_errors_say_what_to_do(trained, tmp_path, capsys):
    base = ["run", "--dataset", "synthetic", "--dataset-args", "count=2", "--out", str(tmp_path), "--no-progress"]
    assert main(base + ["--method", "sempart"]) == 2
    assert "harness train --method sempart" in capsys.readouterr().err
    assert main(base + ["--method", "sempart-crop", "--method-args", f"checkpoint={trained / 'checkpoint_last.pt'}"]) == 2
    assert "checkpoint of method 'sempart', not of sempart-crop; use --method sempart" in capsys.readouterr().err
    wrong = ["--method", "sempart", "--method-args", f"checkpoint={trained / 'checkpoint_last.pt'}",
             "--backbone-args", "stride=16"]
    assert main(base + wrong) == 2
    assert "pass --backbone-args stride=8" in capsys.readouterr().err
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    assert main(base + ["--method", "sempart", "--method-args", f"checkpoint={junk}"]) == 2
    assert "is not a harness checkpoint" in capsys.readouterr().err


def _torchrun(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HARNESS_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "harness", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def test_two_cpu_processes_train_in_sync_and_shard_evaluation(tmp_path):
    out = tmp_path / "ddp"
    trained = _torchrun(["train", "--method", "sempart-crop", "--dataset", "synthetic", "--dataset-args",
                         "count=8,height=80,width=96", "--backbone", "effnet-lite0", "--backbone-args", "stride=8",
                         "--method-args", "image_size=64", "--epochs", "3", "--batch-size", "4", "--lr", "1e-3",
                         "--out", str(out), "--no-progress", "--device", "cpu"], tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    info = json.loads((out / "train_config.json").read_text())
    assert info["world_size"] == 2 and len(set(info["rank_weight_digests"])) == 1
    log = pd.read_csv(out / "losses.csv")
    assert log["total"].iloc[-1] < log["total"].iloc[0]

    run_args = ["run", "--method", "sempart-crop", "--method-args", f"checkpoint={out / 'checkpoint_last.pt'}",
                "--backbone-args", "stride=8", "--dataset", "synthetic", "--dataset-args", "count=5",
                "--no-progress", "--device", "cpu"]
    sharded = _torchrun(run_args + ["--out", str(tmp_path / "sharded")], tmp_path)
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    single = subprocess.run([sys.executable, "-m", "harness", *run_args, "--out", str(tmp_path / "single"),
                             "--cache-dir", str(tmp_path / "cache-single")],
                            capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    a = json.loads(next((tmp_path / "sharded").glob("*/results.json")).read_text())
    b = json.loads(next((tmp_path / "single").glob("*/results.json")).read_text())
    assert a["world_size"] == 2 and b["world_size"] == 1
    assert a["metrics"] == b["metrics"]
    rows_a = next((tmp_path / "sharded").glob("*/per_image.csv")).read_text()
    assert rows_a == next((tmp_path / "single").glob("*/per_image.csv")).read_text()


# ---- precision, aspect ratio, presets, segmentation-tricks heads ----------------------------------
def _effnet():
    backbone = get_registry().create("backbone", "effnet-lite0", {"stride": "8"})
    backbone.load("cpu")
    return backbone


class _Spy:
    """Wraps a backbone; records the input shapes and whether autocast was on in features()."""

    def __init__(self, backbone):
        self.inner, self.calls = backbone, []
        self.name, self.stride, self.feature_dim = backbone.name, backbone.stride, backbone.feature_dim

    def load(self, device):
        self.inner.load(device)

    def identity(self):
        return self.inner.identity()

    @property
    def weights_digest(self):
        return self.inner.weights_digest

    def features(self, images):
        self.calls.append((tuple(images.shape), torch.is_autocast_enabled("cpu"), images.dtype))
        return self.inner.features(images)


def test_backbone_and_losses_stay_float32_under_autocast():
    method = get_registry().create("method", "sempart-crop", dict(TINY))
    spy = _Spy(_effnet())
    model = method.build_model(spy)
    images = torch.rand(2, 3, 64, 64)
    plain = method.training_losses(model, spy, {"image": images}, torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the CPU stand-in for the trainer's CUDA autocast
        under = method.training_losses(model, spy, {"image": images}, torch.Generator().manual_seed(0))
    assert all(not autocast and dtype == torch.float32 for _, autocast, dtype in spy.calls)
    assert all(v.dtype == torch.float32 for v in under.values())
    # the head ran in bfloat16 under autocast, so terms differ a little; with the head in float32
    # (preset=segtricks) nothing does
    seg = get_registry().create("method", "sempart-crop", {**TINY, "preset": "segtricks"})
    plain = seg.training_losses(model, spy, {"image": images}, torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = seg.training_losses(model, spy, {"image": images}, torch.Generator().manual_seed(0))
    assert {k: v.item() for k, v in under.items()} == {k: v.item() for k, v in plain.items()}


def test_evaluation_keeps_the_aspect_ratio(trained):
    method = get_registry().create("method", "sempart", {"checkpoint": str(trained / "checkpoint_last.pt")})
    spy = _Spy(_effnet())
    method.setup(RunContext(device="cpu", backbone=spy, batch_size=2))  # two images per backbone call
    dataset = get_registry().create("dataset", "synthetic", {"count": "2", "height": "90", "width": "150"})
    samples = [dataset.load(i).without_labels() for i in dataset.ids()]
    preds = method.predict_batch(samples)
    assert spy.calls[0][0] == (2, 3, 64, 104)  # shorter side 64 (the training size), 106.7 -> 104
    assert all(p.mask.shape == (90, 150) for p in preds)
    assert method.cacheable


def test_segtricks_preset_squares_the_input_and_decides_polarity_per_batch(trained):
    method = get_registry().create("method", "sempart", {"checkpoint": str(trained / "checkpoint_last.pt"),
                                                         "preset": "segtricks"})
    spy = _Spy(_effnet())
    method.setup(RunContext(device="cpu", backbone=spy, batch_size=3))
    assert method.polarity == "batch" and not method.cacheable
    dataset = get_registry().create("dataset", "synthetic", {"count": "3", "height": "90", "width": "150"})
    samples = [dataset.load(i).without_labels() for i in dataset.ids()]
    batch = method.predict_batch(samples)
    assert spy.calls[0][0] == (3, 3, 64, 64) and all(p.mask.shape == (90, 150) for p in batch)
    alone = method.predict_batch(samples[:1])  # batch statistics: another batch, another mask
    assert not np.allclose(alone[0].mask, batch[0].mask, atol=1e-4)
    fixed = get_registry().create("method", "sempart", {"checkpoint": str(trained / "checkpoint_last.pt"),
                                                        "preset": "segtricks", "polarity": "-1"})
    assert fixed.polarity_rule() == -1


def test_segtricks_preset_trains(tmp_path):
    out = _train(tmp_path / "seg", method="sempart-crop", epochs=1, method_args={**TINY, "preset": "segtricks"})
    log = pd.read_csv(out / "losses.csv")
    assert np.isfinite(log["total"]).all() and log["crop_mse"].iloc[0] > 0


def _segtricks_head_file(path: Path, state=None) -> Path:
    """A head in segmentation-tricks' layout ({'segmenter_state_dict': ...}), random values."""
    from harness.methods.sempart_model import SempartHead

    torch.manual_seed(0)
    ours = SempartHead(384, 8).state_dict()
    rename = {"project.": "conv_input.", "coarse_out.": "conv_coarse.", "fine_out.": "conv_final.", "blocks.": "layers."}
    layer = {"attn_norm.": "0.norm.", "attn.qkv.": "0.fn.to_qkv.", "attn.proj.": "0.fn.to_out.0.",
             "mlp_norm.": "1.norm.", "mlp_in.": "1.fn.net.0.", "mlp_out.": "1.fn.net.3."}
    theirs = {}
    for key, value in ours.items():
        if key.startswith("encoder."):
            _, i, rest = key.split(".", 2)
            part = next(p for p in layer if rest.startswith(p))
            theirs[f"inp_transformer.layers.{i}.{layer[part]}{rest[len(part):]}"] = value
        else:
            part = next(p for p in rename if key.startswith(p))
            theirs[rename[part] + key[len(part):]] = value
    torch.save({"segmenter_state_dict": state if state is not None else theirs}, path)
    return path


def test_a_segmentation_tricks_head_runs_through_harness_run(tmp_path):
    from harness.backbones.vit import random_official_state

    weights = tmp_path / "dino_vits8_random.pth"
    torch.save(random_official_state(384, 12, 8, grid=28, seed=0), weights)
    head = _segtricks_head_file(tmp_path / "segtricks_head.pth")
    base = ["run", "--method", "sempart", "--weights", str(weights), "--dataset", "synthetic",
            "--dataset-args", "count=2,height=40,width=56", "--no-progress", "--device", "cpu"]
    args = base + ["--method-args", f"checkpoint={head},image_size=32", "--out", str(tmp_path / "runs")]
    assert main(args) == 0
    results = json.loads(next((tmp_path / "runs").glob("*/results.json")).read_text())
    assert results["config"]["backbone"]["name"] == "dino-vits8"  # implied by the head's shapes
    backbone = get_registry().create("backbone", "dino-vits8", {"weights": str(weights)})
    backbone.load("cpu")
    method = get_registry().create("method", "sempart", {"checkpoint": str(head), "image_size": "32"})
    method.setup(RunContext(device="cpu", backbone=backbone))
    dataset = get_registry().create("dataset", "synthetic", {"count": "2", "height": "40", "width": "56"})
    assert results["metrics"]["iou"] == pytest.approx(_iou_by_hand(method, dataset), abs=1e-12)
    fixed = base + ["--method-args", f"checkpoint={head},image_size=32,polarity=1", "--out", str(tmp_path / "r2")]
    assert main(fixed) == 0


def test_segmentation_tricks_heads_that_do_not_fit_are_refused_in_one_line(tmp_path, capsys):
    from harness.backbones.vit import random_official_state

    weights = tmp_path / "dino_vits8_random.pth"
    torch.save(random_official_state(384, 12, 8, grid=28, seed=0), weights)
    good = torch.load(_segtricks_head_file(tmp_path / "good.pth"))["segmenter_state_dict"]
    base = ["run", "--method", "sempart", "--weights", str(weights), "--dataset", "synthetic", "--dataset-args",
            "count=1,height=40,width=56", "--no-progress", "--device", "cpu", "--out", str(tmp_path / "runs")]

    def run(state, *extra):
        path = _segtricks_head_file(tmp_path / "bad.pth", state)
        code = main(base + ["--method-args", f"checkpoint={path},image_size=32", *extra])
        return code, capsys.readouterr().err.strip().splitlines()[-1]

    code, err = run({**good, "extra.weight": torch.zeros(1)})
    assert code == 2 and "not a usable segmentation-tricks head: unknown segmentation-tricks head parameter 'extra.weight'" in err
    code, err = run({**good, "inp_transformer.layers.0.0.fn.to_qkv.weight": torch.zeros(192, 64)})
    assert code == 2 and "does not fit the Sempart head: wrong shapes encoder.0.attn.qkv.weight (192, 64) (expected (384, 64))" in err
    missing = {k: v for k, v in good.items() if not k.startswith("conv_coarse.")}
    code, err = run(missing)
    assert code == 2 and "missing coarse_out.bias, coarse_out.weight" in err
    code, err = run(good, "--backbone", "dino-vits16")
    assert code == 2 and "pass --backbone dino-vits8" in err


def test_a_checkpoint_of_the_previous_head_is_refused(trained, tmp_path, capsys):
    from harness.training.checkpoint import save_checkpoint

    ckpt = load_checkpoint(trained / "checkpoint_last.pt", ("sempart",))
    ckpt["method_version"] = "1"
    old = save_checkpoint(tmp_path / "old.pt", {k: v for k, v in ckpt.items() if k not in ("format", "format_version")})
    args = ["run", "--method", "sempart", "--method-args", f"checkpoint={old}", "--dataset", "synthetic",
            "--dataset-args", "count=1", "--out", str(tmp_path / "runs"), "--no-progress", "--device", "cpu"]
    assert main(args) == 2
    assert "head of version 1; this harness's head is version 2" in capsys.readouterr().err
