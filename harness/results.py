"""What a run writes: ``results.json``, ``per_image.csv`` and ``summary.md``."""
from __future__ import annotations

import hashlib
import platform
import re
import subprocess
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from harness.storage import atomic_write_json, atomic_write_text

SCHEMA_VERSION = 1
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


def format_metrics_table(metrics: dict[str, Any]) -> str:
    from tabulate import tabulate

    rows = [(key, f"{value:.4f}" if isinstance(value, float) else value) for key, value in metrics.items()]
    return tabulate(rows, headers=["metric", "value"], tablefmt="github")


def write_run_files(run_dir: Path, results: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """Write the run files atomically (per-image rows first, results.json last, with the
    sha256 of every other file of ``run_dir`` under ``files``)."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    atomic_write_text(run_dir / "per_image.csv", frame.to_csv(index=False, float_format="%.6g"))
    config = results["config"]
    lines = [
        f"# Run `{results['run']}`",
        "",
        f"- method: `{config['method']['name']}`, post-processing: "
        + (" → ".join(f"`{p['name']}`" for p in config["posts"]) or "none"),
        f"- dataset: `{config['dataset']['name']}` ({results['counts']['images']} images)",
        f"- backbone: `{config['backbone']['name']}`" if config.get("backbone") else "- backbone: none",
        f"- protocol: {results['protocol']['name']} v{results['protocol']['version']}",
        f"- created: {results['created']}",
        "",
        format_metrics_table(results["metrics"]),
        "",
    ]
    atomic_write_text(run_dir / "summary.md", "\n".join(lines))
    # every file's digest, so a reader can tell that a file belongs to this results.json
    results["files"] = {path.name: file_sha256(path) for path in sorted(run_dir.iterdir())
                        if path.is_file() and path.name != "results.json" and not path.name.startswith(".")}
    atomic_write_json(run_dir / "results.json", results)


def file_sha256(path: Path) -> str:
    """The sha256 hex digest of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
