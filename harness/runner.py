"""``harness run``: dataset -> method -> post-processors -> evaluators -> run directory.

The run is a chain of named stages (:mod:`harness.pipeline`): **build** (the plugins, here in
:class:`Runner`'s constructor), **predict** (the method, through the mask cache),
**post-process** (the post chain, through the post cache), **evaluate** and **write**. Masks
are cached per image (uint8 PNG) under a key that hashes everything that determines them, so a
second run with other post-processors or evaluators re-uses them and an interrupted run
resumes where it stopped. :func:`reopen` rebuilds the runner of a finished run from its
``results.json``, whose :meth:`Runner.final_masks` gives that run's final masks.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness import distributed
from harness.api import RunContext
from harness.cache import default_cache_dir, stable_hash
from harness.errors import HarnessError
from harness.evaluators.protocol import DEFAULT_PROTOCOL, get_protocol
from harness.pipeline import (  # noqa: F401  (plugin_errors and validate_prediction: public here too)
    EvaluateStage,
    ImageStages,
    ImageWork,
    PostStage,
    PredictStage,
    check_cache_identity,
    check_evaluator_keys,
    final_masks,
    new_stats,
    plugin_errors,
    validate_prediction,
    write_run,
)
from harness.loader import prefetch
from harness.preflight import check_data
from harness.options import SEED_LIMIT
from harness.registry import Registry, get_registry
from harness.results import environment_versions, git_sha, utc_now
from harness.run_files import SCHEMA_VERSION
from harness.storage import check_writable
from harness.throughput import summarize
from harness.workers import DRAIN_S, WorkerPool, available_cores, can_fork

log = logging.getLogger(__name__)

# most file systems allow 255 bytes per name; the staging folder adds a prefix and a suffix
_MAX_NAME_BYTES = 200


@dataclass
class RunSpec:
    """Everything ``harness run`` was asked to do (the command line, parsed)."""

    method: str
    dataset: str
    posts: list[str] = field(default_factory=list)
    post_args: list[dict[str, Any]] = field(default_factory=list)
    evaluators: list[str] | None = None
    data_root: str | None = None
    backbone: str | None = None
    weights: str | None = None
    backbone_args: dict[str, Any] = field(default_factory=dict)
    method_args: dict[str, Any] = field(default_factory=dict)
    dataset_args: dict[str, Any] = field(default_factory=dict)
    limit: int | None = None
    seed: int = 0
    device: str = "auto"
    batch_size: int = 1
    out: Path = Path("runs")
    name: str | None = None
    cache_dir: Path | None = None
    progress: bool | None = None
    threads: int | None = None
    protocol: str = DEFAULT_PROTOCOL
    #: Worker processes for the per-image stages (None: the cores available; 0: one process).
    workers: int | None = None


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]
    results: dict[str, Any]


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; reject an unavailable ``cuda``."""
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise HarnessError(f"--device {device!r}: use cpu, cuda, cuda:N or auto")
    if device == "cpu":
        return device
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise HarnessError(f"--device {device}: no CUDA device is available here; use --device cpu")
    return device


def set_threads(threads: int | None) -> int | None:
    """Cap torch's CPU threads (one per process avoids oversubscription when processes share
    cores); returns the previous count (None: unchanged)."""
    if threads is None:
        return None
    if threads < 1:
        raise HarnessError(f"--threads {threads}: give a positive number")
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    return previous


