"""The run directory's format, both ways: what a run writes (``per_image.csv``, ``summary.md``,
then ``results.json`` with the sha256 of every other file under ``files``) and reading it back:
``results.json`` checked once when loaded, ``per_image.csv`` and ``saliency_histograms.npz``
checked (and their sha256 compared with ``results.json``'s ``files``) when first read.

Every problem is one :class:`~harness.errors.HarnessError` that names the file and the fix,
so ``harness report`` and ``harness compare`` never fail deep inside on a broken run.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import reprlib
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import HarnessError
from harness.evaluators.protocol import N_THRESHOLDS
from harness.evaluators.saliency import HISTOGRAMS_FILE
from harness.storage import atomic_write_json, atomic_write_text

#: The version of the ``results.json`` layout this harness writes (and the newest it reads).
SCHEMA_VERSION = 1
RESULTS_FILE = "results.json"
PER_IMAGE_FILE = "per_image.csv"
SUMMARY_FILE = "summary.md"
#: Metric -> the per_image.csv column its bootstrap interval and paired comparison are computed from.
METRIC_COLUMNS = {"acc": "acc", "iou": "iou", "corloc": "corloc_hit"}
#: per_image.csv columns read besides the metrics' own (figures bin IoU by object size).
READ_COLUMNS = ("fg_ratio", "size_fg_ratio", "size_iou")
#: Dotted key -> (accepted types, required): what the report and compare read from results.json.
RESULTS_KEYS = {
    "config": (dict, True),
    "config.dataset": (dict, True),
    "config.dataset.name": (str, True),
    "config.dataset.root": ((str, type(None)), False),
    "config.dataset.config": (dict, False),
    "config.dataset.data_digest": ((str, type(None)), False),
    "config.method": (dict, True),
    "config.method.name": (str, True),
    "config.method.config": (dict, False),
    "config.backbone": ((dict, type(None)), False),
    "config.posts": (list, False),
    "protocol": (dict, True),
    "protocol.name": (str, True),
    "protocol.version": ((str, int, float), True),
    "counts": (dict, True),
    "counts.images": (int, True),
    "metrics": (dict, True),
    "files": (dict, False),
    "created": (str, False),
    "weights_digest": ((str, type(None)), False),
}
_RERUN = "it was not written by this harness's `harness run` (or was edited): re-run the run"


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line (pandas' parser messages end in a newline)."""
    return " ".join(str(exc).split())


def _type_name(types) -> str:
    names = {dict: "an object", list: "a list", str: "a string", int: "an integer", float: "a number",
             type(None): "null"}
    return " or ".join(names[t] for t in (types if isinstance(types, tuple) else (types,)))


def _is_a(value: Any, types) -> bool:
    """``isinstance`` where a JSON ``true`` is not an integer."""
    return isinstance(value, types) and not isinstance(value, bool)


def _lookup(results: dict[str, Any], key: str) -> tuple[bool, Any]:
    """``(found, value)`` of a dotted key; a missing parent counts as not found."""
    value: Any = results
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return False, None
        value = value[part]
    return True, value


# ---- read --------------------------------------------------------------------------------------

def parse_results(text: bytes, file: Path) -> dict[str, Any]:
    """The ``results.json`` object, checked for every key the report and compare read.

    Parameters
    ----------
    text : bytes
        The file's contents.
    file : Path
        Its path, for the messages.

    Raises
    ------
    HarnessError
        Malformed JSON, not an object, a schema newer than this harness, a missing or
        mistyped key, or a metric that is not a finite number (or null).
    """
    try:
        results = json.loads(text)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise HarnessError(f"{file} is not valid JSON ({_one_line(exc)}); the file was damaged or edited: "
                           f"re-run the run") from None
    if not isinstance(results, dict):
        raise HarnessError(f"{file} holds a JSON {type(results).__name__}, not a results object; {_RERUN}")
    _check_schema_version(results, file)
    for key, (types, required) in RESULTS_KEYS.items():
        found, value = _lookup(results, key)
        if not found and required:
            raise HarnessError(f"{file} lacks `{key}`, which the report needs; {_RERUN}")
        if found and not _is_a(value, types):
            raise HarnessError(f"{file}: `{key}` is {reprlib.repr(value)}, not {_type_name(types)}; {_RERUN}")
    _check_plugins(results, file)
    _check_metrics(results["metrics"], file)
    _check_files(results.get("files", {}), file)
    return results


