"""The pipelined runner (``--workers N``) gives the sequential runner's results, byte for byte.

Every built-in method runs twice on the same real images, once with ``workers=0`` (one process,
one image after another) and once with ``workers=2`` (loader threads, the device stage here,
the per-image stages in two forked processes), each from a cold cache of its own, and every
file of the two run directories but ``results.json`` must be equal byte for byte, with equal
metrics and counts in ``results.json``.
"""
from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pytest

from harness import PatchFeatureMethod
from harness.api import Method, Option, PostProcessor
from harness.boxes import mask_box
from harness.errors import HarnessError, PluginError
from harness.hookspecs import hookimpl
from harness.registry import Registry
from harness.runner import RunSpec, run
from harness.training.trainer import TrainSpec, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BACKBONE = {"backbone": "effnet-lite0"}
TINY = {"backbone": "effnet-lite0", "backbone_args": {"stride": "8"}}


def _files(run_dir: Path) -> dict[str, bytes]:
    """Every file of a run but results.json, summary.md without its creation time."""
    files = {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*"))
             if p.is_file() and p.name != "results.json"}
    files["summary.md"] = b"\n".join(line for line in files["summary.md"].splitlines()
                                     if not line.startswith(b"- created: "))
    return files


def _run_both(tmp_path: Path, registry=None, **spec) -> tuple:
    results = []
    for workers in (0, 2):
        out = tmp_path / f"w{workers}"
        results.append(run(RunSpec(out=out / "runs", cache_dir=out / "cache", progress=False, workers=workers,
                                   **spec), registry))
    return tuple(results)


def assert_same_run(sequential, pipelined) -> None:
    seq, pipe = _files(sequential.run_dir), _files(pipelined.run_dir)
    assert sorted(seq) == sorted(pipe) and "per_image.csv" in seq
    for name in seq:
        assert seq[name] == pipe[name], f"{name} differs between --workers 0 and --workers 2"
    assert json.dumps(sequential.metrics, sort_keys=True) == json.dumps(pipelined.metrics, sort_keys=True)
    assert sequential.results["counts"] == pipelined.results["counts"]
    assert sequential.run_dir.name == pipelined.run_dir.name  # --workers is not part of the run's identity
    assert (sequential.results["workers"], pipelined.results["workers"]) == (0, 2)
    assert pipelined.results["throughput"]["stages"]["post"]["runs_in"] == "workers"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, shared_data) -> dict[str, Path]:
    """Tiny trained checkpoints of Sempart, Sempart + crop and SelfMask (one epoch, 32 px)."""
    root = tmp_path_factory.mktemp("ckpts")
    ecssd = shared_data / "ECSSD"
    made = {}
    for method in ("sempart", "sempart-crop"):
        train(TrainSpec(method=method, dataset="ecssd", data_root=str(ecssd), limit=4,
                        method_args={"image_size": "32"}, epochs=1, batch_size=2, out=root / method,
                        progress=False, device="cpu", **TINY))
        made[method] = root / method / "checkpoint_last.pt"
    train(TrainSpec(method="selfmask", dataset="ecssd", data_root=str(ecssd), limit=4,
                    method_args={"image_size": "32", "decoder_dim": "32", "heads": "2", "decoder_layers": "2"},
                    epochs=1, batch_size=2, pseudo_masks=str(ecssd / "ground_truth_mask"), out=root / "selfmask",
                    progress=False, device="cpu", **TINY))
    made["selfmask"] = root / "selfmask" / "checkpoint_last.pt"
    return made


def _cases(ecssd: Path, voc12: Path, checkpoints) -> dict[str, dict]:
    saliency = {"dataset": "ecssd", "data_root": str(ecssd), "limit": 6}
    return {
        "tokencut+gf": dict(method="tokencut", posts=["gf"], **saliency, **BACKBONE),
        "tokencut+bs": dict(method="tokencut", posts=["bs"], **saliency, **BACKBONE),
        "tokencut-corloc": dict(method="tokencut", dataset="voc12", data_root=str(voc12), limit=6, **BACKBONE),
        "lost-corloc": dict(method="lost", dataset="voc12", data_root=str(voc12), limit=6, **BACKBONE),
        "deep-spectral+bf": dict(method="deep-spectral", posts=["bf"], **saliency, **BACKBONE),
        "center-prior+gf": dict(method="center-prior", posts=["gf"], **saliency),
        "masks+gf+bs": dict(method="masks", method_args={"dir": str(ecssd / "ground_truth_mask")},
                            posts=["gf", "bs"], **saliency),
        "move": dict(method="move", method_args={"dir": str(ecssd / "ground_truth_mask")}, **saliency),
        "sempart+gf": dict(method="sempart", method_args={"checkpoint": str(checkpoints["sempart"])},
                           posts=["gf"], **saliency, **TINY),
        "sempart-crop": dict(method="sempart-crop", method_args={"checkpoint": str(checkpoints["sempart-crop"])},
                             **saliency, **TINY),
        "selfmask+bs": dict(method="selfmask", method_args={"checkpoint": str(checkpoints["selfmask"])},
                            posts=["bs"], **saliency, **TINY),
    }


