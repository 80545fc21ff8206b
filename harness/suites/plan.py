"""Plan a suite: each job's place, its ``harness`` command, and whether it is done.

Every job has a fixed place under the suite's output folder ``OUT``:

- a train or distil job trains into ``OUT/train/<job>/`` (``harness train ... --out
  OUT/train/<job> --resume``: a fresh start when the folder is empty, the exact continuation of
  an interrupted training otherwise);
- a run job writes ``OUT/runs/<job>/`` (``harness run ... --out OUT/runs --name <job>``); a
  ``checkpoint_from`` job's checkpoint is ``OUT/train/<that job>/checkpoint_last.pt`` and a
  distil job's pseudo-masks are its teacher's run directory;
- the report is ``OUT/report.md``.

When a job is done:

- a run job when ``OUT/runs/<job>/results.json`` records the very request this job makes
  (its ``spec``: method, options, data root, post chain, evaluators, seed, ...), what it
  depends on is done, and it was written after their checkpoints;
- a train or distil job when its ``losses.csv`` (or, if newer, ``checkpoint_last.pt``) has
  reached the job's epochs, ``suite-job.json`` in its folder records the same request (the
  options that determine the weights: everything but epochs, device and workers), and its
  teacher is done and older than its checkpoint.

A trained folder whose request changed, or whose teacher's masks will be (or were) made
again, is not retrained over silently: :func:`check_stale` refuses it, naming the folder to
delete.
"""
from __future__ import annotations

import csv
import json
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.cache import stable_hash
from harness.errors import HarnessError
from harness.suites.spec import INPUT_REF, JobSpec, SuiteSpec, _text, dependency_order

STAMP = "suite-job.json"
LAST = "checkpoint_last.pt"
#: ``harness train`` flags that do not change the trained weights (left out of a train job's request)
_TRAIN_FREE = {"--epochs", "--device", "--workers", "--no-progress"}


@dataclass
class Job:
    """One job handed to a launcher: ``harness.cli.main(job.argv)`` runs it."""

    name: str
    kind: str  # "train" | "run" | "distil"
    argv: list[str]
    depends_on: list[str]
    done: bool = False
    #: the run directory or training folder
    output: Path = Path()
    #: why it is not done ("" when done): "to do", "changed", "a dependency is newer", ...
    reason: str = ""
    #: inputs it needs (itself or through what it depends on) that were not given
    missing_inputs: list[str] = field(default_factory=list)
    #: (dataset, data root or None, dataset options) it reads
    data: list[tuple[str, str | None, dict[str, str]]] = field(default_factory=list)
    #: the dataset roots that could not be resolved: one message each
    missing_data: list[str] = field(default_factory=list)
    epochs: int | None = None

    @property
    def command(self) -> str:
        """The shell line this job amounts to."""
        return shlex.join(["harness", *self.argv])

    @property
    def marker(self) -> Path:
        """The file whose presence (and time) says the job finished."""
        return self.output / ("results.json" if self.kind == "run" else LAST)

    def state(self) -> str:
        if self.missing_inputs:
            return "needs input " + ", ".join(self.missing_inputs)
        if self.done:
            return "done"
        if self.missing_data:
            return "needs data " + ", ".join(dataset for dataset, _, _ in self.data)
        return self.reason or "to do"


@dataclass
class Plan:
    suite: SuiteSpec
    out: Path
    jobs: list[Job]
    inputs: dict[str, Path | None]

    def job(self, name: str) -> Job:
        return next(job for job in self.jobs if job.name == name)

    @property
    def runs_dir(self) -> Path:
        return self.out / "runs"

    @property
    def report_path(self) -> Path:
        return self.out / "report.md"


# ---- inputs and data roots -----------------------------------------------------------------
def resolve_inputs(suite: SuiteSpec, given: dict[str, str] | None = None,
                   environ: dict[str, str] | None = None) -> dict[str, Path | None]:
    """Each declared input's path: ``--input NAME=PATH``, else its environment variable, else ``None``."""
    environ = os.environ if environ is None else environ
    given = dict(given or {})
    for name in given:
        if name not in suite.inputs:
            raise HarnessError(f"--input {name}=...: suite {suite.name!r} declares no input {name!r} "
                               f"(its inputs: {', '.join(suite.inputs) or 'none'})")
    resolved: dict[str, Path | None] = {}
    for name, spec in suite.inputs.items():
        text = given.get(name) or environ.get(spec.env)
        resolved[name] = Path(os.path.abspath(Path(text).expanduser())) if text else None
    return resolved


