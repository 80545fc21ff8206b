"""The stages of ``harness run``, in order, each with one job:

1. **build** (:class:`harness.runner.Runner`'s constructor): the plugins of the request, the
   evaluators' key check (:func:`check_evaluator_keys`), everything that can be refused before
   any work is done;
2. **predict** (:class:`PredictStage`): the method, through the mask cache (a hit skips it);
3. **post-process** (:class:`PostStage`): the post chain, through the post cache;
4. **evaluate** (:class:`EvaluateStage`): every evaluator on every final mask; the stage keeps
   the evaluators' records (evaluators keep nothing) and the per-image rows, and aggregates
   the records into metrics;
5. **write** (:func:`write_run`): the evaluators' artifacts and the run files, into a staging
   folder renamed into place whole (:func:`harness.storage.staged_directory`).

Backbone features are a stage of their own that methods call into: the runner builds one
:class:`harness.backbones.features.FeatureExtractor` for the run's backbone and hands it to the
method as ``RunContext.features``.

:func:`final_masks` chains predict and post-process for the figures of ``harness report`` and
for pseudo-masks; :func:`score` runs evaluate alone (tests, benchmarks).
"""
from __future__ import annotations

import dataclasses
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from harness.api import Evaluator, Prediction, RunContext, Sample
from harness.cache import MaskCache, array_digest, quantize_mask, stable_hash
from harness.errors import HarnessError, PluginError

# masks a hair outside [0, 1] (float round-off) are clipped; anything further is a bug
_RANGE_TOLERANCE = 1e-3
#: Metrics any evaluator may report without declaring them; they must agree (the images scored).
COMMON_METRICS = ("n_images",)
#: Per-image columns the harness writes itself.
RESERVED_COLUMNS = ("id",)


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


# ---- build: what is refused before any work ---------------------------------------------------

def _declared(ev: Evaluator) -> list[tuple[str, str]]:
    """``(key, "metric" | "per-image column")`` for every key ``ev`` declares."""
    for attr in ("metric_keys", "row_keys"):
        value = getattr(ev, attr, ())
        if isinstance(value, str) or not all(isinstance(k, str) and k for k in value):
            raise PluginError(f"evaluator {ev.name!r}: {attr} must be a tuple of key names, got {value!r}")
    return [(k, "metric") for k in ev.metric_keys] + [(k, "per-image column") for k in ev.row_keys]


def check_evaluator_keys(evaluators: Sequence[Evaluator]) -> None:
    """Refuse evaluators whose declared keys collide.

    Metrics (``results.json``) and per-image columns (``per_image.csv``) of one run share one
    flat namespace, and the report pairs a metric with the column of the same name, so no two
    evaluators of a run may declare the same key, in either list.

    Raises
    ------
    PluginError
        Naming both evaluators and the key (or an evaluator given twice, or a reserved key).
    """
    owners: dict[str, str] = {}
    for ev in evaluators:
        if ev.name in owners.values():
            raise PluginError(f"evaluator {ev.name!r} is given twice; give each --eval once")
        for key, what in _declared(ev):
            if key in RESERVED_COLUMNS or key in COMMON_METRICS:
                raise PluginError(
                    f"evaluator {ev.name!r} declares the {what} {key!r}, which the harness writes itself; "
                    f"remove it from its metric_keys/row_keys")
            other = owners.get(key)
            if other is not None and other != ev.name:
                raise PluginError(
                    f"evaluators {other!r} and {ev.name!r} both emit the key {key!r} (metrics and per-image "
                    f"columns of a run share one namespace, so one would hide the other); score them in "
                    f"separate runs, or rename the key in one of them")
            owners[key] = ev.name


def _path_options(method) -> list[str]:
    """The names of a method's options that hold a file or folder path."""
    names = []
    for option in method.options:
        value = method.config.get(option.name)
        if value is None:
            continue
        if isinstance(value, Path) or getattr(option, "type", None) is Path:
            names.append(option.name)
    return names


