"""Suite files: parse a TOML suite and validate it whole, before anything runs.

A suite names jobs of three kinds, each what one ``harness`` command takes:

- ``[[train]]``: ``harness train`` (method, dataset, backbone, options, epochs, batch size, ...);
- ``[[run]]``: ``harness run`` (method, backbone, post chain, dataset, evaluators, options,
  protocol, ...); ``checkpoint_from = "JOB"`` evaluates the checkpoint a train or distil job
  writes (and takes that job's backbone unless it names one); ``datasets = [...]`` instead of
  ``dataset`` expands into one job per dataset, named ``<name>-<dataset>``;
- ``[[distil]]``: SelfMask (or any method with a ``pseudo_masks`` option) trained on the masks
  of a run job: ``teacher = "JOB"`` (``harness train --pseudo-masks <that run's directory>``);
  its dataset defaults to the teacher's.

Nothing is a path or a hash typed by hand: dependencies are job names. Folders the user
supplies (another method's saved masks, a weights file) are named ``[inputs.NAME]`` and used
as ``${input.NAME}`` inside a string value (``method_args = { dir = "${input.move}" }``,
``weights = "${input.ibot}"``); ``${dataset}`` in a string value is the job's dataset (for
``datasets = [...]`` expansions: ``subdir = "${dataset}"``). ``[defaults]`` holds keys applied to every job of a kind that
does not set them (``[defaults.run]``, ``[defaults.train]``, ``[defaults.distil]``; a job's key
replaces the default's whole value, tables included);
``[suite]`` a ``description`` and the ``reference`` (published numbers) of the report, and
``[report]`` the report's ``title``, ``resamples`` and ``intervals``.

Every mistake is one :class:`~harness.errors.HarnessError` naming the file, the job and the
key: an unknown key (with the near match), a duplicate job name, an unknown method, post,
dataset, backbone, evaluator or protocol, an option the plugin does not have or a value it
refuses (checked against the plugin's ``Option`` declarations, as ``harness run`` does), a
dependency on a missing job or of the wrong kind, a cycle.
"""
from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from harness.errors import HarnessError, PluginError

KINDS = ("train", "run", "distil")

#: keys every job kind takes, with the TOML types they accept
_COMMON = {"name": str, "method": str, "dataset": str, "data_root": str, "dataset_args": dict,
           "method_args": dict, "backbone": str, "backbone_args": dict, "weights": str, "seed": int,
           "limit": int, "device": str, "workers": int, "batch_size": int}
_TRAIN = {**_COMMON, "epochs": int, "lr": (float, int), "amp": bool}
KEYS: dict[str, dict[str, Any]] = {
    "train": _TRAIN,
    "distil": {**_TRAIN, "teacher": str},
    "run": {**_COMMON, "datasets": list, "post": (str, list), "post_args": list, "evaluators": list,
            "protocol": str, "threads": int, "checkpoint_from": str},
}
_REQUIRED = {"train": ("name", "method", "dataset"), "run": ("name", "method"), "distil": ("name", "teacher")}
_TOP = ("suite", "report", "defaults", "inputs", "train", "run", "distil")
_SUITE_KEYS = {"description": str, "reference": str}
_REPORT_KEYS = {"title": str, "resamples": int, "intervals": bool}
_INPUT_KEYS = {"env": str, "help": str}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
INPUT_REF = re.compile(r"\$\{input\.([A-Za-z0-9_-]+)\}")


@dataclass
class InputSpec:
    """A folder or file the user supplies: ``--input NAME=PATH`` or the environment variable ``env``."""

    name: str
    env: str
    help: str = ""


@dataclass
class JobSpec:
    """One job as the suite file states it (after ``datasets`` expansion and defaults)."""

    kind: str
    name: str
    values: dict[str, Any]
    #: where it was written: ``[[run]] #3`` (for messages)
    where: str

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    @property
    def depends_on(self) -> list[str]:
        dep = self.values.get("checkpoint_from") if self.kind == "run" else self.values.get("teacher")
        return [dep] if dep else []

    def inputs(self) -> list[str]:
        """The names of the ``${input.NAME}`` this job's own values use."""
        found: list[str] = []

        def walk(value: Any) -> None:
            if isinstance(value, str):
                found.extend(m for m in INPUT_REF.findall(value) if m not in found)
            elif isinstance(value, dict):
                for item in value.values():
                    walk(item)
            elif isinstance(value, list):
                for item in value:
                    walk(item)

        walk(self.values)
        return found


@dataclass
class SuiteSpec:
    path: Path
    name: str
    description: str = ""
    reference: str | None = None
    report: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, InputSpec] = field(default_factory=dict)
    jobs: list[JobSpec] = field(default_factory=list)

    def job(self, name: str) -> JobSpec:
        return next(job for job in self.jobs if job.name == name)


