"""``harness report``: the Two Tricks paper's table shapes from run directories.

Tables (``layout``):

- ``saliency``: rows = method (+ backbone) + post chain, columns = dataset x Acc / IoU / max Fβ;
- ``corloc``: rows = method, columns = dataset;
- ``ablation``: rows by backbone x crop consistency x GF for the methods that declare an
  ablation family (Sempart), IoU per dataset;
- ``post``: method x none / each post-processor (GF, BF, ...), IoU per dataset.

Plugins name themselves in the tables: a dataset's or post-processor's ``title`` and
``report_order`` and a method's ``ablation`` are read through the registry (a run whose plugin
is not installed shows its name, after the ordered columns).

Every cell carries a 95% bootstrap interval over images when the run directory holds its
per-image data (``per_image.csv``, ``saliency_histograms.npz``); the best estimate of a column
is bold; a missing cell is "–", never 0. Published numbers given with ``--reference`` are
shown beside the measured ones with their difference.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from harness.bootstrap import Interval, format_interval, max_mean_curve_interval, mean_interval
from harness.errors import HarnessError
from harness.run_files import PER_IMAGE_FILE, load_results, read_histograms, read_per_image, read_run_file

log = logging.getLogger(__name__)

MISSING = "–"
SALIENCY_METRICS = (("acc", "Acc"), ("iou", "IoU"), ("max_fbeta", "max Fβ"))
#: The metrics the tables and ``harness compare`` show.
SHOWN_METRICS = ("acc", "iou", "max_fbeta", "corloc")
#: The post table's column for runs without post-processing.
NO_POST = "none"
LAYOUTS = ("all", "saliency", "corloc", "ablation", "post")
DEFAULT_PRESET = "harness"


def _plugin(kind: str, name: str) -> type | None:
    """The installed plugin class of that kind and name, or ``None`` (e.g. a run made with a
    plugin that has since been uninstalled)."""
    from harness.registry import get_registry

    return next((entry.cls for entry in get_registry().entries(kind) if entry.name == name), None)


def _title(kind: str, name: str) -> str:
    title = getattr(_plugin(kind, name), "title", "")
    return title if isinstance(title, str) and title else name


def _order(kind: str, name: str) -> tuple:
    """Sort key of a plugin's columns: its ``report_order`` first, then the unordered by name."""
    order = getattr(_plugin(kind, name), "report_order", None)
    if isinstance(order, (int, float)) and not isinstance(order, bool):
        return (False, order, "")
    return (True, 0, name)


def dataset_title(name: str) -> str:
    """The dataset's ``title`` (e.g. "DUTS-TE"), else its name."""
    return _title("dataset", name)


def post_title(name: str) -> str:
    """The post-processor's ``title`` (e.g. "GF"), else its name."""
    return _title("post", name)


def method_ablation(name: str) -> dict[str, Any] | None:
    """The method's ``ablation`` declaration (``family``, ``crop_consistency``, ``post``), or ``None``."""
    spec = getattr(_plugin("method", name), "ablation", None)
    return spec if isinstance(spec, dict) and spec.get("family") else None


def preset_tag(identity: dict[str, Any] | None) -> str:
    """`` [name]`` for a plugin run under a non-default ``preset`` option, else ``""``."""
    preset = (identity or {}).get("config", {}).get("preset")
    return f" [{preset}]" if preset not in (None, DEFAULT_PRESET) else ""


