"""TokenCut's eigen step against the dense generalised solver, and end-to-end throughput.

Prints, from one process:

1. for N = 784, 1600 and 3600 patches (28x28, 40x40, 60x60 grids), the time of the dense
   ``scipy.linalg.eigh(D - W, D, subset_by_index=[1, 1])`` against the harness's solver
   (symmetric normalised form, ARPACK) on the same TokenCut graph, their ratio (> 1: the
   harness is faster), and whether the two bipartitions are identical. Graphs come from
   random clustered features and, when ECSSD is there, from EfficientNet-Lite0 features of
   ECSSD photos resized to 16 x side pixels;
2. images per second of the whole TokenCut method on the CPU (feature extraction + graph +
   eigen step + component, no cache) for ``dino-vits16`` at 224 px (random weights in the
   official layout: speed does not depend on the values) and for ``effnet-lite0`` at 224 px.

Timings take the median of ``--repeats`` rounds (the dense solver once per round), because
the machine may be shared.

    python benchmarks/bench_tokencut.py --repeats 3
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

SIDES = (28, 40, 60)
DEFAULT_ECSSD = Path(__file__).resolve().parents[2] / "shared" / "data" / "ECSSD"


def clustered_features(n: int, seed: int, clusters: int = 5, dim: int = 384) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    labels = rng.integers(0, clusters, n)
    return (centres[labels] * rng.uniform(0.5, 1.5, (n, 1)) + 1.5 * rng.normal(size=(n, dim))).astype(np.float32)


def real_features(root: Path, side: int, index: int) -> np.ndarray | None:
    import torch
    from PIL import Image

    from harness.backbones.effnet import EffNetLite0

    images = sorted((root / "images").glob("*.jpg"))
    if not images:
        return None
    backbone = EffNetLite0()
    backbone.load("cpu")
    image = Image.open(images[index % len(images)]).convert("RGB").resize((side * 16, side * 16), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(image, np.float32) / 255).permute(2, 0, 1)[None]
    return backbone.features(x)[0].reshape(112, -1).T.numpy()


def partition(x: np.ndarray) -> np.ndarray:
    seed = int(np.argmax(np.abs(x)))
    side = x > x.mean()
    return side if side[seed] else ~side


def eigen_step(features: np.ndarray, repeats: int) -> tuple[float, float, bool, float]:
    """(dense seconds, harness seconds, identical partitions, fraction of agreeing patches)."""
    from harness.methods._spectral import fiedler_vector
    from harness.methods.tokencut import tokencut_affinity

    W = tokencut_affinity(features)
    dense_t, ours_t = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        _, x_dense = fiedler_vector(W, method="dense")
        t1 = time.perf_counter()
        _, x_ours = fiedler_vector(W, method="sparse")
        t2 = time.perf_counter()
        dense_t.append(t1 - t0)
        ours_t.append(t2 - t1)
    a, b = partition(x_dense), partition(x_ours)
    return statistics.median(dense_t), statistics.median(ours_t), bool(np.array_equal(a, b)), float(np.mean(a == b))


def throughput(backbone_name: str, weights: str | None, count: int, repeats: int) -> float:
    """Images per second of TokenCut (saliency input) on 224x224 images, no cache."""
    from harness.api import RunContext
    from harness.datasets.synthetic import SyntheticDataset
    from harness.methods.tokencut import TokenCut
    from harness.registry import get_registry

    backbone = get_registry().create("backbone", backbone_name, weights=weights)
    method = TokenCut()
    method.setup(RunContext(device="cpu", backbone=backbone, cache_dir=None))
    samples = [s.without_labels() for s in SyntheticDataset(count=count, height=224, width=224)]
    method.predict(samples[0])  # warm-up: loads the network
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for sample in samples:
            method.predict(sample)
        rates.append(count / (time.perf_counter() - t0))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=8, help="images per throughput round")
    parser.add_argument("--ecssd", type=Path, default=DEFAULT_ECSSD)
    args = parser.parse_args()

    import os

    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(f"torch threads: {torch.get_num_threads()}, repeats: {args.repeats}\n")
    print("1. eigen step: dense scipy.linalg.eigh(D - W, D) vs the harness (sym. normalised, ARPACK)")
    print(f"{'features':<10} {'N':>5} {'dense s':>9} {'ours s':>8} {'ratio':>7}  identical  agreement")
    for side in SIDES:
        n = side * side
        sources = [("random", clustered_features(n, seed=n))]
        if args.ecssd.is_dir():
            real = real_features(args.ecssd, side, n % 7)
            if real is not None:
                sources.append(("ECSSD", real))
        for label, features in sources:
            dense, ours, same, agree = eigen_step(features, args.repeats)
            print(f"{label:<10} {n:>5} {dense:>9.3f} {ours:>8.3f} {dense / ours:>6.1f}x  {str(same):>9}  {agree:>9.4f}")

    print("\n2. TokenCut end to end on the CPU, 224x224 images (features + graph + eigen step + component)")
    from harness.backbones.vit import random_official_state

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["HARNESS_CACHE"] = tmp  # digests of the temporary weights stay out of the user's cache
        weights = Path(tmp) / "dino_deitsmall16_pretrain.pth"
        torch.save(random_official_state(384, 12, 16), weights)
        for name, file in (("dino-vits16", str(weights)), ("effnet-lite0", None)):
            rate = throughput(name, file, args.images, args.repeats)
            print(f"{name:<14} {rate:6.2f} images/s")


if __name__ == "__main__":
    main()
