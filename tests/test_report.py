"""``harness report`` and ``harness compare``: the paper's table shapes with intervals, figures."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from harness.cli import main
from harness.errors import HarnessError
from harness.report import find_runs, read_reference, render_report

sys.path.insert(0, str(Path(__file__).parent))
from report_fixtures import f_image, paper_like_runs, write_values_run  # noqa: E402

EXPECTED = Path(__file__).parent / "fixtures" / "expected_report.md"
RESAMPLES = 500


@pytest.fixture
def runs_dir(tmp_path) -> Path:
    paper_like_runs(tmp_path / "runs")
    return tmp_path / "runs"


# ---- reading the rendered markdown back ----------------------------------------------------
def _table(text: str, title: str) -> tuple[list[str], list[list[str]]]:
    """The header and the rows (stripped cells) of the table under ``## title``."""
    body = text.split(f"## {title}\n")[1].split("\n## ")[0]
    lines = [line for line in body.splitlines() if line.startswith("|")]
    split = lambda line: [cell.strip() for cell in line.strip().strip("|").split("|")]  # noqa: E731
    return split(lines[0]), [split(line) for line in lines[2:]]


def _cells(text: str, title: str, index_columns: int = 1) -> dict[tuple, str]:
    """``(row key, column) -> cell`` of a table; the row key is its first cell (or a tuple of its
    first ``index_columns`` cells)."""
    header, rows = _table(text, title)
    cells = {}
    for row in rows:
        key = row[0] if index_columns == 1 else tuple(row[:index_columns])
        for column, cell in zip(header[index_columns:], row[index_columns:]):
            cells[(key, column)] = cell
    return cells


def _section(text: str, title: str) -> dict[str, str]:
    body = text.split(f"## {title}")[1].split("## ")[0]
    return {line.split("|")[1].strip(): line for line in body.splitlines() if line.startswith("| ")}


# ---- independent oracles: the protocol's definitions written out plainly ---------------------
def _fbeta_by_definition(hist_fg: np.ndarray, hist_bg: np.ndarray) -> np.ndarray:
    """``(images, 255)`` F-beta (beta^2 = 0.3) at t = k / 255: a pixel in bin b has level b - 1,
    so the pixels predicted at t are those in bins k + 1 and above (DESIGN.md's rules for empty
    predictions and empty ground truth)."""
    curves = np.zeros((len(hist_fg), 255))
    for i in range(len(hist_fg)):
        n_fg = hist_fg[i].sum()
        for k in range(255):
            tp, fp = float(hist_fg[i, k + 1:].sum()), float(hist_bg[i, k + 1:].sum())
            p = tp / (tp + fp) if tp + fp else 1.0
            r = tp / n_fg if n_fg else 1.0
            curves[i, k] = 1.3 * p * r / (0.3 * p + r) if 0.3 * p + r else 0.0
    return curves


def _bootstrap(statistic, n: int, resamples: int = RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """2.5 and 97.5 percentiles of ``statistic(counts)`` over multinomial resamples of n images
    from ``default_rng(seed)`` (the method the report's notes name)."""
    counts = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=resamples)
    low, high = np.percentile([statistic(row) for row in counts], [2.5, 97.5])
    return float(low), float(high)


def _expected_cell(run: Path, metric: str) -> tuple[float, str]:
    """The estimate and the cell text (no bold) of a metric, from the run's per-image files."""
    import pandas as pd

    frame = pd.read_csv(run / "per_image.csv", dtype={"id": str})
    if metric == "max_fbeta":
        with np.load(run / "saliency_histograms.npz") as npz:
            curves = _fbeta_by_definition(npz["hist_fg"], npz["hist_bg"])
        n = len(curves)
        estimate = curves.mean(axis=0).max()
        low, high = _bootstrap(lambda c: (c @ curves).max() / n, n)
    else:
        column, scale = ("corloc_hit", 100.0) if metric == "corloc" else (metric, 1.0)
        values = frame[column].to_numpy(np.float64) * scale
        n = len(values)
        estimate = values.mean()
        low, high = _bootstrap(lambda c: np.repeat(values, c).mean(), n)
    digits = 1 if metric == "corloc" else 3
    return estimate, f"{estimate:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


