"""Time and peak memory of one Sempart training step, and the share spent in the backbone.

The reference, measured in the same process, is the frozen backbone's forward pass on the same
batch: the step's time is printed as a multiple of it, and the backbone's share of the step
(one forward for `sempart`, two for `sempart-crop`: the image and the zoomed crop).

    python benchmarks/bench_sempart_step.py [--backbone effnet-lite0 --backbone-args stride=8]
        [--method sempart-crop] [--size 320] [--batch 8] [--repeats 3] [--device cpu|cuda]

Random DINO weights are fine for timing: `--backbone dino-vits8 --random-weights`.
"""
from __future__ import annotations

import argparse
import resource
import statistics
import time


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    import torch

    from harness.options import parse_kv
    from harness.registry import get_registry

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--method", default="sempart-crop", choices=["sempart", "sempart-crop"])
    parser.add_argument("--backbone", default="effnet-lite0")
    parser.add_argument("--backbone-args", default="stride=8")
    parser.add_argument("--random-weights", action="store_true", help="skip loading weights (ViTs without a file)")
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    registry = get_registry()
    method = registry.create("method", args.method, {"image_size": str(args.size)})
    backbone = registry.create("backbone", args.backbone, parse_kv(args.backbone_args, "--backbone-args"))
    if args.random_weights:
        backbone._model = backbone.build().eval().requires_grad_(False).to(args.device)
        backbone.device = args.device
    else:
        backbone.load(args.device)
    model = method.build_model(backbone).to(args.device).train()
    optimizer = method.make_optimizer(model.parameters(), 1e-4)
    weights = method.loss_weights()
    images = torch.rand(args.batch, 3, args.size, args.size, device=args.device)
    amp = args.device.startswith("cuda")

    def backbone_only():  # float32, as the training step runs it (autocast covers the head only)
        with torch.no_grad():
            backbone.features(images)

    def step():
        with torch.autocast("cuda", torch.bfloat16, enabled=amp):
            terms = method.training_losses(model, backbone, {"image": images}, torch.Generator().manual_seed(0))
        total = sum(weights[k] * v.float() for k, v in terms.items())
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()

    def timed(fn) -> float:
        times = []
        for _ in range(args.repeats + 1):  # the first call warms up
            _sync(args.device)
            t0 = time.perf_counter()
            fn()
            _sync(args.device)
            times.append(time.perf_counter() - t0)
        return statistics.median(times[1:])

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if amp:
        torch.cuda.reset_peak_memory_stats()
    t_backbone = timed(backbone_only)
    t_step = timed(step)
    forwards = 2 if args.method == "sempart-crop" else 1
    print(f"{args.method} on {args.backbone} ({args.backbone_args or 'defaults'}), batch {args.batch} x "
          f"{args.size}px, {args.device}, {torch.get_num_threads()} threads, median of {args.repeats}")
    print(f"  backbone forward: {t_backbone * 1000:9.1f} ms   (reference)")
    print(f"  training step:    {t_step * 1000:9.1f} ms   = {t_step / t_backbone:.2f} x the backbone forward")
    print(f"  backbone share of the step: {forwards * t_backbone / t_step:.1%} ({forwards} forward(s))")
    print(f"  per image: {t_step / args.batch * 1000:.1f} ms")
    if amp:
        print(f"  peak GPU memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"  peak process memory: {rss_after / 1024:.0f} MiB (grew {max(0, rss_after - rss_before) / 1024:.0f} MiB "
          f"during the measurements)")


if __name__ == "__main__":
    main()