def _substitute(value: Any, inputs: dict[str, Path | None]) -> Any:
    if isinstance(value, str):
        return INPUT_REF.sub(lambda m: str(inputs[m.group(1)]) if inputs.get(m.group(1)) else m.group(0), value)
    if isinstance(value, dict):
        return {k: _substitute(v, inputs) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, inputs) for v in value]
    return value


def _substitute_dataset(value: Any, dataset: str) -> Any:
    if isinstance(value, str):
        return value.replace("${dataset}", dataset)
    if isinstance(value, dict):
        return {k: _substitute_dataset(v, dataset) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute_dataset(v, dataset) for v in value]
    return value


def _kv(options: dict[str, Any]) -> str:
    """``k=v,...`` as ``parse_kv`` reads it back (values with commas or quotes quoted)."""
    parts = []
    for key, value in options.items():
        text = _text(value)
        if any(c in text for c in ",'\"\\ ") or text == "":
            text = shlex.quote(text)
        parts.append(f"{key}={text}")
    return ",".join(parts)


def _data_root(registry, dataset: str, root: str | None) -> tuple[str | None, str | None]:
    """(the dataset's absolute root or None when it needs none, the error when it cannot be found)."""
    cls = registry.get("dataset", dataset)
    if not getattr(cls, "needs_root", True):
        return None, None
    try:
        return str(cls.resolve_root(root)), None
    except HarnessError as exc:
        return None, str(exc)


# ---- argv --------------------------------------------------------------------------------
def _common(argv: list[str], v: dict[str, Any], root: str | None) -> None:
    if root:
        argv += ["--data-root", root]
    if v.get("dataset_args"):
        argv += ["--dataset-args", _kv(v["dataset_args"])]


def _backbone(argv: list[str], v: dict[str, Any]) -> None:
    if v.get("backbone"):
        argv += ["--backbone", v["backbone"]]
    if v.get("weights"):
        argv += ["--weights", str(Path(os.path.abspath(Path(v["weights"]).expanduser())))
                 if not INPUT_REF.search(v["weights"]) else v["weights"]]
    if v.get("backbone_args"):
        argv += ["--backbone-args", _kv(v["backbone_args"])]


def _train_argv(v: dict[str, Any], root: str | None, out: Path, epochs: int, pseudo: Path | None) -> list[str]:
    argv = ["train", "--method", v["method"], "--dataset", v["dataset"]]
    _common(argv, v, root)
    if v.get("method_args"):
        argv += ["--method-args", _kv(v["method_args"])]
    if pseudo is not None:
        argv += ["--pseudo-masks", str(pseudo)]
    _backbone(argv, v)
    argv += ["--epochs", str(epochs)]
    for key, flag in (("batch_size", "--batch-size"), ("lr", "--lr"), ("seed", "--seed"), ("limit", "--limit"),
                      ("device", "--device"), ("workers", "--workers")):
        if key in v:
            argv += [flag, _text(v[key])]
    if v.get("amp") is False:
        argv.append("--no-amp")
    return argv + ["--out", str(out), "--resume"]


def _run_argv(v: dict[str, Any], root: str | None, runs: Path) -> list[str]:
    argv = ["run", "--method", v["method"], "--dataset", v["dataset"]]
    _common(argv, v, root)
    _backbone(argv, v)
    if v.get("method_args"):
        argv += ["--method-args", _kv(v["method_args"])]
    post_args = v.get("post_args") or []
    for i, post in enumerate(v.get("post") or []):
        argv += ["--post", post]
    if post_args:
        for args in post_args:
            argv += ["--post-args", _kv(args)]
    for name in v.get("evaluators") or []:
        argv += ["--eval", name]
    for key, flag in (("protocol", "--protocol"), ("limit", "--limit"), ("seed", "--seed"), ("device", "--device"),
                      ("batch_size", "--batch-size"), ("threads", "--threads"), ("workers", "--workers")):
        if key in v:
            argv += [flag, _text(v[key])]
    return argv + ["--out", str(runs), "--name", v["name"]]