def check_cache_identity(method, backbone, token: dict | None = None) -> None:
    """Refuse what the caches could not tell apart: a backbone without a weights digest, and a
    cached method that reads a file its cache key does not follow.

    Parameters
    ----------
    method : Method
        The run's method (``token`` is its :meth:`~harness.api.Method.cache_token`, computed
        here when not given).
    backbone : Backbone or None
        The run's backbone.

    Raises
    ------
    PluginError
        Addressed to the plugin's author: what to return so that cached outputs can be told apart.
    """
    if backbone is not None and backbone.weights_digest is None:
        raise PluginError(backbone_without_digest(backbone))
    if not method.cacheable:
        return
    paths = _path_options(method)
    if paths and not (method.cache_token() if token is None else token):
        names = ", ".join(repr(p) for p in paths)
        raise PluginError(
            f"method {method.name!r} reads the file(s) of option {names} but its cache_token() is empty, so its "
            f"cached masks would be reused after the file changes; return what identifies the file's content "
            f"from cache_token() (e.g. harness.training.checkpoint.file_token(path)), or set cacheable = False")


def backbone_without_digest(backbone) -> str:
    """The error for a backbone whose ``weights_digest`` is ``None`` (it keys the caches)."""
    return (f"backbone {backbone.name!r} has no weights_digest, so its cached features and masks could not be told "
            f"apart from those of other weights; return the sha256 of its weights file from weights_digest "
            f"(harness.backbones.weights.file_digest(path)), or, for weights that are not one file, a string "
            f"that changes whenever they do (e.g. 'random-init-seed-0')")


# ---- predict and post-process ------------------------------------------------------------------

class PredictStage:
    """The method, through the mask cache, in two parts: :meth:`device` (the method's
    ``device_stage`` on a batch, in the run's main process) and :meth:`finish` (its
    ``cpu_stage`` on one image, then the mask cache write; in a worker process of a pipelined run).

    Parameters
    ----------
    method : Method
        Set up (``setup(context)``) at the first image the cache does not hold, or before the
        workers start when it splits its stages (:meth:`~harness.api.Method.splits_stages`).
    identity : dict
        Everything that determines the method's masks (hashed into every key with the image
        id and pixels).
    context : RunContext
    cache_root : Path
    """

    def __init__(self, method, identity: dict[str, Any], context: RunContext, cache_root: Path):
        self.method = method
        self.context = context
        self.method_hash = stable_hash(identity)
        self.cache = MaskCache(cache_root, "masks")
        self.ready = False
        self.setup_s = 0.0
        self.owner = f"method {method.name!r}"

    def key(self, sample: Sample) -> str:
        return stable_hash([self.method_hash, sample.id, array_digest(sample.image)])

    def setup(self) -> None:
        if not self.ready:
            t0 = time.perf_counter()
            with plugin_errors(self.owner, "while setting up"):
                self.method.setup(self.context)
            self.ready = True
            self.setup_s = time.perf_counter() - t0

    def setup_seconds(self) -> float:
        """Seconds spent setting the method up and loading its backbone (not per image)."""
        features = self.context.features
        return self.setup_s + (features.stats["load_s"] if features is not None else 0.0)

    def lookup(self, samples: list[Sample]) -> list[tuple[str, tuple[np.ndarray, Any] | None]]:
        """``(key, (uint8 mask, box) or None)`` per sample: what the mask cache holds."""
        keys = [self.key(s) for s in samples]
        if not self.method.cacheable:
            return [(k, None) for k in keys]
        return [(k, self.cache.get(k, s.image.shape[:2])) for k, s in zip(keys, samples)]

    def device(self, samples: list[Sample]) -> list[Any]:
        """The method's ``device_stage`` on images the cache does not hold (one value per sample)."""
        self.setup()
        names = ", ".join(repr(s.id) for s in samples)
        with plugin_errors(self.owner, f"on image {names}"):
            staged = list(self.method.device_stage([s.without_labels() for s in samples]))
        if len(staged) != len(samples):
            raise HarnessError(f"{self.owner} returned {len(staged)} results for {len(samples)} images")
        return staged

    def finish(self, sample: Sample, key: str, staged: Any) -> tuple[np.ndarray, Any]:
        """The method's ``cpu_stage`` on one image, checked, quantized and cached: ``(uint8 mask, box)``."""
        with plugin_errors(self.owner, f"on image {sample.id!r}"):
            output = self.method.cpu_stage(sample.without_labels(), staged)
        pred = validate_prediction(output, sample, self.owner)
        found = (quantize_mask(pred.mask), pred.box)
        if self.method.cacheable:
            self.cache.put(key, *found)
        return found

    def stage(self, samples: list[Sample], stats: dict) -> list[tuple[str, tuple[np.ndarray, Any] | None, Any]]:
        """``(key, cache hit or None, device-stage value or None)`` per sample: the lookups, then
        the method's device stage on the misses (counted in ``stats``)."""
        looked = self.lookup(samples)
        missing = [j for j, (_, hit) in enumerate(looked) if hit is None]
        staged = dict(zip(missing, self.device([samples[j] for j in missing]))) if missing else {}
        stats["n_cached"] += len(samples) - len(missing)
        stats["n_computed"] += len(missing)
        return [(key, hit, staged.get(j)) for j, (key, hit) in enumerate(looked)]

    def __call__(self, samples: list[Sample], stats: dict) -> list[tuple[str, np.ndarray, Any]]:
        """``(key, uint8 mask, box)`` per sample, from the cache or the method (both stages here)."""
        t0 = time.perf_counter()
        found = [(key, *(hit if hit is not None else self.finish(sample, key, staged)))
                 for sample, (key, hit, staged) in zip(samples, self.stage(samples, stats))]
        stats["predict_s"] += time.perf_counter() - t0
        return found


