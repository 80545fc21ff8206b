"""Provenance recorded in a run's ``results.json``: library versions, the source commit and the
time. The run directory itself (its files, their format, writing and reading) is
:mod:`harness.run_files`'s."""
from __future__ import annotations

import platform
import re
import subprocess
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

_LIBRARIES = ("torch", "torchvision", "timm", "numpy", "scipy", "pluggy")
#: The OpenCV wheels that provide ``cv2`` (the runtime depends on the first; the tests replace
#: it with the contrib build); each one installed is recorded under its own name.
_OPENCV = ("opencv-python-headless", "opencv-contrib-python-headless", "opencv-python", "opencv-contrib-python")
#: The distribution name in the pyproject.toml at the top of this project's own checkout.
_PROJECT = "seg-harness"


def _dist_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def environment_versions(plugin_sources: list[str]) -> dict[str, Any]:
    """Python, key libraries, the harness and every plugin distribution (no heavy imports)."""
    return {
        "python": platform.python_version(),
        "harness": _dist_version(_PROJECT),
        **{lib: _dist_version(lib) for lib in _LIBRARIES},
        **{lib: found for lib in _OPENCV if (found := _dist_version(lib)) is not None},
        "plugins": sorted(set(plugin_sources)),
    }


def git_sha(package_dir: str | Path | None = None) -> str | None:
    """The commit of this project's source tree, when the harness runs from its git checkout.

    ``package_dir`` (default: the folder of the ``harness`` package) must be the ``harness``
    folder at the top of a checkout whose ``pyproject.toml`` names this project. Otherwise
    (an installed copy in a virtual environment that sits inside some other repository, or a
    copy of the package inside another project) the commit would be of the wrong tree, and
    ``None`` is recorded.
    """
    here = Path(package_dir if package_dir is not None else Path(__file__).parent).resolve()
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--show-toplevel", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.split()
    if out.returncode != 0 or len(lines) != 2:
        return None
    toplevel, sha = Path(lines[0]).resolve(), lines[1]
    if here != toplevel / "harness" or _project_name(toplevel / "pyproject.toml") != _PROJECT:
        return None
    return sha


def _project_name(pyproject: Path) -> str | None:
    """``[project] name`` of a pyproject.toml, or ``None`` when it is absent or unreadable."""
    try:
        text = pyproject.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    try:
        import tomllib
    except ImportError:  # Python 3.10: the one line that matters, read by hand
        match = re.search(r'^\s*name\s*=\s*"([^"]*)"', text.split("[project]", 1)[-1], re.MULTILINE)
        return match.group(1) if match else None
    try:
        name = tomllib.loads(text).get("project", {}).get("name")
    except tomllib.TOMLDecodeError:
        return None
    return name if isinstance(name, str) else None


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