@dataclass
class RunRecord:
    """One run directory: its results.json (checked by :func:`~harness.run_files.load_results`)
    and, lazily, its per-image data (checked when first read)."""

    path: Path
    results: dict[str, Any]
    resamples: int = 4000
    seed: int = 0

    @property
    def config(self) -> dict[str, Any]:
        return self.results["config"]

    @property
    def dataset(self) -> str:
        return self.config["dataset"]["name"]

    @property
    def method(self) -> str:
        return self.config["method"]["name"]

    @property
    def backbone(self) -> str | None:
        backbone = self.config.get("backbone")
        return backbone["name"] if backbone else None

    @property
    def post_chain(self) -> str:
        return "+".join(post["name"] for post in self.config.get("posts", []))

    @property
    def protocol(self) -> dict[str, str]:
        return self.results.get("protocol", {})

    @property
    def protocol_tag(self) -> str:
        """`` {name}`` for a run under a protocol other than the default one, else ``""``."""
        from harness.evaluators.protocol import PROTOCOL_NAME

        name = self.protocol.get("name", PROTOCOL_NAME)
        return f" {{{name}}}" if name != PROTOCOL_NAME else ""

    @property
    def preset_names(self) -> str:
        """The non-default presets of the method and posts, ``+``-joined ("" for none)."""
        names = [ident.get("config", {}).get("preset") for ident in [self.config["method"], *self.config.get("posts", [])]]
        return "+".join(dict.fromkeys(n for n in names if n not in (None, DEFAULT_PRESET)))

    @property
    def presets(self) -> str:
        """The preset of the method, each post-processor and the protocol, in words."""
        parts = [f"{ident['name']} preset `{ident['config'].get('preset', DEFAULT_PRESET)}`"
                 for ident in [self.config["method"], *self.config.get("posts", [])]
                 if "preset" in ident.get("config", {})]
        protocol = self.protocol
        parts.append(f"protocol `{protocol.get('name', '?')}` v{protocol.get('version', '?')}")
        return ", ".join(parts)

    @property
    def method_label(self) -> str:
        """The method's name (or the ``display_name`` its cache token gives, e.g. "SelfMask w/
        tokencut") and its backbone."""
        token = self.config.get("method_token")
        name = token.get("display_name") if isinstance(token, dict) else None
        return ((name or self.method) + (f" ({self.backbone})" if self.backbone else "")
                + preset_tag(self.config["method"]) + self.protocol_tag)

    @property
    def teacher(self) -> str | None:
        """For a method distilled from another run's masks (SelfMask trained with
        ``--pseudo-masks RUN_DIR``): that run's method and post chain, ``+``-joined (e.g.
        ``sempart-crop+gf``), as its cache token records them; else ``None`` (also for masks
        from a folder or a JSON file, whose producer is not recorded)."""
        token = self.config.get("method_token")
        source = token.get("pseudo_masks") if isinstance(token, dict) else None
        if not isinstance(source, dict) or source.get("kind") != "run" or not source.get("method"):
            return None
        return "+".join([str(source["method"]), *map(str, source.get("posts") or [])])

    @property
    def row_label(self) -> str:
        """Method, backbone, post chain, and every non-default preset or protocol: two runs that
        differ in any of them are two rows, never one cell overwriting another."""
        posts = "".join(f" + {post['name']}{preset_tag(post)}" for post in self.config.get("posts", []))
        return self.method_label + posts

    @cached_property
    def metrics(self) -> dict[str, float]:
        """The defined metrics: a null one (undefined) is left out, so it shows as the missing
        mark and is never formatted as a number (see :func:`find_runs` for its note)."""
        return {key: value for key, value in self.results["metrics"].items() if value is not None}

    @cached_property
    def per_image(self):
        """``per_image.csv`` (checked, see :func:`~harness.run_files.read_per_image`), or ``None``."""
        return read_per_image(self.path, self.results)

    @cached_property
    def fbeta_curves(self) -> np.ndarray | None:
        """Per-image F-beta at every threshold from ``saliency_histograms.npz``, or ``None``."""
        from harness.evaluators.saliency import fbeta_curves

        histograms = read_histograms(self.path, self.results)
        return fbeta_curves(*histograms) if histograms is not None else None

    def interval(self, metric: str) -> Interval | None:
        """The 95% bootstrap interval of a metric, or ``None`` without per-image data."""
        kw = {"resamples": self.resamples, "seed": self.seed}
        if metric == "max_fbeta":
            curves = self.fbeta_curves
            return max_mean_curve_interval(curves, **kw) if curves is not None else None
        column = {"corloc": "corloc_hit"}.get(metric, metric)
        frame = self.per_image
        if frame is None or column not in frame:
            return None
        scale = 100.0 if metric == "corloc" else 1.0
        interval = mean_interval(frame[column].to_numpy(np.float64) * scale, **kw)
        if not np.isfinite(interval.estimate):  # else "[nan, nan]" would be printed beside the metric
            raise HarnessError(f"{self.path / PER_IMAGE_FILE} has no defined `{column}` value although "
                               f"results.json reports {metric}: the run directory mixes two runs; re-run it")
        return interval


