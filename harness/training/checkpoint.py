"""Checkpoints: written atomically, read without running code, validated with one clear error.

Every file is read with ``torch.load(..., weights_only=True)``: tensors and plain values
(numbers, strings, ``None``, lists, tuples, dicts) are all it may hold. A file that pickles
anything else (a class, a function, ``os.system`` through ``__reduce__``) is refused with one
:class:`~harness.errors.HarnessError` naming the file, before any of its objects is built, so
nothing in it runs. :func:`save_checkpoint` refuses to write such values in the first place.

A checkpoint is identified by the sha256 of its bytes (:func:`read_checkpoint` hashes exactly
the bytes it loads): a copy of the file elsewhere is the same checkpoint, an edited file is
another one whatever its size and modification time.
"""
from __future__ import annotations

import hashlib
import io
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.storage import atomic_write_bytes

FORMAT = "harness-checkpoint"
FORMAT_VERSION = 1

_PLAIN = (str, int, float, bool, type(None))
#: torch's message for a pickled global it will not import (torch >= 2.4 words it
#: "unsupported GLOBAL x.y", earlier versions "Unsupported global: GLOBAL x.y")
_GLOBAL = re.compile(r"unsupported\s+(?:global:\s*)?GLOBAL\s+([\w.]+)", re.IGNORECASE)


def check_plain(value: Any, where: str = "checkpoint") -> None:
    """Raise ``TypeError`` naming the first value that is neither a tensor nor a plain value
    (what ``torch.load(weights_only=True)`` reads back)."""
    import torch

    if isinstance(value, torch.Tensor) or type(value) in _PLAIN:  # exact types: numpy's float64 is a float
        return
    if type(value) in (dict, OrderedDict):
        for key, item in value.items():
            if type(key) not in _PLAIN:
                raise TypeError(f"{where} has a key of type {type(key).__name__}")
            check_plain(item, f"{where}[{key!r}]")
        return
    if type(value) in (list, tuple):
        for i, item in enumerate(value):
            check_plain(item, f"{where}[{i}]")
        return
    raise TypeError(f"{where} is a {type(value).__module__}.{type(value).__qualname__}; checkpoints hold tensors "
                    f"and plain values only (store it as numbers, strings, lists or dicts)")


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Serialise ``payload`` (tensors and plain values only, see :func:`check_plain`) to ``path`` atomically."""
    import torch

    record = {"format": FORMAT, "format_version": FORMAT_VERSION, **payload}
    check_plain(record)
    buffer = io.BytesIO()
    torch.save(record, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def content_digest(data: bytes) -> str:
    """sha256 of a checkpoint's bytes: its identity in every cache key."""
    return hashlib.sha256(data).hexdigest()


def file_token(path: str | Path) -> str:
    """A cache token for a file a method reads (a checkpoint): the sha256 of its bytes, so a copy
    elsewhere gives the same token and any edit another (whatever its size and modification time)."""
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"checkpoint {path} does not exist")
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def read_checkpoint(path: str | Path) -> tuple[Any, str]:
    """What a ``torch.save`` file holds, read with ``weights_only=True``, and the sha256 of the
    very bytes that were read.

    Raises
    ------
    HarnessError
        When the file is missing or unreadable, when it pickles a Python object other than
        tensors and plain values (refused before that object is built: nothing in the file
        runs), or when it is not a ``torch.save`` file at all.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"checkpoint {path} does not exist")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise HarnessError(f"checkpoint {path} cannot be read ({exc.strerror or exc})") from None
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a file that is not a checkpoint
        found = _GLOBAL.search(str(exc))
        if found:
            raise HarnessError(
                f"checkpoint {path} is refused: it pickles the Python object {found.group(1)}, not only tensors and "
                f"plain values, and loading it could run code; nothing in it was run. Use a checkpoint written by "
                f"`harness train`, or re-save the state dict alone"
            ) from None
        raise HarnessError(
            f"{path} is not a harness checkpoint (it cannot be loaded: {type(exc).__name__}); "
            f"pass the checkpoint_last.pt that `harness train` wrote"
        ) from None
    return obj, content_digest(data)


def read_foreign_state(path: str | Path) -> Any | None:
    """What a reference code base saved with ``torch.save`` (tensors and plain containers, read
    with ``weights_only=True``), or ``None`` when ``path`` is missing, unreadable or refused."""
    try:
        return read_checkpoint(path)[0]
    except HarnessError:
        return None


def is_harness_checkpoint(obj: Any) -> bool:
    """Whether a loaded object is a checkpoint written by :func:`save_checkpoint`."""
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def validate_checkpoint(payload: Any, path: str | Path, methods: tuple[str, ...] | None = None) -> dict[str, Any]:
    """``payload`` if it is a harness checkpoint of one of ``methods``, else one clear error."""
    if not is_harness_checkpoint(payload):
        raise HarnessError(f"{path} is not a harness checkpoint; pass the checkpoint_last.pt that `harness train` wrote")
    if methods is not None and payload.get("method") not in methods:
        raise HarnessError(
            f"{path} is a checkpoint of method {payload.get('method')!r}, not of {' or '.join(methods)}; "
            f"use --method {payload.get('method')}"
        )
    return payload


def load_checkpoint(path: str | Path, methods: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    Parameters
    ----------
    path : path
        The checkpoint file.
    methods : tuple of str, optional
        The method names it may come from; another method's checkpoint is an error.
    """
    payload, _ = read_checkpoint(path)
    return validate_checkpoint(payload, path, methods)


def check_backbone(checkpoint: dict[str, Any], backbone) -> None:
    """Refuse a backbone other than the checkpoint's: another name, options or weights file."""
    trained_name = checkpoint["backbone"]
    if backbone.name != trained_name:
        raise HarnessError(f"the checkpoint was trained on backbone {trained_name!r}; pass --backbone {trained_name}")
    trained_options = checkpoint["config"]["backbone"]["config"]
    if trained_options != backbone.identity()["config"]:
        args = ",".join(f"{k}={v}" for k, v in trained_options.items())
        raise HarnessError(f"the checkpoint was trained on {backbone.name} with options {trained_options}; "
                           f"pass --backbone-args {args}")
    digest = checkpoint.get("weights_digest")
    if digest and backbone.weights_digest != digest:
        raise HarnessError(
            f"the checkpoint was trained on {trained_name} weights with sha256 {digest[:12]}…, but these weights are "
            f"{str(backbone.weights_digest)[:12]}…; pass the same --weights file"
        )
