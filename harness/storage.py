"""Atomic file writes: a reader never sees a half-written file.

Each write goes to a temporary file in the same folder and is moved into place with
``os.replace``, which is atomic on POSIX and Windows file systems.
"""
from __future__ import annotations

import errno
import json
import math
import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Iterator


def _umask() -> int:
    """The process's umask, read when a file is written (never at import: a program may set
    its umask after importing the harness).

    On Linux it is read from ``/proc/self/status``, which changes nothing. Elsewhere it is
    read by setting and restoring it; ``os.umask`` is process-wide, so a file another thread
    creates in between gets the restrictive probe mask 0o077, never a permissive one.
    """
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


@contextmanager
def atomic_writer(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file handle whose bytes replace ``path`` whole when the block ends without an
    error; on any error (Ctrl-C included) ``path`` is left as it was and the temporary file is
    removed. The file gets the permissions ``open`` would give (0o666 less the umask), not
    ``mkstemp``'s 0o600. Parent folders are created as needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # results, caches and weights are meant to be shared
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_writer`)."""
    with atomic_writer(path) as handle:
        handle.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Strict JSON: NaN and infinities become ``null`` (``NaN`` is not JSON; readers choke on it)."""
    text = json.dumps(json_safe(obj), indent=2, sort_keys=True, default=str, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by ``None``."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: json_safe(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(value) for value in obj]
    return obj


def check_writable(folder: str | Path, flag: str = "--out") -> Path:
    """Prove up front that ``folder`` can be created and written, creating nothing.

    The nearest existing folder on its path must be a writable folder: a bad ``--out`` or
    ``--cache-dir`` fails before any work is done and leaves nothing behind.
    """
    from harness.errors import HarnessError

    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    problem = None
    if not existing.is_dir():
        problem = f"{existing} is a file, not a folder"
    elif not os.access(existing, os.W_OK | os.X_OK):
        problem = f"{existing} is not writable"
    if problem:
        raise HarnessError(f"cannot write to {folder}: {problem}; choose another folder with {flag}")
    return folder


@contextmanager
def staged_directory(target: str | Path) -> Iterator[Path]:
    """A fresh hidden folder beside ``target`` that replaces ``target`` whole on success.

    Everything is written into the staging folder; leaving the block without an error moves it
    into place (an older ``target`` is moved aside first and then deleted), so ``target`` is
    always one whole run or absent, never two runs mixed. On any error, Ctrl-C included, the
    staging folder is removed and ``target`` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes 0700 folders; results are meant to be shared
        yield staging
        _move_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _move_into_place(staging: Path, target: Path) -> None:
    for _ in range(10):  # another process may publish the same target between our two renames
        if target.exists():
            aside = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:12]}")
            try:
                os.rename(target, aside)
            except FileNotFoundError:
                continue
            shutil.rmtree(aside, ignore_errors=True)
        try:
            os.rename(staging, target)
            return
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
    raise OSError(errno.EEXIST, f"{target} keeps being replaced by another process")