def find_runs(paths: list[str | Path], resamples: int = 4000, seed: int = 0) -> list[RunRecord]:
    """Every ``results.json`` in the given run directories or their parents (any depth), each
    checked once here (see :func:`~harness.run_files.parse_results`)."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_file() and path.name == "results.json":
            files.append(path)
        elif (path / "results.json").is_file():
            files.append(path / "results.json")
        elif path.is_dir():
            # hidden folders are a run being written (.<name>.partial-*) or one being replaced
            files.extend(sorted(f for f in path.rglob("results.json")
                                if not any(part.startswith(".") for part in f.relative_to(path).parts)))
        else:
            raise HarnessError(f"{path} is neither a run directory nor a folder of runs")
    runs = [RunRecord(file.parent, load_results(file), resamples, seed) for file in files]
    for run in runs:
        for name in run.results.get("files", {}):  # a file of another run is refused even if no table reads it
            read_run_file(run.path, name, run.results)
        _note_undefined(run)
    if not runs:
        raise HarnessError(f"no results.json found under {', '.join(map(str, paths))}; run `harness run` first")
    return runs


def _note_undefined(run: RunRecord) -> None:
    """A word on stderr for each shown metric a run left undefined (the report shows "–")."""
    metrics = run.results["metrics"]
    undefined = [key for key in SHOWN_METRICS if key in metrics and metrics[key] is None]
    if undefined:
        log.warning("%s: %s undefined (null: e.g. IoU when every image's union is empty); shown as %s",
                    run.path / "results.json", ", ".join(undefined), MISSING)


def _ordered_datasets(names) -> list[str]:
    return sorted(set(names), key=lambda name: _order("dataset", name))


def latest_runs(runs: list[RunRecord]) -> dict[tuple[str, str], RunRecord]:
    """One run per (row, dataset): the most recently created one."""
    cells: dict[tuple[str, str], RunRecord] = {}
    for run in sorted(runs, key=lambda r: r.results.get("created", "")):
        cells[(run.row_label, run.dataset)] = run
    return cells


@dataclass
class Table:
    """Rows x columns of cells, each a run and a metric (or nothing)."""

    title: str
    index_names: list[str]
    rows: list[tuple]
    columns: list[str]
    cells: dict[tuple[tuple, str], tuple[RunRecord, str]] = field(default_factory=dict)
    percent: bool = False

    def to_markdown(self, intervals: bool = True) -> str:
        """The table, best estimate of each column in bold (among the runs of one protocol:
        numbers of two protocols are not compared), intervals in brackets."""
        import pandas as pd

        digits = 1 if self.percent else 3
        body = {column: [] for column in self.columns}
        for column in self.columns:
            by_protocol: dict[str, list[float]] = {}
            for row in self.rows:
                if (row, column) in self.cells:
                    run, metric = self.cells[(row, column)]
                    value = run.metrics.get(metric)
                    if isinstance(value, (int, float)) and np.isfinite(value):
                        by_protocol.setdefault(run.protocol_tag, []).append(value)
            best = {tag: max(values) for tag, values in by_protocol.items() if len(values) > 1}
            for row in self.rows:
                cell = self.cells.get((row, column))
                value = cell[0].metrics.get(cell[1]) if cell else None
                if not isinstance(value, (int, float)) or not np.isfinite(value):
                    body[column].append(MISSING)
                    continue
                text = f"{value:.{digits}f}"
                if value == best.get(cell[0].protocol_tag):
                    text = f"**{text}**"
                interval = cell[0].interval(cell[1]) if intervals else None
                if interval is not None and np.isfinite(interval.low):
                    text += " " + format_interval(interval, digits=digits, estimate=False)
                body[column].append(text)
        index = pd.MultiIndex.from_tuples(self.rows, names=self.index_names) if len(self.index_names) > 1 else \
            pd.Index([r[0] for r in self.rows], name=self.index_names[0])
        frame = pd.DataFrame(body, index=index)
        return frame.reset_index().to_markdown(index=False)


def _dataset_table(runs: list[RunRecord], title: str, metrics: tuple, required: str,
                   percent: bool = False) -> Table | None:
    """Rows = run labels, columns = dataset x metric, over the runs that report ``required``."""
    cells = {key: run for key, run in latest_runs(runs).items() if required in run.metrics}
    if not cells:
        return None
    rows = [(r,) for r in sorted({row for row, _ in cells}, key=str.lower)]
    columns, table_cells = [], {}
    for dataset in _ordered_datasets(d for _, d in cells):
        for key, metric_title in metrics:
            column = f"{dataset_title(dataset)} {metric_title}".strip()
            columns.append(column)
            for (row,) in rows:
                if (row, dataset) in cells:
                    table_cells[((row,), column)] = (cells[(row, dataset)], key)
    return Table(title, ["Method"], rows, columns, table_cells, percent=percent)


def saliency_table(runs: list[RunRecord]) -> Table | None:
    return _dataset_table(runs, "Saliency", SALIENCY_METRICS, required="max_fbeta")


def corloc_table(runs: list[RunRecord]) -> Table | None:
    return _dataset_table(runs, "CorLoc (%)", (("corloc", ""),), required="corloc", percent=True)


def ablation_tables(runs: list[RunRecord]) -> list[Table]:
    """Per ablation family (methods that declare one, e.g. Sempart and Sempart + crop
    consistency), rows by backbone x crop consistency x the family's post-processor: IoU per
    dataset. The family is named in the title only when there are several."""
    families: dict[tuple[str, str], list[tuple[RunRecord, dict]]] = {}
    for run in latest_runs(runs).values():
        spec = method_ablation(run.method)
        post = str(spec.get("post", "gf")) if spec else ""
        if spec and run.post_chain in ("", post) and "iou" in run.metrics:
            families.setdefault((str(spec["family"]), post), []).append((run, spec))
    tables = []
    for (family, post), members in sorted(families.items()):
        key = lambda r, spec: ((r.backbone or "–") + preset_tag(r.config["method"]) + r.protocol_tag,  # noqa: E731
                               "✓" if spec.get("crop_consistency") else "", "✓" if r.post_chain else "")
        rows = sorted({key(r, spec) for r, spec in members})
        columns = [f"{dataset_title(d)} IoU" for d in _ordered_datasets(r.dataset for r, _ in members)]
        cells = {(key(r, spec), f"{dataset_title(r.dataset)} IoU"): (r, "iou") for r, spec in members}
        named = f" ({family})" if len(families) > 1 else ""
        tables.append(Table(f"Ablation{named}: backbone x crop consistency x {post_title(post)} (IoU)",
                            ["Backbone", "Crop", post_title(post)], rows, columns, cells))
    return tables


def post_table(runs: list[RunRecord]) -> Table | None:
    """Method x post-processing (none / one column per post-processor and preset): IoU per dataset."""
    chosen = [r for r in latest_runs(runs).values() if len(r.config.get("posts", [])) <= 1 and "iou" in r.metrics]
    if len({r.post_chain for r in chosen}) < 2:
        return None  # nothing to compare

    def title(r: RunRecord) -> str:
        posts = r.config.get("posts", [])
        return post_title(posts[0]["name"]) + preset_tag(posts[0]) if posts else NO_POST

    def order(r: RunRecord) -> tuple:  # no post first, then the posts' report_order, then by title
        return (1, _order("post", r.post_chain), title(r)) if r.post_chain else (0,)

    rows = [(m,) for m in sorted({r.method_label for r in chosen}, key=str.lower)]
    titles = list(dict.fromkeys(title(r) for r in sorted(chosen, key=order)))
    cells = {((r.method_label,), f"{dataset_title(r.dataset)} {title(r)}"): (r, "iou") for r in chosen}
    columns = [c for c in (f"{dataset_title(d)} {t}" for d in _ordered_datasets(r.dataset for r in chosen) for t in titles)
               if any(column == c for _, column in cells)]  # a dataset without that post-processor: no column
    return Table("Post-processing (IoU)", ["Method"], rows, columns, cells)


#: layout -> the tables it shows (none, one, or one per ablation family)
TABLES = {"saliency": lambda runs: [saliency_table(runs)], "corloc": lambda runs: [corloc_table(runs)],
          "ablation": ablation_tables, "post": lambda runs: [post_table(runs)]}


def read_reference(path: str | Path):
    """Published numbers: a CSV with columns method, dataset, metric, value and optional
    backbone and post (empty = none), preset (the non-default preset a row was measured
    under, empty = the harness defaults) and protocol (its name, empty = the default). Values
    in the paper's units (fractions for saliency, percent for CorLoc).

    A CSV that also has ``table`` and ``row`` columns (a paper's tables, as the shipped ones:
    :func:`harness.published.load_reference`) is shown as :func:`paper_reference_table`, where
    an empty preset or protocol matches any."""
    import pandas as pd

    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError) as exc:
        raise HarnessError(f"--reference {path} cannot be read ({exc})") from None
    missing = {"method", "dataset", "metric", "value"} - set(frame.columns)
    if missing:
        raise HarnessError(
            f"--reference {path} lacks the column(s) {', '.join(sorted(missing))}; expected "
            f"method,dataset,metric,value[,backbone,post]"
        )
    for column in ("backbone", "post", "preset", "protocol"):
        if column not in frame:
            frame[column] = ""
    try:
        frame["value"] = frame["value"].astype(float)
    except ValueError:
        raise HarnessError(f"--reference {path}: the value column must hold numbers") from None
    return frame


def reference_table(runs: list[RunRecord], reference) -> str | None:
    """Measured [95% CI] | published | difference, one row per reference line with a run (a
    reference with ``table`` and ``row`` columns: :func:`paper_reference_table`)."""
    from tabulate import tabulate

    from harness.evaluators.protocol import PROTOCOL_NAME

    if {"table", "row"} <= set(reference.columns):
        return paper_reference_table(runs, reference)
    cells = latest_runs(runs)
    lines = []
    for ref in reference.itertuples(index=False):
        match = [r for r in cells.values()
                 if r.method == ref.method and r.dataset == ref.dataset and r.post_chain == ref.post
                 and (not ref.backbone or r.backbone == ref.backbone) and ref.metric in r.metrics
                 and r.preset_names == ref.preset
                 and r.protocol.get("name", PROTOCOL_NAME) == (ref.protocol or PROTOCOL_NAME)]
        label = (ref.method + (f" ({ref.backbone})" if ref.backbone else "") + (f" + {ref.post}" if ref.post else "")
                 + (f" [{ref.preset}]" if ref.preset else "") + (f" {{{ref.protocol}}}" if ref.protocol else ""))
        if not match:
            lines.append([label, dataset_title(ref.dataset), ref.metric, MISSING, f"{ref.value:g}", MISSING])
            continue
        run = max(match, key=lambda r: r.results.get("created", ""))
        value, measured = _measured(run, ref.metric)
        digits = 1 if ref.metric == "corloc" else 3
        lines.append([label, dataset_title(ref.dataset), ref.metric, measured, f"{ref.value:g}",
                      f"{value - ref.value:+.{digits}f}"])
    if not lines:
        return None
    return tabulate(lines, headers=["Method", "Dataset", "Metric", "Measured [95% CI]", "Published", "Δ"],
                    tablefmt="pipe", disable_numparse=True)  # else "+0.008" would lose its sign, "0.780" its 0


def _measured(run: RunRecord, metric: str) -> tuple[float, str]:
    """A run's value of ``metric`` and its text with the bootstrap interval, if any."""
    value = run.metrics[metric]
    digits = 1 if metric == "corloc" else 3
    interval = run.interval(metric)
    return value, f"{value:.{digits}f}" + (" " + format_interval(interval, digits=digits, estimate=False)
                                           if interval else "")


