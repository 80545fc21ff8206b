"""Launchers: where a suite's jobs run.

The interface every launcher implements::

    class Launcher:
        def __init__(self, *, gpus_per_job=None, partition=None, timeout_min=None): ...
        def launch(self, jobs, suite_out) -> dict[str, str]: ...

``launch(jobs, suite_out)`` gets the selected jobs in dependency order (a job comes after every
job it depends on) and the suite's output folder (:class:`pathlib.Path`, absolute). Each job
has

- ``name`` (str): unique in the suite;
- ``kind`` (str): ``"train"``, ``"run"`` or ``"distil"``;
- ``argv`` (list of str): the arguments of ``harness.cli.main`` that run it (``main(job.argv)``,
  the same as the shell line ``harness <argv...>``; exit status 0 when it succeeded);
- ``depends_on`` (list of str): names of jobs that must have succeeded first (they come
  earlier in ``jobs`` or are already done);
- ``done`` (bool): finished by an earlier call; not to be run again.

Jobs that are not done are executed as ``harness.cli.main(job.argv)``, never before what they
depend on has succeeded. ``launch`` returns a status per job name: ``"done"`` (ran and
succeeded), ``"skipped"`` (``done`` already), ``"failed"`` (non-zero exit status),
``"blocked"`` (something it depends on failed or was interrupted), ``"interrupted"`` (stopped
by Ctrl-C; the launcher stops launching then). A launcher that returns before its jobs finish
(Slurm without waiting) reports ``"submitted"``, ``"pending"`` or ``"running"``; a status that
starts with ``"failed"`` may carry the reason (``"failed: ..."``). Re-running the same suite resumes: every job
writes its output atomically and ``harness train ... --resume`` continues an interrupted
training.

Launchers are found by name in :data:`LAUNCHERS`: ``local`` (:class:`LocalLauncher`, one job
after another in this process) and ``slurm`` (``harness.suites.slurm.SlurmLauncher``, each job
a Slurm job through submitit), imported on first use.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import sys
import time
from pathlib import Path
from typing import Callable

from harness.errors import HarnessError

#: statuses after which jobs that depend on the job cannot run
FAILED = ("failed", "blocked", "interrupted", "not run")


class LocalLauncher:
    """Runs the jobs one after another in this process (``harness.cli.main(job.argv)``).

    Prints a line when a job starts and one when it ends (its own output goes to
    ``<suite out>/logs/<job>.log``). A job that fails leaves the jobs that depend on it
    blocked and the others running; Ctrl-C (or a job interrupted) stops the suite, and the same
    command resumes it.
    """

    name = "local"

    def __init__(self, *, gpus_per_job: int | None = None, partition: str | None = None,
                 timeout_min: int | None = None, stream=None):
        given = [flag for flag, value in (("--gpus-per-job", gpus_per_job), ("--partition", partition),
                                          ("--timeout", timeout_min)) if value is not None]
        if given:
            raise HarnessError(f"{', '.join(given)} only apply to --launcher slurm; the local launcher runs each "
                               f"job in this process (drop {given[0]})")
        self.stream = stream

    def _say(self, text: str) -> None:
        print(text, file=self.stream or sys.stdout, flush=True)

    def launch(self, jobs, suite_out: Path, main: Callable[[list[str]], int] | None = None) -> dict[str, str]:
        if main is None:
            from harness.cli import main
        statuses: dict[str, str] = {}
        width = len(str(len(jobs)))
        for i, job in enumerate(jobs, 1):
            tag = f"[{i:>{width}}/{len(jobs)}]"
            if job.done:
                statuses[job.name] = "skipped"
                self._say(f"{tag} {job.kind:<6} {job.name}: done before, skipped")
                continue
            blocked = [d for d in job.depends_on if statuses.get(d) in FAILED]
            if blocked:
                statuses[job.name] = "blocked"
                self._say(f"{tag} {job.kind:<6} {job.name}: not run, {blocked[0]} did not finish")
                continue
            self._say(f"{tag} {job.kind:<6} {job.name}: running")
            started = time.perf_counter()
            output = io.StringIO()
            try:
                with contextlib.redirect_stdout(output):  # the job's tables go to its log: one line per job here
                    code = exit_status(job.argv, main)
            except KeyboardInterrupt:
                code = 130
            log = _write_log(suite_out, job.name, output.getvalue())
            if code == 0:
                self._say(f"{tag} {job.kind:<6} {job.name}: done in {time.perf_counter() - started:.1f} s "
                          f"(output: {log})")
            if code == 130:
                statuses[job.name] = "interrupted"
                for later in jobs[i:]:
                    statuses.setdefault(later.name, "skipped" if later.done else "not run")
                break
            statuses[job.name] = "done" if code == 0 else "failed"
            if code != 0:
                self._say(f"{tag} {job.kind:<6} {job.name}: FAILED (exit status {code}, "
                          f"after {time.perf_counter() - started:.1f} s)")
        return statuses


def exit_status(argv, main: Callable[[list[str]], int] | None = None) -> int:
    """The exit status of ``harness.cli.main(argv)``, argparse's ``SystemExit`` included (a usage
    error in a job's arguments is a bug in the plan: a failure, not an exception)."""
    if main is None:
        from harness.cli import main
    try:
        return int(main(list(argv)) or 0)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)


def _write_log(suite_out: Path, name: str, text: str) -> Path:
    """A job's standard output, kept under ``<suite out>/logs/<job>.log``."""
    from harness.storage import atomic_write_text

    path = Path(suite_out) / "logs" / f"{name}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    return path


def _slurm():
    try:
        return importlib.import_module("harness.suites.slurm").SlurmLauncher
    except ImportError as exc:
        raise HarnessError(f"--launcher slurm is not available ({exc}); install it with "
                           f"pip install 'seg-harness[slurm]'") from None


#: launcher name -> a function returning its class (imported on first use)
LAUNCHERS: dict[str, Callable[[], type]] = {"local": lambda: LocalLauncher, "slurm": _slurm}


def get_launcher(name: str, **options):
    """The launcher ``name`` built with ``options`` (gpus_per_job, partition, timeout_min: None = not given)."""
    if name not in LAUNCHERS:
        raise HarnessError(f"--launcher {name!r}: choose one of {', '.join(LAUNCHERS)}")
    return LAUNCHERS[name]()(**{key: value for key, value in options.items() if value is not None})
