"""``harness suite``: suite files, plans, resumable runs, the built-in two-tricks and smoke suites."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from harness.cli import build_parser, main
from harness.suites.plan import make_plan, trained_epochs
from harness.suites.spec import load_suite

REPO = Path(__file__).resolve().parents[1]
SALIENCY = ("dut_omron", "duts_te", "ecssd")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _write(tmp_path: Path, text: str, name: str = "suite.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def _error(capsys, argv: list[str]) -> str:
    """Run ``harness ARGV`` expecting a clear error: exit 2, one line on stderr."""
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2, captured
    lines = _lines(captured.err)
    assert len(lines) == 1, captured.err
    return lines[0]


# ---- a small suite on the synthetic dataset (no data, seconds) ---------------------------
from suite_cases import SYNTH, TRAIN  # noqa: E402  (shared with the Slurm launcher's test)
SMALL = f"""
[defaults.run]
device = "cpu"
workers = 0

[[run]]
name = "prior"
method = "center-prior"
dataset = "synthetic"
{SYNTH}

[[run]]
name = "prior-gf"
method = "center-prior"
dataset = "synthetic"
{SYNTH}
post = ["gf"]

[[run]]
name = "prior-wide"
method = "center-prior"
dataset = "synthetic"
{SYNTH}
method_args = {{ sigma = 0.4 }}
"""


def test_small_suite_runs_in_order_and_a_second_call_runs_nothing(tmp_path, capsys):
    suite = _write(tmp_path, SMALL)
    out = tmp_path / "out"
    assert main(["suite", "run", str(suite), "--out", str(out)]) == 0
    first = capsys.readouterr().out
    assert [line.split()[2].rstrip(":") for line in first.splitlines() if line.endswith(": running")] == [
        "prior", "prior-gf", "prior-wide"]
    for name in ("prior", "prior-gf", "prior-wide"):
        results = json.loads((out / "runs" / name / "results.json").read_text())
        assert results["spec"]["name"] == name and results["counts"]["images"] == 4
    assert json.loads((out / "runs" / "prior-wide" / "results.json").read_text())["config"]["method"]["config"] == {
        "sigma": 0.4}
    assert (out / "report.md").is_file()
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}

    assert main(["suite", "run", str(suite), "--out", str(out)]) == 0
    second = capsys.readouterr().out
    assert "running" not in second
    assert "all 3 jobs are done, nothing to run" in second and "is up to date" in second
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == mtimes

    # the plan says so too, with each job's command
    assert main(["suite", "plan", str(suite), "--out", str(out)]) == 0
    plan = capsys.readouterr().out
    assert "3 jobs (3 done, 0 to do)" in plan
    assert f"harness run --method center-prior --dataset synthetic --dataset-args count=4,height=40,width=56 " \
           f"--post gf --device cpu --workers 0 --out {out / 'runs'} --name prior-gf" in plan


def test_a_changed_job_runs_again_and_only_it(tmp_path, capsys):
    suite = _write(tmp_path, SMALL)
    out = tmp_path / "out"
    assert main(["suite", "run", str(suite), "--out", str(out)]) == 0
    capsys.readouterr()
    before = (out / "runs" / "prior" / "results.json").stat().st_mtime_ns
    _write(tmp_path, SMALL.replace("sigma = 0.4", "sigma = 0.3"))
    assert main(["suite", "run", str(suite), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert [line.split()[2].rstrip(":") for line in text.splitlines() if line.endswith(": running")] == ["prior-wide"]
    assert (out / "runs" / "prior" / "results.json").stat().st_mtime_ns == before
    results = json.loads((out / "runs" / "prior-wide" / "results.json").read_text())
    assert results["config"]["method"]["config"] == {"sigma": 0.3}


def test_an_interrupted_suite_resumes_without_redoing_finished_jobs(tmp_path, capsys, monkeypatch):
    import harness.cli

    suite = _write(tmp_path, SMALL)
    out = tmp_path / "out"
    real = harness.cli.main
    calls = []

    def interrupted(argv):
        calls.append(argv[argv.index("--name") + 1] if "--name" in argv else argv[0])
        if "prior-gf" in argv:
            raise KeyboardInterrupt  # Ctrl-C while the second job runs
        return real(argv)

    monkeypatch.setattr(harness.cli, "main", interrupted)
    assert real(["suite", "run", str(suite), "--out", str(out)]) == 130
    text = capsys.readouterr().out
    assert calls == ["prior", "prior-gf"] and "interrupted; run the same command again" in text
    assert (out / "runs" / "prior" / "results.json").is_file() and not (out / "runs" / "prior-gf").exists()
    assert not (out / "report.md").exists()
    finished = (out / "runs" / "prior" / "results.json").stat().st_mtime_ns

    monkeypatch.setattr(harness.cli, "main", real)
    assert real(["suite", "run", str(suite), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "prior: done before, skipped" in text
    assert [line.split()[2].rstrip(":") for line in text.splitlines() if line.endswith(": running")] == [
        "prior-gf", "prior-wide"]
    assert (out / "runs" / "prior" / "results.json").stat().st_mtime_ns == finished




@pytest.mark.slow
def test_training_resumes_with_resume_and_its_evaluation_follows(tmp_path, capsys):
    """A training stopped after epoch 1 of 2 continues (--resume) instead of restarting; the run
    job that evaluates it is done only once it evaluated the final checkpoint."""
    suite = _write(tmp_path, TRAIN.replace("EPOCHS", "1"))
    out = tmp_path / "out"
    assert main(["suite", "run", str(suite), "--out", str(out), "--only", "train-*"]) == 0
    capsys.readouterr()
    folder = out / "train" / "train-sempart"
    assert trained_epochs(folder) == 1 and not (out / "runs").exists()
    epoch1 = (folder / "checkpoint_epoch001.pt").read_bytes()
    first_row = (folder / "losses.csv").read_text().splitlines()[1]

    _write(tmp_path, TRAIN.replace("EPOCHS", "2"))  # the same training, one more epoch: as if killed after epoch 1
    plan = make_plan(load_suite(str(suite)), out)
    assert plan.job("train-sempart").state() == "trained 1/2 epochs: will resume"
    assert "--resume" in plan.job("train-sempart").argv
    assert main(["suite", "run", str(suite), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "train-sempart: running" in text and " sempart: running" in text
    assert trained_epochs(folder) == 2
    assert (folder / "checkpoint_epoch001.pt").read_bytes() == epoch1  # epoch 1 was not trained again
    assert (folder / "losses.csv").read_text().splitlines()[1] == first_row
    results = json.loads((out / "runs" / "sempart" / "results.json").read_text())
    assert results["spec"]["method_args"]["checkpoint"] == str(folder / "checkpoint_last.pt")
    assert results["config"]["method"]["config"]["image_size"] == 32  # the training's options, inherited
    assert main(["suite", "run", str(suite), "--out", str(out)]) == 0
    assert "nothing to run" in capsys.readouterr().out

    # a training whose options changed is not resumed on other options: one error, nothing runs
    _write(tmp_path, TRAIN.replace("EPOCHS", "2").replace("batch_size = 2", "batch_size = 4"))
    line = _error(capsys, ["suite", "run", str(suite), "--out", str(out)])
    assert f"job 'train-sempart': {folder} was trained with other options" in line and "Delete those folders" in line


# ---- bad suites: one clear error, nothing runs ---------------------------------------------
BAD = {
    "unknown method": (SMALL.replace('method = "center-prior"', 'method = "center-prio"', 1),
                       "run job 'prior': unknown method 'center-prio'. Did you mean 'center-prior'?"),
    "option typo": (SMALL.replace("sigma = 0.4", "sigam = 0.4"),
                    "run job 'prior-wide': method 'center-prior' has no option 'sigam'. Did you mean sigma?"),
    "option value": (SMALL.replace("sigma = 0.4", 'sigma = "wide"'),
                     "run job 'prior-wide': method 'center-prior': option sigma='wide' is not a valid float"),
    "duplicate name": (SMALL.replace('name = "prior-wide"', 'name = "prior"'),
                       "job name 'prior' is used twice ([[run]] #1 and [[run]] #3); give each job its own name"),
    "unknown key": (SMALL.replace("post = [", "posts = ["),
                    "run job 'prior-gf': unknown key 'posts' (did you mean 'post'?)"),
    "unknown post": (SMALL.replace('post = ["gf"]', 'post = ["gff"]'),
                     "run job 'prior-gf': unknown post 'gff'. Did you mean 'gf'?"),
    "unknown top-level key": ("[suit]\ndescription = 'x'\n" + SMALL, "top level: unknown key 'suit' (did you mean 'suite'?)"),
    "missing dependency": (TRAIN.replace("EPOCHS", "1").replace('checkpoint_from = "train-sempart"',
                                                                'checkpoint_from = "train-sempar"'),
                           "run job 'sempart': checkpoint_from = 'train-sempar' names no job of the suite (did you "
                           "mean 'train-sempart'?)"),
    "cycle": ("""