def _paper_match(run: RunRecord, ref) -> bool:
    """Whether ``run`` measures the published row ``ref``: the same method (and, for a
    distilled method, teacher and its post chain), post chain (aliases equal: ``bf`` is ``bs``)
    and dataset, the metric reported, and the row's preset and protocol when it names them."""
    from harness.evaluators.protocol import PROTOCOL_NAME
    from harness.published import canonical_posts, canonical_teacher

    teacher = str(getattr(ref, "teacher", "") or "")
    preset, protocol = str(getattr(ref, "preset", "") or ""), str(getattr(ref, "protocol", "") or "")
    return (run.method == ref.method and run.dataset == ref.dataset and ref.metric in run.metrics
            and canonical_posts(run.post_chain) == canonical_posts(ref.post)
            and (not teacher or canonical_teacher(run.teacher or "") == canonical_teacher(teacher))
            and (not preset or run.preset_names == preset)
            and (not protocol or run.protocol.get("name", PROTOCOL_NAME) == protocol))


def paper_reference_table(runs: list[RunRecord], reference) -> str | None:
    """A paper's published numbers, one section per table, each line the row as printed, the
    run that measures it (its row label; every matching run gets a line; "–" for none), the
    dataset and metric, measured [95% CI], published, the difference (measured - published,
    in the paper's units) and footnote marks; the footnotes follow the tables.

    A run matches a row by :func:`_paper_match`. Where some matching runs used the row's
    published backbone (stated, or implied: :func:`harness.published.accepted_backbones`),
    only those are listed; otherwise all of them, footnoted "measured with X, published with
    Y". A run on fewer images than the dataset holds is footnoted too, and so are the
    conventions of the code behind each number (:func:`harness.published.line_footnotes`)."""
    from tabulate import tabulate

    from harness.published import accepted_backbones, line_footnotes

    shown = list(latest_runs(runs).values())
    footnotes: dict[str, int] = {}

    def marks(texts: list[str]) -> str:
        return ", ".join(map(str, sorted(footnotes.setdefault(text, len(footnotes) + 1) for text in texts)))

    def numbered(table: str) -> tuple:  # Table 2 before Table 10; within a table, the reference's order
        return (not table.isdigit(), int(table) if table.isdigit() else 0, table)

    tables: dict[str, list[list[str]]] = {}  # footnotes are numbered in reading order
    for ref in sorted(reference.itertuples(index=False), key=lambda ref: numbered(str(ref.table))):
        match = [r for r in shown if _paper_match(r, ref)]
        names, _ = accepted_backbones(ref)
        if names and any(r.backbone in names for r in match):
            match = [r for r in match if r.backbone in names]
        lines = tables.setdefault(str(ref.table), [])
        digits = 1 if ref.metric == "corloc" else 3  # as the papers print them
        published = f"{ref.value:.{digits}f}"
        if not match:
            lines.append([str(ref.row), MISSING, dataset_title(ref.dataset), ref.metric, MISSING, published,
                          MISSING, marks(line_footnotes(ref))])
        for run in sorted(match, key=lambda r: r.row_label.lower()):
            value, measured = _measured(run, ref.metric)
            lines.append([str(ref.row), run.row_label, dataset_title(ref.dataset), ref.metric, measured, published,
                          f"{value - ref.value:+.{digits}f}", marks(line_footnotes(ref, run))])
    if not tables:
        return None
    source = next(iter(reference["source"]), "") if "source" in reference.columns else ""
    parts = [f"Published: {source}.", ""] if source else []
    headers = ["Row (as printed)", "Measured run", "Dataset", "Metric", "Measured [95% CI]", "Published", "Δ",
               "Notes"]
    for table, lines in tables.items():
        text = tabulate(lines, headers=headers, tablefmt="pipe", disable_numparse=True)
        parts += [f"### Table {table}", "", text, ""]
    parts += ["### Footnotes", ""] + [f"- [{number}] {text.rstrip('.')}." for text, number in footnotes.items()]
    return "\n".join(parts)


