"""Run a suite: select jobs, check everything up front, launch what is not done, write the report.

Before any job starts, :func:`run_suite` checks (each a single error naming everything wrong):
the inputs the selected jobs need (``--input NAME=PATH`` or the input's environment variable),
trained folders that no longer match their job (:func:`~harness.suites.plan.check_stale`), and
the data: every dataset of every selected job that is not done is opened the way ``harness
run`` opens it (its root from ``HARNESS_DATA_<NAME>`` / ``HARNESS_DATA``, its layout checked),
and every missing folder is named at once.

``--only PATTERN`` selects the jobs whose name matches a glob (several patterns: comma
separated or repeated) *and whatever they depend on* that is not done, so the selection always
runs; ``--dry-run`` prints what would run and runs nothing. The report is
``harness report OUT/runs -o OUT/report.md`` (every layout, figures beside it) with the suite's
published ``reference`` (:mod:`harness.published`); it is written again only when a run
changed since.
"""
from __future__ import annotations

import fnmatch
import sys

from harness.errors import HarnessError, name_some
from harness.suites.launch import get_launcher
from harness.suites.plan import LAST, Job, Plan, check_stale, read_stamp, write_stamp


def select(plan: Plan, only: list[str] | None) -> list[Job]:
    """The jobs matching any glob of ``only`` (all when empty) plus what they depend on that is not done."""
    if not only:
        return list(plan.jobs)
    patterns = [p.strip() for text in only for p in text.split(",") if p.strip()]
    matched = {job.name for job in plan.jobs if any(fnmatch.fnmatchcase(job.name, p) for p in patterns)}
    if not matched:
        raise HarnessError(f"--only {','.join(patterns)}: no job of suite {plan.suite.name!r} matches; its jobs: "
                           f"{name_some([job.name for job in plan.jobs], 8)} (see `harness suite plan`)")
    by_name = {job.name: job for job in plan.jobs}
    wanted = set(matched)
    for job in reversed(plan.jobs):  # dependents come after their dependencies
        if job.name in wanted:
            wanted.update(d for d in job.depends_on if not by_name[d].done)
    return [job for job in plan.jobs if job.name in wanted]


def _drop_missing_inputs(plan: Plan, jobs: list[Job], skip: bool, say) -> list[Job]:
    lacking = [job for job in jobs if job.missing_inputs and not job.done]
    if not lacking:
        return jobs
    names = sorted({name for job in lacking for name in job.missing_inputs})
    described = "; ".join(
        f"{name} ({plan.suite.inputs[name].help or 'a folder'}): --input {name}=PATH or "
        f"{plan.suite.inputs[name].env}" for name in names)
    if not skip:
        raise HarnessError(f"{len(lacking)} selected jobs need inputs that were not given: {described}. Jobs: "
                           f"{name_some([j.name for j in lacking], 6)}; give the inputs, leave those jobs out with "
                           f"--only, or run the rest with --skip-missing-inputs")
    say(f"warning: leaving out {len(lacking)} jobs that need inputs not given ({', '.join(names)}): "
        f"{name_some([j.name for j in lacking], 6)}")
    return [job for job in jobs if job not in lacking]


def check_data(jobs: list[Job], registry=None) -> None:
    """Open every dataset the jobs read as ``harness run`` would; one error naming every missing one."""
    from harness.registry import get_registry

    reg = registry or get_registry()
    problems: list[str] = []
    seen = set()
    for job in jobs:
        if job.done:
            continue
        problems += [p for p in job.missing_data if p not in problems]
        for dataset, root, args in job.data:
            key = (dataset, root, tuple(sorted(args.items())))
            if root is None or key in seen:
                continue
            seen.add(key)
            try:
                reg.create("dataset", dataset, args, root=root).ids()
            except HarnessError as exc:
                if str(exc) not in problems:
                    problems.append(str(exc))
    if problems:
        raise HarnessError(f"{len(problems)} dataset{'s are' if len(problems) > 1 else ' is'} missing or "
                           f"incomplete, nothing was run: " + " | ".join(problems) +
                           " (set HARNESS_DATA to a folder with one sub-folder per dataset name, or "
                           "HARNESS_DATA_<NAME> per dataset; see README 'Datasets')")