[[run]]
name = "a"
method = "selfmask"
checkpoint_from = "d"
dataset = "synthetic"

[[distil]]
name = "d"
teacher = "a"
""", "the jobs depend on each other in a cycle: a -> d -> a"),
    "unknown evaluator": (SMALL.replace('post = ["gf"]', 'evaluators = ["saliency", "corlok"]'),
                          "unknown evaluator 'corlok'. Did you mean 'corloc'?"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_suite_is_one_clear_error_before_anything_runs(case, tmp_path, capsys):
    text, expected = BAD[case]
    suite = _write(tmp_path, text)
    out = tmp_path / "out"
    for action in ("plan", "run"):
        line = _error(capsys, ["suite", action, str(suite), "--out", str(out)])
        assert line.startswith(f"harness suite: error: {suite}: "), line
        assert expected in line, line
    assert not out.exists()


def test_every_missing_dataset_folder_is_named_at_once(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HARNESS_DATA_ECSSD", str(tmp_path / "nowhere" / "ECSSD"))
    monkeypatch.delenv("HARNESS_DATA_VOC12", raising=False)
    monkeypatch.delenv("HARNESS_DATA", raising=False)
    suite = _write(tmp_path, SMALL + """
[[run]]
name = "prior-real"
method = "center-prior"
datasets = ["ecssd", "voc12"]
""")
    out = tmp_path / "out"
    line = _error(capsys, ["suite", "run", str(suite), "--out", str(out)])
    assert "2 datasets are missing or incomplete, nothing was run" in line
    assert f"dataset 'ecssd': {tmp_path / 'nowhere' / 'ECSSD'} is not a folder" in line
    assert "dataset 'voc12' needs its folder: pass --data-root DIR or set HARNESS_DATA_VOC12" in line
    assert not out.exists()
    # the plan still lists the jobs, marked
    assert main(["suite", "plan", str(suite), "--out", str(out)]) == 0
    plan = capsys.readouterr().out
    assert "prior-real-ecssd  (needs data ecssd)" in plan and "prior-real-voc12  (needs data voc12)" in plan
    # jobs on the synthetic data alone do not need them
    assert main(["suite", "run", str(suite), "--out", str(out), "--only", "prior"]) == 0
    assert [p.name for p in (out / "runs").iterdir()] == ["prior"]


INPUTS = SMALL + """
[inputs.preds]
env = "HARNESS_INPUT_PREDS"
help = "saved masks, one PNG per image id"

