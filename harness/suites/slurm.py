"""The Slurm launcher of ``harness suite run --launcher slurm``, through submitit.

Each suite job that is not done becomes one submitit job, which calls
``harness.cli.main(job.argv)`` and raises when it returns non-zero (so Slurm marks the job
failed). Dependencies between suite jobs become Slurm dependencies (``afterok:<id>``, with
``--kill-on-invalid-dep=yes`` so that a job whose dependency failed is cancelled rather than
left pending forever).

With ``gpus_per_job`` > 1 a job runs one task per GPU, as under ``torchrun
--nproc_per_node=<gpus>``: each task exports RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
MASTER_ADDR and MASTER_PORT (``submitit.helpers.TorchDistributedEnvironment``) before calling
main, which is what ``harness.distributed`` reads; every task keeps all of the job's GPUs
visible and takes ``cuda:LOCAL_RANK``. Training jobs (``train``, ``distil``) train under DDP;
run jobs shard the images over the tasks and rank 0 writes the run (the metrics equal a
one-process run's).

``suite run`` can be called again to collect results: the submitted job ids are kept in
``<folder>/jobs.json``; a job whose previous submission is pending or running is reported,
not resubmitted; one that failed is resubmitted; one that completed is reported done.

The executors ``local`` and ``debug`` (submitit's LocalExecutor and DebugExecutor: tests, a
machine without Slurm) know no Slurm dependencies: there the launcher itself waits for a
job's dependencies to finish before submitting it, and ``launch`` returns when every job
has finished.
"""
from __future__ import annotations

import json
import logging
import re
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Protocol, Sequence, TextIO

from harness.errors import HarnessError
from harness.storage import atomic_write_json

log = logging.getLogger(__name__)

EXECUTORS = ("slurm", "local", "debug")
STATE_FILE = "jobs.json"
STATE_VERSION = 1
INSTALL_HINT = "pip install seg-harness[slurm]"

