"""The feature cache: backbone feature grids stored once, shared by every method.

A grid is stored as float32 under ``<cache>/features/<key[:2]>/<key>.entry``, exactly what the
backbone returned: float16 (the format before :data:`CACHE_FORMAT` ``"float32"``) has a
relative error up to 5e-4, enough to flip TokenCut edges whose cosine lies within 1e-3 of tau
and the signs of LOST's near-zero similarities. The key hashes :data:`CACHE_FORMAT`, the
backbone's identity (name, version, options, weights digest), how the image was prepared
(``resize``, ``pad``, ``crop``) with the input size, the image id and a digest of the image's
pixels, so TokenCut, LOST and Deep Spectral Methods on the same backbone and the same input
preparation read the same entries. Each entry also holds its key, its shape and a digest of
its bytes (:class:`harness.cache.FeatureCache`): an entry that is corrupted, of another shape
or channel count, or not finite is recomputed, never used. Writes are atomic.

Extraction is batched: the images that miss the cache are grouped by input size and sent
through the backbone together, on the backbone's device (a GPU when the run has one).

It is a stage of every run that has a backbone: the runner builds one extractor for the run's
backbone and hands it to the method as ``RunContext.features`` (:class:`harness.api.FeatureSource`),
so that every method, built-in or third-party, reads its features through this cache in the
same way: ``context.features.grids([FeatureRequest(id, digest, preparation, make_input), ...])``.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from harness.api import FeatureRequest  # noqa: F401  (public here too, where it was defined before)
from harness.cache import FeatureCache, stable_hash
from harness.errors import HarnessError, PluginError

log = logging.getLogger(__name__)

#: the stored dtype; part of every key, so entries of another format are never read
CACHE_FORMAT = "float32"


def features_for(context) -> "FeatureExtractor":
    """``context.features`` when the runner built it, else a :class:`FeatureExtractor` for
    ``context.backbone`` with the context's device, cache folder and batch size (a method
    set up outside a run, e.g. in a test)."""
    if context.features is not None:
        return context.features
    if context.backbone is None:
        raise HarnessError("no backbone in the run context: a method that reads features needs one "
                           "(see `harness list backbones`)")
    return FeatureExtractor(context.backbone, context.device, context.cache_dir, max(int(context.batch_size), 1))


class FeatureExtractor:
    """Cached, batched feature grids of one backbone.

    Parameters
    ----------
    backbone : harness.api.Backbone
        The backbone; loaded on ``device`` at the first cache miss.
    device : str
        Where the backbone runs.
    cache_root : path-like or None
        The harness cache folder; ``None`` disables caching.
    batch_size : int
        The most images sent through the backbone at once.

    Raises
    ------
    PluginError
        With a cache folder, for a backbone whose ``weights_digest`` is ``None``: its entries
        could not be told apart from those of other weights.
    """

    def __init__(self, backbone, device: str = "cpu", cache_root: str | Path | None = None, batch_size: int = 8):
        if cache_root is not None and backbone.weights_digest is None:
            from harness.pipeline import backbone_without_digest

            raise PluginError(backbone_without_digest(backbone))
        self.backbone = backbone
        self.device = device
        self.cache = FeatureCache(cache_root) if cache_root is not None else None
        self.batch_size = max(1, int(batch_size))
        self.backbone_key = stable_hash(backbone.identity())
        #: grids computed and read from the cache; seconds spent loading the backbone
        self.stats: dict[str, float] = {"computed": 0, "cached": 0, "load_s": 0.0}
        self._loaded = False

    def key(self, request: FeatureRequest) -> str:
        return stable_hash([CACHE_FORMAT, self.backbone_key, request.preparation, request.image_id,
                            request.image_digest])

    def grids(self, requests: Sequence[FeatureRequest]) -> list[np.ndarray]:
        """``(C, h, w)`` float32 feature grids, one per request, from the cache or the backbone."""
        keys = [self.key(r) for r in requests]
        channels = self._channels()
        found: list[np.ndarray | None] = [self.cache.get(k, channels) if self.cache else None for k in keys]
        self.stats["cached"] += sum(f is not None for f in found)
        missing = [i for i, f in enumerate(found) if f is None]
        if missing:
            inputs = {i: requests[i].make_input() for i in missing}
            by_size: dict[tuple[int, int], list[int]] = {}
            for i in missing:
                by_size.setdefault(inputs[i].shape[:2], []).append(i)
            for group in by_size.values():
                for start in range(0, len(group), self.batch_size):
                    chunk = group[start : start + self.batch_size]
                    for i, grid in zip(chunk, self._extract([inputs[i] for i in chunk])):
                        grid = grid.astype(np.float32)  # what the cache holds is what every run sees
                        if not np.isfinite(grid).all():
                            raise HarnessError(
                                f"backbone {self.backbone.name!r} produced NaN or infinite features for image "
                                f"{requests[i].image_id!r}; check its weights (nothing was cached for it)")
                        if self.cache:
                            self.cache.put(keys[i], grid)
                        found[i] = grid
            self.stats["computed"] += len(missing)
        return [np.asarray(f, dtype=np.float32) for f in found]

    def _channels(self) -> int | None:
        """The backbone's feature channels, which every cached grid must have (None: unknown)."""
        try:
            return int(self.backbone.feature_dim)
        except (NotImplementedError, AttributeError, TypeError, ValueError):
            return None

    def _extract(self, images: list[np.ndarray]) -> np.ndarray:
        """``(B, C, h, w)`` features of same-size ``(H, W, 3)`` float inputs."""
        import torch

        if not self._loaded:  # timed apart: a run's throughput is over its images, not the weights' loading
            t0 = time.perf_counter()
            self.backbone.load(self.device)
            self.stats["load_s"] += time.perf_counter() - t0
            self._loaded = True
        batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
        batch = batch.to(self.device, dtype=torch.float32)
        with torch.no_grad():
            out = self.backbone.features(batch)
        return out.float().cpu().numpy()