CASES = ["tokencut+gf", "tokencut+bs", "tokencut-corloc", "lost-corloc", "deep-spectral+bf", "center-prior+gf",
         "masks+gf+bs", "move", "sempart+gf", "sempart-crop", "selfmask+bs"]


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_workers_give_the_sequential_runs_files_byte_for_byte(case, tmp_path, shared_data, checkpoints):
    spec = _cases(shared_data / "ECSSD", shared_data / "VOC2012", checkpoints)[case]
    sequential, pipelined = _run_both(tmp_path, **spec)
    assert sequential.results["counts"]["n_computed"] == spec["limit"]  # each from a cold cache
    assert_same_run(sequential, pipelined)


def test_every_builtin_method_has_an_equality_case():
    from harness.registry import get_registry

    covered = {case.split("+")[0].split("-corloc")[0] for case in CASES}
    assert set(get_registry().names("method")) <= covered


# ---- plugins: a predict-only method, a split third-party method, failures in a worker -----------

class PredictOnly(Method):
    name = "predict-only"
    description = "test method: a disc, predict() only"
    options = (Option("radius", 0.3, "disc radius, a fraction of the shorter side"),)

    def predict(self, sample):
        h, w = sample.image.shape[:2]
        yy, xx = np.mgrid[:h, :w]
        return ((yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (self.config["radius"] * min(h, w)) ** 2).astype(np.float32)


class SplitMethod(Method):
    """A third-party method with both stages: the mean colour here, a threshold in the workers."""

    name = "split"
    description = "test method: device stage = per-pixel brightness, cpu stage = above its median"
    options = (Option("fail_on", "", "image id whose cpu stage raises"),
               Option("crash_on", "", "image id whose cpu stage kills its worker process"))

    def device_stage(self, samples):
        return [s.image.mean(axis=2) for s in samples]

    def cpu_stage(self, sample, staged):
        if sample.id == self.config["fail_on"]:
            raise ValueError("a bug in the plugin")
        if sample.id == self.config["crash_on"]:
            import os

            os._exit(3)
        return (staged > np.median(staged)).astype(np.float32)

    def predict_batch(self, samples):
        return [self.cpu_stage(s, x) for s, x in zip(samples, self.device_stage(samples))]


class Invert(PostProcessor):
    name = "invert"
    description = "test post-processor: 1 - mask"

    def __call__(self, image, mask):
        return 1.0 - mask


@pytest.fixture
def registry() -> Registry:
    module = types.ModuleType("pipeline_test_plugins")
    module.harness_methods = hookimpl(lambda: [PredictOnly, SplitMethod])
    module.harness_postprocessors = hookimpl(lambda: [Invert])
    return Registry(autoload=True, extra=[(module, "tests")])


SYNTHETIC = {"dataset": "synthetic", "dataset_args": {"count": 7}}


@pytest.mark.parametrize("method", ["predict-only", "split"])
def test_third_party_methods_get_the_pipeline_with_the_same_results(method, tmp_path, registry):
    sequential, pipelined = _run_both(tmp_path, registry, method=method, posts=["invert"], **SYNTHETIC)
    assert sequential.results["counts"]["n_computed"] == 7
    assert_same_run(sequential, pipelined)
    # the same masks by construction: the IoU of the inverted disc / threshold is what numpy gives
    rows = (sequential.run_dir / "per_image.csv").read_text().splitlines()
    assert len(rows) == 8 and rows[0].startswith("id,")


def test_a_plugin_error_in_a_worker_is_one_clear_error_and_no_run_folder(tmp_path, registry):
    spec = RunSpec(method="split", method_args={"fail_on": "synthetic_0004"}, out=tmp_path / "runs",
                   cache_dir=tmp_path / "cache", progress=False, workers=2, **SYNTHETIC)
    with pytest.raises(PluginError) as caught:
        run(spec, registry)
    assert str(caught.value).startswith("method 'split' failed on image 'synthetic_0004': ValueError: a bug in "
                                        "the plugin")
    assert "in a worker process" in str(caught.value.__cause__) and "a bug in the plugin" in str(caught.value.__cause__)
    assert not (tmp_path / "runs").exists()


def test_a_worker_that_dies_is_one_clear_error(tmp_path, registry):
    spec = RunSpec(method="split", method_args={"crash_on": "synthetic_0002"}, out=tmp_path / "runs",
                   cache_dir=tmp_path / "cache", progress=False, workers=2, **SYNTHETIC)
    with pytest.raises(HarnessError, match=r"worker process harness-worker-\d stopped \(exit status 3\).*--workers 0"):
        run(spec, registry)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_a_bad_workers_value_is_refused_before_any_work(bad, tmp_path, registry):
    spec = RunSpec(method="predict-only", out=tmp_path / "runs", cache_dir=tmp_path / "cache", progress=False,
                   workers=bad, **SYNTHETIC)
    with pytest.raises(HarnessError, match=r"^--workers .*: give 0 \(everything in one process\) or a number"):
        run(spec, registry)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "cache").exists()