class PostStage:
    """The post chain, through the post cache (keyed by the method's mask key and the chain).

    Post-processors run on the CPU (in a pipelined run, in the worker processes): the
    context they are set up with says ``device="cpu"``.
    """

    def __init__(self, posts: list, context: RunContext, cache_root: Path):
        self.posts = posts
        self.context = dataclasses.replace(context, device="cpu")
        self.chain = [post.identity() for post in posts]
        self.cache = MaskCache(cache_root, "post")
        self.ready = False

    def __call__(self, sample: Sample, key: str, mask_u8: np.ndarray, box, stats: dict | None = None
                 ) -> tuple[np.ndarray, Any]:
        """The post-processed uint8 mask and its box (``None``: a post-processed mask defines its own)."""
        if not self.posts:
            return mask_u8, box
        t0 = time.perf_counter()
        if not self.ready:
            for post in self.posts:
                with plugin_errors(f"post-processor {post.name!r}", "while setting up"):
                    post.setup(self.context)
            self.ready = True
        post_key = stable_hash([key, self.chain])
        hit = self.cache.get(post_key, mask_u8.shape)
        if hit is not None:
            mask_u8 = hit[0]
        else:
            mask = mask_u8.astype(np.float32) / 255.0
            for post in self.posts:
                with plugin_errors(f"post-processor {post.name!r}", f"on image {sample.id!r}"):
                    output = post(sample.image, mask)
                mask = validate_prediction(output, sample, f"post-processor {post.name!r}").mask
            mask_u8 = quantize_mask(mask)
            self.cache.put(post_key, mask_u8)
        if stats is not None:
            stats["post_s"] += time.perf_counter() - t0
        return mask_u8, None


def new_stats() -> dict[str, Any]:
    return {"n_computed": 0, "n_cached": 0, "predict_s": 0.0, "post_s": 0.0, "eval_s": 0.0}


