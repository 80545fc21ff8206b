"""What a run writes: ``results.json``, ``per_image.csv`` and ``summary.md``."""
from __future__ import annotations

import hashlib
import platform
import subprocess
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from harness.storage import atomic_write_json, atomic_write_text

SCHEMA_VERSION = 1
_LIBRARIES = ("torch", "torchvision", "timm", "numpy", "scipy", "opencv-contrib-python-headless", "pluggy")


def _dist_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def environment_versions(plugin_sources: list[str]) -> dict[str, Any]:
    """Python, key libraries, the harness and every plugin distribution (no heavy imports)."""
    return {
        "python": platform.python_version(),
        "harness": _dist_version("seg-harness"),
        **{lib: _dist_version(lib) for lib in _LIBRARIES},
        "plugins": sorted(set(plugin_sources)),
    }


def git_sha() -> str | None:
    """The commit of the harness source tree, when it is a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


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