# sacct states (first word: "CANCELLED by 1234" is CANCELLED)
_PENDING = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "CONFIGURING"}
_RUNNING = {"RUNNING", "COMPLETING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "RESIZING", "STOPPED"}
_COMPLETED = {"COMPLETED"}
_FAIL_RE = re.compile(r"harness [^\n]* exited with status -?\d+")


class SuiteJob(Protocol):
    """What ``launch`` reads of a suite job (the suite runner's job objects)."""

    name: str
    kind: str
    argv: list[str]
    depends_on: list[str]
    done: bool


# --------------------------------------------------------------------------- inside the job


def run_harness(argv: Sequence[str]) -> int:
    """The function each submitit task runs: ``harness.cli.main(argv)``, raising on non-zero.

    In a job of more than one task, the torch distributed environment of this task is
    exported first (``harness.distributed`` reads it).
    """
    from harness.suites.launch import exit_status

    export_torch_distributed()
    command = " ".join(["harness", *argv[:1]])
    status = exit_status(argv)
    if status:
        raise RuntimeError(f"{command} exited with status {status}")
    return 0


def export_torch_distributed() -> dict[str, str]:
    """Export this submitit task's RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT.

    A no-op in a one-task job. CUDA_VISIBLE_DEVICES is left alone: each task sees all of
    the job's GPUs and ``harness.distributed.local_device`` picks ``cuda:LOCAL_RANK``.
    """
    import submitit

    try:
        env = submitit.JobEnvironment()
        num_tasks = env.num_tasks
    except RuntimeError:  # not inside a submitit job
        return {}
    if num_tasks <= 1:
        return {}
    dist = submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    return {
        "RANK": str(dist.rank), "WORLD_SIZE": str(dist.world_size), "LOCAL_RANK": str(dist.local_rank),
        "MASTER_ADDR": str(dist.master_addr), "MASTER_PORT": str(dist.master_port),
    }


# --------------------------------------------------------------------------- the launcher


def _require_submitit():
    try:
        import submitit
    except ImportError as exc:
        raise HarnessError(f"--launcher slurm needs submitit, which is not installed: {INSTALL_HINT} "
                           f"(or use --launcher local)") from exc
    return submitit


class SlurmLauncher:
    """Submit a suite's jobs to Slurm through submitit.

    Parameters
    ----------
    folder : path, optional
        Where submitit writes its pickles and logs (one folder per job id) and where the
        launcher keeps ``jobs.json``; default ``<suite_out>/slurm``.
    gpus_per_job : int
        GPUs per job (``--gpus-per-node``), one task per GPU under torch distributed.
    partition : str, optional
        The Slurm partition (default: the cluster's).
    timeout_min : int
        Time limit of each job, in minutes.
    executor : str
        ``"slurm"`` (default), or ``"local"`` / ``"debug"``: submitit's LocalExecutor /
        DebugExecutor, which run the jobs on this machine (``launch`` then waits for them).
    cpus_per_task : int, optional
        ``--cpus-per-task`` (default: the cluster's).
    slurm_args : dict, optional
        More sbatch options, e.g. ``{"account": "proj", "qos": "high", "constraint": "a100"}``.
    wait : bool
        With ``executor="slurm"``: wait until every submitted job has finished and report
        its outcome (the other executors always wait).
    stream : file, optional
        Where the one line per job goes (default: stdout).
    """

    def __init__(
        self,
        folder: str | Path | None = None,
        gpus_per_job: int = 1,
        partition: str | None = None,
        timeout_min: int = 24 * 60,
        executor: str = "slurm",
        *,
        cpus_per_task: int | None = None,
        slurm_args: dict[str, Any] | None = None,
        wait: bool = False,
        stream: TextIO | None = None,
    ) -> None:
        if executor not in EXECUTORS:
            raise HarnessError(f"unknown executor {executor!r}: one of {', '.join(EXECUTORS)}")
        if int(gpus_per_job) < 0:
            raise HarnessError(f"--gpus-per-job must be 0 or more, got {gpus_per_job}")
        if int(timeout_min) <= 0:
            raise HarnessError(f"--timeout must be positive, got {timeout_min}")
        self.folder = Path(folder) if folder is not None else None
        self.gpus_per_job = int(gpus_per_job)
        self.partition = partition
        self.timeout_min = int(timeout_min)
        self.executor = executor
        self.cpus_per_task = cpus_per_task
        self.slurm_args = dict(slurm_args or {})
        self.wait = bool(wait) or executor != "slurm"
        self.stream = stream
        self.job_ids: dict[str, str] = {}  # suite job name -> submitit job id, after launch
        self.check()

    def _say(self, text: str) -> None:
        print(text, file=self.stream or sys.stdout, flush=True)

    # ------------------------------------------------------------------ checks, executor

    def check(self) -> None:
        """Raise a clear ``HarnessError`` if submitit or (for Slurm) ``sbatch`` is missing."""
        _require_submitit()
        if self.executor == "slurm":
            missing = [tool for tool in ("sbatch", "srun", "sacct") if shutil.which(tool) is None]
            if "sbatch" in missing or "srun" in missing:
                raise HarnessError(
                    f"--launcher slurm: {' and '.join(t for t in missing if t != 'sacct')} not found on PATH: "
                    f"this machine is not a Slurm login node; run the suite here with --launcher local, "
                    f"or run this command on the cluster")

    def _logs_folder(self, folder: Path) -> Path:
        """submitit's folder pattern: ``<folder>/<job id>``; a local job's id is a process id,
        which the system reuses, so local launches each get a folder of their own."""
        if self.executor == "slurm":
            return folder / "%j"
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        return folder / f"{self.executor}-{stamp}" / "%j"

    @staticmethod
    def _entry_logs(folder: Path, entry: dict[str, Any]) -> Path:
        return Path(entry["logs"]) if entry.get("logs") else folder / "%j"

    def _make_executor(self, logs: Path):
        submitit = _require_submitit()
        try:
            executor = submitit.AutoExecutor(folder=logs, cluster=self.executor)
        except RuntimeError as exc:  # SlurmExecutor: "Could not detect srun"
            raise HarnessError(f"--launcher slurm: {exc}; use --launcher local on a machine without Slurm") from exc
        return executor

    def _parameters(self, job: SuiteJob, dependency_ids: list[str]) -> dict[str, Any]:
        tasks = max(1, self.gpus_per_job)  # one task per GPU
        params: dict[str, Any] = {
            "name": f"harness-{job.name}"[:100],
            "timeout_min": self.timeout_min,
            "tasks_per_node": tasks,
            "nodes": 1,
        }
        if self.gpus_per_job:  # no --gpus-per-node=0 line for a CPU job
            params["gpus_per_node"] = self.gpus_per_job
        if self.executor == "slurm":
            extra = {"kill-on-invalid-dep": "yes", **self.slurm_args}
            if dependency_ids:
                extra["dependency"] = "afterok:" + ":".join(dependency_ids)
            params["slurm_additional_parameters"] = extra
            if self.partition:
                params["slurm_partition"] = self.partition
            if self.cpus_per_task:
                params["cpus_per_task"] = int(self.cpus_per_task)
        return params

    # ------------------------------------------------------------------ state file

    def _state_path(self, folder: Path) -> Path:
        return folder / STATE_FILE

    def _load_state(self, folder: Path) -> dict[str, dict[str, Any]]:
        path = self._state_path(folder)
        if not path.exists():
            return {}
        try:
            data = json.loads(path.read_text())
            jobs = data["jobs"]
            if not isinstance(jobs, dict):
                raise TypeError("jobs is not an object")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise HarnessError(f"{path}: unreadable launcher state ({exc}); delete it to submit every job again "
                               f"(check first with squeue that none is still queued)") from exc
        return jobs

    def _save_state(self, folder: Path, jobs: dict[str, dict[str, Any]]) -> None:
        atomic_write_json(self._state_path(folder), {"version": STATE_VERSION, "jobs": jobs})

    # ------------------------------------------------------------------ job handles

    def _job_handle(self, folder: Path, entry: dict[str, Any]):
        """A submitit job object for a job id from the state file."""
        submitit = _require_submitit()
        tasks = list(range(int(entry.get("tasks", 1))))
        cls = submitit.SlurmJob if entry["executor"] == "slurm" else submitit.LocalJob
        return cls(self._entry_logs(folder, entry), str(entry["job_id"]), tasks=tasks)

    @staticmethod
    def _failure_reason(exc: BaseException, job: Any) -> str:
        text = str(exc)
        found = _FAIL_RE.findall(text)
        if found:
            reason = found[-1]
        else:
            lines = [line.strip() for line in text.splitlines() if line.strip() and not set(line.strip()) <= {"-"}]
            reason = lines[-1] if lines else type(exc).__name__
            if "has not produced any output" in text:
                state = re.search(r"\(state: ([^)]*)\)", text)
                reason = f"no result (state: {state.group(1)})" if state else "no result"
        reason = reason[:300]
        logfile = re.search(r"at paths:\s*- (\S+)", text)  # submitit's FailedJobError names the task's logs
        if logfile:
            return f"{reason} (log: {logfile.group(1)})"
        try:
            return f"{reason} (log: {job.paths.stderr})"
        except Exception:  # noqa: BLE001 - a job without log paths
            return reason

    def _outcome(self, job: Any) -> str:
        """Wait for a submitit job and say ``"done"`` or ``"failed: <reason>"``."""
        # exception() waits and returns the job's error instead of raising it (and, unlike
        # results(), does not open pdb on a DebugExecutor job's failure)
        try:
            error = job.exception()
        except Exception as exc:  # noqa: BLE001 - any failure of the job is reported, not raised
            error = exc
        return "done" if error is None else "failed: " + self._failure_reason(error, job)

    def _previous_status(self, folder: Path, entry: dict[str, Any], states: dict[str, str]) -> str:
        """What became of a previous submission: pending, running, done, failed: ..., unknown: ..."""
        outcome = entry.get("outcome")
        if outcome:
            return outcome
        job = self._job_handle(folder, entry)
        if entry["executor"] != "slurm":
            # local jobs are waited for by the launch that submits them; no outcome means
            # that launch was interrupted: a result pickle says how it ended, else resubmit
            if self._has_results(folder, entry):
                return self._outcome(job)
            return "failed: interrupted before it finished"
        state = states.get(str(entry["job_id"]), "UNKNOWN")
        if state in _PENDING:
            return "pending"
        if state in _RUNNING:
            return "running"
        if state in _COMPLETED:
            return self._outcome(job)
        if state == "UNKNOWN":
            if self._has_results(folder, entry):
                return self._outcome(job)
            return (f"unknown: sacct does not list Slurm job {entry['job_id']}; remove its entry from "
                    f"{self._state_path(folder)} to submit it again")
        return f"failed: Slurm state {state} (log: {self._log_path(folder, entry)})"

    def _task_paths(self, folder: Path, entry: dict[str, Any]) -> list[Any]:
        from submitit.core.utils import JobPaths

        return [JobPaths(self._entry_logs(folder, entry), job_id=str(entry["job_id"]), task_id=k)
                for k in range(int(entry.get("tasks", 1)))]

    def _has_results(self, folder: Path, entry: dict[str, Any]) -> bool:
        return all(paths.result_pickle.exists() for paths in self._task_paths(folder, entry))

    def _log_path(self, folder: Path, entry: dict[str, Any]) -> Path:
        return self._task_paths(folder, entry)[0].stderr

    def _slurm_states(self, folder: Path, entries: Iterable[dict[str, Any]]) -> dict[str, str]:
        """sacct states of the given Slurm job ids, in one sacct call."""
        entries = [e for e in entries if e.get("executor") == "slurm" and not e.get("outcome")]
        if not entries:
            return {}
        submitit = _require_submitit()
        jobs = [submitit.SlurmJob(self._entry_logs(folder, e), str(e["job_id"])) for e in entries]
        try:
            jobs[0].get_info(mode="force")  # one sacct call for every registered job
            return {job.job_id: str(job.watcher.get_state(job.job_id, mode="cache")).split()[0].upper()
                    for job in jobs}
        except Exception as exc:  # noqa: BLE001 - sacct missing or failing: every state unknown
            log.warning("could not query Slurm job states (%s)", exc)
            return {}

    # ------------------------------------------------------------------ launch

    def launch(self, jobs: Sequence[SuiteJob], suite_out: str | Path) -> dict[str, str]:
        """Submit every job not done (dependencies first); return job name -> status.

        Statuses: ``"skipped"`` (``job.done``: the suite runner found its outputs),
        ``"submitted"``, ``"pending"`` / ``"running"`` (a previous submission, not submitted
        again), ``"done"`` (finished with exit status 0), ``"failed: <reason>"``,
        ``"blocked"`` (a dependency failed: not submitted), ``"unknown: <reason>"``. One line
        per job is printed (job ids, reasons and log files).
        """
        self.check()
        folder = Path(self.folder) if self.folder is not None else Path(suite_out) / "slurm"
        folder.mkdir(parents=True, exist_ok=True)
        names = [job.name for job in jobs]
        for i, job in enumerate(jobs):
            if job.name in names[:i]:
                raise HarnessError(f"suite job {job.name!r} appears twice")
            for dep in job.depends_on:  # a dependency not in ``jobs`` is done (the runner left it out)
                if dep in names[i:]:
                    raise HarnessError(f"suite job {job.name!r} depends on {dep!r}, which comes after it "
                                       f"(jobs must come in dependency order)")

        logs = self._logs_folder(folder)
        executor = self._make_executor(logs)
        state = self._load_state(folder)
        current = {job.name: state.get(job.name) for job in jobs}
        current = {name: entry for name, entry in current.items()
                   if entry and entry.get("executor") == self.executor}
        states = self._slurm_states(folder, current.values()) if self.executor == "slurm" else {}

        statuses: dict[str, str] = {}
        handles: dict[str, Any] = {}  # jobs submitted now, or still queued from before
        submitted_now: set[str] = set()
        self.job_ids = {}
        width = len(str(len(jobs)))
        tags = {job.name: f"[{i:>{width}}/{len(jobs)}] {job.kind:<6} {job.name}" for i, job in enumerate(jobs, 1)}

        for job in jobs:
            name, tag = job.name, tags[job.name]
            if job.done:
                statuses[name] = "skipped"
                self._say(f"{tag}: done before, skipped")
                continue
            deps = [dep for dep in job.depends_on if dep in statuses]
            # the local executors know no Slurm dependencies: wait for those submitted now
            if self.executor != "slurm":
                for dep in deps:
                    if dep in handles and statuses[dep] == "submitted":
                        statuses[dep] = self._finish(folder, state, dep, handles[dep], tags[dep])
            blocked = [dep for dep in deps if statuses[dep].startswith(("failed", "unknown", "blocked"))]
            if blocked:
                statuses[name] = "blocked"
                self._say(f"{tag}: not submitted, {blocked[0]} did not finish")
                continue

            entry = current.get(name)
            redo_deps = [dep for dep in deps if dep in submitted_now]
            if entry and entry.get("argv") != list(job.argv):
                # the suite changed this job: a previous submission is another job, cancelled if queued
                if self._previous_status(folder, entry, states) in ("pending", "running"):
                    self._cancel(folder, entry, tag, "its arguments changed")
                entry = None
            if entry is not None:
                previous = self._previous_status(folder, entry, states)
                job_id = str(entry["job_id"])
                if previous == "done" and not redo_deps:
                    entry["outcome"] = "done"
                    statuses[name] = "done"
                    self.job_ids[name] = job_id
                    self._say(f"{tag}: finished ({self.executor} job {job_id})")
                    continue
                if previous in ("pending", "running") and not redo_deps:
                    statuses[name] = previous
                    handles[name] = self._job_handle(folder, entry)
                    self.job_ids[name] = job_id
                    self._say(f"{tag}: still {previous} ({self.executor} job {job_id}), not submitted again")
                    continue
                if previous.startswith("unknown") and not redo_deps:
                    statuses[name] = previous
                    self._say(f"{tag}: {previous}")
                    continue
                if previous in ("pending", "running"):
                    # a dependency was submitted again: this job still waits on the old id
                    self._cancel(folder, entry, tag, f"it waits on the previous {redo_deps[0]}")
                elif previous.startswith("failed"):
                    self._say(f"{tag}: {self.executor} job {job_id} {previous}; submitting it again")

            dependency_ids = [str(handles[dep].job_id) for dep in deps
                              if dep in handles and self.executor == "slurm"]
            params = self._parameters(job, dependency_ids)
            executor.update_parameters(**params)
            try:
                handle = executor.submit(run_harness, list(job.argv))
            except Exception as exc:  # noqa: BLE001 - sbatch refused it: report, go on
                lines = str(exc).strip().splitlines() or [type(exc).__name__]
                statuses[name] = f"failed: submission refused: {lines[-1][:300]}"
                state.pop(name, None)
                self._save_state(folder, state)
                self._say(f"{tag}: {statuses[name]}")
                continue
            handles[name] = handle
            submitted_now.add(name)
            statuses[name] = "submitted"
            self.job_ids[name] = str(handle.job_id)
            state[name] = {
                "job_id": str(handle.job_id),
                "executor": self.executor,
                "logs": str(logs),
                "kind": job.kind,
                "argv": list(job.argv),
                "tasks": int(params["tasks_per_node"]),
                "depends_on": list(job.depends_on),
                "dependency_ids": dependency_ids,
                "submitted": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
            self._save_state(folder, state)
            after = f", after {', '.join(dependency_ids)}" if dependency_ids else ""
            self._say(f"{tag}: submitted as {self.executor} job {handle.job_id} ({params['tasks_per_node']} tasks, "
                      f"{self.gpus_per_job} GPUs{after})")

        if self.wait:
            for name in list(statuses):
                if name in handles and statuses[name] in ("submitted", "pending", "running"):
                    statuses[name] = self._finish(folder, state, name, handles[name], tags[name])
        self._save_state(folder, state)
        return statuses

    def _cancel(self, folder: Path, entry: dict[str, Any], tag: str, why: str) -> None:
        self._say(f"{tag}: cancelling {self.executor} job {entry['job_id']}: {why}")
        try:
            self._job_handle(folder, entry).cancel(check=False)
        except Exception as exc:  # noqa: BLE001 - cancelling is best effort
            log.warning("could not cancel job %s (%s)", entry["job_id"], exc)

    def _finish(self, folder: Path, state: dict[str, dict[str, Any]], name: str, handle: Any, tag: str) -> str:
        outcome = self._outcome(handle)
        self._say(f"{tag}: {outcome if outcome == 'done' else outcome.replace('failed', 'FAILED', 1)}")
        entry = state.get(name)
        if entry is not None and str(entry.get("job_id")) == str(handle.job_id):
            entry["outcome"] = outcome
            entry["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            self._save_state(folder, state)
        return outcome


__all__ = ["SlurmLauncher", "run_harness", "export_torch_distributed", "STATE_FILE", "EXECUTORS"]