def print_plan(plan: Plan, jobs: list[Job], stream=None) -> None:
    """Each job in order: kind, name, state, the command it amounts to and its dependencies."""
    out = stream or sys.stdout
    todo = sum(1 for job in jobs if not job.done)
    print(f"suite {plan.suite.name}: {len(jobs)} jobs ({len(jobs) - todo} done, {todo} to do), output in {plan.out}",
          file=out)
    width = len(str(len(jobs)))
    for i, job in enumerate(jobs, 1):
        print(f"[{i:>{width}}] {job.kind:<6} {job.name}  ({job.state()})", file=out)
        print(f"    {job.command}", file=out)
        print(f"    depends on: {', '.join(job.depends_on) or '-'}", file=out)
    missing = sorted({name for job in jobs for name in job.missing_inputs})
    for name in missing:
        spec = plan.suite.inputs[name]
        print(f"input {name} not given ({spec.help or 'a folder'}): --input {name}=PATH or {spec.env}", file=out)
    data = sorted({p for job in jobs if not job.done for p in job.missing_data})
    for problem in data:
        print(f"data: {problem}", file=out)


def _reference_args(plan: Plan) -> list[str]:
    name = plan.suite.reference
    return ["--reference", name] if name else []


def report_argv(plan: Plan) -> list[str]:
    """``harness report OUT/runs -o OUT/report.md ...`` for the suite."""
    options = plan.suite.report
    argv = ["report", str(plan.runs_dir), "-o", str(plan.report_path),
            "--title", options.get("title", f"Suite {plan.suite.name}")]
    if "resamples" in options:
        argv += ["--resamples", str(options["resamples"])]
    if options.get("intervals") is False:
        argv.append("--no-intervals")
    return argv + _reference_args(plan)


def _report_current(plan: Plan) -> bool:
    if not plan.report_path.is_file():
        return False
    written = plan.report_path.stat().st_mtime
    return all(p.stat().st_mtime <= written for p in plan.runs_dir.glob("*/results.json"))


def run_suite(plan: Plan, *, only: list[str] | None = None, dry_run: bool = False, launcher: str = "local",
              launcher_options: dict | None = None, skip_missing_inputs: bool = False, stream=None,
              registry=None) -> int:
    """Run what is not done of ``plan`` (see the module docstring); the exit status."""
    out = stream or sys.stdout

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    launch = get_launcher(launcher, **(launcher_options or {}))  # a bad launcher option: before anything
    jobs = select(plan, only)
    jobs = _drop_missing_inputs(plan, jobs, skip_missing_inputs, say)
    names = {job.name for job in jobs}
    for job in jobs:  # a dependency left out for a missing input leaves its dependents out too
        if any(d not in names and not plan.job(d).done for d in job.depends_on):
            names.discard(job.name)
    jobs = [job for job in jobs if job.name in names]
    check_stale(plan, jobs)
    check_data(jobs, registry)
    if dry_run:
        print_plan(plan, jobs, out)
        say("dry run: nothing was run")
        return 0
    todo = [job for job in jobs if not job.done]
    for job in todo:
        if job.kind != "run" and not (job.output / LAST).is_file():
            write_stamp(job)  # the request this folder trains, recorded before its first epoch
    if todo:
        say(f"suite {plan.suite.name}: {len(todo)} of {len(jobs)} jobs to run, output in {plan.out}")
        statuses = launch.launch(jobs, plan.out)
    else:
        statuses = {job.name: "skipped" for job in jobs}
        say(f"suite {plan.suite.name}: all {len(jobs)} jobs are done, nothing to run (output in {plan.out})")
    for job in jobs:  # a finished training whose folder was made by hand or an older call: adopt it
        if job.kind != "run" and statuses.get(job.name) == "done" and read_stamp(job.output) is None:
            write_stamp(job)
    if any(status == "interrupted" for status in statuses.values()):
        say(f"suite {plan.suite.name}: interrupted; run the same command again to resume (finished jobs are kept)")
        return 130
    failed = [name for name, status in statuses.items()
              if status.startswith("failed") or status in ("blocked", "not run")]
    waiting = [name for name, status in statuses.items() if status in ("submitted", "pending", "running")]
    if waiting:
        say(f"suite {plan.suite.name}: {len(waiting)} jobs submitted or still running"
            + (f", {len(failed)} failed ({name_some(failed, 8)})" if failed else "")
            + "; run the same command again once they have finished: it writes the report")
        return 1 if failed else 0
    if plan.runs_dir.is_dir() and any(plan.runs_dir.glob("*/results.json")):
        if _report_current(plan) and not any(s == "done" for s in statuses.values()):
            say(f"report {plan.report_path} is up to date")
        else:
            from harness.cli import main

            code = main(report_argv(plan))
            if code != 0:
                say(f"suite {plan.suite.name}: the report failed (exit status {code})")
                return code
    if failed:
        say(f"suite {plan.suite.name}: {len(failed)} jobs did not finish: {name_some(failed, 8)} (their errors are "
            f"above); fix them and run the same command again (finished jobs are kept)")
        return 1
    return 0
