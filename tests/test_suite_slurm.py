"""The Slurm launcher, run through submitit's LocalExecutor (real subprocesses, real harness
commands; no Slurm and no mocks): dependencies, failures, the state file, the errors."""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytest.importorskip("submitit")

from harness.cli import main  # noqa: E402
from harness.errors import HarnessError  # noqa: E402
from harness.suites.slurm import STATE_FILE, SlurmLauncher  # noqa: E402
from suite_cases import SYNTH, TRAIN  # noqa: E402


@dataclass
class Job:
    name: str
    argv: list[str]
    kind: str = "run"
    depends_on: list[str] = field(default_factory=list)
    done: bool = False


def _run_argv(out: Path, name: str, count: int = 4) -> list[str]:
    return ["run", "--method", "center-prior", "--dataset", "synthetic", "--dataset-args", f"count={count}",
            "--out", str(out), "--name", name, "--no-progress", "--workers", "0"]


def _results(out: Path, name: str) -> dict:
    return json.loads((out / name / "results.json").read_text())


@pytest.fixture
def launched(tmp_path, monkeypatch, capsys):
    """One local launch: a -> b, and bad (exit status 2) -> after_bad."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    runs = tmp_path / "runs"
    jobs = [
        Job("a", _run_argv(runs, "a")),
        Job("b", _run_argv(runs, "b", count=3), depends_on=["a"]),
        Job("bad", ["run", "--method", "no-such-method", "--dataset", "synthetic", "--out", str(runs)]),
        Job("after_bad", _run_argv(runs, "after_bad"), depends_on=["bad"]),
        Job("finished", _run_argv(runs, "finished"), done=True),
    ]
    launcher = SlurmLauncher(gpus_per_job=0, timeout_min=5, executor="local")
    statuses = launcher.launch(jobs, tmp_path / "suite")
    return launcher, jobs, statuses, runs, tmp_path / "suite" / "slurm", capsys.readouterr().out


def test_local_launch_runs_jobs_in_dependency_order_and_reports_failures(launched, tmp_path):
    launcher, jobs, statuses, runs, folder, printed = launched
    assert "bad: FAILED: harness run exited with status 2 (log: " in printed
    assert "after_bad: not submitted, bad did not finish" in printed
    assert statuses["a"] == "done" and statuses["b"] == "done"
    assert statuses["finished"] == "skipped" and not (runs / "finished").exists()
    assert statuses["bad"].startswith("failed: ") and "exited with status 2" in statuses["bad"]
    assert statuses["after_bad"] == "blocked"
    assert not (runs / "after_bad").exists()

    # b was submitted after a had written its results
    state = json.loads((folder / STATE_FILE).read_text())["jobs"]
    b_submitted = Path(state["b"]["logs"].replace("%j", state["b"]["job_id"])) / f"{state['b']['job_id']}_submitted.pkl"
    assert (runs / "a" / "results.json").stat().st_mtime_ns <= b_submitted.stat().st_mtime_ns
    assert _results(runs, "a")["created"] <= _results(runs, "b")["created"]
    assert set(state) == {"a", "b", "bad"} and state["a"]["outcome"] == "done"

    # the jobs computed what a direct harness call computes
    assert main(_run_argv(tmp_path / "direct", "a")) == 0
    assert _results(runs, "a")["metrics"] == _results(tmp_path / "direct", "a")["metrics"]
    assert _results(runs, "a")["counts"]["images"] == 4 and _results(runs, "b")["counts"]["images"] == 3

    # a second launch reports the finished jobs, resubmits only the failed one
    again = launcher.launch(jobs, tmp_path / "suite")
    state2 = json.loads((folder / STATE_FILE).read_text())["jobs"]
    assert again["a"] == "done" and again["b"] == "done"
    assert state2["a"]["job_id"] == state["a"]["job_id"] and state2["b"]["job_id"] == state["b"]["job_id"]
    assert again["bad"].startswith("failed: ") and state2["bad"]["job_id"] != state["bad"]["job_id"]
    assert again["after_bad"] == "blocked"


def test_changed_arguments_are_a_new_job(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    runs = tmp_path / "runs"
    launcher = SlurmLauncher(folder=tmp_path / "logs", gpus_per_job=0, timeout_min=5, executor="debug")
    assert launcher.launch([Job("a", _run_argv(runs, "a", count=2))], tmp_path) == {"a": "done"}
    first = json.loads((tmp_path / "logs" / STATE_FILE).read_text())["jobs"]["a"]
    assert launcher.launch([Job("a", _run_argv(runs, "a", count=2))], tmp_path) == {"a": "done"}
    assert json.loads((tmp_path / "logs" / STATE_FILE).read_text())["jobs"]["a"] == first
    # a dependency the suite runner left out (done before) is no dependency
    moved = Job("a", _run_argv(runs, "a2", count=2), depends_on=["earlier"])
    assert launcher.launch([moved], tmp_path) == {"a": "done"}
    assert (runs / "a2" / "results.json").exists()


def test_slurm_executor_without_sbatch_says_use_the_local_launcher(tmp_path, monkeypatch):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(HarnessError, match=r"sbatch.*not found on PATH.*--launcher local"):
        SlurmLauncher(gpus_per_job=1, timeout_min=5)


def test_without_submitit_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit raises ImportError
    with pytest.raises(HarnessError, match=r"pip install seg-harness\[slurm\]"):
        SlurmLauncher(gpus_per_job=1, executor="local")


def test_jobs_out_of_dependency_order_are_refused(tmp_path):
    launcher = SlurmLauncher(gpus_per_job=0, executor="debug")
    jobs = [Job("b", ["list"], depends_on=["a"]), Job("a", ["list"])]
    with pytest.raises(HarnessError, match="dependency order"):
        launcher.launch(jobs, tmp_path)


def test_two_gpus_per_job_shard_a_run_over_two_tasks(tmp_path, monkeypatch):
    """gpus_per_job=2: two submitit tasks, each exporting RANK/WORLD_SIZE/LOCAL_RANK/MASTER_*,
    which harness.distributed reads (gloo on the CPU): rank 0 writes the run, with the
    metrics of a one-process run."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    runs = tmp_path / "runs"
    launcher = SlurmLauncher(gpus_per_job=2, timeout_min=5, executor="local")
    assert launcher.launch([Job("a", _run_argv(runs, "a", count=5))], tmp_path / "suite") == {"a": "done"}
    sharded = _results(runs, "a")
    assert sharded["world_size"] == 2 and sharded["counts"]["images"] == 5
    assert main(_run_argv(tmp_path / "direct", "a", count=5)) == 0
    assert sharded["metrics"] == _results(tmp_path / "direct", "a")["metrics"]
    assert "RANK" not in os.environ  # exported in the tasks only