# ---- what is done ----------------------------------------------------------------------------
def run_request(argv: list[str]) -> dict[str, Any]:
    """The request ``harness run`` records in ``results.json`` (``spec``) for ``argv``."""
    from harness.cli import build_parser
    from harness.cli.run_cmd import spec_from_args
    from harness.runner import _spec_record

    spec = spec_from_args(build_parser().parse_args(argv))
    return json.loads(json.dumps(_spec_record(spec), default=str))


def train_request(argv: list[str]) -> str:
    """A digest of what determines a train job's weights: its argv without epochs, device, workers."""
    kept, skip = [], False
    for i, item in enumerate(argv):
        if skip:
            skip = False
            continue
        if item in _TRAIN_FREE:
            skip = item != "--no-progress"
            continue
        kept.append(item)
    return stable_hash(kept, 16)


def trained_epochs(folder: Path) -> int:
    """How many epochs the training in ``folder`` has finished (0 when none)."""
    log, last = folder / "losses.csv", folder / LAST
    epochs = 0
    if log.is_file():
        try:
            with open(log, newline="") as handle:
                epochs = max((int(float(row["epoch"])) for row in csv.DictReader(handle) if row.get("epoch")),
                             default=0)
        except (OSError, ValueError, KeyError):
            epochs = 0
    if last.is_file() and (not log.is_file() or last.stat().st_mtime > log.stat().st_mtime):
        try:  # killed between the checkpoint and the log: the checkpoint knows
            from harness.training.checkpoint import load_checkpoint

            epochs = max(epochs, int(load_checkpoint(last)["epoch"]))
        except (HarnessError, KeyError, TypeError, ValueError):
            pass
    return epochs