# Which fixture run each cell of the checked-in report must come from, worked out by reading
# report_fixtures.paper_like_runs (r0 is superseded by the newer r1 of the same row).
SALIENCY_RUNS = {
    ("center-prior", "ECSSD"): "r4",
    ("sempart (dino-vits8)", "ECSSD"): "r7",
    ("sempart-crop (dino-vits8)", "ECSSD"): "r8",
    ("sempart-crop (dino-vits8) + gf", "ECSSD"): "r9",
    ("sempart-crop (dino-vits8) [segtricks] {segtricks-320crop} + gf", "ECSSD"): "r11",
    ("tokencut (dino-vits16)", "DUTS-TE"): "r3",
    ("tokencut (dino-vits16)", "ECSSD"): "r1",
    ("tokencut (dino-vits16) + bs", "ECSSD"): "r2",
    ("tokencut (dino-vits16) + bs [segtricks]", "ECSSD"): "r12",
}
CORLOC_RUNS = {("center-prior", "VOC12"): "r6", ("tokencut (dino-vits16)", "VOC12"): "r5"}
ABLATION_RUNS = {("dino-vits8", "", ""): "r7", ("dino-vits8", "✓", ""): "r8", ("dino-vits8", "✓", "✓"): "r9",
                 ("dino-vits8 [segtricks] {segtricks-320crop}", "✓", "✓"): "r11"}
POST_RUNS = {
    ("center-prior", "ECSSD none"): "r4",
    ("sempart (dino-vits8)", "ECSSD none"): "r7",
    ("sempart-crop (dino-vits8)", "ECSSD none"): "r8",
    ("sempart-crop (dino-vits8)", "ECSSD GF"): "r9",
    ("sempart-crop (dino-vits8) [segtricks] {segtricks-320crop}", "ECSSD GF"): "r11",
    ("tokencut (dino-vits16)", "DUTS-TE none"): "r3",
    ("tokencut (dino-vits16)", "ECSSD none"): "r1",
    ("tokencut (dino-vits16)", "ECSSD BF"): "r2",
    ("tokencut (dino-vits16)", "ECSSD BF [segtricks]"): "r12",
}


def _expected_table(runs_dir: Path, cells: dict[tuple, str], source) -> dict[tuple, str]:
    """Every cell of a table as it must read: "–" where ``source`` names no run, else the run's
    estimate and interval, bold where it is the largest of its column among two or more rows of
    one protocol (rows marked {segtricks-320crop} are another protocol)."""
    expected, values = {}, {}
    for key, column in cells:
        found = source(key, column)
        if found is None:
            expected[(key, column)] = "–"
            continue
        run, metric = found
        values[(key, column)], expected[(key, column)] = _expected_cell(runs_dir / run, metric)
    for (key, column), value in values.items():
        protocol = "{segtricks-320crop}" in str(key)
        rivals = [v for (k, c), v in values.items() if c == column and ("{segtricks-320crop}" in str(k)) == protocol]
        if len(rivals) > 1 and round(value, 3) == round(max(rivals), 3):
            number, interval = expected[(key, column)].split(" ", 1)
            expected[(key, column)] = f"**{number}** {interval}"
    return expected


# ---- the checked-in report -------------------------------------------------------------------
def test_report_matches_the_checked_in_markdown(runs_dir):
    """The whole report of the fixture runs, byte for byte: it pins the layout of the built-in
    plugins' rows (titles, column order, widths, notes), which must not change when the code
    that looks titles up does. Its numbers are not copied on trust: the next test re-derives
    every number, bold mark and dash of it from the runs' per-image files."""
    text = render_report(find_runs([runs_dir], resamples=RESAMPLES), title="Fixture report")
    assert text == EXPECTED.read_text()


def test_every_number_of_the_checked_in_report_is_rederived_from_the_runs(runs_dir):
    text = EXPECTED.read_text()
    metric_of = {"Acc": "acc", "IoU": "iou", "max Fβ": "max_fbeta"}

    def saliency(row, column):
        dataset, title = column.split(" ", 1)
        run = SALIENCY_RUNS.get((row, dataset))
        return (run, metric_of[title]) if run else None

    tables = [
        ("Saliency", 1, saliency),
        ("CorLoc (%)", 1, lambda row, column: (CORLOC_RUNS[(row, column)], "corloc")
         if (row, column) in CORLOC_RUNS else None),
        ("Ablation: backbone x crop consistency x GF (IoU)", 3,
         lambda row, column: (ABLATION_RUNS[row], "iou") if column == "ECSSD IoU" else None),
        ("Post-processing (IoU)", 1, lambda row, column: (POST_RUNS[(row, column)], "iou")
         if (row, column) in POST_RUNS else None),
    ]
    for title, index_columns, source in tables:
        cells = _cells(text, title, index_columns)
        assert cells == _expected_table(runs_dir, cells, source), title
    # every row the mappings name is in the tables (none is left out)
    assert {row for row, _ in SALIENCY_RUNS} == {row for row, _ in _cells(text, "Saliency")}
    assert {row for row, _ in POST_RUNS} == {row for row, _ in _cells(text, "Post-processing (IoU)")}
    assert set(ABLATION_RUNS) == {row for row, _ in _cells(text, "Ablation: backbone x crop consistency x GF (IoU)", 3)}