@pytest.mark.slow
def test_training_job_runs_one_task_per_gpu_under_torch_distributed(tmp_path, monkeypatch):
    """A training job over two tasks trains under DDP with world size 2 (gloo on the CPU)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    out = tmp_path / "train"
    argv = ["train", "--method", "sempart-crop", "--dataset", "synthetic", "--dataset-args",
            "count=4,height=64,width=64", "--backbone", "effnet-lite0", "--backbone-args", "stride=8",
            "--method-args", "image_size=64", "--epochs", "1", "--batch-size", "4",
            "--out", str(out), "--no-progress", "--device", "cpu"]
    launcher = SlurmLauncher(gpus_per_job=2, timeout_min=5, executor="local")
    statuses = launcher.launch([Job("train", argv, kind="train")], tmp_path / "suite")
    assert statuses == {"train": "done"}, statuses
    assert json.loads((out / "train_config.json").read_text())["world_size"] == 2


# ---- the sbatch side, against stand-in Slurm commands (no cluster here) ---------------------------
_FAKE = {
    "sbatch": 'n=$(cat "$FAKE_SLURM/counter" 2>/dev/null || echo 100); n=$((n+1)); echo $n > "$FAKE_SLURM/counter"\n'
              'cp "$1" "$FAKE_SLURM/$n.sh"; echo "Submitted batch job $n"\n',
    "srun": "exit 0\n",
    "sacct": 'printf "JobID|State|NodeList\\n"; cat "$FAKE_SLURM/sacct.txt" 2>/dev/null; exit 0\n',
    "scancel": 'echo "$@" >> "$FAKE_SLURM/scancel.log"\n',
}


def test_sbatch_scripts_carry_gpus_tasks_and_afterok_dependencies(tmp_path, monkeypatch):
    fake = tmp_path / "fake-slurm"
    fake.mkdir()
    for name, body in _FAKE.items():
        (fake / name).write_text("#!/bin/sh\n" + body)
        (fake / name).chmod(0o755)
    monkeypatch.setenv("FAKE_SLURM", str(fake))
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    jobs = [Job("teacher", ["train", "--method", "sempart"], kind="train"),
            Job("eval", ["run", "--method", "sempart"], depends_on=["teacher"]),
            Job("baseline", ["run", "--method", "center-prior"], done=True)]
    launcher = SlurmLauncher(gpus_per_job=2, partition="gpu", timeout_min=90,
                             slurm_args={"account": "seg"}, cpus_per_task=8)
    assert launcher.launch(jobs, tmp_path / "suite") == {
        "teacher": "submitted", "eval": "submitted", "baseline": "skipped"}
    assert launcher.job_ids == {"teacher": "101", "eval": "102"}
    teacher, evaluation = (fake / "101.sh").read_text(), (fake / "102.sh").read_text()
    for line in ("--gpus-per-node=2", "--ntasks-per-node=2", "--partition=gpu", "--time=90",
                 "--account=seg", "--cpus-per-task=8", "--kill-on-invalid-dep=yes"):
        assert f"#SBATCH {line}\n" in teacher and f"#SBATCH {line}\n" in evaluation
    assert "--dependency" not in teacher and "#SBATCH --dependency=afterok:101\n" in evaluation

    # called again: queued jobs are reported, not resubmitted
    (fake / "sacct.txt").write_text("101|RUNNING|n1\n102|PENDING|\n")
    assert launcher.launch(jobs, tmp_path / "suite")["eval"] == "pending"
    assert SlurmLauncher(gpus_per_job=2).launch(jobs, tmp_path / "suite") == {
        "teacher": "running", "eval": "pending", "baseline": "skipped"}
    assert not (fake / "103.sh").exists()

    # the teacher failed: it is submitted again, and its still queued dependent (waiting on
    # the old id) is cancelled and submitted again after the new one
    (fake / "sacct.txt").write_text("101|FAILED|n1\n102|PENDING|\n")
    again = SlurmLauncher(gpus_per_job=2).launch(jobs, tmp_path / "suite")
    assert again["teacher"] == "submitted" and again["eval"] == "submitted"
    assert (fake / "scancel.log").read_text().split() == ["102"]
    assert "#SBATCH --dependency=afterok:103\n" in (fake / "104.sh").read_text()
    state = json.loads((tmp_path / "suite" / "slurm" / STATE_FILE).read_text())["jobs"]
    assert {name: entry["job_id"] for name, entry in state.items()} == {"teacher": "103", "eval": "104"}

    # the suite changed a queued job's arguments: the old submission is cancelled
    (fake / "sacct.txt").write_text("103|RUNNING|n1\n104|PENDING|\n")
    jobs[1].argv = ["run", "--method", "sempart", "--limit", "5"]
    assert SlurmLauncher(gpus_per_job=2).launch(jobs, tmp_path / "suite") == {
        "teacher": "running", "eval": "submitted", "baseline": "skipped"}
    assert (fake / "scancel.log").read_text().split() == ["102", "104"]
    assert "#SBATCH --dependency=afterok:103\n" in (fake / "105.sh").read_text()


# ---- a whole suite through the submitit launcher (its local executor) --------------------------

SUITE = TRAIN.replace("EPOCHS", "1") + f"""
[[run]]
name = "prior-gf"
method = "center-prior"
dataset = "synthetic"
{SYNTH}
post = ["gf"]
"""


@pytest.mark.slow
def test_a_small_suite_runs_through_the_submitit_launcher_and_resumes(tmp_path, monkeypatch):
    """Training, the run that evaluates its checkpoint (a Slurm-style dependency) and an
    independent run, each a submitit job on the local executor; then the report; then a second
    call submits nothing."""
    import io

    from harness.suites.plan import make_plan
    from harness.suites.run import run_suite
    from harness.suites.spec import load_suite

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    suite = tmp_path / "small.toml"
    suite.write_text(SUITE)
    out = tmp_path / "out"
    options = {"executor": "local", "gpus_per_job": 0, "timeout_min": 10}
    said = io.StringIO()
    code = run_suite(make_plan(load_suite(str(suite)), out), launcher="slurm", launcher_options=options, stream=said)
    assert code == 0, said.getvalue()
    trained = out / "train" / "train-sempart" / "checkpoint_last.pt"
    evaluated = _results(out / "runs", "sempart")
    assert evaluated["spec"]["method_args"]["checkpoint"] == str(trained)
    # the evaluation ran after its training had written the checkpoint it names
    assert (out / "runs" / "sempart" / "results.json").stat().st_mtime_ns > trained.stat().st_mtime_ns
    assert _results(out / "runs", "prior-gf")["metrics"]["n_images"] == 4
    assert (out / "report.md").is_file() and "## Saliency" in (out / "report.md").read_text()
    state = json.loads((out / "slurm" / STATE_FILE).read_text())
    assert set(state["jobs"]) == {"train-sempart", "sempart", "prior-gf"}

    again = io.StringIO()
    assert run_suite(make_plan(load_suite(str(suite)), out), launcher="slurm", launcher_options=options,
                     stream=again) == 0
    assert "all 3 jobs are done, nothing to run" in again.getvalue()