def _changed_options(run: RunRecord) -> str:
    """The method and backbone options a run set away from their defaults, as ``k=v`` text."""
    from harness.registry import get_registry

    parts = []
    for kind, key in (("method", "method"), ("backbone", "backbone")):
        ident = run.config.get(key)
        if not ident:
            continue
        entry = next((e for e in get_registry().entries(kind) if e.name == ident["name"]), None)
        defaults = {o.name: o.default for o in entry.cls.options} if entry is not None and entry.cls else {}
        parts += [f"{k}={_shown(v)}" for k, v in sorted(ident.get("config", {}).items())
                  if k not in defaults or str(defaults[k]) != str(v)]
    return ", ".join(parts)


def _shown(value) -> str:
    """An option's value for a note: absolute paths under the current directory shown relative
    to it (runs record absolute paths; a report read beside them should not print the machine's),
    content digests shortened."""
    text = str(value)
    if text.startswith("sha256:"):  # a file named by its content: the first 12 digits, as weights are
        return text[:19]
    if os.path.isabs(text) and not os.path.relpath(text).startswith(".."):
        return os.path.relpath(text)
    return text


def _notes(runs: list[RunRecord], intervals: bool) -> list[str]:
    runs = list(latest_runs(runs).values())  # only the runs whose numbers are shown
    from harness.evaluators.protocol import PROTOCOLS

    protocols = sorted({f"{r.results['protocol']['name']} v{r.results['protocol']['version']}" for r in runs})
    notes = [
        f"Protocol: {', '.join(protocols)} (saliency: prediction > 0.5 for Acc and IoU, "
        "max Fβ with β² = 0.3 over 255 thresholds at dataset level; CorLoc: IoU ≥ 0.5)."
    ]
    for protocol in PROTOCOLS.values():
        if not protocol.is_default and any(r.protocol.get("name") == protocol.name for r in runs):
            notes.append(f"Rows marked {{{protocol.name}}} were scored under `--protocol {protocol.key}`: "
                         f"{protocol.summary}. They are not comparable with the other rows; bold marks "
                         "the best within one protocol.")
    if intervals:
        r = runs[0]
        notes.append(f"Brackets: 95% percentile bootstrap intervals over images ({r.resamples} resamples, "
                     f"seed {r.seed}); none where a run holds no per-image data.")
    for label in sorted({r.row_label for r in runs}, key=str.lower):
        members = [r for r in runs if r.row_label == label]
        backbone = members[0].config.get("backbone")
        weights = members[0].results.get("weights_digest")
        parts = [f"backbone `{backbone['name']}`" if backbone else "no backbone"]
        if weights:
            parts.append(f"weights sha256 `{weights[:12]}`")
        parts.append(members[0].presets)
        sizes = ", ".join(
            f"{dataset_title(r.dataset)}: {r.results['counts']['images']} images ({r.path.name}"
            + (f"; {_changed_options(r)}" if _changed_options(r) else "") + ")"
            for r in sorted(members, key=lambda r: r.dataset)
        )
        notes.append(f"**{label}**: {'; '.join(parts)}; {sizes}.")
    return notes


