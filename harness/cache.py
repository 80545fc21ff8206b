"""On-disk caches keyed by a hash of everything that determines their content.

Every entry carries its key, a digest of its bytes and what it holds (shape, dtype), and is
checked against all three and against what the caller expects (the image's size, the
backbone's channels, finite values) before it is used: an entry that is not exactly what its
key promises is a miss, deleted and recomputed. Entries are written atomically. The root is ``--cache-dir``, else ``$HARNESS_CACHE``, else
``~/.cache/harness``.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import HarnessError
from harness.storage import atomic_write_bytes

log = logging.getLogger(__name__)


def user_cache_home() -> Path:
    """``$XDG_CACHE_HOME``, else ``~/.cache``: where the harness, torch and Hugging Face keep
    their caches by default (read at call time)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser()


def default_cache_dir() -> Path:
    if os.environ.get("HARNESS_CACHE"):
        return Path(os.environ["HARNESS_CACHE"]).expanduser()
    return user_cache_home() / "harness"


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


#: The first bytes of every cache entry; the version changes when the entry layout does.
ENTRY_MAGIC = b"HARNESS-CACHE-ENTRY\x01\n"


class CacheWriteError(HarnessError):
    """A cache entry cannot be written (a full disk, a folder made read-only)."""


class EntryCache:
    """Entries under ``root/<namespace>/<key[:2]>/<key><suffix>``, each holding its own key.

    An entry is :data:`ENTRY_MAGIC`, one JSON header line (the key, the namespace, a blake2b
    digest of the payload and the payload's metadata) and the payload. An entry whose header
    does not parse, names another key or namespace, or whose payload does not match its digest
    is a miss: it is deleted and recomputed, never read. Subclasses turn payloads into values
    and check the values (size, dtype, finiteness) against what the caller expects.
    """

    suffix = ".entry"

    def __init__(self, root: str | Path, namespace: str):
        self.root = Path(root) / namespace
        self.namespace = namespace

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}{self.suffix}"

    def read(self, key: str) -> tuple[dict[str, Any], bytes] | None:
        """``(metadata, payload)`` of an intact entry for ``key``, else ``None``."""
        path = self.path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            return self._miss(key, f"unreadable ({exc.strerror or exc})")
        head, _, payload = data[len(ENTRY_MAGIC):].partition(b"\n")
        try:
            header = json.loads(head) if data.startswith(ENTRY_MAGIC) else None
        except ValueError:
            header = None
        if not isinstance(header, dict):
            return self._miss(key, "not a harness cache entry")
        if header.get("key") != key or header.get("namespace") != self.namespace:
            return self._miss(key, f"written for another key ({header.get('namespace')}/{header.get('key')})")
        if header.get("blake2b") != _payload_digest(payload):
            return self._miss(key, "its bytes do not match their digest (corrupted)")
        meta = header.get("meta")
        return (meta, payload) if isinstance(meta, dict) else self._miss(key, "no metadata")

    def write(self, key: str, payload: bytes, meta: dict[str, Any]) -> None:
        """Store ``payload`` atomically; an unwritable cache is one clear error."""
        header = {"key": key, "namespace": self.namespace, "blake2b": _payload_digest(payload), "meta": meta}
        data = ENTRY_MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + payload
        try:
            atomic_write_bytes(self.path(key), data)
        except OSError as exc:
            raise CacheWriteError(
                f"cannot write cache entry {self.path(key)} ({exc.strerror or exc}); make the cache "
                f"folder writable or choose another with --cache-dir (or HARNESS_CACHE)"
            ) from None

    def _miss(self, key: str, why: str) -> None:
        path = self.path(key)
        log.warning("cache entry %s is %s; recomputing it", path, why)
        try:
            path.unlink(missing_ok=True)
        except OSError:  # a read-only cache: the entry stays, and is still never read
            pass
        return None


def _payload_digest(payload: bytes) -> str:
    return hashlib.blake2b(payload, digest_size=20).hexdigest()


class MaskCache(EntryCache):
    """uint8 ``(H, W)`` masks (PNG payload) and an optional box."""

    def get(self, key: str, shape: tuple[int, int]) -> tuple[np.ndarray, tuple | None] | None:
        """The mask and box stored under ``key`` if the entry is intact and of ``shape``, else ``None``."""
        entry = self.read(key)
        if entry is None:
            return None
        meta, payload = entry
        from PIL import Image

        try:
            with Image.open(io.BytesIO(payload)) as img:
                img.load()
                mode, mask = img.mode, np.asarray(img, dtype=np.uint8).copy()
        except (OSError, SyntaxError, ValueError) as exc:
            return self._miss(key, f"undecodable ({exc})")
        if mode != "L" or mask.shape != tuple(shape) or meta.get("shape") != list(shape):
            return self._miss(key, f"a {mode} mask of shape {mask.shape}, not an 8-bit mask of shape {tuple(shape)}")
        box = meta.get("box")
        if box is not None and not (isinstance(box, list) and len(box) == 4
                                    and all(isinstance(v, (int, float)) and math.isfinite(v) for v in box)):
            return self._miss(key, f"holding a malformed box {box!r}")
        return mask, tuple(float(v) for v in box) if box is not None else None

    def put(self, key: str, mask: np.ndarray, box: tuple | None = None) -> None:
        from harness.imageio import encode_png

        meta = {"shape": list(mask.shape), "box": [float(v) for v in box] if box is not None else None}
        self.write(key, encode_png(np.ascontiguousarray(mask, dtype=np.uint8)), meta)


class FeatureCache(EntryCache):
    """Finite float32 arrays (raw little-endian bytes) under ``root/features/``."""

    def __init__(self, root: str | Path):
        super().__init__(root, "features")

    def get(self, key: str, channels: int | None = None) -> np.ndarray | None:
        """The array stored under ``key``: intact, finite, 3-d with ``channels`` rows; else ``None``."""
        entry = self.read(key)
        if entry is None:
            return None
        meta, payload = entry
        shape = meta.get("shape")
        if meta.get("dtype") != "<f4" or not (isinstance(shape, list) and len(shape) == 3
                                              and all(isinstance(n, int) and n > 0 for n in shape)):
            return self._miss(key, f"of dtype {meta.get('dtype')} and shape {shape}, not a float32 (C, h, w) grid")
        if len(payload) != 4 * math.prod(shape) or (channels is not None and shape[0] != channels):
            return self._miss(key, f"of shape {shape} ({len(payload)} bytes), not {channels} channels")
        array = np.frombuffer(payload, dtype="<f4").reshape(shape).astype(np.float32)
        if not np.isfinite(array).all():
            return self._miss(key, "holding NaN or infinite values")
        return array

    def put(self, key: str, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array, dtype="<f4")
        self.write(key, array.tobytes(), {"dtype": "<f4", "shape": list(array.shape)})
