"""The shipped published numbers (harness/published) and `harness report --reference two-tricks`."""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from report_fixtures import write_values_run

from harness.cli import main
from harness.errors import HarnessError
from harness.published import (
    CONVENTIONS, DATASET_SIZES, IMPLIED_BACKBONES, NOT_BUILTIN, POST_ALIASES, REFERENCES, load_reference,
    resolve_reference,
)
from harness.registry import get_registry
from harness.report import find_runs, read_reference, render_report

PACKAGE_CSV = Path(__file__).resolve().parents[1] / "harness" / "published" / "two_tricks_tables.csv"
SHARED_CSV = Path(__file__).resolve().parents[2] / "shared" / "published" / "two_tricks_tables.csv"


def _source_rows(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# ---- the shipped table -----------------------------------------------------------------------
def test_the_shipped_table_holds_every_row_of_the_source_csv():
    frame = load_reference("two-tricks")
    rows = _source_rows(PACKAGE_CSV)
    assert len(frame) == len(rows) == 258
    if SHARED_CSV.is_file():  # the package copy is the transcription, unchanged
        assert rows == _source_rows(SHARED_CSV)
    for got, row in zip(frame.itertuples(index=False), rows):
        assert (got.table, got.row, got.paper_method, got.backbone, got.post, got.dataset, got.metric, got.note) == \
            (row["table"], row["row"], row["method"], row["backbone"], row["post"], row["dataset"], row["metric"],
             row["note"])
        assert got.value == float(row["value"])
    # selfmask<-X: the method is selfmask, X the teacher (a method and maybe its post chain)
    ours = frame[frame["paper_method"] == "selfmask<-sempart-crop+gf"]
    assert len(ours) == 9 and set(ours["method"]) == {"selfmask"} and set(ours["teacher"]) == {"sempart-crop+gf"}
    assert set(frame.loc[frame["paper_method"] == "tokencut", "teacher"]) == {""}
    # in read_reference's format; empty preset and protocol match any run in the paper's layout
    assert {"method", "dataset", "metric", "value", "backbone", "post", "preset", "protocol"} <= set(frame.columns)
    assert set(frame["preset"]) == set(frame["protocol"]) == {""}
    assert sorted(frame["table"].unique()) == ["1", "2", "3", "4", "5"]


def test_every_row_maps_to_registered_names():
    registry = get_registry()
    known = {kind: {entry.name for entry in registry.entries(kind)}
             for kind in ("method", "post", "dataset", "backbone")}
    frame = load_reference("two-tricks")
    for ref in frame.itertuples(index=False):
        where = f"table {ref.table} row {ref.row!r}"
        if ref.method in NOT_BUILTIN:  # FOUND needs outside input: footnoted as such, never matched
            assert "not-builtin" in ref.conventions.split("|"), where
            assert ref.method not in known["method"], where
        else:
            assert ref.method in known["method"], where
        if ref.teacher:
            teacher, *posts = ref.teacher.split("+")
            assert teacher in known["method"] and set(posts) <= known["post"], where
        assert {p for p in ref.post.split("+") if p} <= known["post"], where
        assert ref.dataset in known["dataset"], where
        assert {b for b in ref.published_backbone.split("|") if b} <= known["backbone"], where
        assert ref.metric in {"acc", "iou", "max_fbeta", "corloc"}, where
        assert all(key in CONVENTIONS for key in ref.conventions.split("|") if key), where
    # every row of a method with a backbone gets one (stated, or implied with its source)
    assert not frame[(frame["published_backbone"] == "") & ~frame["method"].isin(["move", "found"])].size
    assert set(frame.loc[frame["backbone"] != "", "backbone_source"]) == {"stated"}


def test_implied_backbones_sizes_and_aliases_agree_with_the_plugins():
    registry = get_registry()
    classes = {kind: {e.name: e.cls for e in registry.entries(kind)} for kind in ("method", "post", "dataset")}
    # the implied backbone is the one the method defaults to (the papers' defaults)
    for method, (names, _source) in IMPLIED_BACKBONES.items():
        assert classes["method"][method].default_backbone == names[0], method
    # each full size is the one the dataset's description states
    for name, size in DATASET_SIZES.items():
        description = classes["dataset"][name].description.replace(",", "")
        assert re.search(rf"\b{size}\b", description), (name, description)
    # the paper's bf is the harness's bs
    for alias, name in POST_ALIASES.items():
        assert issubclass(classes["post"][alias], classes["post"][name])


def test_conventions_of_the_code_behind_each_number():
    frame = load_reference("two-tricks").set_index(["table", "row", "dataset", "metric"])
    keys = lambda *index: frame.loc[index, "conventions"].split("|")  # noqa: E731
    assert keys("1", "Ours", "ecssd", "iou") == ["segtricks", "segtricks-crop", "gf"]
    assert keys("1", "Sempart + BF", "ecssd", "iou") == ["segtricks", "segtricks-bf"]
    assert keys("1", "Sempart [23] + BF", "ecssd", "iou") == ["sempart-paper", "table1-duplicate"]
    assert keys("1", "SelfMask w/ Ours", "ecssd", "max_fbeta") == ["selfmask", "per-image-fbeta"]
    assert keys("1", "SelfMask w/ Ours", "ecssd", "iou") == ["selfmask"]
    assert keys("1", "FOUND [30] - single", "ecssd", "max_fbeta") == ["not-builtin", "per-image-fbeta"]
    assert keys("4", "crop=y gf=y", "voc07", "corloc") == ["segtricks-corloc", "segtricks-crop", "gf"]
    assert keys("5", "TokenCut + BF", "ecssd", "iou") == ["tokencut", "bf-tokencut-move"]
    assert keys("5", "MOVE + BF", "ecssd", "iou") == ["move", "move-bf"]
    # each footnote names the preset that reproduces the code's conventions, or says there is none
    assert "`--protocol segtricks` with `--method-args preset=segtricks`" in CONVENTIONS["segtricks"]
    assert "`--post bs --post-args preset=segtricks`" in CONVENTIONS["segtricks-bf"]
    assert "no preset reproduces it" in CONVENTIONS["per-image-fbeta"]


# ---- the report --------------------------------------------------------------------------------
def _selfmask_teacher(run: Path, method: str, posts: list[str]) -> None:
    """Record in a fixture run what a SelfMask run trained on ``--pseudo-masks RUN`` records."""
    results = json.loads((run / "results.json").read_text())
    label = "+".join([method, *posts])
    results["config"]["method_token"] = {
        "checkpoint": "ef" * 32, "display_name": f"SelfMask w/ {label}",
        "pseudo_masks": {"kind": "run", "path": f"/runs/duts_tr-{method}", "run": f"duts_tr-{method}",
                         "method": method, "posts": posts, "backbone": "dino-vits8", "dataset": "duts_tr",
                         "label": label, "images": 10553}}
    (run / "results.json").write_text(json.dumps(results))


def _paper_runs(root: Path) -> Path:
    """Runs with stated metrics and no per-image data (so every measured cell is the number)."""
    saliency = lambda acc, iou, fb: {"acc": acc, "iou": iou, "max_fbeta": fb}  # noqa: E731
    write_values_run(root, "ours", "sempart-crop", "ecssd", saliency(0.950, 0.870, 0.925), None,
                     backbone="dino-vits8", posts=["gf"], images=1000)
    write_values_run(root, "ours-segtricks", "sempart-crop", "ecssd", saliency(0.955, 0.860, 0.935), None,
                     backbone="dino-vits8", posts=["gf"], images=1000, method_config={"preset": "segtricks"},
                     protocol=("segtricks-320crop", "1.0"))
    write_values_run(root, "tokencut-lite", "tokencut", "ecssd", saliency(0.900, 0.700, 0.800), None,
                     backbone="effnet-lite0", images=201)
    write_values_run(root, "tokencut-bs", "tokencut", "ecssd", saliency(0.930, 0.780, 0.870), None,
                     backbone="dino-vits16", posts=["bs"], images=1000)
    _selfmask_teacher(write_values_run(root, "sm-ours", "selfmask", "ecssd", saliency(0.960, 0.850, 0.950), None,
                                       backbone="dino-vits8", images=1000), "sempart-crop", ["gf"])
    _selfmask_teacher(write_values_run(root, "sm-tokencut", "selfmask", "ecssd", saliency(0.9, 0.7, 0.8), None,
                                       backbone="dino-vits8", images=1000), "tokencut", [])
    write_values_run(root, "move-voc07", "move", "voc07", {"corloc": 74.5}, None, images=5011)
    return root


def _paper_lines(text: str) -> tuple[dict[tuple, list[list[str]]], dict[str, str]]:
    """(table, row, measured run, dataset, metric) -> [measured, published, Δ, [footnotes]] per
    line of the reproduction tables, and the footnotes by number."""
    body = text.split("## Reproduction: measured vs published\n")[1].split("\n## ")[0]
    footnotes = {number: text.removesuffix(".") for number, text in re.findall(r"^- \[(\d+)\] (.*)$", body, flags=re.M)}
    lines: dict[tuple, list] = {}
    for section in body.split("### Table ")[1:]:
        table = section.split("\n", 1)[0].strip()
        rows = [line for line in section.splitlines() if line.startswith("|")][2:]
        for line in rows:
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            row, run, dataset, metric, measured, published, delta, marks = cells
            notes = [footnotes[m.strip()] for m in marks.split(",") if m.strip()]
            key = (table, row, run, dataset, metric)
            assert key not in lines, key
            lines[key] = [measured, published, delta, notes]
    return lines, footnotes


def test_two_tricks_report_shows_measured_published_and_difference(tmp_path):
    runs = find_runs([_paper_runs(tmp_path / "runs")], resamples=200)
    text = render_report(runs, reference=load_reference("two-tricks"))
    lines, footnotes = _paper_lines(text)
    cell = lambda *key: lines[key][:3]  # noqa: E731
    ours, ours_st = "sempart-crop (dino-vits8) + gf", "sempart-crop (dino-vits8) [segtricks] {segtricks-320crop} + gf"
    # Table 1 "Ours" (.952 / .862 / .931): both runs are listed, each with measured - published
    assert cell("1", "Ours", ours, "ECSSD", "acc") == ["0.950", "0.952", "-0.002"]
    assert cell("1", "Ours", ours, "ECSSD", "iou") == ["0.870", "0.862", "+0.008"]
    assert cell("1", "Ours", ours, "ECSSD", "max_fbeta") == ["0.925", "0.931", "-0.006"]
    assert cell("1", "Ours", ours_st, "ECSSD", "iou") == ["0.860", "0.862", "-0.002"]
    assert cell("1", "Ours", ours_st, "ECSSD", "max_fbeta") == ["0.935", "0.931", "+0.004"]
    # Table 3: the dino-vits8 row lists the dino-vits8 runs; the other backbones' rows have none
    # of their own, so they list those with a footnote (.816 for dino-vits16, .811 for iBOT)
    assert cell("3", "dino-vits8 crop=y gf=y", ours, "ECSSD", "iou") == ["0.870", "0.862", "+0.008"]
    assert cell("3", "dino-vits16 crop=y gf=y", ours, "ECSSD", "iou") == ["0.870", "0.816", "+0.054"]
    assert cell("3", "ibot-vits16 crop=y gf=y", ours_st, "ECSSD", "iou") == ["0.860", "0.811", "+0.049"]
    # TokenCut (.712) measured with another backbone on a sample; TokenCut + BF (.772) matches bs
    tokencut = "tokencut (effnet-lite0)"
    assert cell("1", "TokenCut [34]", tokencut, "ECSSD", "iou") == ["0.700", "0.712", "-0.012"]
    assert cell("5", "TokenCut", tokencut, "ECSSD", "max_fbeta") == ["0.800", "0.803", "-0.003"]
    assert cell("5", "TokenCut + BF", "tokencut (dino-vits16) + bs", "ECSSD", "iou") == ["0.780", "0.772", "+0.008"]
    # SelfMask w/ Ours (.852): only the SelfMask run distilled from sempart-crop + gf
    assert cell("1", "SelfMask w/ Ours", "SelfMask w/ sempart-crop+gf (dino-vits8)", "ECSSD", "iou") == \
        ["0.850", "0.852", "-0.002"]
    assert not any("SelfMask w/ tokencut" in key[2] for key in lines)
    assert cell("1", "SelfMask w/ MOVE", "–", "ECSSD", "iou") == ["–", "0.835", "–"]
    # CorLoc in percent (76.0)
    assert cell("2", "MOVE [3]", "move", "VOC07", "corloc") == ["74.5", "76.0", "-1.5"]
    # no run: "–", never 0; every published number has a line
    assert cell("1", "LOST [29]", "–", "DUT-OMRON", "acc") == ["–", "0.797", "–"]
    assert cell("1", "FOUND [30] - single", "–", "ECSSD", "iou") == ["–", "0.793", "–"]
    assert len({key[:2] + key[3:] for key in lines}) == 258
    assert re.findall(r"^### Table (\d)", text, flags=re.M) == ["1", "2", "3", "4", "5"]
    assert "Published: Sari, Favaro & Locatello" in text


def test_backbone_and_sample_footnotes_are_on_exactly_the_lines_that_need_them(tmp_path):
    runs = find_runs([_paper_runs(tmp_path / "runs")], resamples=200)
    lines, _ = _paper_lines(render_report(runs, reference=load_reference("two-tricks")))
    def with_note(start: str) -> set:
        return {key for key, line in lines.items() if any(note.startswith(start) for note in line[3])}

    lite = "tokencut (effnet-lite0)"
    tokencut_lines = {(t, r, lite, "ECSSD", m) for t, r in (("1", "TokenCut [34]"), ("5", "TokenCut"))
                      for m in ("acc", "iou", "max_fbeta")}
    other_backbone = {("3", f"{b} crop=y gf=y", run, "ECSSD", "iou") for b in ("dino-vits16", "ibot-vits16")
                      for run in ("sempart-crop (dino-vits8) + gf",
                                  "sempart-crop (dino-vits8) [segtricks] {segtricks-320crop} + gf")}
    assert with_note("measured with ") == tokencut_lines | other_backbone
    assert with_note("measured on ") == tokencut_lines
    notes = lines[("1", "TokenCut [34]", lite, "ECSSD", "iou")][3]
    assert {"measured with effnet-lite0, published with dino-vits16 (implied: the row's note: ViT-S/16)",
            "measured on 201 of 1000 images"} <= set(notes)
    assert "measured with dino-vits8, published with dino-vits16" in \
        lines[("3", "dino-vits16 crop=y gf=y", "sempart-crop (dino-vits8) + gf", "ECSSD", "iou")][3]
    # the code's conventions: on every line of the rows they concern, with or without a run
    segtricks = CONVENTIONS["segtricks"]
    assert segtricks in lines[("1", "Ours", "sempart-crop (dino-vits8) + gf", "ECSSD", "iou")][3]
    assert segtricks in lines[("1", "Ours", "–", "DUT-OMRON", "iou")][3]
    assert segtricks not in lines[("1", "Sempart [23]", "–", "ECSSD", "iou")][3]
    assert CONVENTIONS["sempart-paper"] in lines[("1", "Sempart [23]", "–", "ECSSD", "iou")][3]
    assert CONVENTIONS["not-builtin"] in lines[("1", "FOUND [30] - single", "–", "ECSSD", "iou")][3]


def test_two_tricks_from_the_command_line(tmp_path, capsys):
    runs = _paper_runs(tmp_path / "runs")
    out = tmp_path / "report.md"
    assert main(["report", str(runs), "--reference", "two-tricks", "--no-figures", "-o", str(out)]) == 0
    lines, _ = _paper_lines(out.read_text())
    line = lines[("5", "TokenCut + BF", "tokencut (dino-vits16) + bs", "ECSSD", "acc")]
    assert line[:3] == ["0.930", "0.934", "-0.004"]
    # a CSV path still works, with the plain layout
    ref = tmp_path / "published.csv"
    ref.write_text("method,backbone,post,dataset,metric,value\ntokencut,dino-vits16,bs,ecssd,iou,0.772\n")
    assert main(["report", str(runs), "--reference", str(ref), "--no-figures", "-o", str(out)]) == 0
    body = out.read_text().split("## Reproduction: measured vs published\n")[1].split("\n## ")[0]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in body.splitlines() if line.startswith("|")]
    assert rows[2:] == [["tokencut (dino-vits16) + bs", "ECSSD", "iou", "0.780", "0.772", "+0.008"]]
    assert "### Table" not in body
    capsys.readouterr()


