"""Fixture run directories for report tests (hand-written results.json files)."""
from __future__ import annotations

import json
from pathlib import Path


def write_run(root: Path, name: str, method: str, dataset: str, metrics: dict, posts=(), backbone=None,
              images: int = 10, created: str = "2026-01-01T00:00:00+00:00") -> Path:
    run_dir = root / name
    run_dir.mkdir(parents=True)
    results = {
        "schema_version": 1,
        "run": name,
        "created": created,
        "config": {
            "method": {"name": method, "version": "1", "config": {}},
            "backbone": {"name": backbone, "config": {}} if backbone else None,
            "posts": [{"name": p, "version": "1", "config": {}} for p in posts],
            "dataset": {"name": dataset, "version": "1", "config": {}},
        },
        "protocol": {"name": "harness-saliency-corloc", "version": "1.0"},
        "weights_digest": "ab" * 32 if backbone else None,
        "counts": {"images": images},
        "metrics": metrics,
    }
    (run_dir / "results.json").write_text(json.dumps(results))
    return run_dir


def paper_like_runs(root: Path) -> None:
    """Two methods, one with a post-processor; ECSSD and DUTS-TE saliency, VOC12 CorLoc."""
    sal = lambda a, i, f: {"acc": a, "iou": i, "max_fbeta": f, "mae": 0.1}  # noqa: E731
    write_run(root, "r1", "tokencut", "ecssd", sal(0.918, 0.712, 0.803), backbone="dino-vits16")
    write_run(root, "r2", "tokencut", "ecssd", sal(0.934, 0.772, 0.874), posts=["bs"], backbone="dino-vits16")
    write_run(root, "r3", "tokencut", "duts_te", sal(0.903, 0.576, 0.672), backbone="dino-vits16")
    write_run(root, "r4", "center-prior", "ecssd", sal(0.701, 0.301, 0.410))
    write_run(root, "r5", "tokencut", "voc12", {"corloc": 72.1}, backbone="dino-vits16")
    write_run(root, "r6", "center-prior", "voc12", {"corloc": 40.25})
    # an older run of the same cell is superseded by the newer r1
    write_run(root, "r0", "tokencut", "ecssd", sal(0.5, 0.5, 0.5), backbone="dino-vits16",
              created="2025-01-01T00:00:00+00:00")