# ---- finding and reading a suite ----------------------------------------------------------
def builtin_names() -> list[str]:
    """The names of the suites shipped in ``harness/suites/builtin/``."""
    folder = resources.files("harness.suites") / "builtin"
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def find_suite(name_or_path: str) -> Path:
    """A suite file: an existing path, else a built-in suite's name (``two-tricks``, ``smoke``)."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path.resolve()
    builtin = resources.files("harness.suites") / "builtin" / f"{name_or_path}.toml"
    if "/" not in name_or_path and builtin.is_file():
        return Path(str(builtin))
    raise HarnessError(f"suite {name_or_path!r} is neither a file nor a built-in suite "
                       f"(built-in: {', '.join(builtin_names())}); give a path to a .toml suite file")


def load_suite(name_or_path: str, registry=None) -> SuiteSpec:
    """Read, expand and validate a suite (a path or a built-in name); one error for any mistake."""
    path = find_suite(name_or_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise HarnessError(f"{path}: not valid TOML ({exc}); fix the line it names") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise HarnessError(f"{path}: cannot be read ({exc})") from None
    suite = parse_suite(data, path)
    validate_suite(suite, registry)
    return suite


# ---- parsing -----------------------------------------------------------------------------
def _unknown(path: Path, where: str, key: str, known) -> HarnessError:
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return HarnessError(f"{path}: {where}: unknown key {key!r}{hint}; known keys: {', '.join(sorted(known))}")


def _check_table(path: Path, where: str, table: Any, keys: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise HarnessError(f"{path}: {where} must be a table (key = value lines)")
    for key, value in table.items():
        if key not in keys:
            raise _unknown(path, where, key, keys)
        want = keys[key]
        wants = want if isinstance(want, tuple) else (want,)
        if isinstance(value, bool) and bool not in wants or not isinstance(value, wants):
            names = " or ".join({str: "a string", int: "a whole number", float: "a number", bool: "true or false",
                                 dict: "a table { k = v }", list: "a list [...]"}[w] for w in wants)
            raise HarnessError(f"{path}: {where}: {key} = {value!r} must be {names}")
    return table


def parse_suite(data: dict[str, Any], path: Path) -> SuiteSpec:
    """The suite of a parsed TOML document: keys checked, defaults applied, ``datasets`` expanded."""
    for key in data:
        if key not in _TOP:
            raise _unknown(path, "top level", key, _TOP)
    head = _check_table(path, "[suite]", data.get("suite", {}), _SUITE_KEYS)
    report = _check_table(path, "[report]", data.get("report", {}), _REPORT_KEYS)
    defaults = _check_table(path, "[defaults]", data.get("defaults", {}), dict.fromkeys(KINDS, dict))
    for kind, table in defaults.items():
        _check_table(path, f"[defaults.{kind}]", table, {k: v for k, v in KEYS[kind].items() if k != "name"})
    inputs = {}
    declared = data.get("inputs", {})
    if not isinstance(declared, dict):
        raise HarnessError(f"{path}: inputs must be tables [inputs.NAME] (env, help)")
    for name, table in declared.items():
        if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
            raise HarnessError(f"{path}: [inputs.{name}]: an input's name holds letters, digits, '_' and '-' only")
        _check_table(path, f"[inputs.{name}]", table, _INPUT_KEYS)
        env = table.get("env") or "HARNESS_INPUT_" + name.upper().replace("-", "_")
        inputs[name] = InputSpec(name, env, table.get("help", ""))
    suite = SuiteSpec(path=path, name=path.stem, description=head.get("description", ""),
                      reference=head.get("reference"), report=report, inputs=inputs)
    seen: dict[str, str] = {}
    for kind in KINDS:
        entries = data.get(kind, [])
        if not isinstance(entries, list):
            raise HarnessError(f"{path}: {kind} must be written [[{kind}]] (a list of tables)")
        for i, entry in enumerate(entries, 1):
            where = f"[[{kind}]] #{i}"
            if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                where = f"{kind} job {entry['name']!r}"
            _check_table(path, where, entry, KEYS[kind])
            values = {**defaults.get(kind, {}), **entry}
            for key in _REQUIRED[kind]:
                if key not in values:
                    raise HarnessError(f"{path}: {where}: missing key {key!r}")
            if kind == "run":  # a job's dataset or datasets replaces the default's
                if "datasets" in entry and "dataset" not in entry:
                    values.pop("dataset", None)
                elif "dataset" in entry and "datasets" not in entry:
                    values.pop("datasets", None)
                if ("dataset" in values) == ("datasets" in values):
                    raise HarnessError(f"{path}: {where}: give either dataset = \"NAME\" or datasets = [...], "
                                       f"not {'both' if 'dataset' in values else 'neither'}")
                if isinstance(values.get("post"), str):
                    values["post"] = [values["post"]]
            datasets = values.pop("datasets", None)
            expanded = [(values["name"], values)] if datasets is None else [
                (f"{values['name']}-{d}", {**values, "dataset": d}) for d in datasets]
            if datasets is not None and (not datasets or not all(isinstance(d, str) for d in datasets)):
                raise HarnessError(f"{path}: {where}: datasets must be a non-empty list of dataset names")
            for name, job_values in expanded:
                if not _NAME.match(name) or len(name) > 150:
                    raise HarnessError(f"{path}: {where}: job name {name!r} must start with a letter or digit and "
                                       f"hold only letters, digits, '.', '_', '+' and '-' (at most 150)")
                if name in seen:
                    raise HarnessError(f"{path}: job name {name!r} is used twice ({seen[name]} and [[{kind}]] #{i}); "
                                       f"give each job its own name")
                seen[name] = f"[[{kind}]] #{i}"
                job_values = {**job_values, "name": name}
                suite.jobs.append(JobSpec(kind, name, job_values, where))
    if not suite.jobs:
        raise HarnessError(f"{path}: the suite has no jobs; add [[train]], [[run]] or [[distil]] tables")
    return suite


# ---- validation ----------------------------------------------------------------------------
def dependency_order(suite: SuiteSpec) -> list[JobSpec]:
    """The jobs in an order where each comes after what it depends on (file order otherwise).

    Raises
    ------
    HarnessError
        On a dependency cycle, naming the jobs on it.
    """
    by_name = {job.name: job for job in suite.jobs}
    order: list[JobSpec] = []
    state: dict[str, int] = {}  # 1: being visited, 2: placed

    def visit(job: JobSpec, trail: list[str]) -> None:
        if state.get(job.name) == 2:
            return
        if state.get(job.name) == 1:
            cycle = trail[trail.index(job.name):] + [job.name]
            raise HarnessError(f"{suite.path}: the jobs depend on each other in a cycle: {' -> '.join(cycle)}; "
                               f"break it (checkpoint_from / teacher)")
        state[job.name] = 1
        for dep in job.depends_on:
            visit(by_name[dep], trail + [job.name])
        state[job.name] = 2
        order.append(job)

    for job in suite.jobs:
        visit(job, [])
    return order


def _text(value: Any) -> str:
    """An option value as ``harness``'s ``k=v`` flags take it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _check_options(path: Path, job: JobSpec, cls: type, given: dict[str, Any], filled: set[str] = frozenset()) -> None:
    """``given`` against ``cls``'s options, as ``harness run`` checks them (text values, converted)."""
    from harness.options import resolve_options

    # values filled in when planning (${input.NAME}, ${dataset}) are checked then, by the command itself
    text = {k: _text(v) for k, v in given.items() if not (isinstance(v, str) and "${" in v)}
    try:
        config = resolve_options(cls.options, text, cls.label())
    except PluginError as exc:
        raise HarnessError(f"{path}: {job.kind} job {job.name!r}: {exc}") from None
    for option in cls.options:
        if getattr(option, "required", False) and config.get(option.name) is None and option.name not in filled \
                and option.name not in given:
            raise HarnessError(f"{path}: {job.kind} job {job.name!r}: {cls.label()} needs option {option.name!r} "
                               f"({option.help}); set it in method_args")


