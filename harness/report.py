"""``harness report``: the Two Tricks paper's table shapes from run directories.

Saliency: rows = method (+ backbone) + post chain, columns = dataset x Acc / IoU / max F-beta,
the best value of each column in bold. CorLoc: rows = method, columns = dataset. A missing
cell is "–", never 0.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

MISSING = "–"
DATASET_TITLES = {
    "dut_omron": "DUT-OMRON",
    "duts_te": "DUTS-TE",
    "ecssd": "ECSSD",
    "voc07": "VOC07",
    "voc12": "VOC12",
    "coco20k": "COCO20K",
}
#: The paper's column order; other datasets follow alphabetically.
DATASET_ORDER = list(DATASET_TITLES)
SALIENCY_METRICS = (("acc", "Acc"), ("iou", "IoU"), ("max_fbeta", "max Fβ"))


@dataclass
class RunRecord:
    path: Path
    results: dict[str, Any]

    @property
    def config(self) -> dict[str, Any]:
        return self.results["config"]

    @property
    def dataset(self) -> str:
        return self.config["dataset"]["name"]

    @property
    def row_label(self) -> str:
        label = self.config["method"]["name"]
        backbone = self.config.get("backbone")
        if backbone:
            label += f" ({backbone['name']})"
        for post in self.config.get("posts", []):
            label += f" + {post['name']}"
        return label

    @property
    def metrics(self) -> dict[str, Any]:
        return self.results.get("metrics", {})


def find_runs(paths: list[str | Path]) -> list[RunRecord]:
    """Every ``results.json`` in the given run directories or their parents (any depth)."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_file() and path.name == "results.json":
            files.append(path)
        elif (path / "results.json").is_file():
            files.append(path / "results.json")
        elif path.is_dir():
            files.extend(sorted(path.rglob("results.json")))
        else:
            raise HarnessError(f"{path} is neither a run directory nor a folder of runs")
    runs = []
    for file in files:
        try:
            runs.append(RunRecord(file.parent, json.loads(file.read_text())))
        except (OSError, json.JSONDecodeError) as exc:
            raise HarnessError(f"{file} cannot be read as a results file ({exc})") from None
    if not runs:
        raise HarnessError(f"no results.json found under {', '.join(map(str, paths))}; run `harness run` first")
    return runs


def _ordered_datasets(names) -> list[str]:
    names = set(names)
    return [d for d in DATASET_ORDER if d in names] + sorted(names - set(DATASET_ORDER))


def _latest(runs: list[RunRecord]) -> dict[tuple[str, str], RunRecord]:
    """One run per (row, dataset): the most recently created one."""
    cells: dict[tuple[str, str], RunRecord] = {}
    for run in sorted(runs, key=lambda r: r.results.get("created", "")):
        cells[(run.row_label, run.dataset)] = run
    return cells


def _bold_best(frame, fmt: str = "{:.3f}", higher_is_better: bool = True):
    """Format each value with ``fmt`` and bold each column's best value."""
    out = frame.copy().astype(object)
    for column in frame.columns:
        values = frame[column].dropna()
        best = values.max() if higher_is_better else values.min()
        for index in frame.index:
            value = frame.at[index, column]
            if value != value or value is None:  # NaN
                out.at[index, column] = MISSING
            else:
                text = fmt.format(value)
                out.at[index, column] = f"**{text}**" if len(values) > 1 and value == best else text
    return out


def saliency_table(runs: list[RunRecord]):
    """DataFrame: rows = method label, columns = "DATASET metric"."""
    import pandas as pd

    cells = {key: run for key, run in _latest(runs).items() if "max_fbeta" in run.metrics}
    if not cells:
        return None
    rows = sorted({row for row, _ in cells}, key=str.lower)
    columns = [
        (dataset, key, f"{DATASET_TITLES.get(dataset, dataset)} {title}")
        for dataset in _ordered_datasets(d for _, d in cells)
        for key, title in SALIENCY_METRICS
    ]
    data = {
        title: [cells[(row, dataset)].metrics.get(key) if (row, dataset) in cells else None for row in rows]
        for dataset, key, title in columns
    }
    return pd.DataFrame(data, index=pd.Index(rows, name="Method")).astype(float)


def corloc_table(runs: list[RunRecord]):
    import pandas as pd

    cells = {key: run for key, run in _latest(runs).items() if "corloc" in run.metrics}
    if not cells:
        return None
    rows = sorted({row for row, _ in cells}, key=str.lower)
    datasets = _ordered_datasets(d for _, d in cells)
    data = {
        DATASET_TITLES.get(d, d): [cells[(r, d)].metrics["corloc"] if (r, d) in cells else None for r in rows]
        for d in datasets
    }
    return pd.DataFrame(data, index=pd.Index(rows, name="Method")).astype(float)


def _notes(runs: list[RunRecord]) -> list[str]:
    runs = list(_latest(runs).values())  # only the runs whose numbers are shown
    protocols = sorted({f"{r.results['protocol']['name']} v{r.results['protocol']['version']}" for r in runs})
    notes = [
        f"Protocol: {', '.join(protocols)} (saliency: prediction > 0.5 for Acc and IoU, "
        "max Fβ with β² = 0.3 over 255 thresholds at dataset level; CorLoc: IoU ≥ 0.5)."
    ]
    for label in sorted({r.row_label for r in runs}, key=str.lower):
        members = [r for r in runs if r.row_label == label]
        backbone = members[0].config.get("backbone")
        weights = members[0].results.get("weights_digest")
        parts = [f"backbone `{backbone['name']}`" if backbone else "no backbone"]
        if weights:
            parts.append(f"weights sha256 `{weights[:12]}`")
        sizes = ", ".join(
            f"{DATASET_TITLES.get(r.dataset, r.dataset)}: {r.results['counts']['images']} images ({r.path.name})"
            for r in sorted(members, key=lambda r: r.dataset)
        )
        notes.append(f"**{label}**: {'; '.join(parts)}; {sizes}.")
    return notes


def render_report(runs: list[RunRecord], title: str = "Results") -> str:
    """The markdown report: saliency table, CorLoc table, notes."""
    parts = [f"# {title}", ""]
    saliency = saliency_table(runs)
    if saliency is not None:
        parts += ["## Saliency", "", _bold_best(saliency).to_markdown(), ""]
    corloc = corloc_table(runs)
    if corloc is not None:
        parts += ["## CorLoc (%)", "", _bold_best(corloc, "{:.1f}").to_markdown(), ""]
    if saliency is None and corloc is None:
        parts += ["No saliency or CorLoc metrics in these runs.", ""]
    parts += ["## Notes", ""] + [f"{i}. {note}" for i, note in enumerate(_notes(runs), 1)] + [""]
    return "\n".join(parts)
