"""``harness report`` lays out the paper's table shapes from run directories."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import HarnessError
from harness.report import find_runs, render_report

sys.path.insert(0, str(Path(__file__).parent))
from report_fixtures import paper_like_runs  # noqa: E402

EXPECTED = Path(__file__).parent / "fixtures" / "expected_report.md"


def test_report_matches_the_checked_in_markdown(tmp_path):
    paper_like_runs(tmp_path)
    assert render_report(find_runs([tmp_path]), title="Fixture report") == EXPECTED.read_text()


def test_report_layout_rules(tmp_path):
    paper_like_runs(tmp_path)
    text = render_report(find_runs([tmp_path]))
    saliency = text.split("## CorLoc")[0]
    lines = {line.split("|")[1].strip(): line for line in saliency.splitlines() if line.startswith("| ")}
    # missing cells are a dash, never 0; the best value of a column is bold; the superseded r0 is gone
    assert lines["center-prior"].count("–") == 3 and "0.000" not in text
    assert "**0.934**" in lines["tokencut (dino-vits16) + bs"]
    assert "(r0)" not in text and "0.500" not in text
    assert text.index("DUTS-TE Acc") < text.index("ECSSD Acc")  # the paper's column order


def test_report_cli_writes_the_file(tmp_path, capsys):
    paper_like_runs(tmp_path / "runs")
    assert main(["report", str(tmp_path / "runs"), "-o", str(tmp_path / "out" / "t.md")]) == 0
    assert (tmp_path / "out" / "t.md").read_text().startswith("# Results")


def test_report_without_runs_is_a_clear_error(tmp_path):
    with pytest.raises(HarnessError, match="no results.json found"):
        find_runs([tmp_path])