def read_stamp(folder: Path) -> str | None:
    try:
        return json.loads((folder / STAMP).read_text())["request"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_stamp(job: Job) -> None:
    """Record the request a train or distil job's folder trains (before its first epoch)."""
    from harness.storage import atomic_write_json

    job.output.mkdir(parents=True, exist_ok=True)
    atomic_write_json(job.output / STAMP, {"job": job.name, "request": train_request(job.argv), "argv": job.argv})


def _own_state(job: Job) -> tuple[bool, str]:
    """Whether the job's own output is there for this request (ignoring what it depends on)."""
    if job.kind == "run":
        results = job.output / "results.json"
        if not results.is_file():
            return False, "to do"
        try:
            recorded = json.loads(results.read_text()).get("spec")
        except (OSError, ValueError, AttributeError):
            return False, "to do (unreadable results.json)"
        if recorded != run_request(job.argv):
            return False, "request changed: will run again"
        return True, ""
    epochs = trained_epochs(job.output)
    stamp = read_stamp(job.output)
    if stamp is not None and stamp != train_request(job.argv):
        return False, "request changed"
    if epochs >= (job.epochs or 0) and epochs > 0:
        return (True, "") if stamp is not None else (False, "trained; to confirm")
    return False, f"trained {epochs}/{job.epochs} epochs: will resume" if epochs else "to do"


def mark_done(jobs: list[Job]) -> None:
    """Set each job's ``done`` and ``reason`` (jobs in dependency order)."""
    by_name: dict[str, Job] = {}
    for job in jobs:
        done, reason = _own_state(job)
        if done:
            for dep in (by_name[name] for name in job.depends_on):
                if not dep.done:
                    done, reason = False, f"waits for {dep.name}"
                elif dep.marker.stat().st_mtime > job.marker.stat().st_mtime:
                    done, reason = False, f"{dep.name} is newer: will run again"
        job.done, job.reason = done, reason
        by_name[job.name] = job


# ---- the plan ------------------------------------------------------------------------------
def make_plan(suite: SuiteSpec, out: str | Path, inputs: dict[str, str] | None = None, registry=None,
              environ: dict[str, str] | None = None) -> Plan:
    """Every job of ``suite`` (dependency order) with its argv, output folder and state."""
    from harness.registry import get_registry

    reg = registry or get_registry()
    out = Path(os.path.abspath(Path(out).expanduser()))
    paths = resolve_inputs(suite, inputs, environ)
    runs_dir = out / "runs"
    jobs: list[Job] = []
    by_name: dict[str, Job] = {}
    specs: dict[str, JobSpec] = {}
    for spec in dependency_order(suite):
        v = _substitute(dict(spec.values), paths)
        missing = [name for name in spec.inputs() if paths.get(name) is None]
        for dep in spec.depends_on:
            missing += [m for m in by_name[dep].missing_inputs if m not in missing]
        if spec.kind == "distil":
            teacher = specs[spec.depends_on[0]].values
            v.setdefault("method", "selfmask")
            if "dataset" not in v:
                v["dataset"] = teacher["dataset"]
                for key in ("data_root", "dataset_args"):
                    if key in teacher and key not in v:
                        v[key] = _substitute(teacher[key], paths)
        if spec.kind == "run" and spec.get("checkpoint_from"):
            trained = specs[spec.get("checkpoint_from")].values
            cls = reg.get("method", v["method"])
            trained_v = _substitute(dict(trained), paths)
            # the trained job's method options (sizes, architecture) unless this job sets them
            v["method_args"] = {**trained_v.get("method_args", {}), **v.get("method_args", {}),
                                getattr(cls, "checkpoint_option", "checkpoint"):
                                str(out / "train" / spec.get("checkpoint_from") / LAST)}
            if "backbone" not in v:  # evaluate on the backbone it was trained on
                backbone = trained_v.get("backbone") or getattr(cls, "default_backbone", None)
                if backbone:
                    v["backbone"] = backbone
                for key in ("backbone_args", "weights"):
                    if key in trained_v and key not in v:
                        v[key] = trained_v[key]
        v = _substitute_dataset(v, v["dataset"])
        root, problem = _data_root(reg, v["dataset"], v.get("data_root"))
        job = Job(name=spec.name, kind=spec.kind, argv=[], depends_on=list(spec.depends_on),
                  missing_inputs=missing, data=[(v["dataset"], root, {k: _text(x) for k, x in
                                                                       v.get("dataset_args", {}).items()})],
                  missing_data=[problem] if problem else [])
        if spec.kind == "run":
            job.output = runs_dir / spec.name
            job.argv = _run_argv(v, root, runs_dir)
        else:
            job.output = out / "train" / spec.name
            cls = reg.get("method", v["method"])
            job.epochs = int(v.get("epochs") or getattr(cls, "default_epochs", 1))
            pseudo = by_name[spec.depends_on[0]].output if spec.kind == "distil" else None
            job.argv = _train_argv(v, root, job.output, job.epochs, pseudo)
        jobs.append(job)
        by_name[spec.name] = job
        specs[spec.name] = spec
    mark_done(jobs)
    return Plan(suite, out, jobs, paths)


def check_stale(plan: Plan, jobs: list[Job]) -> None:
    """Refuse to continue a trained folder that no longer matches its job (one error, before anything runs).

    A train or distil folder with a checkpoint whose recorded request differs from the job's,
    or whose teacher run is not done (it will be made again) or is newer than the checkpoint,
    would otherwise be resumed on other options or other masks.
    """
    by_name = {job.name: job for job in plan.jobs}
    problems = []
    for job in jobs:
        if job.kind == "run" or job.done or not (job.output / LAST).is_file():
            continue
        stamp = read_stamp(job.output)
        if stamp is not None and stamp != train_request(job.argv):
            problems.append(f"job {job.name!r}: {job.output} was trained with other options than the suite's now")
            continue
        for dep in (by_name[name] for name in job.depends_on):
            if not dep.done or dep.marker.stat().st_mtime > (job.output / LAST).stat().st_mtime:
                problems.append(f"job {job.name!r}: {job.output} was trained on the masks of {dep.name!r}, "
                                f"which {'will be made again' if not dep.done else 'were made again since'}")
    if problems:
        raise HarnessError("; ".join(problems) + ". Delete those folders to train them again (or restore the "
                           "suite's earlier values); nothing was run")
