"""A broken run directory is one clear error (exit 2) in ``harness report`` and ``harness compare``:
results.json checked when loaded, per_image.csv and saliency_histograms.npz when first read."""
from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from harness.cli import main
from harness.run_files import SCHEMA_VERSION

COMMANDS = ("report", "compare")


def _run(tmp_path: Path, name: str = "a") -> Path:
    """A real six-image run on the synthetic dataset (about 0.1 s)."""
    out = tmp_path / "runs"
    assert main(["run", "--method", "center-prior", "--dataset", "synthetic", "--dataset-args", "count=6",
                 "--out", str(out), "--name", name, "--no-progress"]) == 0
    return out / name


def _edit_results(run_dir: Path, edit) -> None:
    results = json.loads((run_dir / "results.json").read_text())
    edit(results)
    (run_dir / "results.json").write_text(json.dumps(results))


def _set_files(run_dir: Path, names=("per_image.csv", "saliency_histograms.npz")) -> None:
    """Record the digests of the run's files as the writer does (older runs have none)."""
    _edit_results(run_dir, lambda r: r.update(files={n: hashlib.sha256((run_dir / n).read_bytes()).hexdigest()
                                                      for n in names}))


def _drop_files(run_dir: Path) -> None:
    """An older run: no ``files`` digests, so a file's contents are checked on their own."""
    _edit_results(run_dir, lambda r: r.pop("files", None))


@pytest.fixture
def pair(tmp_path, capsys) -> tuple[Path, Path]:
    """A run and a copy of it: a broken copy is compared with the intact run."""
    good = _run(tmp_path)
    broken = tmp_path / "runs" / "b"
    shutil.copytree(good, broken)
    capsys.readouterr()
    return good, broken


def _argv(command: str, good: Path, broken: Path) -> list[str]:
    if command == "report":
        return ["report", str(broken), "--resamples", "200"]
    return ["compare", str(good), str(broken), "--resamples", "200"]


