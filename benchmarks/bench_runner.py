"""Throughput of the pipelined runner against the sequential one, and of each stage alone.

Prints, from one process, for TokenCut + gf and TokenCut + bs on the ECSSD sample (every image
of ``--data-root``; a cold cache for every measurement):

1. images per second of ``harness run --workers N`` (default: the runner's, the cores less the
   main process's torch threads) and of
   ``--workers 0`` (one process, one image after another), and their ratio (target: >= 1.6
   on 2 cores);
2. each stage's standalone throughput, run alone with the resources it has in the pipeline:
   ``load`` (the loader threads decoding the images), ``device`` (mask-cache lookups and the
   method's batched device stage in this process: the backbone's features), and ``per-image``
   (the method's per-image stage, the post chain and the evaluators in the worker pool, fed
   with device-stage outputs computed beforehand; the device stage is the faster of two rounds);
   then the pipelined runner's throughput as a share of the slowest stage's (target: >= 80 %).

Rates are over the images, after the method's setup and the backbone's loading (which every
mode pays once per run, and which ``results.json`` records as ``setup_s``). With a GPU
(``--device cuda``), ``--backbone dino-vits16`` uses random weights in DINO's layout (the speed
does not depend on the values) and the GPU's busy time is measured with CUDA events around
every forward.

    python benchmarks/bench_runner.py                       # effnet-lite0 on the CPU
    python benchmarks/bench_runner.py --device cuda --backbone dino-vits16
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

DEFAULT_ECSSD = Path(__file__).resolve().parents[2] / "shared" / "data" / "ECSSD"


def spec_for(post: str, args, tmp: Path, workers: int, tag: str):
    from harness.runner import RunSpec

    return RunSpec(method="tokencut", dataset="ecssd", posts=[post], data_root=str(args.data_root),
                   backbone=args.backbone, weights=args.weights, limit=args.limit, device=args.device,
                   batch_size=args.batch_size, out=tmp / tag / "runs", cache_dir=tmp / tag / "cache",
                   progress=False, workers=workers, threads=args.threads)


def gpu_timer(runner):
    """Wrap the backbone's forward with CUDA events; returns a function giving busy seconds."""
    import torch

    backbone = runner.backbone
    forward = backbone.features
    events = []

    def timed(batch):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = forward(batch)
        end.record()
        events.append((start, end))
        return out

    backbone.features = timed

    def busy() -> float:
        torch.cuda.synchronize()
        return sum(s.elapsed_time(e) for s, e in events) / 1000

    return busy


def full_run(post: str, args, tmp: Path, workers: int, tag: str) -> dict:
    from harness.runner import Runner

    runner = Runner(spec_for(post, args, tmp, workers, tag))
    gpu_busy = gpu_timer(runner) if args.device.startswith("cuda") else None
    result = runner.run()
    throughput = result.results["throughput"]
    if gpu_busy is not None:
        throughput["gpu_busy_s"] = gpu_busy()
    return throughput


def standalone(post: str, args, tmp: Path, workers: int) -> dict[str, float]:
    """Images per second of each stage alone, with the threads or processes it has in the pipeline."""
    from harness.cache import FeatureCache
    from harness.loader import prefetch
    from harness.pipeline import EvaluateStage, ImageStages, ImageWork
    from harness.preflight import check_data
    from harness.runner import Runner
    from harness.workers import WorkerPool

    from harness.runner import default_threads, set_threads

    runner = Runner(spec_for(post, args, tmp, workers, f"alone-{post}"))
    previous = set_threads(args.threads or default_threads())  # the device stage's threads in a run
    ids = runner.dataset.ids()[: args.limit]
    data = check_data(runner.dataset, ids, False)
    runner.data_digest = data.digest
    cache_root = tmp / f"alone-{post}" / "cache"
    cache_root.mkdir(parents=True)
    context = runner.context(args.device, cache_root, args.batch_size, False)
    predict, post_stage = runner._stages(context, cache_root)
    evaluate = EvaluateStage(runner.evaluators)
    rates = {}

    t0 = time.perf_counter()
    samples = list(prefetch(runner._load, ids, min(2, workers), ahead=2 * args.batch_size + 2 * workers))
    rates["load"] = len(ids) / (time.perf_counter() - t0)

    predict.setup()
    runner.backbone.load(args.device)  # the weights' loading is setup, not a stage's work
    best = 0.0
    for round_ in range(2):  # the faster of two rounds (the second from a fresh feature cache too)
        context.features.cache = FeatureCache(cache_root / f"features-{round_}")
        work = []
        t0 = time.perf_counter()
        for start in range(0, len(samples), args.batch_size):
            batch = samples[start : start + args.batch_size]
            looked = predict.lookup(batch)
            for sample, (key, _), staged in zip(batch, looked, predict.device(batch)):
                work.append(ImageWork(sample, key, None, staged))
        best = max(best, len(ids) / (time.perf_counter() - t0))
    rates["device"] = best

    stages = ImageStages(predict, post_stage, evaluate)
    pool = WorkerPool(stages, workers, max_in_flight=4 * workers + args.batch_size) if workers else None
    t0 = time.perf_counter()
    try:
        for _ in (pool.map_ordered(work) if pool else map(stages, work)):
            pass
    finally:
        if pool:
            pool.close()
    rates["per-image"] = len(ids) / (time.perf_counter() - t0)
    set_threads(previous)
    return rates