[[run]]
name = "saved"
method = "masks"
dataset = "synthetic"
method_args = { dir = "${input.preds}", subdir = "${dataset}" }
""" + SYNTH + "\n"


def test_an_input_is_needed_only_by_the_jobs_that_use_it(tmp_path, capsys, monkeypatch):
    import cv2
    import numpy as np

    monkeypatch.delenv("HARNESS_INPUT_PREDS", raising=False)
    suite = _write(tmp_path, INPUTS)
    out = tmp_path / "out"
    assert main(["suite", "plan", str(suite), "--out", str(out)]) == 0
    plan = capsys.readouterr().out
    assert "saved  (needs input preds)" in plan and "input preds not given (saved masks, one PNG per image id): " \
                                                    "--input preds=PATH or HARNESS_INPUT_PREDS" in plan
    line = _error(capsys, ["suite", "run", str(suite), "--out", str(out)])
    assert "1 selected jobs need inputs that were not given: preds (saved masks, one PNG per image id): --input " \
           "preds=PATH or HARNESS_INPUT_PREDS. Jobs: saved" in line
    assert not out.exists()
    assert main(["suite", "run", str(suite), "--out", str(out), "--only", "prior*"]) == 0  # no input needed
    capsys.readouterr()
    assert main(["suite", "run", str(suite), "--out", str(out), "--skip-missing-inputs"]) == 0
    assert "warning: leaving out 1 jobs that need inputs not given (preds): saved" in capsys.readouterr().out

    from harness.registry import get_registry

    preds = tmp_path / "preds" / "synthetic"  # ${dataset} picks the sub-folder
    preds.mkdir(parents=True)
    for sample_id in get_registry().create("dataset", "synthetic", {"count": "4", "height": "40", "width": "56"}).ids():
        mask = np.zeros((40, 56), np.uint8)
        mask[10:30, 15:40] = 255
        cv2.imwrite(str(preds / f"{sample_id}.png"), mask)
    assert main(["suite", "run", str(suite), "--out", str(out), "--input", f"preds={tmp_path / 'preds'}"]) == 0
    text = capsys.readouterr().out
    assert [line.split()[2].rstrip(":") for line in text.splitlines() if line.endswith(": running")] == ["saved"]
    results = json.loads((out / "runs" / "saved" / "results.json").read_text())
    assert results["spec"]["method_args"] == {"dir": str(tmp_path / "preds"), "subdir": "synthetic"}
    assert 0 < results["metrics"]["iou"] < 1


def test_only_selects_by_glob_with_undone_dependencies_and_dry_run_runs_nothing(tmp_path, capsys):
    suite = _write(tmp_path, TRAIN.replace("EPOCHS", "1"))
    out = tmp_path / "out"
    assert main(["suite", "run", str(suite), "--out", str(out), "--only", "semp*", "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "suite suite: 2 jobs (0 done, 2 to do)" in text  # the run job and the training it needs
    assert "[1] train  train-sempart  (to do)" in text and "[2] run    sempart  (to do)" in text
    assert "depends on: train-sempart" in text and text.rstrip().endswith("dry run: nothing was run")
    assert not out.exists()
    line = _error(capsys, ["suite", "run", str(suite), "--out", str(out), "--only", "nothing*"])
    assert "--only nothing*: no job of suite 'suite' matches; its jobs: train-sempart, sempart" in line
    assert main(["suite", "plan", str(suite), "--out", str(out), "--only", "train-*"]) == 0
    assert "1 jobs (0 done, 1 to do)" in capsys.readouterr().out


def test_launcher_options_belong_to_slurm(tmp_path, capsys):
    suite = _write(tmp_path, SMALL)
    line = _error(capsys, ["suite", "run", str(suite), "--out", str(tmp_path / "out"), "--partition", "gpu"])
    assert "--partition only apply to --launcher slurm" in line
    line = _error(capsys, ["suite", "run", str(suite), "--out", str(tmp_path / "out"), "--launcher", "cloud"])
    assert "--launcher 'cloud': choose one of local, slurm" in line
    assert not (tmp_path / "out").exists()


# ---- the built-in suites -------------------------------------------------------------------
def _published_rows() -> list[dict[str, str]]:
    for path in (REPO / "harness" / "published" / "two_tricks_tables.csv",
                 REPO.parent / "shared" / "published" / "two_tricks_tables.csv"):
        if path.is_file():
            with open(path, newline="") as handle:
                return list(csv.DictReader(handle))
    pytest.skip("the published table two_tricks_tables.csv is not there")


def _describe(plan, job) -> dict:
    """What a run job scores: method (selfmask<-teacher for distilled ones), backbone, post chain, dataset."""
    args = build_parser().parse_args(job.argv)
    method = args.method
    if job.depends_on and plan.job(job.depends_on[0]).kind == "distil":
        teacher = build_parser().parse_args(plan.job(plan.job(job.depends_on[0]).depends_on[0]).argv)
        method = f"selfmask<-{teacher.method}" + "".join(f"+{p}" for p in teacher.post)
    return {"method": method, "backbone": args.backbone, "post": "+".join(args.post), "dataset": args.dataset,
            "post_args": args.post_args, "inputs": job.missing_inputs}


def test_two_tricks_plan_lists_every_job_with_its_command_and_dependencies(tmp_path, capsys, monkeypatch):
    for name in ("HARNESS_INPUT_MOVE", "HARNESS_INPUT_FOUND", "HARNESS_INPUT_IBOT"):
        monkeypatch.delenv(name, raising=False)
    assert main(["suite", "plan", "two-tricks", "--out", str(tmp_path / "tt")]) == 0
    text = capsys.readouterr().out
    plan = make_plan(load_suite("two-tricks"), tmp_path / "tt")
    assert len(plan.jobs) == 111 and "suite two-tricks: 111 jobs (0 done, 111 to do)" in text
    for job in plan.jobs:
        assert f"    {job.command}\n    depends on: {', '.join(job.depends_on) or '-'}\n" in text
    # the paper's parameters (DESIGN.md)
    train = build_parser().parse_args(plan.job("train-sempart-crop-vits8").argv)
    assert (train.method, train.dataset, train.backbone, train.epochs, train.batch_size, train.lr, train.method_args) \
        == ("sempart-crop", "duts_tr", "dino-vits8", 30, 8, 1e-4, "image_size=320") and train.resume
    distil = build_parser().parse_args(plan.job("distil-selfmask-ours").argv)
    assert (distil.method, distil.dataset, distil.epochs, distil.batch_size, distil.lr) == ("selfmask", "duts_tr", 12,
                                                                                         8, 6e-6)
    assert distil.pseudo_masks == str(tmp_path / "tt" / "runs" / "sempart-crop-vits8-gf-duts_tr")
    assert plan.job("distil-selfmask-ours").depends_on == ["sempart-crop-vits8-gf-duts_tr"]
    assert plan.job("selfmask-ours-ecssd").depends_on == ["distil-selfmask-ours"]
    assert plan.job("move-ecssd").state() == "needs input move"
    assert plan.job("selfmask-move-ecssd").state() == "needs input move"  # through its teacher
    assert plan.job("sempart-ibot-ecssd").state() == "needs input ibot"
    names = [job.name for job in plan.jobs]
    for job in plan.jobs:  # dependency order
        assert all(names.index(dep) < names.index(job.name) for dep in job.depends_on)


def test_two_tricks_plan_covers_every_published_row(tmp_path, monkeypatch):
    for name in ("HARNESS_INPUT_MOVE", "HARNESS_INPUT_FOUND", "HARNESS_INPUT_IBOT"):
        monkeypatch.delenv(name, raising=False)
    plan = make_plan(load_suite("two-tricks"), tmp_path / "tt")
    runs = [_describe(plan, job) for job in plan.jobs if job.kind == "run"]
    rows = _published_rows()
    assert len(rows) == 258
    for row in rows:
        method = {"found": "masks"}.get(row["method"], row["method"])
        backbone = row["backbone"] or ("dino-vits8" if method.startswith("sempart") else None)
        matches = [r for r in runs if r["method"] == method and r["dataset"] == row["dataset"]
                   and r["post"] == row["post"] and (backbone is None or r["backbone"] == backbone)]
        assert matches, row
        if row["method"] in ("move", "selfmask<-move"):
            assert all(r["inputs"] == ["move"] for r in matches), row  # reads the user's MOVE masks
        if row["method"] == "found":
            assert all(r["inputs"] == ["found"] for r in matches), row
        if "bf" in row["post"] and "segmentation-tricks settings" in row["note"]:
            assert any(r["post_args"] and r["post_args"][-1] == "preset=segtricks" for r in matches), row


@pytest.mark.slow
def test_smoke_suite_runs_offline_resumes_and_reports_every_layout(shared_data, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HARNESS_DATA_ECSSD", str(shared_data / "ECSSD"))
    monkeypatch.setenv("HARNESS_DATA_VOC12", str(shared_data / "VOC2012"))
    out = tmp_path / "smoke"
    assert main(["suite", "run", "smoke", "--out", str(out)]) == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    plan = make_plan(load_suite("smoke"), out)
    assert all(job.done for job in plan.jobs), [(job.name, job.state()) for job in plan.jobs]
    assert sum(line.endswith(": running") for line in text.splitlines()) == len(plan.jobs) == 23
    report = (out / "report.md").read_text()
    for heading in ("## Saliency", "## CorLoc (%)", "## Ablation", "## Post-processing (IoU)"):
        assert heading in report, heading
    assert "![IoU by object size, ECSSD](report_figures/size_iou_ecssd.png)" in report
    assert (out / "report_figures" / "size_iou_ecssd.png").stat().st_size > 0
    assert "## Reproduction: measured vs published" in report
    for job in plan.jobs:
        if job.kind == "run":
            results = json.loads((job.output / "results.json").read_text())
            assert results["counts"]["images"] == (4 if "synthetic" in job.name else 6)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}

    assert main(["suite", "run", "smoke", "--out", str(out)]) == 0
    again = capsys.readouterr().out
    assert "running" not in again and "all 23 jobs are done, nothing to run" in again
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == mtimes


DISTIL = f"""
[[run]]
name = "teacher"
method = "center-prior"
dataset = "synthetic"
{SYNTH}
method_args = {{ sigma = 0.25 }}
device = "cpu"
workers = 0