def test_report_layout_rules(runs_dir):
    text = render_report(find_runs([runs_dir], resamples=200))
    saliency = _section(text, "Saliency")
    # missing cells are a dash, never 0; the superseded r0 is gone
    assert saliency["center-prior"].count("–") == 3
    assert "(r0)" not in text
    assert text.index("DUTS-TE Acc") < text.index("ECSSD Acc")  # the paper's column order
    ablation = text.split("## Ablation: backbone x crop consistency x GF (IoU)")[1].split("## ")[0]
    assert [line.split("|")[1:4] for line in ablation.splitlines() if "dino-vits8" in line] == [
        [" dino-vits8                                 ", "        ", "      "],
        [" dino-vits8                                 ", " ✓      ", "      "],
        [" dino-vits8                                 ", " ✓      ", " ✓    "],
        # the paper's code's conventions are a row of their own, named by preset and protocol
        [" dino-vits8 [segtricks] {segtricks-320crop} ", " ✓      ", " ✓    "]]
    post = text.split("## Post-processing (IoU)")[1].split("## ")[0]
    assert "DUTS-TE GF" not in post and "ECSSD GF" in post and "ECSSD BF" in post


def test_each_layout_alone(runs_dir):
    runs = find_runs([runs_dir], resamples=200)
    assert "## CorLoc" in render_report(runs, layout="corloc") and "## Saliency" not in render_report(runs, layout="corloc")
    assert "## Ablation" in render_report(runs, layout="ablation")
    with pytest.raises(HarnessError, match="--layout 'nope'"):
        render_report(runs, layout="nope")


# ---- cells worked out by hand ----------------------------------------------------------------
# Two images per run. The F-beta of an f_image is the same at every threshold, so the max over
# thresholds of the mean curve is the mean of the two images' F. Two-valued per-image data:
# a resample is (a, a), (a, b) or (b, b) with probabilities 1/4, 1/2, 1/4, so with 200 or more
# resamples the 2.5 and 97.5 percentiles of the resampled means are exactly a and b.
F_13_18 = f_image(2, 0, 1, 1)  # P = 2/3, R = 1: F = 1.3 (2/3) / (0.3 (2/3) + 1) = 13/18 = 0.7222
F_ONE = f_image(2, 0, 0, 2)  # P = R = 1: F = 1
F_26_29 = f_image(2, 1, 0, 1)  # P = 1, R = 2/3: F = 1.3 (2/3) / (0.3 + 2/3) = 26/29 = 0.8966


def _hand_runs(root: Path) -> Path:
    write_values_run(root, "tc-ecssd", "tokencut", "ecssd", backbone="dino-vits16",
                     metrics={"acc": 0.7, "iou": 0.5, "max_fbeta": (13 / 18 + 1) / 2},
                     columns={"acc": [0.6, 0.8], "iou": [0.5, 0.5]}, f_images=[F_13_18, F_ONE])
    write_values_run(root, "cp-ecssd", "center-prior", "ecssd",
                     metrics={"acc": 0.9, "iou": 0.3, "max_fbeta": 13 / 18},
                     columns={"acc": [0.9, 0.9], "iou": [0.2, 0.4]}, f_images=[F_13_18, F_13_18])
    write_values_run(root, "tc-duts", "tokencut", "duts_te", backbone="dino-vits16",
                     metrics={"acc": 0.6, "iou": 0.2, "max_fbeta": (26 / 29 + 1) / 2},
                     columns={"acc": [0.5, 0.7], "iou": [0.1, 0.3]}, f_images=[F_26_29, F_ONE])
    # an older run of the tokencut ECSSD row: superseded, none of its numbers may show
    write_values_run(root, "tc-ecssd-old", "tokencut", "ecssd", backbone="dino-vits16",
                     metrics={"acc": 0.95, "iou": 0.95, "max_fbeta": 0.95},
                     columns={"acc": [0.95, 0.95], "iou": [0.95, 0.95]}, f_images=[F_ONE, F_ONE],
                     created="2025-06-01T00:00:00+00:00")
    # metrics without per-image files: the estimate without brackets
    write_values_run(root, "lost-ecssd", "lost", "ecssd", metrics={"acc": 0.55, "iou": 0.45, "max_fbeta": 0.65},
                     columns=None, images=2)
    write_values_run(root, "tc-voc", "tokencut", "voc12", backbone="dino-vits16", metrics={"corloc": 100.0},
                     columns={"corloc_hit": [1, 1]})
    write_values_run(root, "cp-voc", "center-prior", "voc12", metrics={"corloc": 50.0},
                     columns={"corloc_hit": [1, 0]})
    return root