def _check_schema_version(results: dict[str, Any], file: Path) -> None:
    # checked first: a newer schema may have moved the keys checked next
    version = results.get("schema_version")
    if not _is_a(version, int):
        raise HarnessError(f"{file}: `schema_version` is {reprlib.repr(version)}, not an integer; {_RERUN}")
    if version > SCHEMA_VERSION:
        raise HarnessError(f"{file} was written by a newer harness (schema_version {version}; this harness reads "
                           f"up to {SCHEMA_VERSION}): upgrade seg-harness to report or compare it")


def _check_plugins(results: dict[str, Any], file: Path) -> None:
    """The backbone and each post-processor are objects with a name (labels are made of them)."""
    config = results["config"]
    idents = ([("config.backbone", config["backbone"])] if config.get("backbone") else []) + \
        [(f"config.posts[{i}]", post) for i, post in enumerate(config.get("posts", []))]
    for key, ident in idents:
        if not isinstance(ident, dict) or not isinstance(ident.get("name"), str) \
                or not isinstance(ident.get("config", {}), dict):
            raise HarnessError(f"{file}: `{key}` is {reprlib.repr(ident)}, not an object with a name and a "
                               f"config; {_RERUN}")


def _check_metrics(metrics: dict[str, Any], file: Path) -> None:
    """Numbers or null (undefined); NaN and infinity are refused, never printed as numbers."""
    for key, value in metrics.items():
        if value is None:
            continue
        if not _is_a(value, (int, float)):
            raise HarnessError(f"{file}: metric `{key}` is {reprlib.repr(value)}, not a number; {_RERUN}")
        if not math.isfinite(value):
            raise HarnessError(f"{file}: metric `{key}` is {value}, which the report cannot show as a number; "
                               f"leave this run out of the report, or fix the evaluator and re-run it")


def _check_files(files: dict[str, Any], file: Path) -> None:
    for name, digest in files.items():
        if not isinstance(digest, str):
            raise HarnessError(f"{file}: `files.{name}` is {reprlib.repr(digest)}, not a sha256 hex digest; {_RERUN}")


def load_results(file: Path) -> dict[str, Any]:
    """Read and check a ``results.json`` (see :func:`parse_results`)."""
    try:
        text = file.read_bytes()
    except OSError as exc:
        raise HarnessError(f"{file} cannot be read ({exc.strerror or exc}); check its permissions") from None
    return parse_results(text, file)


def read_run_file(run_dir: Path, name: str, results: dict[str, Any]) -> bytes | None:
    """The bytes of a file of the run, ``None`` when the run has none.

    When ``results.json`` lists the files written with the run (``files``: name -> sha256),
    the file must be listed, present and have that digest: otherwise the folder mixes two runs.
    """
    path = run_dir / name
    files = results.get("files")
    if not path.is_file():
        if files is not None and name in files:
            raise HarnessError(f"{path} is missing although {run_dir / RESULTS_FILE} lists it: the run directory "
                               f"is incomplete; re-run it")
        return None
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise HarnessError(f"{path} cannot be read ({exc.strerror or exc}); check its permissions") from None
    if files is not None and files.get(name, "").lower() != hashlib.sha256(data).hexdigest():
        why = "its sha256 differs from the one recorded there" if name in files else "it is not listed there"
        raise HarnessError(f"{path} does not belong to {run_dir / RESULTS_FILE} ({why}): the run directory "
                           f"mixes two runs; re-run it")
    return data


def read_per_image(run_dir: Path, results: dict[str, Any]):
    """``per_image.csv`` as a DataFrame (``id`` as text), ``None`` when the run has none.

    Raises
    ------
    HarnessError
        Not CSV, no ``id`` column, missing or repeated ids, a metric column that is not
        numeric or holds infinity, a row count other than ``counts.images``, or a digest that
        differs from ``results.json``'s.
    """
    import pandas as pd

    data = read_run_file(run_dir, PER_IMAGE_FILE, results)
    if data is None:
        return None
    path = run_dir / PER_IMAGE_FILE
    try:
        frame = pd.read_csv(io.BytesIO(data), dtype={"id": str})
    except ValueError as exc:  # pandas' ParserError and EmptyDataError, and UnicodeDecodeError
        raise HarnessError(f"{path} cannot be read as CSV ({_one_line(exc)}); re-run the run") from None
    if "id" not in frame.columns:
        raise HarnessError(f"{path} has no `id` column; it is not a harness per-image file: re-run the run")
    ids = frame["id"]
    if ids.isna().any() or ids.duplicated().any():
        raise HarnessError(f"{path} has rows without an id or an id twice; re-run the run")
    _check_per_image_columns(frame, path, results)
    images = results["counts"]["images"]
    if len(frame) != images:
        raise HarnessError(f"{path} has {len(frame)} rows but {run_dir / RESULTS_FILE} counts {images} images: "
                           f"the run directory mixes two runs; re-run it")
    return frame


