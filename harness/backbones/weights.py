"""Finding backbone weights on disk, hashing them once, and loading them strictly.

Resolution order (DESIGN.md, "Weights and data, offline first"):

1. an explicit ``--weights`` file;
2. the torch hub cache under the official file name
   (``$TORCH_HOME/hub/checkpoints/<file>``, default ``~/.cache/torch``);
3. the Hugging Face cache of timm's hub id (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``);
4. a download of the official file into the torch hub cache, only when online
   (never when ``HF_HUB_OFFLINE`` or ``HARNESS_OFFLINE`` is set, so offline runs fail in
   milliseconds instead of waiting for a network time-out);
5. else one :class:`~harness.errors.HarnessError` naming the file, where to put it and
   ``--weights``.

A file's sha256 is cached by (resolved path, size, mtime) under ``<cache>/digests`` so an
80 MB checkpoint is hashed once, not on every run.
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

log = logging.getLogger(__name__)

_TRUE = ("1", "true", "yes", "on")
#: connect/read time-out of a download, seconds
DOWNLOAD_TIMEOUT = 15


@dataclass(frozen=True)
class WeightsSource:
    """Where a backbone's official weights live.

    Attributes
    ----------
    file_name : str
        The official file name (also the name looked up in the torch hub cache).
    url : str or None
        The official download address (``None``: never downloaded, local only).
    hf_hub_id : str or None
        timm's Hugging Face repository (``timm/<model>.<tag>``), or ``None``.
    """

    file_name: str
    url: str | None = None
    hf_hub_id: str | None = None


def offline() -> bool:
    """Whether downloads are forbidden (``HF_HUB_OFFLINE`` or ``HARNESS_OFFLINE`` set)."""
    return any(os.environ.get(var, "").strip().lower() in _TRUE for var in ("HF_HUB_OFFLINE", "HARNESS_OFFLINE"))


def torch_hub_checkpoints() -> Path:
    """``$TORCH_HOME/hub/checkpoints`` as torch itself computes it (without importing torch)."""
    from harness.cache import user_cache_home

    home = os.environ.get("TORCH_HOME")
    return (Path(home).expanduser() if home else user_cache_home() / "torch") / "hub" / "checkpoints"


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache folder, read from the environment at call time."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    from harness.cache import user_cache_home

    home = os.environ.get("HF_HOME")
    return (Path(home).expanduser() if home else user_cache_home() / "huggingface") / "hub"


def _hf_cached_file(repo_id: str) -> Path | None:
    """A weights file of ``repo_id`` already in the HF cache (no network access)."""
    from huggingface_hub import try_to_load_from_cache

    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(repo_id, filename, cache_dir=str(hf_hub_cache()))
        if isinstance(found, str) and os.path.isfile(found):
            return Path(found)
    return None


def _download(url: str, target: Path) -> Path:
    """Fetch ``url`` into ``target`` atomically (:func:`~harness.storage.atomic_writer`: a killed
    download leaves no partial file, and the file gets the umask's permissions), streamed in
    1 MiB chunks with a bounded time-out."""
    import urllib.request

    from harness.storage import atomic_writer

    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response, atomic_writer(target) as out:
        while chunk := response.read(1 << 20):
            out.write(chunk)
    return target


def resolve_weights(backbone: str, source: WeightsSource, explicit: str | Path | None) -> Path:
    """The weights file of ``backbone``, following the order in the module docstring.

    Raises
    ------
    HarnessError
        When an explicit file does not exist, or nothing is found and downloading is not
        possible; the message names the official file, where to put it and ``--weights``.
    """
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise HarnessError(f"--weights {path}: no such file (backbone {backbone!r} expects {source.file_name})")
        return path
    hub_file = torch_hub_checkpoints() / source.file_name
    if hub_file.is_file():
        return hub_file
    if source.hf_hub_id:
        cached = _hf_cached_file(source.hf_hub_id)
        if cached is not None:
            return cached
    if source.url and not offline():
        try:
            log.info("downloading %s to %s", source.url, hub_file)
            return _download(source.url, hub_file)
        except OSError as exc:
            reason = f"the download from {source.url} failed ({exc})"
        else:  # pragma: no cover - returned above
            reason = ""
    elif source.url:
        reason = "downloads are off (HF_HUB_OFFLINE/HARNESS_OFFLINE is set)"
    else:
        reason = "this backbone is never downloaded automatically"
    fetch = f"Download it from {source.url} and save it as" if source.url else "Save it as"
    raise HarnessError(
        f"backbone {backbone!r}: weights file {source.file_name} not found and {reason}. "
        f"{fetch} {hub_file} (or set TORCH_HOME), or pass --weights /path/to/{source.file_name}"
    )


def file_digest(path: str | Path, cache_root: str | Path | None = None) -> str:
    """sha256 of a file, cached by (resolved path, size, mtime) so big files are hashed once.

    Parameters
    ----------
    path : path-like
        The file.
    cache_root : path-like, optional
        The harness cache folder (default :func:`harness.cache.default_cache_dir`); digests
        live in ``<cache_root>/digests``.
    """
    import json

    from harness.cache import default_cache_dir, stable_hash
    from harness.storage import atomic_write_json

    path = Path(path).resolve()
    stat = path.stat()
    stamp = {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    record = Path(cache_root or default_cache_dir()) / "digests" / f"{stable_hash(str(path), 32)}.json"
    try:
        cached = json.loads(record.read_text())
        if all(cached.get(k) == v for k, v in stamp.items()) and len(cached.get("sha256", "")) == 64:
            return cached["sha256"]
    except (OSError, ValueError):
        pass  # no record yet, or an unreadable one: hash again
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            h.update(chunk)
    digest = h.hexdigest()
    try:
        atomic_write_json(record, {**stamp, "sha256": digest})
    except OSError as exc:  # a read-only cache only costs re-hashing next time
        log.debug("could not record the digest of %s: %s", path, exc)
    return digest


def read_state_dict(path: str | Path) -> dict[str, Any]:
    """Tensors of a ``.pth``/``.bin``/``.safetensors`` file (CPU), with a clear error if unreadable."""
    import torch

    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any decoding failure means the same thing to the user
        raise HarnessError(f"weights file {path} cannot be read ({type(exc).__name__}: {exc}); re-download it") from None


def unwrap_state_dict(obj: Any, path: str | Path) -> dict[str, Any]:
    """The backbone's tensors from a checkpoint in any of the common DINO/iBOT layouts.

    Official DINO backbone files are a flat state dict; full training checkpoints wrap it in
    ``teacher`` (DINO) or ``state_dict`` (iBOT) with ``module.``/``backbone.`` prefixes and
    carry projection-head keys (``head.*``) and iBOT's ``masked_embed``, which are dropped.
    """
    import torch

    for key in ("teacher", "state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise HarnessError(f"weights file {path} holds no state dict of tensors")
    cleaned: dict[str, Any] = {}
    for name, value in obj.items():
        for prefix in ("module.", "backbone."):
            if name.startswith(prefix):
                name = name[len(prefix):]
        if name.startswith("head.") or name == "head" or name.startswith("masked_embed"):
            continue
        cleaned[name] = value
    return cleaned


def load_strict(model, state: dict[str, Any], path: str | Path, backbone: str) -> None:
    """``model.load_state_dict(state, strict=True)`` with a message that names the file."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        text = str(exc).replace("\n", " ")
        raise HarnessError(
            f"weights file {path} does not fit backbone {backbone!r}: {text[:600]}; pass the file "
            f"that belongs to this backbone"
        ) from None
