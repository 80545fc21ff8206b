"""``harness run``: dataset -> method -> post-processors -> evaluators -> run directory.

Masks are cached per image (uint8 PNG) under a key that hashes everything that determines
them, so a second run with other post-processors or evaluators re-uses them and an
interrupted run resumes where it stopped.
"""
from __future__ import annotations

import logging
import os
import random
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.api import Prediction, RunContext, Sample
from harness.cache import MaskCache, array_digest, default_cache_dir, quantize_mask, stable_hash
from harness.errors import HarnessError, PluginError
from harness.evaluators.protocol import DEFAULT_PROTOCOL, get_protocol
from harness.preflight import check_data
from harness.registry import Registry, get_registry
from harness.results import SCHEMA_VERSION, environment_versions, git_sha, utc_now, write_run_files
from harness.storage import check_writable, staged_directory
from harness import distributed

log = logging.getLogger(__name__)

# masks a hair outside [0, 1] (float round-off) are clipped; anything further is a bug
_RANGE_TOLERANCE = 1e-3
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


def set_threads(threads: int | None) -> None:
    """Cap torch's CPU threads (one per process avoids oversubscription when processes share cores)."""
    if threads is None:
        return
    if threads < 1:
        raise HarnessError(f"--threads {threads}: give a positive number")
    import torch

    torch.set_num_threads(threads)


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
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
        raise HarnessError(f"--seed {seed!r}: give a whole number from 0 to 2**63 - 1")
    return seed


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    if "torch" in sys.modules:
        import torch

        torch.manual_seed(seed)


def validate_prediction(output: Any, sample: Sample, owner: str) -> Prediction:
    """Check a method's or post-processor's output: right size, finite, within [0, 1]."""
    if not isinstance(output, Prediction):
        output = Prediction(output)
    mask = output.mask
    if hasattr(mask, "detach"):  # a torch tensor
        mask = mask.detach().float().cpu().numpy()
    mask = np.asarray(mask, dtype=np.float32)
    expected = sample.image.shape[:2]
    if mask.shape != expected:
        raise HarnessError(
            f"{owner} returned a mask of shape {mask.shape} for image {sample.id!r} of size "
            f"{expected}; masks must be (H, W) at the image's size"
        )
    if not np.isfinite(mask).all():
        raise HarnessError(
            f"{owner} produced {np.count_nonzero(~np.isfinite(mask))} NaN or infinite values "
            f"for image {sample.id!r}; nothing was written for it"
        )
    low, high = float(mask.min()), float(mask.max())
    if low < -_RANGE_TOLERANCE or high > 1 + _RANGE_TOLERANCE:
        raise HarnessError(
            f"{owner} produced values from {low:.4g} to {high:.4g} for image {sample.id!r}; "
            f"soft masks must lie in [0, 1]"
        )
    return Prediction(np.clip(mask, 0.0, 1.0), output.box)


def _spec_record(spec: RunSpec) -> dict[str, Any]:
    """The request (paths absolute, as text), so a run can be repeated or re-predicted from anywhere."""
    paths = {"out", "cache_dir", "data_root", "weights"}
    return {k: (os.path.abspath(os.path.expanduser(str(v))) if k in paths and v is not None else v)
            for k, v in asdict(spec).items()}