def validate_suite(suite: SuiteSpec, registry=None) -> None:
    """Every name, option, dependency and input of ``suite`` checked; one error for the first mistake."""
    from harness.evaluators.protocol import PROTOCOLS
    from harness.registry import get_registry

    reg = registry or get_registry()
    path = suite.path
    by_name = {job.name: job for job in suite.jobs}

    def plugin(job: JobSpec, kind: str, name: Any) -> type:
        try:
            return reg.get(kind, str(name))
        except PluginError as exc:
            raise HarnessError(f"{path}: {job.kind} job {job.name!r}: {exc}") from None

    for job in suite.jobs:
        for dep in job.depends_on:
            key = "checkpoint_from" if job.kind == "run" else "teacher"
            if dep not in by_name:
                close = difflib.get_close_matches(dep, list(by_name), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise HarnessError(f"{path}: {job.kind} job {job.name!r}: {key} = {dep!r} names no job of the "
                                   f"suite{hint}")
            want = ("train", "distil") if job.kind == "run" else ("run",)
            if by_name[dep].kind not in want:
                raise HarnessError(f"{path}: {job.kind} job {job.name!r}: {key} = {dep!r} is a {by_name[dep].kind} "
                                   f"job; it must name a {' or '.join(want)} job")
        for name in job.inputs():
            if name not in suite.inputs:
                raise HarnessError(f"{path}: {job.kind} job {job.name!r} uses ${{input.{name}}}, but the suite "
                                   f"declares no [inputs.{name}]; declare it (env, help)")
    dependency_order(suite)  # cycles

    for job in suite.jobs:
        values = dict(job.values)
        method_name = values.get("method", "selfmask" if job.kind == "distil" else None)
        method = plugin(job, "method", method_name)
        filled: set[str] = set()
        if job.kind in ("train", "distil"):
            if not getattr(method, "trainable", False):
                trainable = [e.name for e in reg.entries("method") if getattr(e.cls, "trainable", False)]
                raise HarnessError(f"{path}: {job.kind} job {job.name!r}: method {method_name!r} cannot be trained; "
                                   f"trainable methods: {', '.join(trainable)}")
            takes_masks = any(o.name == "pseudo_masks" for o in method.options)
            if job.kind == "distil":
                if not takes_masks:
                    raise HarnessError(f"{path}: distil job {job.name!r}: method {method_name!r} does not train on "
                                       f"pseudo-masks; use a method with a pseudo_masks option (selfmask)")
                filled.add("pseudo_masks")
            for key in ("epochs", "batch_size"):
                if key in values and values[key] < 1:
                    raise HarnessError(f"{path}: {job.kind} job {job.name!r}: {key} = {values[key]} must be positive")
            if "lr" in values and not values["lr"] > 0:
                raise HarnessError(f"{path}: {job.kind} job {job.name!r}: lr = {values['lr']} must be above 0")
        else:
            dep = values.get("checkpoint_from")
            if dep:
                option = getattr(method, "checkpoint_option", "checkpoint")
                if not getattr(method, "trainable", False):
                    raise HarnessError(f"{path}: run job {job.name!r}: method {method_name!r} takes no trained "
                                       f"checkpoint; drop checkpoint_from")
                if option in values.get("method_args", {}):
                    raise HarnessError(f"{path}: run job {job.name!r}: both checkpoint_from and method_args.{option} "
                                       f"are given; keep checkpoint_from")
                trained = by_name[dep].get("method", "selfmask" if by_name[dep].kind == "distil" else None)
                if trained != method_name:
                    raise HarnessError(f"{path}: run job {job.name!r}: checkpoint_from = {dep!r} trains method "
                                       f"{trained!r}, but this job runs {method_name!r}; use method = {trained!r}")
                filled.add(option)
            for post in values.get("post", []):
                if not isinstance(post, str):
                    raise HarnessError(f"{path}: run job {job.name!r}: post must list post-processor names")
            posts = values.get("post", [])
            post_args = values.get("post_args", [])
            if post_args and len(post_args) != len(posts):
                raise HarnessError(f"{path}: run job {job.name!r}: post_args must hold one table per post "
                                   f"({len(posts)}), in the same order ({{}} for none)")
            for i, post in enumerate(posts):
                args = post_args[i] if post_args else {}
                if not isinstance(args, dict):
                    raise HarnessError(f"{path}: run job {job.name!r}: post_args must be a list of tables")
                _check_options(path, job, plugin(job, "post", post), args)
            for name in values.get("evaluators", []) or []:
                plugin(job, "evaluator", name)
            if values.get("protocol", "harness") not in PROTOCOLS:
                raise HarnessError(f"{path}: run job {job.name!r}: protocol = {values['protocol']!r}; choose one of "
                                   f"{', '.join(PROTOCOLS)}")
        _check_options(path, job, method, values.get("method_args", {}), filled)
        if job.kind != "distil" or "dataset" in values:
            dataset = plugin(job, "dataset", values["dataset"])
            _check_options(path, job, dataset, values.get("dataset_args", {}))
        if "backbone" in values:
            _check_options(path, job, plugin(job, "backbone", values["backbone"]), values.get("backbone_args", {}))
        elif values.get("backbone_args") and not values.get("checkpoint_from"):
            default = getattr(method, "default_backbone", None)
            if default:
                _check_options(path, job, plugin(job, "backbone", default), values["backbone_args"])
        if not getattr(method, "uses_backbone", False) and any(k in values for k in ("backbone", "backbone_args",
                                                                                      "weights")):
            raise HarnessError(f"{path}: {job.kind} job {job.name!r}: method {method_name!r} uses no backbone; "
                               f"drop backbone, backbone_args and weights")
        for key in ("limit", "batch_size", "workers", "threads"):
            if key in values and values[key] < (0 if key == "workers" else 1):
                raise HarnessError(f"{path}: {job.kind} job {job.name!r}: {key} = {values[key]} is out of range")
        if "seed" in values and not 0 <= values["seed"] < 2**63:
            raise HarnessError(f"{path}: {job.kind} job {job.name!r}: seed = {values['seed']}: use 0 <= seed < 2**63")
