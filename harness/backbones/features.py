"""The feature cache: backbone feature grids stored once, shared by every method.

A grid is stored as float32 ``.npy`` under ``<cache>/features/<key[:2]>/<key>.npy``, exactly
what the backbone returned: float16 (the format before :data:`CACHE_FORMAT` ``"float32"``)
has a relative error up to 5e-4, enough to flip TokenCut edges whose cosine lies within 1e-3
of tau and the signs of LOST's near-zero similarities. The key hashes :data:`CACHE_FORMAT`
(so float16 entries written before are never read back), the backbone's identity (name,
version, options, weights digest), how the image was prepared (``resize``, ``pad``,
``crop``) with the input size, the image id and a digest of the image's pixels. TokenCut, LOST and Deep Spectral Methods on the same backbone and the same
input preparation therefore read the same entries. Writes are atomic; an unreadable entry
counts as a miss and is recomputed.

Extraction is batched: the images that miss the cache are grouped by input size and sent
through the backbone together, on the backbone's device (a GPU when the run has one).
"""
from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from harness.cache import stable_hash
from harness.storage import atomic_write_bytes

log = logging.getLogger(__name__)

#: the stored dtype; part of every key, so entries of another format are never read
CACHE_FORMAT = "float32"


class FeatureCache:
    """float32 arrays under ``root/features/<key[:2]>/<key>.npy``."""

    def __init__(self, root: str | Path):
        self.root = Path(root) / "features"

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        path = self.path(key)
        if not path.exists():
            return None
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            log.warning("feature cache entry %s is unreadable (%s); recomputing it", path, exc)
            path.unlink(missing_ok=True)
            return None

    def put(self, key: str, array: np.ndarray) -> None:
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)
        atomic_write_bytes(self.path(key), buffer.getvalue())


@dataclass
class FeatureRequest:
    """One image's features, as a method asks for them.

    Attributes
    ----------
    image_id : str
        The sample id.
    image_digest : str
        :func:`harness.cache.array_digest` of the original image.
    preparation : str
        How the input was made, including its size (e.g. ``"resize-lanczos:224x336"``).
    make_input : callable
        Returns the prepared input, ``(H, W, 3)`` float32 RGB in [0, 1]; only called on a
        cache miss.
    """

    image_id: str
    image_digest: str
    preparation: str
    make_input: Callable[[], np.ndarray]


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
    """

    def __init__(self, backbone, device: str = "cpu", cache_root: str | Path | None = None, batch_size: int = 8):
        self.backbone = backbone
        self.device = device
        self.cache = FeatureCache(cache_root) if cache_root is not None else None
        self.batch_size = max(1, int(batch_size))
        self.backbone_key = stable_hash(backbone.identity())
        self.stats = {"computed": 0, "cached": 0}

    def key(self, request: FeatureRequest) -> str:
        return stable_hash([CACHE_FORMAT, self.backbone_key, request.preparation, request.image_id,
                            request.image_digest])

    def grids(self, requests: Sequence[FeatureRequest]) -> list[np.ndarray]:
        """``(C, h, w)`` float32 feature grids, one per request, from the cache or the backbone."""
        keys = [self.key(r) for r in requests]
        found: list[np.ndarray | None] = [self.cache.get(k) if self.cache else None for k in keys]
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
                        if self.cache:
                            self.cache.put(keys[i], grid)
                        found[i] = grid
            self.stats["computed"] += len(missing)
        return [np.asarray(f, dtype=np.float32) for f in found]

    def _extract(self, images: list[np.ndarray]) -> np.ndarray:
        """``(B, C, h, w)`` features of same-size ``(H, W, 3)`` float inputs."""
        import torch

        self.backbone.load(self.device)
        batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
        batch = batch.to(self.device, dtype=torch.float32)
        with torch.no_grad():
            out = self.backbone.features(batch)
        return out.float().cpu().numpy()
