"""Checkpoints: written atomically, validated on load with one clear error."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.storage import atomic_write_bytes

FORMAT = "harness-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Serialise ``payload`` (tensors and plain values) to ``path`` atomically."""
    import torch

    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, **payload}, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def read_foreign_state(path: str | Path) -> Any | None:
    """What a reference code base saved with ``torch.save`` (tensors and plain containers, read
    with ``weights_only=True``), or ``None`` when ``path`` is missing or holds anything else
    (a harness checkpoint, or junk for :func:`load_checkpoint` to report)."""
    import torch

    path = Path(path)
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a harness checkpoint holds non-tensor values; junk fails here too
        return None


def load_checkpoint(path: str | Path, methods: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`.

    Parameters
    ----------
    path : path
        The checkpoint file.
    methods : tuple of str, optional
        The method names it may come from; another method's checkpoint is an error.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a file that is not a checkpoint
        raise HarnessError(
            f"{path} is not a harness checkpoint (it cannot be loaded: {type(exc).__name__}); "
            f"pass the checkpoint_last.pt that `harness train` wrote"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise HarnessError(f"{path} is not a harness checkpoint; pass the checkpoint_last.pt that `harness train` wrote")
    if methods is not None and payload.get("method") not in methods:
        raise HarnessError(
            f"{path} is a checkpoint of method {payload.get('method')!r}, not of {' or '.join(methods)}; "
            f"use --method {payload.get('method')}"
        )
    return payload


def file_token(path: str | Path) -> str:
    """A cache token for a checkpoint file: its resolved path, size and modification time."""
    from harness.cache import stable_hash

    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"checkpoint {path} does not exist")
    stat = path.stat()
    return stable_hash([str(path.resolve()), stat.st_size, stat.st_mtime_ns])


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