def test_saliency_cells_by_hand(tmp_path):
    text = render_report(find_runs([_hand_runs(tmp_path / "runs")], resamples=200))
    header, rows = _table(text, "Saliency")
    assert header == ["Method", "DUTS-TE Acc", "DUTS-TE IoU", "DUTS-TE max Fβ", "ECSSD Acc", "ECSSD IoU", "ECSSD max Fβ"]
    assert rows == [
        # no DUTS-TE run: dashes; ECSSD Acc 0.9 is the column's best; IoU [0.2, 0.4]: mean 0.3
        ["center-prior", "–", "–", "–", "**0.900** [0.900, 0.900]", "0.300 [0.200, 0.400]", "0.722 [0.722, 0.722]"],
        # no per-image data: no brackets
        ["lost", "–", "–", "–", "0.550", "0.450", "0.650"],
        # DUTS-TE: one row only, so nothing is bold; max Fβ (26/29 + 1) / 2 = 0.948 in [26/29, 1]
        ["tokencut (dino-vits16)", "0.600 [0.500, 0.700]", "0.200 [0.100, 0.300]", "0.948 [0.897, 1.000]",
         "0.700 [0.600, 0.800]", "**0.500** [0.500, 0.500]", "**0.861** [0.722, 1.000]"],
    ]
    assert "(tc-ecssd-old)" not in text and "0.950" not in text
    assert "ECSSD: 2 images (cp-ecssd), VOC12: 2 images (cp-voc)" in text
    assert "Brackets: 95% percentile bootstrap intervals over images (200 resamples, seed 0)" in text


def test_corloc_cells_by_hand(tmp_path):
    text = render_report(find_runs([_hand_runs(tmp_path / "runs")], resamples=200))
    header, rows = _table(text, "CorLoc (%)")
    assert header == ["Method", "VOC12"]
    # hits [1, 0]: 50 %, resampled 0, 50 or 100; hits [1, 1]: 100 % in every resample
    assert rows == [["center-prior", "50.0 [0.0, 100.0]"], ["tokencut (dino-vits16)", "**100.0** [100.0, 100.0]"]]


def test_a_constant_column_has_a_point_interval_for_any_seed(tmp_path):
    runs = _hand_runs(tmp_path / "runs")
    for seed in (1, 12345):
        cells = _cells(render_report(find_runs([runs], resamples=300, seed=seed)), "Saliency")
        assert cells[("center-prior", "ECSSD Acc")] == "**0.900** [0.900, 0.900]"
        assert cells[("tokencut (dino-vits16)", "ECSSD IoU")] == "**0.500** [0.500, 0.500]"
        assert cells[("center-prior", "ECSSD IoU")] == "0.300 [0.200, 0.400]"  # two-valued: any seed


def test_without_intervals_the_cells_are_the_estimates(tmp_path):
    text = render_report(find_runs([_hand_runs(tmp_path / "runs")], resamples=200), intervals=False)
    cells = _cells(text, "Saliency")
    assert cells[("tokencut (dino-vits16)", "ECSSD max Fβ")] == "**0.861**"
    assert cells[("center-prior", "ECSSD IoU")] == "0.300" and "Brackets" not in text


