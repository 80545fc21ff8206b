"""Where a dataset's folder comes from: ``--data-root``, else ``$HARNESS_DATA_<NAME>``, else
``$HARNESS_DATA/<name>`` (README, "Datasets"). Three copies of a layout with 1, 2 and 3 images
tell by their image count which root was used."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.cli import main
from harness.datasets.saliency import ECSSD, DUTSTest


def _layout(root: Path, n: int, images: str = "images", masks: str = "ground_truth_mask") -> Path:
    (root / images).mkdir(parents=True)
    (root / masks).mkdir()
    for i in range(n):
        Image.fromarray(np.full((12, 16, 3), 30 * i, np.uint8)).save(root / images / f"{i:04d}.png")
        Image.fromarray(np.zeros((12, 16), np.uint8)).save(root / masks / f"{i:04d}.png")
    return root


@pytest.fixture
def roots(tmp_path, monkeypatch) -> dict[str, Path]:
    """explicit (1 image), HARNESS_DATA_ECSSD (2), HARNESS_DATA/ecssd (3); no variable set yet."""
    for var in ("HARNESS_DATA", "HARNESS_DATA_ECSSD", "HARNESS_DATA_DUTS_TE"):
        monkeypatch.delenv(var, raising=False)
    return {"explicit": _layout(tmp_path / "explicit", 1), "named": _layout(tmp_path / "named", 2),
            "shared": _layout(tmp_path / "all" / "ecssd", 3)}


@pytest.mark.parametrize("variables, root, images", [
    (["shared"], "shared", 3),
    (["named"], "named", 2),
    (["shared", "named"], "named", 2),  # HARNESS_DATA_ECSSD before HARNESS_DATA
], ids=["HARNESS_DATA", "HARNESS_DATA_ECSSD", "both"])
def test_the_dataset_resolves_its_root_from_the_environment(roots, monkeypatch, variables, root, images):
    if "shared" in variables:
        monkeypatch.setenv("HARNESS_DATA", str(roots["shared"].parent))
    if "named" in variables:
        monkeypatch.setenv("HARNESS_DATA_ECSSD", str(roots["named"]))
    dataset = ECSSD(None)
    assert dataset.root == roots[root] and len(dataset.ids()) == images
    explicit = ECSSD(roots["explicit"])  # --data-root before both
    assert explicit.root == roots["explicit"] and explicit.ids() == ["0000"]


def test_the_command_line_records_the_root_it_used(roots, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HARNESS_DATA", str(roots["shared"].parent))
    monkeypatch.setenv("HARNESS_DATA_ECSSD", str(roots["named"]))
    args = ["run", "--method", "center-prior", "--dataset", "ecssd", "--no-progress"]
    for extra, root, images in [([], "named", 2), (["--data-root", str(roots["explicit"])], "explicit", 1)]:
        out = tmp_path / f"runs-{root}"
        assert main([*args, "--out", str(out), *extra]) == 0, capsys.readouterr().err
        results = json.loads(next(out.glob("*/results.json")).read_text())
        assert results["config"]["dataset"]["root"] == str(roots[root])
        assert results["counts"]["images"] == images
    monkeypatch.delenv("HARNESS_DATA_ECSSD")
    assert main([*args, "--out", str(tmp_path / "runs-shared")]) == 0
    results = json.loads(next((tmp_path / "runs-shared").glob("*/results.json")).read_text())
    assert results["config"]["dataset"]["root"] == str(roots["shared"]) and results["counts"]["images"] == 3


def test_a_name_with_an_underscore_and_a_relative_variable(tmp_path, monkeypatch):
    """duts_te reads HARNESS_DATA_DUTS_TE and HARNESS_DATA/duts_te; a relative value is made
    absolute (a run's identity must not depend on the current folder)."""
    for var in ("HARNESS_DATA", "HARNESS_DATA_DUTS_TE"):
        monkeypatch.delenv(var, raising=False)
    _layout(tmp_path / "all" / "duts_te", 3, "DUTS-TE-Image", "DUTS-TE-Mask")
    _layout(tmp_path / "mine" / "DUTS-TE", 2, "DUTS-TE-Image", "DUTS-TE-Mask")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HARNESS_DATA", "all")
    assert DUTSTest(None).root == tmp_path / "all" / "duts_te" and len(DUTSTest(None).ids()) == 3
    monkeypatch.setenv("HARNESS_DATA_DUTS_TE", "mine")  # the parent of DUTS-TE, as --data-root may be
    assert DUTSTest(None).root == tmp_path / "mine" and len(DUTSTest(None).ids()) == 2
