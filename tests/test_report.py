"""``harness report`` and ``harness compare``: the paper's table shapes with intervals, figures."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.cli import main
from harness.errors import HarnessError
from harness.report import find_runs, read_reference, render_report

sys.path.insert(0, str(Path(__file__).parent))
from report_fixtures import paper_like_runs  # noqa: E402

EXPECTED = Path(__file__).parent / "fixtures" / "expected_report.md"


@pytest.fixture
def runs_dir(tmp_path) -> Path:
    paper_like_runs(tmp_path / "runs")
    return tmp_path / "runs"


def test_report_matches_the_checked_in_markdown(runs_dir):
    text = render_report(find_runs([runs_dir], resamples=500), title="Fixture report")
    assert text == EXPECTED.read_text()


def _section(text: str, title: str) -> dict[str, str]:
    body = text.split(f"## {title}")[1].split("## ")[0]
    return {line.split("|")[1].strip(): line for line in body.splitlines() if line.startswith("| ")}


def test_report_layout_rules(runs_dir):
    text = render_report(find_runs([runs_dir], resamples=500))
    saliency = _section(text, "Saliency")
    # missing cells are a dash, never 0; the best of a column is bold; the superseded r0 is gone
    assert saliency["center-prior"].count("–") == 3
    assert "**0.632** [" in saliency["tokencut (dino-vits16) + bs"]
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


def test_reference_numbers_are_shown_with_the_difference(runs_dir, tmp_path):
    ref = tmp_path / "published.csv"
    ref.write_text("method,backbone,post,dataset,metric,value\n"
                   "tokencut,dino-vits16,,ecssd,iou,0.712\n"
                   "tokencut,dino-vits16,bs,ecssd,iou,0.772\n"
                   "lost,,,ecssd,iou,0.654\n")
    text = render_report(find_runs([runs_dir], resamples=200), reference=read_reference(ref))
    table = text.split("## Reproduction: measured vs published")[1]
    assert "| tokencut (dino-vits16)      | ECSSD     | iou      | 0.537 [" in table and "| -0.175 |" in table
    assert "| tokencut (dino-vits16) + bs | ECSSD     | iou      | 0.632 [" in table and "| -0.140 |" in table
    assert "| lost                        | ECSSD     | iou      | –" in table
    bad = tmp_path / "bad.csv"
    bad.write_text("method,value\nx,1\n")
    with pytest.raises(HarnessError, match="lacks the column"):
        read_reference(bad)


def test_compare_of_a_run_with_itself_is_exactly_zero(runs_dir, capsys):
    assert main(["compare", str(runs_dir / "r1"), str(runs_dir / "r1"), "--resamples", "300"]) == 0
    out = capsys.readouterr().out
    assert "+0.0 IoU [0.0, 0.0]" in out and "+0.0 max Fβ [0.0, 0.0]" in out and "+0.0 Acc [0.0, 0.0]" in out


def test_compare_prints_a_signed_paired_interval(runs_dir, capsys):
    assert main(["compare", str(runs_dir / "r2"), str(runs_dir / "r1"), "--resamples", "500"]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if "IoU" in l and "[" in l).strip()
    estimate, low, high = float(line.split()[0]), *map(float, line.split("[")[1].rstrip("]").split(","))
    assert estimate == pytest.approx(100 * (0.6317 - 0.5365), abs=0.2) and low < estimate < high


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


def test_figures_from_real_runs(tmp_path, capsys):
    """Two runs on the synthetic dataset: the grid and the size plot exist, have the expected
    pixel size and are not blank, and the markdown links them."""
    from harness.figures import grid_size

    common = ["--dataset", "synthetic", "--dataset-args", "count=6", "--out", str(tmp_path / "runs"), "--no-progress"]
    assert main(["run", "--method", "center-prior", *common]) == 0
    assert main(["run", "--method", "center-prior", "--method-args", "sigma=0.15", *common]) == 0
    out = tmp_path / "report" / "table.md"
    assert main(["report", str(tmp_path / "runs"), "-o", str(out), "--resamples", "200"]) == 0
    text = out.read_text()
    grid = out.parent / "table_figures" / "qualitative_synthetic.png"
    size = out.parent / "table_figures" / "size_iou_synthetic.png"
    assert "(table_figures/qualitative_synthetic.png)" in text and "(table_figures/size_iou_synthetic.png)" in text
    pixels = np.asarray(Image.open(grid).convert("RGB"))
    assert (pixels.shape[1], pixels.shape[0]) == grid_size(rows=3, columns=4)
    assert pixels.std() > 20  # images and masks, not a blank canvas
    plot = np.asarray(Image.open(size).convert("RGB"))
    assert plot.shape[:2] == (450, 700) and len(np.unique(plot.reshape(-1, 3), axis=0)) > 10


def test_presets_and_protocols_are_rows_of_their_own_and_named(runs_dir, tmp_path):
    text = render_report(find_runs([runs_dir], resamples=200))
    saliency = _section(text, "Saliency")
    # the same method + post chain under segmentation-tricks' conventions is another row
    assert "sempart-crop (dino-vits8) + gf" in saliency
    crop_row = saliency["sempart-crop (dino-vits8) [segtricks] {segtricks-320crop} + gf"]
    assert "0.639 [" in crop_row and "**" not in crop_row  # never bold against another protocol
    assert "**0.632** [" in saliency["tokencut (dino-vits16) + bs"]  # the default-protocol best
    assert "0.607 [" in saliency["tokencut (dino-vits16) + bs [segtricks]"]
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
    table = table.split("## Reproduction: measured vs published")[1].split("## ")[0]
    assert "| -0.093 |" in table and "| -0.068 |" in table and "| -0.061 |" in table


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
