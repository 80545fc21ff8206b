"""``harness report`` figures: which files each figure option writes, which images a grid shows
(read back from its pixels), and the markdown links to them.

Three real runs made once: center-prior and center-prior + gf on 6 synthetic images, and
center-prior on a 3-image ``folder`` dataset. A grid (figures.py) is ``columns x (128 + 4) - 4``
pixels wide and ``30 + rows x (128 + 4) - 4`` high: image | ground truth | one column per run,
one row per image; each tile is the picture letterboxed into 128 x 128.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cli_cases import folder_dataset
from harness.cli import main
from harness.datasets.synthetic import SyntheticDataset

TILE, GAP, HEADER = 128, 4, 30


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("figure-runs")
    out, cache = base / "runs", base / "cache"
    synthetic = ["--dataset", "synthetic", "--dataset-args", "count=6", "--out", str(out), "--cache-dir", str(cache),
                 "--no-progress"]
    assert main(["run", "--method", "center-prior", *synthetic, "--name", "plain"]) == 0
    assert main(["run", "--method", "center-prior", "--post", "gf", *synthetic, "--name", "gf"]) == 0
    root = folder_dataset(base / "data")
    assert main(["run", "--method", "center-prior", "--dataset", "folder", "--data-root", str(root),
                 "--out", str(out), "--cache-dir", str(cache), "--no-progress", "--name", "folder-run"]) == 0
    return out


def _report(capsys, runs: Path, *args: str) -> str:
    capsys.readouterr()
    assert main(["report", str(runs), "--resamples", "100", *args]) == 0
    return capsys.readouterr().out


def _ranked(run: Path) -> list[tuple[str, str]]:
    """(label, id) of the best, median and worst IoU of a run (ties by id), from its per_image.csv."""
    frame = pd.read_csv(run / "per_image.csv", dtype={"id": str}).sort_values(["iou", "id"], ascending=[False, True])
    picks = [("best", 0), ("median", len(frame) // 2), ("worst", len(frame) - 1)]
    return [(f"{label} ({frame.iloc[i]['iou']:.2f})", frame.iloc[i]["id"]) for label, i in picks]


def _grid_images(path: Path, rows: int, columns: int) -> list[np.ndarray]:
    """The image tile (first column) of each row, after checking the grid's pixel size."""
    pixels = np.asarray(Image.open(path).convert("RGB"))
    assert pixels.shape == (HEADER + rows * (TILE + GAP) - GAP, columns * (TILE + GAP) - GAP, 3)
    return [pixels[HEADER + r * (TILE + GAP): HEADER + r * (TILE + GAP) + TILE, :TILE] for r in range(rows)]


def _synthetic_tile(image_id: str) -> np.ndarray:
    """A 256 x 192 synthetic image shrunk to 128 x 96 and centred in a white 128 x 128 tile."""
    image = SyntheticDataset(count=6).load(image_id).image
    small = Image.fromarray(image)
    small.thumbnail((TILE, TILE), Image.BILINEAR)
    tile = np.full((TILE, TILE, 3), 255, np.uint8)
    tile[16:112] = np.asarray(small)
    return tile


def _shows(tiles: list[np.ndarray], ids: list[str]) -> None:
    for tile, image_id in zip(tiles, ids, strict=True):
        np.testing.assert_array_equal(tile, _synthetic_tile(image_id), err_msg=image_id)


def test_default_figures_beside_the_output(runs, tmp_path, capsys):
    out = tmp_path / "report" / "table.md"
    printed = _report(capsys, runs, "-o", str(out))
    figures = out.parent / "table_figures"
    assert sorted(p.name for p in figures.iterdir()) == [
        "qualitative_folder.png", "qualitative_synthetic.png", "size_iou_folder.png", "size_iou_synthetic.png"]
    assert printed == f"wrote {out} and 4 figures in {figures}\n"
    text = out.read_text()
    # ranked by the first run by row label ("center-prior" before "center-prior + gf")
    ranked = _ranked(runs / "plain")
    caption = "synthetic: " + ", ".join(label for label, _ in ranked) + " (ranked by center-prior)"
    assert f"![{caption}](table_figures/qualitative_synthetic.png)" in text
    assert "](table_figures/qualitative_folder.png)" in text
    assert "![IoU by object size, synthetic](table_figures/size_iou_synthetic.png)" in text
    assert "![IoU by object size, folder](table_figures/size_iou_folder.png)" in text
    _shows(_grid_images(figures / "qualitative_synthetic.png", rows=3, columns=4), [i for _, i in ranked])
    _grid_images(figures / "qualitative_folder.png", rows=3, columns=3)  # one run on that dataset
    assert Image.open(figures / "size_iou_synthetic.png").size == (700, 450)  # 7 x 4.5 inches at 100 dpi


