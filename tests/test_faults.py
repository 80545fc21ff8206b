"""Faults: a run killed (SIGKILL) at a chosen point of its work resumes to the same results;
two runs at once on one cache both finish with identical results; the same command twice
gives byte-identical metrics."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

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


# ``python -m harness`` with os.replace wrapped: SIGKILL (no clean-up runs) once KILL_AFTER mask
# entries are in place ("after"), or with the next entry's temporary file written but not yet
# renamed ("during"). A point in the work, not in wall time, so the test knows what was done.
_KILLED_AT_A_POINT = """
import os, signal, sys
from pathlib import Path

masks = Path(os.environ["HARNESS_CACHE"]) / "masks"
kill_after, where = int(os.environ["KILL_AFTER"]), os.environ["KILL_WHERE"]
real_replace, done = os.replace, 0


def replace(src, dst, **kw):
    global done
    is_mask = masks in Path(dst).parents
    if is_mask and where == "during" and done == kill_after:
        os.kill(os.getpid(), signal.SIGKILL)
    real_replace(src, dst, **kw)
    done += is_mask
    if is_mask and where == "after" and done == kill_after:
        os.kill(os.getpid(), signal.SIGKILL)


os.replace = replace
from harness.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("where, kill_after", [("after", 1), ("after", 13), ("during", 7)])
def test_sigkill_at_a_point_in_the_work_then_resume(tmp_path, reference, where, kill_after):
    """In one process (--workers 0), so that the point is exact; tests/test_pipelined_runner.py
    kills a run with workers."""
    cache, out = tmp_path / "cache", tmp_path / "out"
    env = {**os.environ, "HARNESS_CACHE": str(cache), "OMP_NUM_THREADS": "1",
           "KILL_AFTER": str(kill_after), "KILL_WHERE": where}
    killed = subprocess.run([sys.executable, "-c", _KILLED_AT_A_POINT, *RUN, "--workers", "0", "--out", str(out)],
                            env=env,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (out / "fixed" / "results.json").exists() and not (out / "fixed").exists()  # killed midway
    assert _count(cache / "masks") == kill_after  # exactly the entries renamed into place
    temporaries = [p for p in (cache / "masks").rglob("*") if p.is_file() and p.suffix != ".entry"]
    assert len(temporaries) == (1 if where == "during" else 0)  # the half-done write is a hidden temporary
    resumed = _start(tmp_path, cache, out)
    stdout, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert f"({kill_after} masks from the cache)" in stdout  # nothing done before is redone, nothing half-done read
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
