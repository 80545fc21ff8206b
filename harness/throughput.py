"""Where a run's time went: seconds busy per stage, how busy each place that runs stages was,
images per second, and the stage that bounds the run (``results.json["throughput"]``).

A stage runs in one place: ``load`` in the loader threads, ``predict_device`` (mask-cache
lookups and the method's batched device stage) in the main process, and ``predict_cpu``,
``post`` and ``evaluate`` in the worker pool (in the main process with ``--workers 0``, where
every stage shares one place). A place's utilisation is its stages' busy seconds over the
run's image-loop seconds (less the method's setup and the backbone's loading, when every
stage waits) times its parallelism; the busiest place bounds the run.
"""
from __future__ import annotations

from typing import Any

#: Stage -> (place, description), in pipeline order.
STAGES = {
    "load": ("loader", "decoding images"),
    "predict_device": ("main", "the method's device stage"),
    "predict_cpu": ("workers", "the method's per-image stage"),
    "post": ("workers", "the post chain"),
    "evaluate": ("workers", "evaluation"),
}


def summarize(busy: dict[str, float], loop_s: float, n_images: int, workers: int, loader_threads: int,
              setup_s: float = 0.0) -> dict[str, Any]:
    """The ``throughput`` record of a run.

    Parameters
    ----------
    busy : dict
        ``<stage>_s`` -> seconds busy (summed over threads or processes).
    loop_s : float
        Wall seconds from the first image loaded to the last one scored.
    n_images : int
    workers : int
        Worker processes (0: the per-image stages ran in the main process).
    loader_threads : int
        Loader threads (0: images were loaded in the main process).
    setup_s : float
        Seconds of ``loop_s`` spent setting the method up and loading the backbone, during
        which every stage waits: left out of the rates and utilisations, which are per image.
    """
    parallelism = {"loader": max(loader_threads, 1), "main": 1, "workers": max(workers, 1)}

    def place_of(stage: str) -> str:
        place = STAGES[stage][0]
        if place == "workers" and workers == 0 or place == "loader" and loader_threads == 0:
            return "main"
        return place

    wall = max(loop_s - setup_s, 1e-9)
    seconds = {**busy, "predict_device_s": max(busy.get("predict_device_s", 0.0) - setup_s, 0.0)}
    stages = {stage: {"busy_s": round(seconds.get(f"{stage}_s", 0.0), 3), "runs_in": place_of(stage)}
              for stage in STAGES}
    places: dict[str, dict[str, Any]] = {}
    for stage, record in stages.items():
        place = places.setdefault(record["runs_in"], {"busy_s": 0.0, "parallelism": parallelism[record["runs_in"]]})
        place["busy_s"] += record["busy_s"]
    for place in places.values():
        place["utilisation"] = round(place["busy_s"] / (wall * place["parallelism"]), 3)
        place["busy_s"] = round(place["busy_s"], 3)
    bound = max(places, key=lambda p: places[p]["utilisation"])
    stage = max((s for s in stages if stages[s]["runs_in"] == bound), key=lambda s: stages[s]["busy_s"])
    return {
        "images": n_images,
        "loop_s": round(loop_s, 3),
        "setup_s": round(setup_s, 3),
        "images_per_s": round(n_images / wall, 3),
        "workers": workers,
        "loader_threads": loader_threads,
        "stages": stages,
        "places": places,
        "bottleneck": {"place": bound, "stage": stage},
    }


def bottleneck_line(throughput: dict[str, Any]) -> str:
    """One line naming the stage that bounds the run, e.g. ``bottleneck: the worker pool (2
    processes, 97% busy), mostly the post chain (1.9 s of 3.1 s); 24.1 images/s``."""
    place = throughput["bottleneck"]["place"]
    stage = throughput["bottleneck"]["stage"]
    record = throughput["places"][place]
    count = record["parallelism"]
    where = {"loader": f"the loader ({count} thread{'s' * (count != 1)}", "main": "the main process (",
             "workers": f"the worker pool ({count} process{'es' * (count != 1)}"}[place]
    where += ", " if not where.endswith("(") else ""
    busy_stage = throughput["stages"][stage]["busy_s"]
    return (f"bottleneck: {where}{100 * record['utilisation']:.0f}% busy), mostly {STAGES[stage][1]} "
            f"({busy_stage:.1f} s of {record['busy_s']:.1f} s busy); {throughput['images_per_s']:.1f} images/s")
