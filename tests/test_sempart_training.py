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

import pandas as pd
import pytest
import torch

from harness.cli import main
from harness.errors import HarnessError
from harness.registry import get_registry
from harness.training.checkpoint import load_checkpoint
from harness.training.trainer import TrainSpec, train

TINY = {"image_size": "64"}
BACKBONE = dict(backbone="effnet-lite0", backbone_args={"stride": "8"})


def _train(out: Path, method: str = "sempart", epochs: int = 2, resume: bool = False, **kw) -> Path:
    spec = TrainSpec(method=method, dataset="synthetic", dataset_args={"count": "8", "height": "80", "width": "96"},
                     method_args=dict(TINY), epochs=epochs, batch_size=4, out=out, resume=resume, progress=False,
                     device="cpu", **BACKBONE, **kw)
    return train(spec)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    return _train(tmp_path_factory.mktemp("sempart") / "run", epochs=2)


def test_checkpoint_holds_model_optimizer_polarity_and_provenance(trained):
    ckpt = load_checkpoint(trained / "checkpoint_last.pt", ("sempart",))
    assert ckpt["epoch"] == 2 and ckpt["backbone"] == "effnet-lite0" and len(ckpt["weights_digest"]) == 64
    assert ckpt["polarity"] in (1, -1) and 0 <= ckpt["polarity_border_mean"] <= 1
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
    assert 0 <= results["metrics"]["iou"] <= 1


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