[[distil]]
name = "student"
teacher = "teacher"
backbone = "effnet-lite0"
backbone_args = {{ stride = 8 }}
method_args = {{ image_size = 32, decoder_dim = 32, heads = 2, decoder_layers = 2 }}
epochs = 1
batch_size = 2
lr = 1e-4
device = "cpu"
"""


@pytest.mark.slow
def test_a_distillation_is_not_resumed_on_a_teachers_new_masks(tmp_path, capsys):
    suite = _write(tmp_path, DISTIL)
    out = tmp_path / "out"
    assert main(["suite", "run", str(suite), "--out", str(out)]) == 0
    capsys.readouterr()
    plan = make_plan(load_suite(str(suite)), out)
    student = build_parser().parse_args(plan.job("student").argv)
    assert (student.method, student.dataset, student.dataset_args, student.pseudo_masks) == (
        "selfmask", "synthetic", "count=4,height=40,width=56", str(out / "runs" / "teacher"))
    assert trained_epochs(out / "train" / "student") == 1 and all(job.done for job in plan.jobs)
    _write(tmp_path, DISTIL.replace("sigma = 0.25", "sigma = 0.3"))  # the teacher's masks change
    line = _error(capsys, ["suite", "run", str(suite), "--out", str(out)])
    assert f"job 'student': {out / 'train' / 'student'} was trained on the masks of 'teacher', which will be made " \
           f"again" in line
    assert json.loads((out / "runs" / "teacher" / "results.json").read_text())["config"]["method"]["config"] == {
        "sigma": 0.25}  # nothing ran
