"""Checkpoints: read with weights_only=True (a pickled callable is refused and never run), written
with plain values only, and identified by the sha256 of their bytes (a copy elsewhere re-uses the
cached masks; an edit that keeps size and modification time does not).

Small on purpose: Sempart on EfficientNet-Lite0 at stride 8, 32 px, four synthetic images.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.cli import main
from harness.errors import HarnessError
from harness.registry import get_registry
from harness.training.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from harness.training.trainer import TrainSpec, train

DATA = ["--dataset", "synthetic", "--dataset-args", "count=4,height=40,width=56"]


class _RunsAShellCommand:
    """Unpickling this calls ``os.system(command)``: what a hostile checkpoint would do."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ckpt") / "sempart"
    train(TrainSpec(method="sempart", dataset="synthetic", dataset_args={"count": "4", "height": "40", "width": "56"},
                    method_args={"image_size": "32"}, epochs=1, batch_size=2, out=out, progress=False, device="cpu",
                    backbone="effnet-lite0", backbone_args={"stride": "8"}))
    return out / "checkpoint_last.pt"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _evaluate(checkpoint: Path, out: Path, capsys) -> dict:
    code = main(["run", "--method", "sempart", "--method-args", f"checkpoint={checkpoint}", *DATA,
                 "--out", str(out), "--no-progress", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    return json.loads(next(out.glob("*/results.json")).read_text())


# ---- unsafe files ------------------------------------------------------------------------------
def _hostile(tmp_path: Path, name: str, legacy: bool) -> tuple[Path, Path]:
    """A checkpoint-shaped file whose unpickling would create ``marker``."""
    marker = tmp_path / f"{name}.ran"
    payload = {"format": "harness-checkpoint", "format_version": 1, "method": "sempart", "backbone": "effnet-lite0",
               "model": {}, "extra": _RunsAShellCommand(f"touch {marker}")}
    path = tmp_path / f"{name}.pt"
    if legacy:  # a plain pickle (torch.load's legacy format) with the GLOBAL opcode torch reports by name
        path.write_bytes(pickle.dumps(payload, protocol=2))
    else:
        torch.save(payload, path)
    return path, marker


@pytest.mark.parametrize("legacy", [False, True], ids=["torch-zip", "plain-pickle"])
@pytest.mark.parametrize("method", ["sempart", "sempart-crop", "selfmask"])
def test_a_checkpoint_that_pickles_a_callable_is_refused_and_never_run(tmp_path, capsys, method, legacy):
    path, marker = _hostile(tmp_path, "hostile", legacy)
    code = main(["run", "--method", method, "--method-args", f"checkpoint={path}", *DATA,
                 "--out", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].endswith(f"checkpoint {path} is refused: it pickles the Python object posix.system, not only tensors "
                           f"and plain values, and loading it could run code; nothing in it was run. Use a checkpoint "
                           f"written by `harness train`, or re-save the state dict alone")
    assert not marker.exists()  # os.system was never called
    assert not (tmp_path / "runs").exists() and not list((tmp_path / "cache").rglob("*.entry"))


def test_resuming_from_a_hostile_checkpoint_is_refused_and_never_run(tmp_path, capsys):
    out = tmp_path / "train"
    out.mkdir()
    path, marker = _hostile(tmp_path, "hostile", legacy=False)
    shutil.copy(path, out / "checkpoint_last.pt")
    code = main(["train", "--method", "sempart", *DATA, "--backbone", "effnet-lite0", "--backbone-args", "stride=8",
                 "--method-args", "image_size=32", "--epochs", "1", "--batch-size", "2", "--out", str(out),
                 "--resume", "--no-progress", "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and f"checkpoint {out / 'checkpoint_last.pt'} is refused" in err[0], err
    assert not marker.exists()
    with pytest.raises(HarnessError, match="pickles the Python object posix.system"):
        load_checkpoint(path)
    assert not marker.exists()


def test_junk_and_missing_files_are_still_told_apart(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(HarnessError, match=rf"^{junk} is not a harness checkpoint \(it cannot be loaded: UnpicklingError\)"):
        load_checkpoint(junk)
    with pytest.raises(HarnessError, match=rf"^checkpoint {tmp_path / 'none.pt'} does not exist$"):
        load_checkpoint(tmp_path / "none.pt")


def test_checkpoints_hold_plain_values_only(tmp_path):
    with pytest.raises(TypeError, match=r"checkpoint\['history'\]\[0\]\['loss'\] is a numpy.float64"):
        save_checkpoint(tmp_path / "a.pt", {"history": [{"loss": np.float64(0.5)}]})
    with pytest.raises(TypeError, match=r"checkpoint\['extra'\] is a \S*_RunsAShellCommand; checkpoints hold tensors and plain values only"):
        save_checkpoint(tmp_path / "b.pt", {"extra": _RunsAShellCommand("true")})
    assert not list(tmp_path.iterdir())  # nothing written
    saved = save_checkpoint(tmp_path / "c.pt", {"model": {"w": torch.ones(2)}, "optimizer": {"state": {0: {"step": 3}}},
                                                "betas": (0.9, 0.99), "note": None})
    payload, digest = read_checkpoint(saved)
    assert payload["optimizer"]["state"][0]["step"] == 3 and payload["betas"] == (0.9, 0.99)
    assert torch.equal(payload["model"]["w"], torch.ones(2)) and digest == _sha256(saved)


def test_a_trained_checkpoint_loads_with_weights_only(trained):
    payload = torch.load(trained, map_location="cpu", weights_only=True)  # torch's own strict reader
    assert payload["format"] == "harness-checkpoint" and payload["method"] == "sempart"
    assert payload["polarity"] in (1, -1) and isinstance(payload["optimizer"]["state"][0]["exp_avg"], torch.Tensor)


# ---- content digests ---------------------------------------------------------------------------
def test_the_cache_token_is_the_sha256_of_the_bytes(trained, tmp_path):
    method = get_registry().create("method", "sempart", {"checkpoint": str(trained)})
    digest = _sha256(trained)
    assert method.cache_token() == {"checkpoint": digest}
    assert method.identity()["config"]["checkpoint"] == f"sha256:{digest}"  # not the path
    copy = tmp_path / "elsewhere" / "renamed.pt"
    copy.parent.mkdir()
    shutil.copy(trained, copy)
    other = get_registry().create("method", "sempart", {"checkpoint": str(copy)})
    assert other.identity() == method.identity() and other.cache_token() == method.cache_token()


def test_a_copy_elsewhere_hits_the_mask_cache_and_an_edit_with_the_same_size_and_mtime_does_not(
        trained, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    original = tmp_path / "a" / "checkpoint.pt"
    original.parent.mkdir()
    payload = torch.load(trained, map_location="cpu", weights_only=True)
    torch.save(payload, original)  # torch.save's layout of this payload, so that the edit below keeps the size
    first = _evaluate(original, tmp_path / "runs1", capsys)
    assert first["counts"]["n_computed"] == 4 and first["counts"]["n_cached"] == 0

    copy = tmp_path / "b" / "renamed.pt"
    copy.parent.mkdir()
    shutil.copy(original, copy)
    second = _evaluate(copy, tmp_path / "runs2", capsys)
    assert second["counts"]["n_computed"] == 0 and second["counts"]["n_cached"] == 4
    assert second["metrics"] == first["metrics"] and second["run"] == first["run"]

    # an edit that keeps the size and the modification time: the fine branch's output bias moves
    stat = original.stat()
    bias = next(k for k in payload["model"] if k.startswith("fine_out") and k.endswith("bias"))
    payload["model"][bias] = payload["model"][bias] + 3.0
    torch.save(payload, original)
    os.utime(original, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    after = original.stat()
    assert (after.st_size, after.st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    assert _sha256(original) != _sha256(copy)
    third = _evaluate(original, tmp_path / "runs3", capsys)
    assert third["counts"]["n_computed"] == 4 and third["counts"]["n_cached"] == 0  # no stale masks
    assert third["run"] != first["run"]
    rows1 = (tmp_path / "runs1" / first["run"] / "per_image.csv").read_text()
    rows3 = (tmp_path / "runs3" / third["run"] / "per_image.csv").read_text()
    assert rows1 != rows3  # the edited head predicts other masks, and they were scored