def final_masks(load, ids: list[str], batch_size: int, predict: PredictStage, post: PostStage,
                stats: dict) -> Iterator[tuple[Sample, np.ndarray, Any]]:
    """Yield ``(sample, uint8 mask, box)`` after the method and the post chain, batch by batch,
    in this process (the figures of ``harness report`` and pseudo-masks use it).

    ``load(id)`` gives the sample as the method and evaluators see it (the protocol's view).
    """
    for start in range(0, len(ids), batch_size):
        samples = [load(sample_id) for sample_id in ids[start : start + batch_size]]
        for sample, (key, mask_u8, box) in zip(samples, predict(samples, stats)):
            mask_u8, box = post(sample, key, mask_u8, box, stats)
            yield sample, mask_u8, box


# ---- the per-image work of a run (a worker process's job in a pipelined run) --------------------

@dataclass
class ImageWork:
    """One image on its way from the main process to the per-image stages.

    Attributes
    ----------
    sample : Sample
        With its labels (the evaluators need them; the method gets it without).
    key : str
        Its mask-cache key.
    cached : tuple or None
        ``(uint8 mask, box)`` from the mask cache, or ``None``: :attr:`staged` is to be finished.
    staged : Any
        What the method's ``device_stage`` returned for it.
    """

    sample: Sample
    key: str
    cached: tuple[np.ndarray, Any] | None = None
    staged: Any = None


@dataclass
class ImageResult:
    """What the per-image stages send back: every evaluator's record, the per-image row, and the
    seconds each stage took (``predict_cpu``, ``post``, ``evaluate``)."""

    records: list[Any]
    row: dict[str, Any]
    seconds: dict[str, float]


class ImageStages:
    """The method's per-image stage, the post chain and the evaluators, on one :class:`ImageWork`.

    Called in the main process for ``--workers 0``, else in the worker processes (which inherit
    it, forked); both give the same result for the same image.
    """

    def __init__(self, predict: PredictStage, post: PostStage, evaluate: "EvaluateStage"):
        self.predict = predict
        self.post = post
        self.evaluate = evaluate

    def __call__(self, work: ImageWork) -> ImageResult:
        t0 = time.perf_counter()
        if work.cached is None:
            mask_u8, box = self.predict.finish(work.sample, work.key, work.staged)
        else:
            mask_u8, box = work.cached
        t1 = time.perf_counter()
        mask_u8, box = self.post(work.sample, work.key, mask_u8, box)
        t2 = time.perf_counter()
        records, row = self.evaluate.evaluate_one(work.sample, Prediction(mask_u8.astype(np.float32) / 255.0, box))
        t3 = time.perf_counter()
        return ImageResult(records, row, {"predict_cpu": t1 - t0, "post": t2 - t1, "evaluate": t3 - t2})


# ---- evaluate --------------------------------------------------------------------------------