def _check_per_image_columns(frame, path: Path, results: dict[str, Any]) -> None:
    """The columns intervals, comparisons and figures read are there and hold finite numbers or NaN."""
    import pandas as pd

    metrics = results["metrics"]
    for metric, column in METRIC_COLUMNS.items():
        if metric in metrics and column not in frame.columns:
            raise HarnessError(f"{path} has no `{column}` column although results.json reports {metric}; "
                               f"re-run the run")
    for column in [c for c in frame.columns if c in metrics or c in METRIC_COLUMNS.values() or c in READ_COLUMNS]:
        values = frame[column]
        if not pd.api.types.is_numeric_dtype(values):
            bad = values[pd.to_numeric(values, errors="coerce").isna() & values.notna()].iloc[0]
            raise HarnessError(f"{path}: column `{column}` holds {bad!r}, not a number; re-run the run")
        if np.isinf(values.to_numpy(np.float64)).any():  # NaN is "undefined" (an empty union), infinity a bug
            raise HarnessError(f"{path}: column `{column}` holds infinity, which no per-image value can be; "
                               f"fix the evaluator and re-run the run")


def read_histograms(run_dir: Path, results: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """``(hist_fg, hist_bg)`` of ``saliency_histograms.npz``, each ``(images, 256)`` int64,
    ``None`` when the run has none.

    Raises
    ------
    HarnessError
        Not a readable npz with both arrays of that shape, or a digest that differs from
        ``results.json``'s.
    """
    import zipfile
    import zlib

    data = read_run_file(run_dir, HISTOGRAMS_FILE, results)
    if data is None:
        return None
    path = run_dir / HISTOGRAMS_FILE
    try:
        npz = np.load(io.BytesIO(data), allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ValueError("a single array, not an npz archive")
        with npz:
            hist_fg, hist_bg = npz["hist_fg"], npz["hist_bg"]
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        raise HarnessError(f"{path} cannot be read as saliency histograms ({_one_line(exc)}); re-run the run") from None
    shape = (results["counts"]["images"], N_THRESHOLDS + 1)
    if hist_fg.shape != shape or hist_bg.shape != shape:
        raise HarnessError(f"{path} holds histograms of shape {hist_fg.shape} and {hist_bg.shape}, not {shape} "
                           f"(one row per image of {run_dir / RESULTS_FILE}): the run directory mixes two runs; "
                           f"re-run it")
    return hist_fg.astype(np.int64), hist_bg.astype(np.int64)


# ---- write -------------------------------------------------------------------------------------

def format_metrics_table(metrics: dict[str, Any]) -> str:
    """The metrics as a GitHub markdown table (``summary.md``'s, and what ``harness run`` prints)."""
    from tabulate import tabulate

    rows = [(key, f"{value:.4f}" if isinstance(value, float) else value) for key, value in metrics.items()]
    return tabulate(rows, headers=["metric", "value"], tablefmt="github")


def write_run_files(run_dir: Path, results: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """Write the run files atomically (per-image rows first, results.json last, with the
    sha256 of every other file of ``run_dir`` under ``files``)."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    atomic_write_text(run_dir / PER_IMAGE_FILE, frame.to_csv(index=False, float_format="%.6g"))
    config = results["config"]
    lines = [
        f"# Run `{results['run']}`",
        "",
        f"- method: `{config['method']['name']}`, post-processing: "
        + (" → ".join(f"`{p['name']}`" for p in config["posts"]) or "none"),
        f"- dataset: `{config['dataset']['name']}` ({results['counts']['images']} images)",
        f"- backbone: `{config['backbone']['name']}`" if config.get("backbone") else "- backbone: none",
        f"- protocol: {results['protocol']['name']} v{results['protocol']['version']}",
        f"- created: {results['created']}",
        "",
        format_metrics_table(results["metrics"]),
        "",
    ]
    atomic_write_text(run_dir / SUMMARY_FILE, "\n".join(lines))
    # every file's digest, so a reader can tell that a file belongs to this results.json
    results["files"] = {path.name: file_sha256(path) for path in sorted(run_dir.iterdir())
                        if path.is_file() and path.name != RESULTS_FILE and not path.name.startswith(".")}
    atomic_write_json(run_dir / RESULTS_FILE, results)


def file_sha256(path: Path) -> str:
    """The sha256 hex digest of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
