"""Faults: a run killed at a random point resumes to the same results; two runs at once on one
cache both finish with identical results; the same command twice gives byte-identical metrics."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

RUN = ["run", "--method", "center-prior", "--post", "bs", "--dataset", "synthetic", "--dataset-args", "count=24",
       "--no-progress", "--name", "fixed"]


def _start(tmp_path: Path, cache: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "HARNESS_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "harness", *RUN, "--out", str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _count(folder: Path) -> int:
    return len(list(folder.rglob("*.entry"))) if folder.exists() else 0


def _results(out: Path) -> tuple[dict, str]:
    run_dir = out / "fixed"
    return json.loads((run_dir / "results.json").read_text())["metrics"], (run_dir / "per_image.csv").read_text()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reference")
    proc = _start(tmp, tmp / "cache", tmp / "out")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return _results(tmp / "out")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigkill_at_a_random_point_then_resume(tmp_path, reference, seed):
    cache, out = tmp_path / "cache", tmp_path / "out"
    # kill once a random number of masks is done (a point in the work, not in wall time)
    kill_after = int(np.random.default_rng(seed).integers(1, 20))
    proc = _start(tmp_path, cache, out)
    deadline = time.monotonic() + 120
    while _count(cache / "masks") < kill_after and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert not (out / "fixed" / "results.json").exists()  # killed midway
    done_before = _count(cache / "masks")
    assert kill_after <= done_before < 24
    resumed = _start(tmp_path, cache, out)
    stdout, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert f"({done_before} masks from the cache)" in stdout  # nothing done before is redone
    assert _results(out) == reference


def test_two_runs_at_once_on_the_same_cache(tmp_path, reference):
    cache = tmp_path / "cache"
    first, second = _start(tmp_path, cache, tmp_path / "a"), _start(tmp_path, cache, tmp_path / "b")
    for proc in (first, second):
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    assert _results(tmp_path / "a") == reference and _results(tmp_path / "b") == reference
    leftovers = [p for p in cache.rglob("*") if p.is_file() and p.suffix != ".entry"]
    assert leftovers == []  # no temporary files left behind


@pytest.mark.parametrize(
    "method",
    [["--method", "center-prior"],
     ["--method", "tokencut", "--backbone", "effnet-lite0"],
     ["--method", "lost", "--backbone", "effnet-lite0"],
     ["--method", "deep-spectral", "--backbone", "effnet-lite0"]],
    ids=["center-prior", "tokencut", "lost", "deep-spectral"],
)
def test_same_command_twice_gives_byte_identical_metrics(tmp_path, method):
    outputs = []
    for k in range(2):
        env = {**os.environ, "HARNESS_CACHE": str(tmp_path / f"cache{k}")}  # recompute, do not re-read
        cmd = [sys.executable, "-m", "harness", "run", *method, "--dataset", "synthetic", "--dataset-args", "count=4",
               "--out", str(tmp_path / f"out{k}"), "--no-progress", "--seed", "7"]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        results = json.loads(next((tmp_path / f"out{k}").glob("*/results.json")).read_text())
        outputs.append(json.dumps(results["metrics"], sort_keys=True))
    assert outputs[0] == outputs[1]
