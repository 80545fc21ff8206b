"""On-disk caches keyed by a hash of everything that determines their content.

Masks are stored as uint8 PNGs (the method's box, if any, in a PNG text chunk). Entries are
written atomically; an entry that cannot be decoded (a truncated file) counts as a miss and
is recomputed. The root is ``--cache-dir``, else ``$HARNESS_CACHE``, else
``~/.cache/harness``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from harness.storage import atomic_write_bytes

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    if os.environ.get("HARNESS_CACHE"):
        return Path(os.environ["HARNESS_CACHE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "harness"


def stable_hash(obj: Any, length: int = 40) -> str:
    """A hex digest of a JSON-serialisable object, independent of dict order."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def array_digest(array: np.ndarray) -> str:
    """A short digest of an array's shape, dtype and bytes."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{array.shape}{array.dtype}".encode())
    h.update(np.ascontiguousarray(array).data)
    return h.hexdigest()


def quantize_mask(mask: np.ndarray) -> np.ndarray:
    """Soft mask in [0, 1] -> uint8 0..255 (what every stage downstream sees)."""
    return np.clip(np.rint(mask * 255.0), 0, 255).astype(np.uint8)


class MaskCache:
    """uint8 masks (and an optional box) under ``root/<namespace>/<key[:2]>/<key>.png``."""

    def __init__(self, root: str | Path, namespace: str):
        self.root = Path(root) / namespace

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.png"

    def get(self, key: str) -> tuple[np.ndarray, tuple | None] | None:
        path = self.path(key)
        if not path.exists():
            return None
        from PIL import Image

        try:
            with Image.open(path) as img:
                img.load()
                mask = np.asarray(img, dtype=np.uint8).copy()
                box_text = img.info.get("box")
        except (OSError, SyntaxError, ValueError) as exc:
            log.warning("cache entry %s is unreadable (%s); recomputing it", path, exc)
            path.unlink(missing_ok=True)
            return None
        box = tuple(json.loads(box_text)) if box_text else None
        return mask, box

    def put(self, key: str, mask: np.ndarray, box: tuple | None = None) -> None:
        from harness.imageio import encode_png

        text = {"box": json.dumps([float(v) for v in box])} if box is not None else None
        atomic_write_bytes(self.path(key), encode_png(mask, text))