def test_reference_numbers_are_shown_with_the_difference(tmp_path):
    runs = _hand_runs(tmp_path / "runs")
    ref = tmp_path / "published.csv"
    ref.write_text("method,backbone,post,dataset,metric,value\n"
                   "tokencut,dino-vits16,,ecssd,iou,0.712\n"
                   "tokencut,,,voc12,corloc,80\n"
                   "lost,,,duts_te,iou,0.654\n")
    text = render_report(find_runs([runs], resamples=200), reference=read_reference(ref))
    _, rows = _table(text, "Reproduction: measured vs published")
    assert rows == [
        ["tokencut (dino-vits16)", "ECSSD", "iou", "0.500 [0.500, 0.500]", "0.712", "-0.212"],  # 0.5 - 0.712
        ["tokencut", "VOC12", "corloc", "100.0 [100.0, 100.0]", "80", "+20.0"],
        ["lost", "DUTS-TE", "iou", "–", "0.654", "–"],  # no such run
    ]
    bad = tmp_path / "bad.csv"
    bad.write_text("method,value\nx,1\n")
    with pytest.raises(HarnessError, match="lacks the column"):
        read_reference(bad)


# ---- harness compare -------------------------------------------------------------------------
def test_compare_of_a_run_with_itself_is_exactly_zero(runs_dir, capsys):
    assert main(["compare", str(runs_dir / "r1"), str(runs_dir / "r1"), "--resamples", "300"]) == 0
    out = capsys.readouterr().out
    assert "+0.0 IoU [0.0, 0.0]" in out and "+0.0 max Fβ [0.0, 0.0]" in out and "+0.0 Acc [0.0, 0.0]" in out


