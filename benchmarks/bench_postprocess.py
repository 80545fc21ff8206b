"""Speed of the post-processors: the guided filter against OpenCV's ximgproc, and the bilateral solver.

Prints, from one process on the same images:
- the ``gf`` plugin's CPU path (``GuidedFilter()(image, mask)``: uint8 image in, float32 mask
  out; a numba kernel) per image against ``cv2.ximgproc.guidedFilter`` on a ready float32 grey
  guide (ratio A) and from the uint8 image with the guide's cv2 conversion counted (ratio B), at
  1 thread (a pipelined runner's worker processes), on a binary and a soft uint8 mask / 255
  (what the runner passes) and a float mask; then the same in a runner-like loop over 60 ECSSD
  images at their own sizes with a PNG encode between the (timed) filter calls; and the first
  call's time in the process (numba import and the kernel's load from its disk cache),
- GF time per 400x300 image, ours (torch) against ``cv2.ximgproc.guidedFilter`` (ratio),
- GF throughput for a batch of 8 images (per image) against 8 OpenCV calls,
- the same on CUDA when a GPU is there,
- the bilateral solver's time per image (grid + solve, the plugin call, and the plugin under
  ``preset=segtricks``: sigmas 24/4/4 make a finer colour grid).

Timings interleave the contenders and report medians over ``--repeats`` rounds, because the
machine may be shared. Uses ECSSD images when ``--data-root`` (or ../shared/data/ECSSD) exists,
random images otherwise.

    python benchmarks/bench_postprocess.py --repeats 30
    python benchmarks/bench_postprocess.py --gf-only --repeats 1000 --loops 10
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np

HEIGHT, WIDTH, BATCH = 300, 400, 8
DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "ECSSD"


def load_images(root: Path | None, count: int, seed: int = 0, native: bool = False):
    """``count`` RGB uint8 images at 300x400 (or at their own size: ``native``) and soft masks
    (blurred ground truth)."""
    import cv2

    from harness.imageio import list_images, read_image, read_mask

    if root is not None and (root / "images").is_dir():
        images = list_images(root / "images")
        masks = list_images(root / "ground_truth_mask")
        stems = [s for s in sorted(images) if s in masks][:count]
        out = []
        for stem in stems:
            image, gt = read_image(images[stem]), read_mask(masks[stem]).astype(np.float32) / 255
            if not native:
                image = cv2.resize(image, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)
                gt = cv2.resize(gt, (WIDTH, HEIGHT))
            out.append((image, np.clip(cv2.GaussianBlur(gt, (0, 0), 6), 0, 1)))
        return out, f"ECSSD ({root})"
    rng = np.random.default_rng(seed)
    out = [(rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8), rng.random((HEIGHT, WIDTH), dtype=np.float32))
           for _ in range(count)]
    return out, "random images (ECSSD not found)"


def interleaved(contenders: dict, repeats: int) -> dict[str, float]:
    """Median seconds per call of each contender, calling them in turn every round."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for fn in contenders.values():  # warm-up
        fn()
    for _ in range(repeats):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--gf-only", action="store_true", help="only the first section (the 'gf' plugin's CPU path)")
    parser.add_argument("--loops", type=int, default=5, help="loops over the 60 images of the runner-like timing")
    parser.add_argument("--bs-images", type=int, default=8, help="images for the bilateral solver timing")
    parser.add_argument("--threads", type=int, help="CPU threads for both torch and OpenCV (default: theirs)")
    args = parser.parse_args()

    import cv2
    import kornia
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)

    from harness.methods.bilateral_solver import BilateralSolver, bilateral_solve
    from harness.methods.guided_filter import guided_filter, image_guide

    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        sha = "?"
    pairs, source = load_images(args.data_root, BATCH)
    print(f"git {sha}; {source}; {len(pairs)} images at {WIDTH}x{HEIGHT}; repeats {args.repeats}; "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), OpenCV {cv2.__version__} "
          f"({cv2.getNumThreads()} threads)")
    radius, eps = 9, 1e-3
    guides = [image_guide(image) for image, _ in pairs]
    masks = [mask for _, mask in pairs]
    g1, m1 = guides[0], masks[0]
    tg1, tm1 = torch.from_numpy(g1)[None, None], torch.from_numpy(m1)[None, None]
    tg8 = torch.from_numpy(np.stack(guides))[:, None]
    tm8 = torch.from_numpy(np.stack(masks))[:, None]

    from harness.cache import quantize_mask
    from harness.methods.guided_filter import GuidedFilter

    plugin_gf = GuidedFilter(radius=radius, eps=eps)
    image1 = pairs[0][0]
    to_grey = np.full((1, 3), 1 / 765)  # ximgproc's float32 guide from the uint8 image, in cv2

    def ximgproc_from_uint8(image, mask):
        return cv2.ximgproc.guidedFilter(cv2.transform(image.astype(np.float32), to_grey), mask, radius, eps)

    # what the runner passes: a method's uint8 mask / 255 (binary for thresholding methods, any
    # k / 255 for soft ones), and a float mask (e.g. after another post-processor)
    kinds = {
        "binary k/255": quantize_mask(m1 > 0.5).astype(np.float32) / 255.0,
        "soft k/255": quantize_mask(m1).astype(np.float32) / 255.0,
        "float": m1,
    }
    default_threads = (torch.get_num_threads(), cv2.getNumThreads())
    torch.set_num_threads(1)  # a pipelined runner's worker processes
    cv2.setNumThreads(1)
    start = time.perf_counter()
    plugin_gf(image1, kinds["float"])
    print(f"\n'gf' first call in this process (numba import + kernel load or compile): "
          f"{(time.perf_counter() - start) * 1e3:.0f} ms")
    print("\n'gf' plugin CPU path (uint8 image -> float32 mask) vs cv2.ximgproc.guidedFilter, 1 thread, one 400x300"
          "\n  image; ratio A: plugin / ximgproc on a ready float32 guide; ratio B: plugin / ximgproc with the"
          "\n  guide's conversion from the uint8 image (astype + cv2.transform) counted (goal: A <= 1):")
    for kind, mask in kinds.items():
        t = interleaved({
            "opencv": lambda: cv2.ximgproc.guidedFilter(g1, mask, radius, eps),
            "opencv+guide": lambda: ximgproc_from_uint8(image1, mask),
            "plugin": lambda: plugin_gf(image1, mask),
        }, max(args.repeats, 300))
        print(f"  {kind:12s}: plugin {t['plugin'] * 1e3:6.3f} ms, ximgproc {t['opencv'] * 1e3:6.3f} ms "
              f"(+guide {t['opencv+guide'] * 1e3:6.3f} ms)   ratio A {t['plugin'] / t['opencv']:.2f}, "
              f"B {t['plugin'] / t['opencv+guide']:.2f}")

    # runner-like: a different image every call, at its own size, with other memory traffic
    # (the output's PNG encode, as the mask cache does) between the timed filter calls
    runner_pairs, runner_source = load_images(args.data_root, 60, native=True)
    print(f"\nrunner-like loop, 1 thread: {len(runner_pairs)} {runner_source.split(' (')[0]} images at their own size, "
          f"a PNG encode of each output between calls, {args.loops} loops; median per call (ratio A, B):")
    for kind in ("binary k/255", "soft k/255"):
        times: dict[str, list[float]] = {"opencv": [], "opencv+guide": [], "plugin": []}
        runs = {
            "opencv": lambda image, guide, mask: cv2.ximgproc.guidedFilter(guide, mask, radius, eps),
            "opencv+guide": lambda image, guide, mask: ximgproc_from_uint8(image, mask),
            "plugin": lambda image, guide, mask: plugin_gf(image, mask),
        }
        inputs = []
        for image, soft in runner_pairs:
            mask = quantize_mask(soft > 0.5 if kind.startswith("binary") else soft).astype(np.float32) / 255.0
            inputs.append((image, image_guide(image), mask))
        for loop in range(args.loops + 1):
            for i, (image, guide, mask) in enumerate(inputs):
                order = list(runs.items())
                order = order[i % 3:] + order[: i % 3]  # rotate who goes first
                for name, fn in order:
                    start = time.perf_counter()
                    out = fn(image, guide, mask)
                    elapsed = time.perf_counter() - start
                    cv2.imencode(".png", quantize_mask(np.clip(out, 0, 1)))
                    if loop:  # the first loop warms up
                        times[name].append(elapsed)
        med = {name: statistics.median(values) for name, values in times.items()}
        print(f"  {kind:12s}: plugin {med['plugin'] * 1e3:6.3f} ms, ximgproc {med['opencv'] * 1e3:6.3f} ms "
              f"(+guide {med['opencv+guide'] * 1e3:6.3f} ms)   ratio A {med['plugin'] / med['opencv']:.2f}, "
              f"B {med['plugin'] / med['opencv+guide']:.2f}   (sums: A {sum(times['plugin']) / sum(times['opencv']):.2f})")
    torch.set_num_threads(default_threads[0])
    cv2.setNumThreads(default_threads[1])
    if args.gf_only:
        return

    with torch.no_grad():
        single = interleaved({
            "opencv": lambda: cv2.ximgproc.guidedFilter(g1, m1, radius, eps),
            "ours": lambda: guided_filter(tg1, tm1, radius, eps),
        }, args.repeats)
        single.update(interleaved({  # slow: a few rounds only
            "kornia": lambda: kornia.filters.guided_blur(tg1, tm1, 2 * radius + 1, eps),
        }, 3))
        batch = interleaved({
            "opencv x8": lambda: [cv2.ximgproc.guidedFilter(g, m, radius, eps) for g, m in zip(guides, masks)],
            "ours B=8": lambda: guided_filter(tg8, tm8, radius, eps),
        }, max(args.repeats // 3, 5))

    ms = 1e3
    print("\nguided filter, one 400x300 image (CPU):")
    print(f"  OpenCV ximgproc      {single['opencv'] * ms:7.2f} ms")
    print(f"  ours (torch)         {single['ours'] * ms:7.2f} ms   ratio ours/OpenCV = {single['ours'] / single['opencv']:.2f}"
          f"   (goal <= 2)")
    print(f"  kornia guided_blur   {single['kornia'] * ms:7.2f} ms   (reflect borders; reference only)")
    per_cv, per_ours = batch["opencv x8"] / BATCH, batch["ours B=8"] / BATCH
    print(f"\nguided filter, batch of {BATCH} (CPU), per image:")
    print(f"  OpenCV, 8 calls      {per_cv * ms:7.2f} ms")
    print(f"  ours, one B=8 call   {per_ours * ms:7.2f} ms   ratio ours/OpenCV = {per_ours / per_cv:.2f}   (goal < 1)")

    if torch.cuda.is_available():
        def on_gpu(b):
            def run():
                guided_filter(tg8[:b].cuda(non_blocking=True), tm8[:b].cuda(non_blocking=True), radius, eps)
                torch.cuda.synchronize()
            return run
        dg8, dm8 = tg8.cuda(), tm8.cuda()

        def resident():
            guided_filter(dg8, dm8, radius, eps)
            torch.cuda.synchronize()

        with torch.no_grad():
            gpu = interleaved({"B=1 + copy": on_gpu(1), "B=8 + copy": on_gpu(BATCH), "B=8 on GPU": resident},
                              args.repeats)
        print(f"\nguided filter on {torch.cuda.get_device_name()}, per image:")
        print(f"  B=1, with host copies  {gpu['B=1 + copy'] * ms:7.3f} ms   ratio to OpenCV = {gpu['B=1 + copy'] / single['opencv']:.3f}")
        print(f"  B=8, with host copies  {gpu['B=8 + copy'] / BATCH * ms:7.3f} ms   ratio to OpenCV = {gpu['B=8 + copy'] / BATCH / per_cv:.3f}")
        print(f"  B=8, tensors on GPU    {gpu['B=8 on GPU'] / BATCH * ms:7.3f} ms   ratio to OpenCV = {gpu['B=8 on GPU'] / BATCH / per_cv:.3f}")
    else:
        print("\n(no CUDA device: GPU batching not measured)")

    plugin, segtricks = BilateralSolver(), BilateralSolver(preset="segtricks")
    bs_pairs = (pairs * ((args.bs_images + len(pairs) - 1) // len(pairs)))[: args.bs_images]
    bs_rounds = max(args.repeats // 10, 3)
    solve_times, plugin_times, segtricks_times = [], [], []
    for _ in range(bs_rounds):
        for image, mask in bs_pairs:
            start = time.perf_counter()
            bilateral_solve(image, mask)
            solve_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            plugin(image, mask)
            plugin_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            segtricks(image, mask)
            segtricks_times.append(time.perf_counter() - start)
    print(f"\nbilateral solver (CPU, scipy), one 400x300 image, median of {len(solve_times)}:")
    print(f"  bilateral_solve      {statistics.median(solve_times) * ms:7.1f} ms")
    print(f"  'bs' plugin call     {statistics.median(plugin_times) * ms:7.1f} ms   "
          f"({statistics.median(plugin_times) / single['opencv']:.0f}x the OpenCV guided filter)")
    print(f"  'bs' preset=segtricks {statistics.median(segtricks_times) * ms:6.1f} ms")


if __name__ == "__main__":
    main()