class EvaluateStage:
    """The evaluators of a run, the records they return (kept here, in dataset order) and the
    per-image rows; checks that each evaluator emits only the keys it declared."""

    def __init__(self, evaluators: Sequence[Evaluator]):
        self.evaluators = list(evaluators)
        self.records: list[list[Any]] = [[] for _ in self.evaluators]
        self.rows: list[dict[str, Any]] = []
        self._allowed_rows = [set(ev.row_keys) for ev in self.evaluators]
        self._allowed_metrics = [set(ev.metric_keys) | set(COMMON_METRICS) for ev in self.evaluators]

    def __call__(self, sample: Sample, prediction: Prediction) -> dict[str, Any]:
        records, row = self.evaluate_one(sample, prediction)
        self.add(records, row)
        return row

    def add(self, records: list[Any], row: dict[str, Any]) -> None:
        """Keep one image's records and row (images must come in dataset order)."""
        for kept, record in zip(self.records, records):
            kept.append(record)
        self.rows.append(row)

    def evaluate_one(self, sample: Sample, prediction: Prediction) -> tuple[list[Any], dict[str, Any]]:
        """Every evaluator on one image: ``(one record per evaluator, the per-image row)``; keeps nothing."""
        row: dict[str, Any] = {"id": sample.id}
        records: list[Any] = []
        for ev, allowed in zip(self.evaluators, self._allowed_rows):
            owner = f"evaluator {ev.name!r}"
            with plugin_errors(owner, f"on image {sample.id!r}"):
                out = ev.process(sample, prediction)
            if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], dict)):
                raise PluginError(f"{owner} returned {type(out).__name__} for image {sample.id!r}; process() must "
                                  f"return (record, row), row a dict of per-image values")
            record, values = out
            extra = [k for k in values if k not in allowed]
            if extra:
                raise PluginError(f"{owner} emitted the per-image column(s) {', '.join(map(repr, extra))} for image "
                                  f"{sample.id!r} without declaring them; add them to its row_keys")
            records.append(record)
            row.update(values)
        return records, row

    def shard(self) -> tuple[list, list]:
        """What one process sends to rank 0: its rows and every evaluator's records."""
        return self.rows, self.records

    def merge(self, shards: list[tuple[list, list]], n_images: int) -> None:
        """Replace the rows and records with every rank's, back in dataset order.

        Rank r handled images r, r + world, r + 2 world, ...; interleaving restores the order
        one process would have used, so the metrics equal a one-process run's.
        """
        world = len(shards)
        order = [(p % world, p // world) for p in range(n_images)]
        self.rows = [shards[r][0][i] for r, i in order]
        self.records = [[shards[r][1][k][i] for r, i in order] for k in range(len(self.evaluators))]

    def aggregate(self) -> dict[str, Any]:
        """Every evaluator's metrics, in evaluator order (``n_images`` once)."""
        metrics: dict[str, Any] = {}
        for ev, records, allowed in zip(self.evaluators, self.records, self._allowed_metrics):
            owner = f"evaluator {ev.name!r}"
            with plugin_errors(owner, "while aggregating"):
                out = ev.aggregate(records)
            if not isinstance(out, dict):
                raise PluginError(f"{owner} returned {type(out).__name__} from aggregate(); it must return a dict "
                                  f"of metrics")
            extra = [k for k in out if k not in allowed]
            if extra:
                raise PluginError(f"{owner} emitted the metric(s) {', '.join(map(repr, extra))} without declaring "
                                  f"them; add them to its metric_keys")
            if "n_images" in out and out["n_images"] != len(records):
                raise PluginError(f"{owner} reported n_images={out['n_images']!r} for {len(records)} images; "
                                  f"n_images is the number of images scored")
            for key, value in out.items():
                metrics.setdefault(key, value)  # only a common metric can repeat, with one value
        return metrics

    def artifacts(self, run_dir: Path) -> list[Path]:
        made: list[Path] = []
        for ev, records in zip(self.evaluators, self.records):
            with plugin_errors(f"evaluator {ev.name!r}", "while writing its files"):
                made += list(ev.artifacts(records, run_dir) or [])
        return made


def score(evaluators: Sequence[Evaluator] | Evaluator, pairs: Iterable[tuple[Sample, Prediction]]
          ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run evaluators outside a run: ``(per-image rows, metrics)`` of ``(sample, prediction)`` pairs,
    with the runner's checks (declared keys, no collisions)."""
    evaluators = [evaluators] if isinstance(evaluators, Evaluator) else list(evaluators)
    check_evaluator_keys(evaluators)
    stage = EvaluateStage(evaluators)
    for sample, prediction in pairs:
        stage(sample, prediction)
    return stage.rows, stage.aggregate()


# ---- write -------------------------------------------------------------------------------------

def write_run(run_dir: Path, results: dict[str, Any], evaluate: EvaluateStage) -> None:
    """The evaluators' artifacts and the run files, written whole into a staging folder beside
    ``run_dir`` and renamed into place: ``run_dir`` never mixes two runs."""
    from harness.run_files import write_run_files
    from harness.storage import staged_directory

    with staged_directory(run_dir) as staging:
        evaluate.artifacts(staging)
        write_run_files(staging, results, evaluate.rows)