def _refused(capsys, argv: list[str], *words: str) -> str:
    """Exit status 2 and exactly one line on stderr, holding every word, no traceback."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith("\n") and "Traceback" not in err, err
    for word in words:
        assert word in err, err
    return err


RESULTS_DEFECTS = {
    "malformed JSON": (lambda p: p.write_text('{"schema_version": 1, "config": '), "is not valid JSON"),
    "not UTF-8": (lambda p: p.write_bytes(b"\xff\xfe\x00garbage"), "is not valid JSON"),
    "a list": (lambda p: p.write_text("[1, 2, 3]"), "holds a JSON list, not a results object"),
    "no dataset name": (lambda p: _edit(p, lambda r: r["config"]["dataset"].pop("name")),
                        "lacks `config.dataset.name`"),
    "no method": (lambda p: _edit(p, lambda r: r["config"].pop("method")), "lacks `config.method`"),
    "no metrics": (lambda p: _edit(p, lambda r: r.pop("metrics")), "lacks `metrics`"),
    "no protocol": (lambda p: _edit(p, lambda r: r.pop("protocol")), "lacks `protocol`"),
    "counts as text": (lambda p: _edit(p, lambda r: r["counts"].update(images="six")), "`counts.images` is 'six'"),
    "a post without a name": (lambda p: _edit(p, lambda r: r["config"].update(posts=["gf"])), "`config.posts[0]`"),
    "a metric as text": (lambda p: _edit(p, lambda r: r["metrics"].update(iou="high")), "metric `iou` is 'high'"),
}


def _edit(path: Path, edit) -> None:
    _edit_results(path.parent, edit)


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("defect", list(RESULTS_DEFECTS))
def test_a_broken_results_json_is_one_clear_error(pair, capsys, command, defect):
    good, broken = pair
    damage, words = RESULTS_DEFECTS[defect]
    damage(broken / "results.json")
    _refused(capsys, _argv(command, good, broken), str(broken / "results.json"), words, "re-run the run")


@pytest.mark.parametrize("command", COMMANDS)
def test_a_newer_schema_asks_for_an_upgrade(pair, capsys, command):
    good, broken = pair
    # a newer schema may rename anything: the version is read before any other key
    _edit_results(broken, lambda r: (r.clear(), r.update(schema_version=SCHEMA_VERSION + 1)))
    _refused(capsys, _argv(command, good, broken), str(broken / "results.json"),
             f"written by a newer harness (schema_version {SCHEMA_VERSION + 1}", "upgrade seg-harness")


def _rewrite_csv(path: Path, edit) -> None:
    lines = path.read_text().splitlines()
    path.write_text("\n".join(edit(lines)) + "\n")


def _set_cell(lines: list[str], row: int, column: str, value: str) -> list[str]:
    header = lines[0].split(",")
    cells = lines[row + 1].split(",")
    cells[header.index(column)] = value
    return lines[: row + 1] + [",".join(cells)] + lines[row + 2 :]


PER_IMAGE_DEFECTS = {
    "binary": (lambda p: p.write_bytes((p.parent / "saliency_histograms.npz").read_bytes()), "cannot be read as CSV"),
    "empty": (lambda p: p.write_bytes(b""), "cannot be read as CSV"),
    "no id column": (lambda p: _rewrite_csv(p, lambda ls: [ls[0].replace("id,", "name,", 1)] + ls[1:]),
                     "has no `id` column"),
    "text in a metric column": (lambda p: _rewrite_csv(p, lambda ls: _set_cell(ls, 2, "iou", "abc")),
                                "column `iou` holds 'abc', not a number"),
    "a row short": (lambda p: _rewrite_csv(p, lambda ls: ls[:-1]), "has 5 rows but"),
    "no iou column": (lambda p: _rewrite_csv(p, lambda ls: [",".join(c.split(",")[:2] + c.split(",")[3:])
                                                            for c in ls]),
                      "has no `iou` column although results.json reports iou"),
    "an id twice": (lambda p: _rewrite_csv(p, lambda ls: ls[:2] + [ls[1]] + ls[3:]), "an id twice"),
    "infinity": (lambda p: _rewrite_csv(p, lambda ls: _set_cell(ls, 0, "acc", "inf")), "column `acc` holds infinity"),
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("defect", list(PER_IMAGE_DEFECTS))
def test_a_malformed_per_image_csv_is_one_clear_error(pair, capsys, command, defect):
    good, broken = pair
    _drop_files(broken)
    damage, words = PER_IMAGE_DEFECTS[defect]
    damage(broken / "per_image.csv")
    _refused(capsys, _argv(command, good, broken), str(broken / "per_image.csv"), words, "re-run")


def _other_run(tmp_path: Path, capsys) -> Path:
    """Another run of the same data (another method option): its files belong to another results.json."""
    out = tmp_path / "runs"
    assert main(["run", "--method", "center-prior", "--method-args", "sigma=0.1", "--dataset", "synthetic",
                 "--dataset-args", "count=6", "--out", str(out), "--name", "other", "--no-progress"]) == 0
    capsys.readouterr()
    return out / "other"


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("name", ["per_image.csv", "saliency_histograms.npz"])
def test_a_file_of_another_run_is_refused_by_its_digest(pair, tmp_path, capsys, command, name):
    good, broken = pair
    _set_files(broken)
    other = _other_run(tmp_path, capsys)
    shutil.copy(other / name, broken / name)  # well-formed, the right size, from another run
    _refused(capsys, _argv(command, good, broken), f"{broken / name} does not belong to {broken / 'results.json'}",
             "the run directory mixes two runs; re-run it")


@pytest.mark.parametrize("command", COMMANDS)
def test_a_listed_file_that_is_missing_is_refused(pair, capsys, command):
    good, broken = pair
    _set_files(broken)
    (broken / "saliency_histograms.npz").unlink()
    _refused(capsys, _argv(command, good, broken), f"{broken / 'saliency_histograms.npz'} is missing",
             "incomplete; re-run it")


def _npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


HISTOGRAM_DEFECTS = {
    "not an npz": (b"not an npz at all", "cannot be read as saliency histograms"),
    "truncated": (None, "cannot be read as saliency histograms"),
    "no hist_bg": (_npz(hist_fg=np.zeros((6, 256), np.uint32)), "cannot be read as saliency histograms"),
    "a single array": (None, "cannot be read as saliency histograms"),
    "three images": (_npz(hist_fg=np.zeros((3, 256), np.uint32), hist_bg=np.zeros((3, 256), np.uint32)),
                     "not (6, 256)"),
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("defect", list(HISTOGRAM_DEFECTS))
def test_unreadable_saliency_histograms_are_one_clear_error(pair, capsys, command, defect):
    good, broken = pair
    _drop_files(broken)
    path = broken / "saliency_histograms.npz"
    data, words = HISTOGRAM_DEFECTS[defect]
    if defect == "truncated":
        data = path.read_bytes()[:200]
    elif defect == "a single array":
        buffer = io.BytesIO()
        np.save(buffer, np.zeros((6, 256), np.uint32))
        data = buffer.getvalue()
    path.write_bytes(data)
    _refused(capsys, _argv(command, good, broken), str(path), words, "re-run")


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_non_finite_metric_is_refused_not_printed(pair, capsys, command, value):
    good, broken = pair
    _edit_results(broken, lambda r: r["metrics"].update(iou=value))  # json writes NaN / Infinity
    _refused(capsys, _argv(command, good, broken), str(broken / "results.json"),
             f"metric `iou` is {value}", "leave this run out of the report")


def test_an_undefined_metric_is_the_missing_mark_with_a_note(pair, tmp_path, capsys, caplog):
    """null (what the writer records for an undefined metric) is "–" and a warning, never a number,
    in the tables and beside a published number alike."""
    _, broken = pair
    _edit_results(broken, lambda r: r["metrics"].update(iou=None))
    reference = tmp_path / "published.csv"
    reference.write_text("method,dataset,metric,value\ncenter-prior,synthetic,iou,0.5\n")
    assert main(["report", str(broken), "--resamples", "200", "--reference", str(reference)]) == 0
    out = capsys.readouterr().out
    assert "nan" not in out.lower() and "| center-prior | synthetic | iou      | –" in out
    assert re.search(r"\| center-prior \| [0-9.]+ \[[0-9., ]+\] +\| – ", out)  # the saliency table's IoU cell
    assert any("iou undefined" in r.getMessage() and "shown as –" in r.getMessage() for r in caplog.records)


def test_per_image_values_without_any_defined_one_are_refused(pair, tmp_path, capsys):
    """A metric whose per-image column holds no number would get a "[nan, nan]" interval."""
    good, broken = pair
    _drop_files(broken)
    _rewrite_csv(broken / "per_image.csv", lambda ls: [ls[0]] + [_set_cell([ls[0], line], 0, "iou", "")[1]
                                                                  for line in ls[1:]])
    reference = tmp_path / "published.csv"
    reference.write_text("method,dataset,metric,value\ncenter-prior,synthetic,iou,0.5\n")
    _refused(capsys, ["report", str(broken), "--resamples", "200", "--reference", str(reference)],
             str(broken / "per_image.csv"), "has no defined `iou` value", "re-run it")


def test_compare_without_a_common_defined_value_says_so(pair, capsys):
    """IoU is undefined (empty union) on the first half of A's images and the second half of B's."""
    good, broken = pair
    for run, rows in ((good, range(3)), (broken, range(3, 6))):
        _drop_files(run)
        _rewrite_csv(run / "per_image.csv", lambda ls: [ls[0]] + [
            _set_cell([ls[0], line], 0, "iou", "")[1] if i in rows else line for i, line in enumerate(ls[1:])])
    assert main(["compare", str(good), str(broken), "--resamples", "200"]) == 0
    out = capsys.readouterr().out
    assert "nan" not in out.lower()
    assert "– IoU (undefined: no image has a value in both runs)" in out and "+0.0 Acc [0.0, 0.0]" in out


def test_an_intact_run_with_its_digests_reports_and_compares(pair, capsys):
    good, broken = pair
    for run in (good, broken):
        _set_files(run)
    assert main(["report", str(good.parent), "--resamples", "200"]) == 0
    assert main(["compare", str(good), str(broken), "--resamples", "200"]) == 0
    assert "+0.0 max Fβ [0.0, 0.0]" in capsys.readouterr().out