def test_no_figures(runs, tmp_path, capsys):
    out = tmp_path / "table.md"
    assert _report(capsys, runs, "-o", str(out), "--no-figures") == f"wrote {out}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.md"]
    assert "![" not in out.read_text()


def test_figures_folder_is_linked_relative_to_the_output(runs, tmp_path, capsys):
    out, folder = tmp_path / "reports" / "table.md", tmp_path / "pictures"
    _report(capsys, runs, "-o", str(out), "--figures", str(folder))
    assert len(list(folder.iterdir())) == 4 and not (out.parent / "table_figures").exists()
    assert "](../pictures/qualitative_synthetic.png)" in out.read_text()


def test_grid_datasets_limits_the_grids_not_the_size_plots(runs, tmp_path, capsys):
    out = tmp_path / "table.md"
    _report(capsys, runs, "-o", str(out), "--grid-datasets", "synthetic")
    assert sorted(p.name for p in (tmp_path / "table_figures").iterdir()) == [
        "qualitative_synthetic.png", "size_iou_folder.png", "size_iou_synthetic.png"]
    text = out.read_text()
    assert "qualitative_folder" not in text and "(table_figures/size_iou_folder.png)" in text


def test_figure_ids_choose_the_grid_rows(runs, tmp_path, capsys):
    out = tmp_path / "table.md"
    printed = _report(capsys, runs, "-o", str(out), "--figure-ids", "synthetic_0004, synthetic_0001")
    # the folder dataset has no such images: its grid is skipped with a note, the rest is made
    assert "note: qualitative grid for folder skipped: " in printed and "'synthetic_0004'" in printed
    assert sorted(p.name for p in (tmp_path / "table_figures").iterdir()) == [
        "qualitative_synthetic.png", "size_iou_folder.png", "size_iou_synthetic.png"]
    assert ("![synthetic: synthetic_0004, synthetic_0001 (ranked by center-prior)]"
            "(table_figures/qualitative_synthetic.png)") in out.read_text()
    _shows(_grid_images(tmp_path / "table_figures" / "qualitative_synthetic.png", rows=2, columns=4),
           ["synthetic_0004", "synthetic_0001"])


@pytest.mark.parametrize("pick", ["gf", "center-prior + gf"], ids=["directory", "row-label"])
def test_figure_run_ranks_the_grid_images(runs, tmp_path, capsys, pick):
    out = tmp_path / "table.md"
    _report(capsys, runs, "-o", str(out), "--figure-run", pick, "--grid-datasets", "synthetic")
    ranked = _ranked(runs / "gf")
    assert ranked != _ranked(runs / "plain")  # the premise: the two runs rank the images differently
    caption = "synthetic: " + ", ".join(label for label, _ in ranked) + " (ranked by center-prior + gf)"
    assert f"![{caption}](table_figures/qualitative_synthetic.png)" in out.read_text()
    _shows(_grid_images(tmp_path / "table_figures" / "qualitative_synthetic.png", rows=3, columns=4),
           [i for _, i in ranked])


def test_printed_report_links_figures_relative_to_the_current_folder(runs, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    printed = _report(capsys, runs, "--figures", str(tmp_path / "figs"), "--grid-datasets", "synthetic")
    assert "](figs/qualitative_synthetic.png)" in printed and "](figs/size_iou_folder.png)" in printed
    assert os.path.isfile(tmp_path / "figs" / "qualitative_synthetic.png")