def test_compare_prints_the_paired_difference_worked_out_by_hand(tmp_path, capsys):
    """Per-image differences A - B: Acc 0.2 on both images (a point interval), IoU 0.1 and 0.3
    (mean 0.2; resampled 0.1, 0.2 or 0.3), max Fβ: A's images have F 13/18 and 1, B's 13/18 and
    13/18, so the difference of the dataset-level maxima is 31/36 - 26/36 = 5/36 = 13.9 points,
    resampled as 10/36 (image 1 twice), 5/36 or 0 (image 0 twice)."""
    root = tmp_path / "runs"
    common = dict(dataset="ecssd", data_digest="ab" * 16)
    a = write_values_run(root, "a", "tokencut", metrics={"acc": 0.8, "iou": 0.6, "max_fbeta": 31 / 36},
                         columns={"acc": [0.8, 0.8], "iou": [0.5, 0.7]}, f_images=[F_13_18, F_ONE], **common)
    b = write_values_run(root, "b", "center-prior", metrics={"acc": 0.6, "iou": 0.4, "max_fbeta": 13 / 18},
                         columns={"acc": [0.6, 0.6], "iou": [0.4, 0.4]}, f_images=[F_13_18, F_13_18], **common)
    assert main(["compare", str(a), str(b), "--resamples", "400"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "A = tokencut (a)", "B = center-prior (b)",
        "A - B on 2 images, 95% paired bootstrap interval (400 resamples):",
        "  +20.0 Acc [20.0, 20.0]", "  +20.0 IoU [10.0, 30.0]", "  +13.9 max Fβ [0.0, 27.8]"]


def test_compare_refuses_runs_on_different_images(runs_dir, capsys):
    from report_fixtures import write_run

    write_run(runs_dir, "fewer", "tokencut", "ecssd", quality=0.5, images=6, seed=11)
    assert main(["compare", str(runs_dir / "r1"), str(runs_dir / "fewer")]) == 2
    err = capsys.readouterr().err
    assert "needs two runs on the same images: 4 only in r1" in err and "Traceback" not in err
    write_run(runs_dir, "boxes", "tokencut", "ecssd", kind="corloc", seed=12)
    assert main(["compare", str(runs_dir / "r1"), str(runs_dir / "boxes")]) == 2  # saliency vs CorLoc
    assert "share no metric" in capsys.readouterr().err


def test_report_without_runs_is_a_clear_error(tmp_path):
    with pytest.raises(HarnessError, match="no results.json found"):
        find_runs([tmp_path])


def test_presets_and_protocols_are_rows_of_their_own_and_named(runs_dir, tmp_path):
    text = render_report(find_runs([runs_dir], resamples=200))
    saliency = _section(text, "Saliency")
    # the same method + post chain under segmentation-tricks' conventions is another row
    assert "sempart-crop (dino-vits8) + gf" in saliency
    cells = _cells(text, "Saliency")
    # r11 (segtricks protocol) has the largest ECSSD IoU of all, yet is never bold against the
    # other protocol's rows; r2 is the best of the default protocol (values from the per-image files)
    r11_iou, r2_iou = (_expected_cell(runs_dir / run, "iou")[0] for run in ("r11", "r2"))
    default_ious = [_expected_cell(runs_dir / run, "iou")[0] for run in ("r1", "r2", "r4", "r7", "r8", "r9", "r12")]
    assert r11_iou > r2_iou == max(default_ious)
    crop_cell = cells[("sempart-crop (dino-vits8) [segtricks] {segtricks-320crop} + gf", "ECSSD IoU")]
    assert crop_cell.startswith(f"{r11_iou:.3f} [")
    assert cells[("tokencut (dino-vits16) + bs", "ECSSD IoU")].startswith(f"**{r2_iou:.3f}** [")
    notes = text.split("## Notes")[1]
    assert "sempart-crop preset `segtricks`, protocol `segtricks-320crop` v1.0" in notes
    assert "bs preset `segtricks`, protocol `harness-saliency-corloc` v1.0" in notes
    assert "Rows marked {segtricks-320crop} were scored under `--protocol segtricks`" in notes
    # published numbers are matched to the run of the same preset and protocol only
    ref = tmp_path / "published.csv"
    ref.write_text("method,backbone,post,dataset,metric,value,preset,protocol\n"
                   "tokencut,dino-vits16,bs,ecssd,iou,0.7,segtricks,\n"
                   "tokencut,dino-vits16,bs,ecssd,iou,0.7,,\n"
                   "sempart-crop,dino-vits8,gf,ecssd,iou,0.7,segtricks,segtricks-320crop\n")
    table = render_report(find_runs([runs_dir], resamples=200), reference=read_reference(ref))
    _, rows = _table(table, "Reproduction: measured vs published")
    # measured - 0.7 of r12 (bs preset segtricks), r2 (the defaults) and r11 (preset and protocol)
    assert [row[5] for row in rows] == [f"{_expected_cell(runs_dir / run, 'iou')[0] - 0.7:+.3f}"
                                        for run in ("r12", "r2", "r11")]
    assert [row[0] for row in rows] == ["tokencut (dino-vits16) + bs [segtricks]", "tokencut (dino-vits16) + bs",
                                        "sempart-crop (dino-vits8) + gf [segtricks] {segtricks-320crop}"]


def _synthetic_run(out: Path, name: str, *args: str) -> Path:
    assert main(["run", "--method", "center-prior", "--dataset", "synthetic", "--dataset-args", "count=6",
                 "--out", str(out), "--name", name, "--no-progress", *args]) == 0
    return out / name


def _edited_copy(run: Path, name: str, edit) -> Path:
    import json
    import shutil

    copy = run.with_name(name)
    shutil.copytree(run, copy)
    results = json.loads((copy / "results.json").read_text())
    edit(results)
    (copy / "results.json").write_text(json.dumps(results))
    return copy


DIFFERENT_DATA = {
    "dataset": lambda r: r["config"]["dataset"].update(name="ecssd"),
    "dataset root": lambda r: r["config"]["dataset"].update(root="/data/elsewhere"),
    "data digest": lambda r: r["config"]["dataset"].update(data_digest="bb" * 16),
    "protocol": lambda r: r["protocol"].update(version="2.0"),
}


@pytest.mark.parametrize("differs", list(DIFFERENT_DATA))
def test_compare_refuses_runs_on_other_data_with_the_same_image_ids(tmp_path, capsys, differs):
    """Matching ids are not matching data: the +45 IoU of two datasets' ground truths is refused."""
    out = tmp_path / "runs"
    a = _synthetic_run(out, "a")
    if differs == "dataset root":  # older runs have no data digest: their roots tell the data apart
        a = _edited_copy(a, "a-old", lambda r: r["config"]["dataset"].pop("data_digest", None))
    b = _edited_copy(a, "b", DIFFERENT_DATA[differs])
    capsys.readouterr()
    assert main(["compare", str(a), str(b), "--resamples", "200"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{a} and {b} differ in {differs}" in err and "compare runs of one dataset and protocol" in err


def test_compare_refuses_two_seeds_of_a_generated_dataset(tmp_path, capsys):
    out = tmp_path / "runs"
    a, b = _synthetic_run(out, "a"), _synthetic_run(out, "b", "--dataset-args", "count=6,seed=1")
    capsys.readouterr()
    assert main(["compare", str(a), str(b), "--resamples", "200"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "differ in dataset options {'count': 6, " in err and "'seed': 1" in err


def test_compare_accepts_runs_on_the_same_data(tmp_path, capsys):
    """Another method option on the same data compares; so do the same bytes in two folders."""
    out = tmp_path / "runs"
    a, b = _synthetic_run(out, "a"), _synthetic_run(out, "b", "--method-args", "sigma=0.1")
    assert main(["compare", str(a), str(b), "--resamples", "200"]) == 0
    assert "IoU [" in capsys.readouterr().out
    same = lambda root: lambda r: r["config"]["dataset"].update(root=root, data_digest="cc" * 16)  # noqa: E731
    moved_a, moved_b = _edited_copy(a, "a-here", same("/data/here")), _edited_copy(b, "b-there", same("/mnt/there"))
    assert main(["compare", str(moved_a), str(moved_b), "--resamples", "200"]) == 0


def test_third_party_plugins_name_themselves_in_the_tables(tmp_path, monkeypatch):
    """A dataset's and a post-processor's ``title`` and ``report_order``, and a method's
    ``ablation``, come from the installed plugin; a run whose plugin is gone shows its name."""
    import types

    from harness import registry as registry_module
    from harness.api import Dataset, Method, PostProcessor
    from harness.hookspecs import hookimpl
    from harness.registry import Registry
    from report_fixtures import write_run

    class AcmeSaliency(Dataset):
        name = "acme_sod"
        title = "ACME-SOD"
        report_order = -1  # before the paper's datasets

    class Crf(PostProcessor):
        name = "crf"
        title = "CRF"
        report_order = 5  # after GF and BF

    class MyNet(Method):
        name = "mynet"
        ablation = {"family": "mynet", "crop_consistency": True, "post": "crf"}

    module = types.ModuleType("acme")
    module.harness_datasets = hookimpl(lambda: [AcmeSaliency])
    module.harness_postprocessors = hookimpl(lambda: [Crf])
    module.harness_methods = hookimpl(lambda: [MyNet])
    monkeypatch.setattr(registry_module, "_REGISTRY", Registry(autoload=False, extra=[(module, "acme 1.0")]))

    root = tmp_path / "runs"
    write_run(root, "a1", "tokencut", "acme_sod", quality=0.5, backbone="dino-vits16", seed=1)
    write_run(root, "a2", "tokencut", "acme_sod", quality=0.6, posts=["crf"], backbone="dino-vits16", seed=2)
    write_run(root, "a3", "tokencut", "acme_sod", quality=0.6, posts=["gf"], backbone="dino-vits16", seed=3)
    write_run(root, "a4", "tokencut", "ecssd", quality=0.5, backbone="dino-vits16", seed=4)
    write_run(root, "a5", "tokencut", "gone_ds", quality=0.5, backbone="dino-vits16", seed=5)  # plugin not installed
    write_run(root, "a6", "mynet", "ecssd", quality=0.5, backbone="dino-vits8", seed=6)
    write_run(root, "a7", "mynet", "ecssd", quality=0.6, posts=["crf"], backbone="dino-vits8", seed=7)
    write_run(root, "a8", "sempart", "ecssd", quality=0.6, backbone="dino-vits8", seed=8)
    text = render_report(find_runs([root], resamples=50), intervals=False)

    saliency_header = text.split("## Saliency")[1].splitlines()[2]
    assert [c.strip() for c in saliency_header.split("|")[2:-1:3]] == ["ACME-SOD Acc", "ECSSD Acc", "gone_ds Acc"]
    post = text.split("## Post-processing (IoU)")[1].splitlines()[2]
    assert [c.strip() for c in post.split("|")[2:-1]] == [
        "ACME-SOD none", "ACME-SOD GF", "ACME-SOD CRF", "ECSSD none", "ECSSD CRF", "gone_ds none"]
    # two ablation families: each its own table, named, with its own post-processor's column
    mynet = text.split("## Ablation (mynet): backbone x crop consistency x CRF (IoU)")[1].split("## ")[0]
    table = [line.split("|")[1:-1] for line in mynet.splitlines() if line.startswith("|")]
    assert [c.strip() for c in table[0]] == ["Backbone", "Crop", "CRF", "ECSSD IoU"]
    assert [[c.strip() for c in row[:3]] for row in table[2:]] == [["dino-vits8", "✓", ""], ["dino-vits8", "✓", "✓"]]
    assert "## Ablation (sempart): backbone x crop consistency x GF (IoU)" in text