@contextmanager
def plugin_errors(owner: str, where: str):
    """A plugin's unexpected exception becomes one :class:`PluginError` naming the plugin and
    the image (exit status 2); the original is kept as its cause for ``-v``."""
    try:
        yield
    except (HarnessError, KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:
        raise PluginError(f"{owner} failed {where}: {type(exc).__name__}: {exc} "
                          f"(run again with -v for the traceback)") from exc


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Runner:
    """Builds the plugins of a :class:`RunSpec`, checks everything up front, then runs."""

    def __init__(self, spec: RunSpec, registry: Registry | None = None):
        self.spec = spec
        self.registry = registry or get_registry()
        if spec.limit is not None and spec.limit < 1:
            raise HarnessError(f"--limit {spec.limit}: give a positive number of images")
        if spec.batch_size < 1:
            raise HarnessError(f"--batch-size {spec.batch_size}: give a positive number")
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
        """Everything that determines the method's masks (not the post chain)."""
        return {
            "method": self.method.identity(),
            "token": self.method.cache_token(),
            "backbone": self.backbone.identity() if self.backbone else None,
        }

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
        set_threads(spec.threads)
        info = distributed.init(device)
        device = distributed.local_device(device, info)
        progress = spec.progress if info.is_main else False
        data = check_data(self.dataset, ids, progress)  # every file, before anything is written
        self.data_digest = data.digest
        self.method.check_image_sizes({i: self.protocol.view_size(hw) for i, hw in data.sizes.items()}, self.backbone)
        seed_everything(spec.seed)
        config = self.config()
        run_dir = Path(spec.out) / self.run_name(config)
        if info.is_main:
            check_writable(run_dir, "--out")
        cache_root = check_writable(spec.cache_dir or default_cache_dir(), "--cache-dir (or HARNESS_CACHE)")
        context = RunContext(device, spec.seed, spec.batch_size, cache_root, self.backbone, progress is not False)
        for ev in self.evaluators:
            ev.reset()
        rows, stats = self._loop(ids[info.rank :: info.world], context, cache_root, progress)
        if info.enabled:
            gathered = distributed.gather_to_main((rows, [ev.records for ev in self.evaluators], stats), info)
            if not info.is_main:
                return RunResult(run_dir, {}, {})
            rows, stats = self._merge_shards(gathered, len(ids))
        metrics: dict[str, Any] = {}
        for ev in self.evaluators:
            for key, value in ev.summarize().items():
                metrics.setdefault(key, value)
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
            "metrics": metrics,
            "spec": _spec_record(spec),
            "world_size": info.world,
        }
        # written whole into a staging folder, then renamed: run_dir never mixes two runs
        with staged_directory(run_dir) as staging:
            for ev in self.evaluators:
                ev.artifacts(staging)
            write_run_files(staging, results, rows)
        return RunResult(run_dir, metrics, results)

    def _merge_shards(self, gathered: list, n_images: int) -> tuple[list, dict]:
        """Put every rank's rows and evaluator records back in dataset order.

        Rank r handled images r, r + world, r + 2 world, ...; interleaving restores the order a
        single process would have used, so the metrics are identical to a one-process run.
        """
        world = len(gathered)
        order = [(p % world, p // world) for p in range(n_images)]
        rows = [gathered[r][0][i] for r, i in order]
        for k, ev in enumerate(self.evaluators):
            ev.reset()
            ev.extend([gathered[r][1][k][i] for r, i in order])
        stats: dict[str, Any] = {}
        for _, _, shard_stats in gathered:
            for key, value in shard_stats.items():
                stats[key] = round(stats.get(key, 0) + value, 3)
        return rows, stats

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

    def _loop(self, ids: list[str], context: RunContext, cache_root: Path, progress) -> tuple[list, dict]:
        from tqdm.auto import tqdm

        stats = {"n_computed": 0, "n_cached": 0, "predict_s": 0.0, "post_s": 0.0, "eval_s": 0.0}
        rows: list[dict[str, Any]] = []
        bar = tqdm(total=len(ids), desc=f"{self.method.name} on {self.dataset.name}", unit="img",
                   disable=None if progress is None else not progress)
        for sample, mask_u8, box in self._final_masks(ids, context, cache_root, stats):
            t0 = time.perf_counter()
            prediction = Prediction(mask_u8.astype(np.float32) / 255.0, box)
            row: dict[str, Any] = {"id": sample.id}
            for ev in self.evaluators:
                with plugin_errors(f"evaluator {ev.name!r}", f"on image {sample.id!r}"):
                    row.update(ev.process(sample, prediction))
            rows.append(row)
            stats["eval_s"] += time.perf_counter() - t0
            bar.update(1)
        bar.close()
        for key in ("predict_s", "post_s", "eval_s"):
            stats[key] = round(stats[key], 3)
        return rows, stats

    def _final_masks(self, ids: list[str], context: RunContext, cache_root: Path, stats: dict):
        """Yield ``(sample, uint8 mask, box)`` after the method and the post chain, using the caches."""
        method_hash = stable_hash(self.method_identity())
        post_chain = [post.identity() for post in self.posts]
        masks = MaskCache(cache_root, "masks")
        posted = MaskCache(cache_root, "post")
        ready = {"method": False, "posts": False}
        for batch_ids in _chunks(ids, context.batch_size):
            samples = [self.protocol.view(self.dataset.load(sample_id)) for sample_id in batch_ids]
            keys = [stable_hash([method_hash, s.id, array_digest(s.image)]) for s in samples]
            found = [masks.get(k, s.image.shape[:2]) if self.method.cacheable else None for k, s in zip(keys, samples)]
            missing = [j for j, hit in enumerate(found) if hit is None]
            stats["n_cached"] += len(samples) - len(missing)
            if missing:
                t0 = time.perf_counter()
                if not ready["method"]:
                    with plugin_errors(f"method {self.method.name!r}", "while setting up"):
                        self.method.setup(context)
                    ready["method"] = True
                names = ", ".join(repr(samples[j].id) for j in missing)
                with plugin_errors(f"method {self.method.name!r}", f"on image {names}"):
                    outputs = self.method.predict_batch([samples[j].without_labels() for j in missing])
                if len(outputs) != len(missing):
                    raise HarnessError(f"method {self.method.name!r} returned {len(outputs)} masks for {len(missing)} images")
                for j, output in zip(missing, outputs):
                    pred = validate_prediction(output, samples[j], f"method {self.method.name!r}")
                    found[j] = (quantize_mask(pred.mask), pred.box)
                    if self.method.cacheable:
                        masks.put(keys[j], *found[j])
                stats["n_computed"] += len(missing)
                stats["predict_s"] += time.perf_counter() - t0
            for sample, key, (mask_u8, box) in zip(samples, keys, found):
                if self.posts:
                    t0 = time.perf_counter()
                    if not ready["posts"]:
                        for post in self.posts:
                            with plugin_errors(f"post-processor {post.name!r}", "while setting up"):
                                post.setup(context)
                        ready["posts"] = True
                    mask_u8 = self._post_process(sample, mask_u8, stable_hash([key, post_chain]), posted)
                    box = None  # a post-processed mask defines its own box
                    stats["post_s"] += time.perf_counter() - t0
                yield sample, mask_u8, box

    def final_masks(self, ids: list[str]):
        """Yield ``(sample, uint8 mask)`` for some images, from the caches where they are (figures)."""
        device = resolve_device(self.spec.device)
        cache_root = self.spec.cache_dir or default_cache_dir()
        context = RunContext(device, self.spec.seed, 1, Path(cache_root), self.backbone, False)
        for sample, mask_u8, _ in self._final_masks(ids, context, Path(cache_root), {"n_cached": 0, "n_computed": 0,
                                                                                      "predict_s": 0.0, "post_s": 0.0}):
            yield sample, mask_u8

    def _post_process(self, sample: Sample, mask_u8: np.ndarray, key: str, cache: MaskCache) -> np.ndarray:
        hit = cache.get(key, mask_u8.shape)
        if hit is not None:
            return hit[0]
        mask = mask_u8.astype(np.float32) / 255.0
        for post in self.posts:
            with plugin_errors(f"post-processor {post.name!r}", f"on image {sample.id!r}"):
                output = post(sample.image, mask)
            mask = validate_prediction(output, sample, f"post-processor {post.name!r}").mask
        mask_u8 = quantize_mask(mask)
        cache.put(key, mask_u8)
        return mask_u8


def run(spec: RunSpec, registry: Registry | None = None) -> RunResult:
    """Run one evaluation; see :class:`RunSpec`."""
    return Runner(spec, registry).run()