def test_throughput_names_the_busiest_place_and_its_stages(tmp_path, registry):
    result = run(RunSpec(method="predict-only", posts=["invert"], out=tmp_path / "runs", cache_dir=tmp_path / "c",
                         progress=False, workers=2, **SYNTHETIC), registry)
    throughput = result.results["throughput"]
    assert throughput["images"] == 7 and throughput["workers"] == 2
    assert throughput["images_per_s"] == pytest.approx(7 / (throughput["loop_s"] - throughput["setup_s"]), rel=1e-2)
    places = throughput["places"]
    busy = {place: sum(s["busy_s"] for s in throughput["stages"].values() if s["runs_in"] == place)
            for place in places}
    for place, record in places.items():
        assert record["busy_s"] == pytest.approx(busy[place], abs=2e-3)
        seconds = throughput["loop_s"] - throughput["setup_s"]
        assert record["utilisation"] == pytest.approx(record["busy_s"] / (seconds * record["parallelism"]), abs=2e-3)
    assert throughput["bottleneck"]["place"] == max(places, key=lambda p: places[p]["utilisation"])


_AFTER_OPENCV_THREADS = """
import sys
import cv2, numpy as np
cv2.setNumThreads(2)
image = np.random.default_rng(0).random((1200, 1600))
for _ in range(20):  # OpenCV's thread pool started in the parent before the workers fork
    cv2.boxFilter(image, -1, (21, 21), normalize=False, borderType=cv2.BORDER_CONSTANT)
    cv2.resize(image, (3000, 2400))
from harness.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def test_workers_start_after_opencv_used_its_thread_pool(tmp_path):
    """A forked child that resets OpenCV's thread pool inherited mid-use hangs; the pool forks
    with OpenCV at one thread."""
    import subprocess
    import sys

    args = ["run", "--method", "center-prior", "--post", "gf", "--dataset", "synthetic", "--dataset-args", "count=4",
            "--workers", "2", "--no-progress", "--out", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "c")]
    done = subprocess.run([sys.executable, "-c", _AFTER_OPENCV_THREADS, *args], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "4 images (0 masks from the cache)" in done.stdout


# ---- Ctrl-C and kill -9 with workers: nothing lost, no worker left, the same results after resuming

SLOW_RUN = ["run", "--method", "center-prior", "--post", "bs", "--dataset", "synthetic", "--dataset-args", "count=200",
            "--no-progress", "--name", "fixed"]


def _children(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is ``pid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def _alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(pid)
    return alive


def _harness(args: list[str], cache: Path, out: Path, **popen):
    import os
    import subprocess
    import sys

    env = {**os.environ, "HARNESS_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "harness", *args, "--out", str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def _started_workers(proc, cache: Path, entries: int = 10) -> list[int]:
    """The run's worker pids, once ``entries`` post-processed masks are in the cache."""
    import time

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done = len(list((cache / "post").rglob("*.entry"))) if (cache / "post").exists() else 0
        workers = _children(proc.pid)
        if done >= entries and len(workers) == 2:
            return workers
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError("the run did not get going")


def _finish(tmp_path: Path, cache: Path, out: Path) -> tuple[str, dict, bytes]:
    proc = _harness([*SLOW_RUN, "--workers", "2"], cache, out)
    stdout, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return stdout, json.loads((out / "fixed" / "results.json").read_text())["metrics"], \
        (out / "fixed" / "per_image.csv").read_bytes()


@pytest.fixture(scope="module")
def slow_reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("slow-reference")
    proc = _harness([*SLOW_RUN, "--workers", "0"], tmp / "cache", tmp / "out")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return (json.loads((tmp / "out" / "fixed" / "results.json").read_text())["metrics"],
            (tmp / "out" / "fixed" / "per_image.csv").read_bytes())