def main() -> None:
    from harness.workers import available_cores

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, default=DEFAULT_ECSSD)
    parser.add_argument("--limit", type=int, help="only the first N images (default: all)")
    parser.add_argument("--workers", type=int, help="worker processes (default: the runner's)")
    parser.add_argument("--posts", default="gf,bs", help="comma-separated post-processors, one measurement each")
    parser.add_argument("--backbone", default="effnet-lite0")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--threads", type=int, help="torch threads in the main process (default: the runner's)")
    args = parser.parse_args()
    if args.workers is None:
        from harness.runner import resolve_workers

        args.workers = resolve_workers(None, 10**9, threads=args.threads)
    if not (args.data_root / "images").is_dir():
        raise SystemExit(f"no ECSSD images under {args.data_root}; pass --data-root")

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        os.environ["HARNESS_CACHE"] = str(tmp / "default-cache")
        args.weights = None
        if args.backbone == "dino-vits16":
            import torch

            from harness.backbones.vit import random_official_state

            args.weights = str(tmp / "dino_deitsmall16_pretrain.pth")
            torch.save(random_official_state(384, 12, 16), args.weights)
        print(f"TokenCut on {args.data_root} ({args.limit or 'all'} images), {args.backbone} on {args.device}, "
              f"{available_cores()} cores, --workers {args.workers}, --batch-size {args.batch_size}\n")
        full_run(args.posts.split(",")[0], args, tmp, 0, "warm-up")  # page cache, imports, first-call costs
        for post in args.posts.split(","):
            sequential = full_run(post, args, tmp, 0, f"seq-{post}")
            pipelined = full_run(post, args, tmp, args.workers, f"pipe-{post}")
            rates = standalone(post, args, tmp, args.workers)
            slowest = min(rates, key=rates.get)
            speedup = pipelined["images_per_s"] / sequential["images_per_s"]
            share = pipelined["images_per_s"] / rates[slowest]
            print(f"tokencut + {post}: {pipelined['images']} images")
            print(f"  sequential (--workers 0)      {sequential['images_per_s']:7.2f} img/s  (setup {sequential['setup_s']:.1f} s)")
            print(f"  pipelined  (--workers {args.workers})      {pipelined['images_per_s']:7.2f} img/s  "
                  f"(setup {pipelined['setup_s']:.1f} s)   ratio {speedup:.2f}x  (target >= 1.6x)")
            for name, rate in rates.items():
                print(f"  stage alone: {name:<10}     {rate:7.2f} img/s")
            print(f"  pipelined / slowest stage ({slowest}): {100 * share:.0f} %  (target >= 80 %)")
            print(f"  bottleneck recorded by the run: {pipelined['bottleneck']}, places "
                  f"{ {k: v['utilisation'] for k, v in pipelined['places'].items()} }")
            if "gpu_busy_s" in pipelined:
                seconds = pipelined["loop_s"] - pipelined["setup_s"]
                print(f"  GPU busy {pipelined['gpu_busy_s']:.2f} s of {seconds:.2f} s "
                      f"({100 * pipelined['gpu_busy_s'] / seconds:.0f} %); sequential: "
                      f"{100 * sequential['gpu_busy_s'] / (sequential['loop_s'] - sequential['setup_s']):.0f} %")
            print()


if __name__ == "__main__":
    main()