def render_report(
    runs: list[RunRecord],
    title: str = "Results",
    layout: str = "all",
    reference=None,
    intervals: bool = True,
    figures: list[tuple[str, str]] | None = None,
) -> str:
    """The markdown report.

    Parameters
    ----------
    layout : str
        ``all`` or one of ``saliency``, ``corloc``, ``ablation``, ``post``.
    reference : DataFrame, optional
        Published numbers (see :func:`read_reference`).
    figures : list of (caption, relative path), optional
        Figures to link at the end.
    """
    if layout not in LAYOUTS:
        raise HarnessError(f"--layout {layout!r}: choose one of {', '.join(LAYOUTS)}")
    parts = [f"# {title}", ""]
    names = list(TABLES) if layout == "all" else [layout]
    shown = 0
    for name in names:
        for table in TABLES[name](runs):
            if table is not None:
                parts += [f"## {table.title}", "", table.to_markdown(intervals), ""]
                shown += 1
    if reference is not None:
        text = reference_table(runs, reference)
        if text:
            parts += ["## Reproduction: measured vs published", "", text, ""]
            shown += 1
    if not shown:
        parts += [f"No runs fit the {layout!r} layout.", ""]
    for caption, rel in figures or []:
        parts += [f"![{caption}]({rel})", ""]
    parts += ["## Notes", ""] + [f"{i}. {note}" for i, note in enumerate(_notes(runs, intervals), 1)] + [""]
    return "\n".join(parts)