@pytest.mark.slow
def test_ctrl_c_stops_every_worker_within_a_second_and_the_run_resumes(tmp_path, slow_reference):
    import os
    import signal
    import time

    cache, out = tmp_path / "cache", tmp_path / "out"
    proc = _harness([*SLOW_RUN, "--workers", "2"], cache, out, start_new_session=True)
    workers = _started_workers(proc, cache)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
    pressed = time.monotonic()
    while _alive(workers) and time.monotonic() - pressed < 5:
        time.sleep(0.01)
    stopped_after = time.monotonic() - pressed
    _, err = proc.communicate(timeout=30)
    assert not _alive(workers) and stopped_after < 1.0, f"workers still running {stopped_after:.2f} s after Ctrl-C"
    assert proc.returncode == 130
    assert err.strip().splitlines() == ["harness run: interrupted; run the same command again to resume"]
    assert not (out / "fixed").exists()  # nothing half-written
    kept = len(list((cache / "masks").rglob("*.entry")))
    stdout, metrics, rows = _finish(tmp_path, cache, out)
    assert f"({kept} masks from the cache)" in stdout and kept >= 10  # nothing done before is redone
    assert (metrics, rows) == slow_reference


@pytest.mark.slow
def test_kill_9_of_the_run_leaves_no_worker_and_the_run_resumes(tmp_path, slow_reference):
    import os
    import signal
    import time

    cache, out = tmp_path / "cache", tmp_path / "out"
    proc = _harness([*SLOW_RUN, "--workers", "2"], cache, out)
    workers = _started_workers(proc, cache)
    os.kill(proc.pid, signal.SIGKILL)  # the run alone: its workers must notice by themselves
    killed = time.monotonic()
    proc.communicate(timeout=30)
    while _alive(workers) and time.monotonic() - killed < 5:
        time.sleep(0.01)
    assert not _alive(workers), "orphaned worker processes"
    assert time.monotonic() - killed < 1.0
    assert not (out / "fixed").exists()
    kept = len(list((cache / "masks").rglob("*.entry")))
    stdout, metrics, rows = _finish(tmp_path, cache, out)
    assert f"({kept} masks from the cache)" in stdout and kept >= 10
    assert (metrics, rows) == slow_reference


# ---- a third-party spectral method on the public API gets the pipeline without writing for it ----

class FiedlerSplit(PatchFeatureMethod):
    """Foreground = the positive side of the graph's second eigenvector (a tiny spectral method),
    written against ``harness.PatchFeatureMethod`` only: it implements ``segment`` and nothing else."""

    name = "fiedler-split"
    description = "test method: sign of the Fiedler vector of the cosine-affinity graph"
    default_backbone = "effnet-lite0"
    options = (Option("log", "", "a file each segment() call appends its process id to"),)

    def segment(self, features, geometry, sample):
        import os

        if self.config["log"]:
            with open(self.config["log"], "a") as log:
                log.write(f"{os.getpid()}\n")
        unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
        affinity = np.clip(unit @ unit.T, 0, None)
        degree = affinity.sum(1)
        laplacian = np.eye(len(degree)) - affinity / np.sqrt(np.outer(degree, degree))
        vector = np.linalg.eigh(laplacian)[1][:, 1]
        grid = (vector * np.sign(vector[np.argmax(np.abs(vector))]) > 0).reshape(geometry.grid)
        return grid, mask_box(grid) if grid.any() else (0, 0, 1, 1)


def test_a_third_party_patch_method_segments_in_the_workers(tmp_path):
    import os

    module = types.ModuleType("spectral_plugin")
    module.harness_methods = hookimpl(lambda: [FiedlerSplit])
    registry = Registry(autoload=True, extra=[(module, "tests")])
    log = tmp_path / "segment-pids"
    sequential, pipelined = _run_both(tmp_path, registry, method="fiedler-split", method_args={"log": str(log)},
                                      posts=["gf"], backbone="effnet-lite0", **SYNTHETIC)
    assert_same_run(sequential, pipelined)
    pids = [int(line) for line in log.read_text().split()]
    assert len(pids) == 14  # seven images, twice
    assert set(pids[:7]) == {os.getpid()}  # --workers 0: in this process
    assert os.getpid() not in pids[7:] and 1 <= len(set(pids[7:])) <= 2  # --workers 2: in the workers


@pytest.mark.parametrize("workers, line", [
    (1, "bottleneck: the worker pool (1 process, 78% busy), mostly the post chain (2.0 s of 3.1 s busy); "
        "2.5 images/s"),
    (0, "bottleneck: the main process (85% busy), mostly the post chain (2.0 s of 3.4 s busy); 2.5 images/s"),
])
def test_the_bottleneck_line_from_hand_computed_busy_seconds(workers, line):
    from harness.throughput import bottleneck_line, summarize

    busy = {"load_s": 0.1, "predict_device_s": 0.7, "predict_cpu_s": 1.0, "post_s": 2.0, "evaluate_s": 0.1}
    # 4.5 s of image loop, 0.5 s of it setup (taken off the device stage's busy seconds and the wall)
    throughput = summarize(busy, 4.5, 10, workers, loader_threads=workers, setup_s=0.5)
    assert throughput["places"][throughput["bottleneck"]["place"]]["busy_s"] == (3.1 if workers else 3.4)
    assert bottleneck_line(throughput) == line