def test_an_unknown_reference_is_one_clear_error(tmp_path, capsys):
    runs = _paper_runs(tmp_path / "runs")
    assert main(["report", str(runs), "--reference", "three-tricks"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "three-tricks" in err[0] and "two-tricks" in err[0] and "CSV" in err[0]
    with pytest.raises(HarnessError, match="known: two-tricks"):
        load_reference("three-tricks")
    assert set(REFERENCES) == {"two-tricks"}


def test_a_reference_name_or_a_path(tmp_path):
    assert len(resolve_reference("two-tricks")) == 258
    path = tmp_path / "mine.csv"
    path.write_text("method,dataset,metric,value\nlost,ecssd,iou,0.5\n")
    frame = resolve_reference(path)
    assert list(frame["value"]) == [0.5] and frame.equals(read_reference(path))


def test_real_runs_on_an_ecssd_sample_against_the_paper(ecssd_root, tmp_path):
    """TokenCut (EfficientNet-Lite0, offline) on 4 real ECSSD images, with and without `--post bf`:
    the lines of Table 1's "TokenCut [34]" and Table 5's "TokenCut + BF" show the run's own numbers
    minus the paper's, footnoted with the other backbone and the sample."""
    from harness.runner import RunSpec, run

    common = dict(method="tokencut", dataset="ecssd", data_root=str(ecssd_root), backbone="effnet-lite0", limit=4,
                  out=tmp_path / "runs", progress=False, cache_dir=tmp_path / "cache", device="cpu", workers=0)
    plain, bf = run(RunSpec(**common)), run(RunSpec(posts=["bf"], **common))
    out = tmp_path / "paper.md"
    assert main(["report", str(tmp_path / "runs"), "--reference", "two-tricks", "--no-figures", "--resamples", "200",
                 "-o", str(out)]) == 0
    lines, _ = _paper_lines(out.read_text())
    published = {("1", "TokenCut [34]", "acc"): 0.918, ("1", "TokenCut [34]", "iou"): 0.712,
                 ("1", "TokenCut [34]", "max_fbeta"): 0.803, ("5", "TokenCut + BF", "iou"): 0.772}
    for (table, row, metric), value in published.items():
        result, label = (bf, "tokencut (effnet-lite0) + bf") if "BF" in row else (plain, "tokencut (effnet-lite0)")
        measured, shown, delta, notes = lines[(table, row, label, "ECSSD", metric)]
        assert measured.split(" [")[0] == f"{result.metrics[metric]:.3f}" and shown == f"{value:.3f}"
        assert delta == f"{result.metrics[metric] - value:+.3f}"
        assert "measured on 4 of 1000 images" in notes
        assert "measured with effnet-lite0, published with dino-vits16 (implied: the row's note: ViT-S/16)" in notes
    assert lines[("1", "TokenCut [34]", "–", "DUTS-TE", "iou")][:3] == ["–", "0.576", "–"]