def cores_per_process(world: int = 1) -> int:
    """The cores this process may use: its affinity mask, shared with the other processes of a
    torchrun run on this machine (``LOCAL_WORLD_SIZE``)."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world) or 1)
    return max(1, available_cores() // max(local, 1))


def default_threads(world: int = 1) -> int:
    """torch's CPU threads in a run's main process when ``--threads`` is not given: a quarter of
    its cores, at least one, with ``--workers 0`` as with workers, so that the backbone's
    features (which change in their last bits with the thread count) never depend on ``--workers``."""
    return max(1, cores_per_process(world) // 4)


def resolve_workers(workers: int | None, n_images: int, world: int = 1, threads: int | None = None) -> int:
    """``--workers`` (checked by :class:`Runner`): None -> the cores left to workers (this
    process's cores less its torch ``threads``, at least one); never more than the images; 0
    where processes cannot be forked."""
    if workers is None:
        if not can_fork():
            return 0
        used = threads if threads is not None else default_threads(world)
        workers = max(1, cores_per_process(world) - used)
    return min(workers, n_images)


def check_run_name(name: str) -> str:
    """A ``--name`` that names one folder inside ``--out``, or one clear error."""
    if (not name or name in (".", "..") or name.startswith(".") or "/" in name or "\\" in name
            or "\0" in name or Path(name).is_absolute()):
        raise HarnessError(f"--name {name!r}: give one folder name inside --out (no '/', not starting "
                           f"with '.'); use --out to choose where runs go")
    if len(name.encode("utf-8")) > _MAX_NAME_BYTES:
        raise HarnessError(f"--name is {len(name.encode('utf-8'))} bytes long; file systems allow about 255: "
                           f"give a name of at most {_MAX_NAME_BYTES} bytes")
    return name


def check_seed(seed: int) -> int:
    """A seed every generator accepts (numpy, torch and Python's all take 0 <= seed < 2**63)."""
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < SEED_LIMIT:
        raise HarnessError(f"--seed {seed!r}: give a whole number from 0 to 2**63 - 1")
    return seed


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    if "torch" in sys.modules:
        import torch

        torch.manual_seed(seed)


def _spec_record(spec: RunSpec) -> dict[str, Any]:
    """The request (paths absolute, as text), so a run can be repeated or re-predicted from anywhere."""
    paths = {"out", "cache_dir", "data_root", "weights"}
    return {k: (os.path.abspath(os.path.expanduser(str(v))) if k in paths and v is not None else v)
            for k, v in asdict(spec).items()}


class Runner:
    """Builds the plugins of a :class:`RunSpec` (the build stage), checks everything up front,
    then runs the predict, post-process, evaluate and write stages (:mod:`harness.pipeline`)."""

    def __init__(self, spec: RunSpec, registry: Registry | None = None):
        self.spec = spec
        self.registry = registry or get_registry()
        if spec.limit is not None and spec.limit < 1:
            raise HarnessError(f"--limit {spec.limit}: give a positive number of images")
        if spec.batch_size < 1:
            raise HarnessError(f"--batch-size {spec.batch_size}: give a positive number")
        if spec.workers is not None and (isinstance(spec.workers, bool) or not isinstance(spec.workers, int)
                                         or spec.workers < 0):
            raise HarnessError(f"--workers {spec.workers!r}: give 0 (everything in one process) or a number of "
                               f"processes")
        if len(spec.post_args) not in (0, len(spec.posts)):
            raise HarnessError("--post-args: give one set per --post, in the same order")
        if spec.name is not None:
            check_run_name(spec.name)
        check_seed(spec.seed)
        reg = self.registry
        self.protocol = get_protocol(spec.protocol)
        self.dataset = reg.create("dataset", spec.dataset, spec.dataset_args, root=spec.data_root)
        eval_names = spec.evaluators
        if eval_names is None:  # a dataset without ground truth (e.g. DUTS-TR images only): predict only
            eval_names = list(self.dataset.default_evaluators) if self.dataset.labels else []
        self.evaluators = [reg.create("evaluator", name, self.protocol.evaluator_args.get(name, {}))
                           for name in eval_names]
        check_evaluator_keys(self.evaluators)
        self.protocol.check(self.evaluators)
        self.method = reg.create("method", spec.method, spec.method_args)
        self.method.configure_for_run(self.evaluators)
        self.backbone = self._make_backbone()
        post_args = spec.post_args or [{} for _ in spec.posts]
        self.posts = [reg.create("post", name, args) for name, args in zip(spec.posts, post_args)]
        self.data_digest: str | None = None  # set by run() from the files it checks

    def _make_backbone(self):
        spec, method = self.spec, self.method
        if not method.uses_backbone:
            if spec.backbone or spec.weights or spec.backbone_args:
                raise HarnessError(
                    f"method {method.name!r} does not use a backbone; drop --backbone/--weights/--backbone-args"
                )
            return None
        name = spec.backbone or method.preferred_backbone()
        if name is None:
            raise HarnessError(f"method {method.name!r} needs --backbone NAME (see `harness list backbones`)")
        args = spec.backbone_args
        if not args and name == method.preferred_backbone():
            args = method.preferred_backbone_args()
        return self.registry.create("backbone", name, args, weights=spec.weights)

    # ---- identity and paths ------------------------------------------------------------
    def method_identity(self) -> dict[str, Any]:
        """Everything that determines the method's masks (not the post chain): its identity and
        cache token, the backbone's, and the run's seed when the method uses it."""
        identity = {
            "method": self.method.identity(),
            "token": self.method.cache_token(),
            "backbone": self.backbone.identity() if self.backbone else None,
        }
        if self.method.uses_seed():
            identity["seed"] = self.spec.seed
        return identity

    def config(self) -> dict[str, Any]:
        ident = self.method_identity()
        return {
            "method": ident["method"],
            "method_token": ident["token"],
            "backbone": ident["backbone"],
            "posts": [post.identity() for post in self.posts],
            "dataset": {**self.dataset.identity(), "data_digest": self.data_digest},
            "evaluators": [ev.identity() for ev in self.evaluators],
            "limit": self.spec.limit,
            "seed": self.spec.seed,
            # absent for the default protocol, so that earlier runs keep their names
            **({} if self.protocol.is_default else {"protocol": self.protocol.record()}),
        }

    def run_name(self, config: dict[str, Any]) -> str:
        if self.spec.name:
            return self.spec.name
        chain = "".join(f"+{post.name}" for post in self.posts)
        backbone = f"-{self.backbone.name}" if self.backbone else ""
        return f"{self.dataset.name}-{self.method.name}{backbone}{chain}-{stable_hash(config, 8)}"

    # ---- the run ---------------------------------------------------------------------
    def context(self, device: str, cache_root: Path, batch_size: int, progress: bool) -> RunContext:
        """What methods and post-processors get in ``setup``: with the backbone, its feature
        stage (cached features, shared by every method on that backbone)."""
        features = None
        if self.backbone is not None:
            from harness.backbones.features import FeatureExtractor

            features = FeatureExtractor(self.backbone, device, cache_root, batch_size)
        return RunContext(device, self.spec.seed, batch_size, cache_root, self.backbone, progress, features)

    def _load(self, sample_id: str):
        """A sample as the method and the evaluators see it (the protocol's view)."""
        return self.protocol.view(self.dataset.load(sample_id))

    def _stages(self, context: RunContext, cache_root: Path) -> tuple[PredictStage, PostStage]:
        return (PredictStage(self.method, self.method_identity(), context, cache_root),
                PostStage(self.posts, context, cache_root))

    def run(self) -> RunResult:
        spec = self.spec
        started = time.perf_counter()
        ids = self.dataset.ids()
        if not ids:
            raise HarnessError(f"dataset {self.dataset.name!r} has no images")
        if spec.limit is not None:
            ids = ids[: spec.limit]
        self.method.check_inputs(ids)
        self._check_labels()
        device = resolve_device(spec.device)
        info = distributed.init(device)
        device = distributed.local_device(device, info)
        progress = spec.progress if info.is_main else False
        data = check_data(self.dataset, ids, progress)  # every file, before anything is written
        self.data_digest = data.digest
        self.method.check_image_sizes({i: self.protocol.view_size(hw) for i, hw in data.sizes.items()}, self.backbone)
        seed_everything(spec.seed)
        config = self.config()
        check_cache_identity(self.method, self.backbone, config["method_token"])
        run_dir = Path(spec.out) / self.run_name(config)
        if info.is_main:
            check_writable(run_dir, "--out")
        cache_root = check_writable(spec.cache_dir or default_cache_dir(), "--cache-dir (or HARNESS_CACHE)")
        context = self.context(device, cache_root, spec.batch_size, progress is not False)
        predict, post = self._stages(context, cache_root)
        evaluate = EvaluateStage(self.evaluators)
        share = ids[info.rank :: info.world]
        # torch's threads in this process never depend on --workers: a backbone's features change
        # in their last bits with the thread count, and the workers must not change results
        threads = spec.threads if spec.threads is not None else default_threads(info.world)
        workers = resolve_workers(spec.workers, len(share), info.world, threads)
        previous = set_threads(threads)
        try:
            stats = self._evaluate(share, predict, post, evaluate, progress, workers)
        finally:
            if previous is not None:
                set_threads(previous)
        if info.enabled:
            gathered = distributed.gather_to_main((evaluate.shard(), stats), info)
            if not info.is_main:
                return RunResult(run_dir, {}, {})
            evaluate.merge([shard for shard, _ in gathered], len(ids))
            throughput = {**stats["throughput"], "rank": info.rank, "world": info.world}  # this rank's
            stats = _sum_stats([{k: v for k, v in shard_stats.items() if k != "throughput"}
                                for _, shard_stats in gathered])
        else:
            throughput = stats.pop("throughput")
        metrics = evaluate.aggregate()
        stats["total_s"] = round(time.perf_counter() - started, 3)
        results = {
            "schema_version": SCHEMA_VERSION,
            "run": run_dir.name,
            "created": utc_now(),
            "config": config,
            "protocol": self.protocol.record(),
            "versions": environment_versions([self.registry_source(p) for p in self._plugins()]),
            "weights_digest": self.backbone.weights_digest if self.backbone else None,
            "seed": spec.seed,
            "device": device,
            "batch_size": spec.batch_size,
            "git_sha": git_sha(),
            "counts": {"images": len(ids), **{k: v for k, v in stats.items() if k.startswith("n_")}},
            "timings": {k: v for k, v in stats.items() if k.endswith("_s")},
            "throughput": throughput,
            "workers": workers,
            "metrics": metrics,
            "spec": _spec_record(spec),
            "world_size": info.world,
        }
        write_run(run_dir, results, evaluate)
        return RunResult(run_dir, metrics, results)

    def _evaluate(self, ids: list[str], predict: PredictStage, post: PostStage, evaluate: EvaluateStage,
                  progress, workers: int) -> dict[str, Any]:
        """Predict, post-process and evaluate ``ids`` (this process's share), with a progress bar.

        Pipelined when ``workers`` > 0: loader threads decode images ahead; this process runs
        the mask-cache lookups and the method's device stage on batches; ``workers`` forked
        processes run the method's per-image stage, the post chain and the evaluators
        (:class:`~harness.pipeline.ImageStages`), and the results come back in dataset order,
        so the records, rows and metrics equal those of ``workers=0``, which runs the same
        stages in this process, one image after another.
        """
        from tqdm.auto import tqdm

        stats = new_stats()
        busy: dict[str, float] = {stage: 0.0 for stage in
                                  ("load_s", "predict_device_s", "predict_cpu_s", "post_s", "evaluate_s")}
        stages = ImageStages(predict, post, evaluate)
        loader_threads = min(2, workers)
        batch = self.spec.batch_size
        bar = tqdm(total=len(ids), desc=f"{self.method.name} on {self.dataset.name}", unit="img",
                   disable=None if progress is None else not progress)
        started = time.perf_counter()
        if workers and self.method.splits_stages():
            predict.setup()  # the workers run its per-image stage with what setup made: fork after it
            busy["predict_device_s"] += time.perf_counter() - started
        pool = WorkerPool(stages, workers, max_in_flight=4 * workers + batch) if workers else None
        samples = prefetch(self._load, ids, loader_threads, ahead=2 * batch + 2 * workers, busy=busy)
        items = self._image_work(samples, predict, stats, busy)
        try:
            for result in (pool.map_ordered(items) if pool else map(stages, items)):
                evaluate.add(result.records, result.row)
                for stage, seconds in result.seconds.items():
                    busy[f"{stage}_s"] += seconds
                bar.update(1)
            if pool:
                pool.close()
        except KeyboardInterrupt:
            if pool:  # the images the workers hold are kept if they finish at once; none outlives the run
                pool.drain(DRAIN_S)
            raise
        except BaseException:
            if pool:
                pool.terminate()  # an error: no worker outlives the run
            raise
        finally:
            items.close()
            samples.close()
            bar.close()
        loop_s = time.perf_counter() - started
        stats.update(
            predict_s=round(busy["predict_device_s"] + busy["predict_cpu_s"], 3),
            post_s=round(busy["post_s"], 3),
            eval_s=round(busy["evaluate_s"], 3),
            load_s=round(busy["load_s"], 3),
            images_s=round(loop_s, 3),
        )
        setup_s = predict.setup_seconds()
        stats["setup_s"] = round(setup_s, 3)
        stats["throughput"] = summarize(busy, loop_s, len(ids), workers, loader_threads, setup_s)
        return stats

    def _image_work(self, samples, predict: PredictStage, stats: dict, busy: dict):
        """:class:`~harness.pipeline.ImageWork` per sample, in order: the mask cache's hit, or
        what the method's device stage returned (run here, on batches of ``--batch-size``)."""
        source = iter(samples)
        while batch := list(itertools.islice(source, self.spec.batch_size)):
            t0 = time.perf_counter()
            staged = predict.stage(batch, stats)
            busy["predict_device_s"] += time.perf_counter() - t0
            for sample, (key, hit, value) in zip(batch, staged):
                yield ImageWork(sample, key, hit, value)

    def _plugins(self) -> list:
        return [self.dataset, self.method, *self.posts, *self.evaluators] + (
            [self.backbone] if self.backbone else []
        )

    def registry_source(self, plugin) -> str:
        entry = next(e for e in self.registry.entries(plugin.kind) if e.name == plugin.name)
        return f"{plugin.kind} {plugin.name}: {entry.source}"

    def _check_labels(self) -> None:
        for ev in self.evaluators:
            if ev.requires not in self.dataset.labels:
                raise HarnessError(
                    f"evaluator {ev.name!r} needs ground-truth {ev.requires}, which dataset "
                    f"{self.dataset.name!r} does not provide; choose another --eval"
                )

    def final_masks(self, ids: list[str]):
        """Yield ``(sample, uint8 mask)`` for some images after the method and the post chain, from
        the caches where they are (the predict and post-process stages alone; nothing is scored
        or written but cache entries)."""
        device = resolve_device(self.spec.device)
        cache_root = Path(self.spec.cache_dir or default_cache_dir())
        check_cache_identity(self.method, self.backbone)
        context = self.context(device, cache_root, 1, False)
        predict, post = self._stages(context, cache_root)
        for sample, mask_u8, _ in final_masks(self._load, list(ids), 1, predict, post, new_stats()):
            yield sample, mask_u8

    def matches(self, results: dict[str, Any]) -> None:
        """Check that this runner makes the masks of the run that wrote ``results`` (its recorded
        method, cache token, backbone and post chain equal the installed plugins' now).

        Raises
        ------
        HarnessError
            Naming what differs (a plugin upgraded to another ``version``, a changed weights
            file or checkpoint): the run's masks cannot be reproduced.
        """
        recorded, now = results.get("config", {}), _json_form(self.config())
        for key, what in (("method", "method"), ("method_token", "method's files"), ("backbone", "backbone"),
                          ("posts", "post chain")):
            if _json_form(recorded.get(key)) != now.get(key):
                raise HarnessError(
                    f"run {results.get('run', '?')}: its {what} is not what the installed plugins give now "
                    f"(recorded {_short(recorded.get(key))}, now {_short(now.get(key))}), so its masks cannot be "
                    f"reproduced; run it again")


def _json_form(value: Any) -> Any:
    """``value`` as results.json holds it (tuples as lists, paths as text)."""
    return json.loads(json.dumps(value, default=str))


def _short(value: Any, limit: int = 160) -> str:
    text = json.dumps(value, default=str, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _sum_stats(shards: list[dict[str, Any]]) -> dict[str, Any]:
    stats: dict[str, Any] = {}
    for shard_stats in shards:
        for key, value in shard_stats.items():
            stats[key] = round(stats.get(key, 0) + value, 3)
    return stats


def reopen(run_dir: str | Path, *, data_root: str | Path | None = None, device: str | None = None,
           registry: Registry | None = None) -> Runner:
    """The :class:`Runner` of a finished run, rebuilt from its ``results.json`` (read through
    :func:`harness.run_files.load_results`); its :meth:`Runner.final_masks` gives the run's final
    masks, from the cache where they are.

    Parameters
    ----------
    run_dir : path-like
        A ``harness run`` directory.
    data_root : path-like, optional
        Where the dataset is now, when it moved (mask keys hold image ids and pixels, not folders).
    device : str, optional
        Where to compute missing masks (default: the recorded ``--device``).

    Raises
    ------
    HarnessError
        When ``results.json`` is missing, malformed or records no request (an older harness), or
        when the installed plugins would no longer make the run's masks (:meth:`Runner.matches`).
    """
    from harness.run_files import RESULTS_FILE, load_results

    run_dir = Path(run_dir)
    results = load_results(run_dir / RESULTS_FILE)
    recorded = results.get("spec")
    if not isinstance(recorded, dict) or not recorded:
        raise HarnessError(f"run {run_dir}: results.json does not record its request (an older harness made it); "
                           f"run `harness run` again")
    fields = {f.name for f in dataclasses.fields(RunSpec)}
    spec = {k: v for k, v in recorded.items() if k in fields}
    spec.update(out=Path(spec.get("out") or "runs"), limit=None, progress=False,
                cache_dir=Path(spec["cache_dir"]) if spec.get("cache_dir") else None)
    if data_root is not None:
        spec["data_root"] = str(data_root)
    if device is not None:
        spec["device"] = device
    try:
        runner = Runner(RunSpec(**spec), registry)
    except TypeError as exc:  # a field missing from a hand-edited spec
        raise HarnessError(f"run {run_dir}: results.json's request is incomplete ({exc}); run it again") from None
    runner.matches(results)
    return runner


def run(spec: RunSpec, registry: Registry | None = None) -> RunResult:
    """Run one evaluation; see :class:`RunSpec`."""
    return Runner(spec, registry).run()
