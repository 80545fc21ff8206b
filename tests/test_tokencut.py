"""TokenCut's eigen step against the dense generalised solver, closed-form graphs, and
LOST / Deep Spectral Methods on hand-built features."""
from __future__ import annotations

import numpy as np
import pytest

from harness.patch_methods import Geometry, component_box, geometry_for, seed_component
from harness.methods._spectral import fiedler_vector
from harness.methods.deep_spectral import knn_color_affinity, largest_component, spectral_foreground
from harness.methods.lost import lost_seed_expansion
from harness.methods.tokencut import ncut_bipartition, tokencut_affinity
from harness.runner import RunSpec, run

SIDES = {784: 28, 1600: 40, 3600: 60}


def clustered_features(n: int, seed: int, clusters: int = 5, dim: int = 384) -> np.ndarray:
    """Random features with cluster structure: random centres, random sizes, noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    labels = rng.integers(0, clusters, n)
    return (centres[labels] * rng.uniform(0.5, 1.5, (n, 1)) + 1.5 * rng.normal(size=(n, dim))).astype(np.float32)


def assert_same_partition(features: np.ndarray, side: int) -> None:
    sparse = ncut_bipartition(features, (side, side), solver="sparse")
    dense = ncut_bipartition(features, (side, side), solver="dense")
    np.testing.assert_array_equal(sparse[0], dense[0])
    # the seed is an argmax over near-ties inside one cluster: it must be a maximiser of |x|
    # up to round-off, not necessarily the same index
    top = np.abs(dense[1]).max()
    assert np.abs(dense[1]).flat[sparse[2]] >= top * (1 - 1e-6)
    # the eigenvectors agree too (both D-normalised and signed by the seed)
    np.testing.assert_allclose(sparse[1], dense[1], atol=1e-6 * np.abs(dense[1]).max())


@pytest.mark.parametrize("n", [784, 1600, 3600])
def test_sparse_solver_gives_the_dense_partition_on_random_features(n):
    assert_same_partition(clustered_features(n, seed=n), SIDES[n])


@pytest.fixture(scope="module")
def effnet():
    from harness.backbones.effnet import EffNetLite0

    backbone = EffNetLite0()
    backbone.load("cpu")
    return backbone


@pytest.mark.parametrize("n", [784, 1600, 3600])
def test_sparse_solver_gives_the_dense_partition_on_real_image_features(n, ecssd_root, effnet):
    """Stride-16 EfficientNet-Lite0 features of an ECSSD photo at 448, 640 and 960 px."""
    import torch
    from PIL import Image

    image_path = sorted((ecssd_root / "images").glob("*.jpg"))[n % 7]
    side = SIDES[n]
    image = Image.open(image_path).convert("RGB").resize((side * 16, side * 16), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(image, np.float32) / 255).permute(2, 0, 1)[None]
    grid = effnet.features(x)[0].numpy()
    assert grid.shape == (112, side, side)
    assert_same_partition(grid.reshape(112, -1).T, side)


def test_fiedler_vector_of_two_cliques_matches_the_closed_form():
    """Cliques of a and b nodes (weight 1 inside, eps across). With x = alpha on A, beta on B:
    d_A = a + b eps, d_B = b + a eps, beta = -a d_A alpha / (b d_B) (x is D-orthogonal to 1),
    lambda = eps (a d_A + b d_B) / (d_A d_B)."""
    a, b, eps = 30, 70, 1e-3
    member = np.r_[np.ones(a, bool), np.zeros(b, bool)]
    W = np.where(member[:, None] == member[None, :], 1.0, eps)
    d_a, d_b = a + b * eps, b + a * eps
    for method in ("sparse", "dense"):
        lam, x = fiedler_vector(W, method=method)
        assert lam == pytest.approx(eps * (a * d_a + b * d_b) / (d_a * d_b), rel=1e-8)
        x = x * np.sign(x[0])
        alpha, beta = x[0], x[-1]
        np.testing.assert_allclose(x, np.where(member, alpha, beta), rtol=1e-7)
        assert beta / alpha == pytest.approx(-a * d_a / (b * d_b), rel=1e-8)
        assert x @ (W.sum(1) * x) == pytest.approx(1.0)  # x^T D x = 1


def test_tiny_graph_uses_the_exact_path():
    """Two 2-cliques joined by eps: x = (1, 1, -1, -1) / sqrt(4 (2 + 2 eps)), lambda = 2 eps / (1 + eps)."""
    eps = 0.01
    W = np.array([[1, 1, eps, eps], [1, 1, eps, eps], [eps, eps, 1, 1], [eps, eps, 1, 1]])
    lam, x = fiedler_vector(W)
    assert lam == pytest.approx(2 * eps / (1 + eps))
    np.testing.assert_allclose(np.abs(x), np.full(4, 1 / np.sqrt(4 * (2 + 2 * eps))))
    assert x[0] == pytest.approx(x[1]) and x[0] == pytest.approx(-x[2])


def test_two_cluster_features_split_into_the_two_clusters():
    """A 6x8-patch object (cluster A) on a 20x20 background (cluster B): TokenCut's foreground
    is exactly the object (the smaller side carries the largest |x|), one component, its box."""
    rng = np.random.default_rng(1)
    grid = np.zeros((20, 20), bool)
    grid[5:11, 8:16] = True
    a, b = rng.normal(size=64), rng.normal(size=64)
    feats = np.where(grid.reshape(-1, 1), a, b) + 0.3 * rng.normal(size=(400, 64))
    W = tokencut_affinity(feats)
    assert set(np.unique(W)) == {1e-5, 1.0}
    bipartition, eigenvector, seed = ncut_bipartition(feats, (20, 20))
    np.testing.assert_array_equal(bipartition, grid)
    assert grid.flat[seed]
    component = seed_component(bipartition, seed)
    assert component_box(component) == (8, 5, 16, 11)


def test_deterministic():
    feats = clustered_features(1600, seed=3)
    first = ncut_bipartition(feats, (40, 40))
    second = ncut_bipartition(feats, (40, 40))
    np.testing.assert_array_equal(first[1], second[1])


def test_seed_component_is_four_connected():
    mask = np.array([[1, 0, 0], [0, 1, 1], [0, 1, 0]], bool)
    np.testing.assert_array_equal(seed_component(mask, 4), [[0, 0, 0], [0, 1, 1], [0, 1, 0]])
    # a seed outside the mask keeps the seed patch alone
    np.testing.assert_array_equal(seed_component(mask, 2), [[0, 0, 1], [0, 0, 0], [0, 0, 0]])


# ---- geometry: what each input preparation gives and how masks and boxes map back -----------

def test_input_geometries_follow_the_papers():
    # TokenCut saliency: nearest multiple (round), LOST / TokenCut detection: pad up, DSM: crop down
    assert geometry_for((300, 400), 16, "resize").input_size == (304, 400)
    assert geometry_for((300, 410), 16, "resize").input_size == (304, 416)
    assert geometry_for((300, 400), 16, "pad").input_size == (304, 400)
    assert geometry_for((300, 400), 16, "crop").input_size == (288, 400)
    pad = Geometry("pad", (20, 30), (32, 32), 16)
    mask = pad.mask_to_image(np.array([[1, 0], [0, 0]]))
    assert mask.shape == (20, 30) and mask[:16, :16].all() and mask.sum() == 16 * 16
    assert pad.box_to_image((1, 0, 2, 2)) == (16.0, 0.0, 30.0, 20.0)  # clipped to the image
    resize = Geometry("resize", (30, 60), (32, 64), 16)
    assert resize.box_to_image((0, 0, 2, 1)) == (0.0, 0.0, 30.0, 15.0)
    crop = Geometry("crop", (40, 40), (32, 32), 16)
    full = crop.mask_to_image(np.array([[0, 1], [0, 1]]))
    assert full[:, 16:].all() and not full[:, :16].any()  # the cropped remainder takes the last cell


# ---- LOST -------------------------------------------------------------------------------------

def test_lost_on_hand_built_features():
    """Background patches (0, 1), object patches (1, -0.2): object-background similarity is
    -0.2 < 0. A 2x2 object at the top left and one object patch at the bottom right: object
    patches have degree 4 (other object patches), background ones 10, so the seed is patch 0;
    the expansion keeps the 5 object patches, M > 0 exactly on them, and the seed's component
    is the 2x2 block."""
    grid = np.zeros((4, 4), bool)
    grid[0:2, 0:2] = True
    grid[3, 3] = True
    feats = np.where(grid.reshape(-1, 1), [1.0, -0.2], [0.0, 1.0])
    M, seed, similars = lost_seed_expansion(feats, k_patches=100)
    assert seed == 0
    assert sorted(similars.tolist()) == [0, 1, 4, 5, 15]
    np.testing.assert_array_equal((M > 0).reshape(4, 4), grid)
    component = seed_component((M > 0).reshape(4, 4), seed)
    assert component_box(component) == (0, 0, 2, 2)
    # with k = 1 only the seed expands: M is the seed's own row, same sign pattern here
    M1, _, similars1 = lost_seed_expansion(feats, k_patches=1)
    assert similars1.tolist() == [0] and np.array_equal(M1 > 0, M > 0)


def test_lost_orders_tied_degrees_as_torch_argsort_on_the_cpu():
    """17 orthonormal patch features: every degree is 0 (all tied). LOST's code takes the first
    index of torch.argsort(-degree, descending=True), which on the CPU is patch 8, not patch 0;
    the expansion then keeps the seed alone. ties=stable gives patch 0."""
    import torch

    from harness.methods.lost import degree_order

    feats = np.eye(17)
    M, seed, similars = lost_seed_expansion(feats)
    expected = int(torch.argsort(torch.zeros(17), descending=True)[0])
    assert seed == expected == 8 and similars.tolist() == [8]
    np.testing.assert_array_equal(np.flatnonzero(M > 0), [8])
    _, stable_seed, _ = lost_seed_expansion(feats, ties="stable")
    assert stable_seed == 0
    rng = np.random.default_rng(0)
    for n in (50, 333, 1200):
        degree = rng.integers(0, 20, n)
        order = degree_order(degree)
        np.testing.assert_array_equal(order, torch.argsort(torch.from_numpy(-degree.astype(np.float32)),
                                                            descending=True).numpy())
        assert np.all(np.diff(degree[order]) >= 0)
        stable = degree_order(degree, "stable")
        assert np.all(np.diff(degree[stable]) >= 0) and not np.array_equal(order, stable)
    with pytest.raises(ValueError, match="ties"):
        degree_order(np.zeros(3), "random")


# ---- Deep Spectral Methods ---------------------------------------------------------------------

def test_deep_spectral_takes_the_smaller_side_of_the_fiedler_vector():
    """Unit features of two groups with cosine 0.05 across: W is the two-clique graph with
    eps = 0.05, whose Fiedler vector is constant on each group (closed form above); the mask
    is the smaller group whatever sign the solver returns, and the box is its largest
    8-connected component."""
    grid = np.zeros((10, 10), bool)
    grid[2:5, 1:4] = True  # 9 patches
    grid[8, 8] = True      # 1 more patch of the object cluster, apart
    e1, e2 = np.eye(8)[0], np.eye(8)[1]
    other = 0.05 * e1 + np.sqrt(1 - 0.05**2) * e2  # cos(e1, other) = 0.05
    feats = np.where(grid.reshape(-1, 1), e1, other)
    mask, x = spectral_foreground(feats, (10, 10))
    np.testing.assert_array_equal(mask, grid)
    assert np.ptp(x[grid]) < 1e-9 and np.ptp(x[~grid]) < 1e-9
    assert component_box(largest_component(mask)) == (1, 2, 4, 5)


def test_knn_colour_affinity_counts_links():
    rng = np.random.default_rng(0)
    image = rng.uniform(size=(6, 7, 3))
    W = knn_color_affinity(image)
    n = 42
    assert W.shape == (n, n) and np.array_equal(W, W.T)
    assert W.sum() == 2 * n * (20 + 10)  # every KNN link added in both directions
    np.testing.assert_array_equal(np.diag(W), 4)  # each pixel is its own neighbour at both levels


# ---- the methods end to end ------------------------------------------------------------------------

@pytest.mark.parametrize("method,args", [("tokencut", {}), ("tokencut", {"mode": "detection"}),
                                         ("lost", {}), ("deep-spectral", {}), ("deep-spectral", {"knn_lambda": "10"})])
def test_methods_run_on_synthetic_with_effnet(tmp_path, method, args):
    spec = RunSpec(method=method, method_args=args, dataset="synthetic",
                   dataset_args={"count": 3, "height": 96, "width": 128}, backbone="effnet-lite0",
                   out=tmp_path / "runs", progress=False)
    result = run(spec)
    metrics = result.metrics
    assert 0 <= metrics["iou"] <= 1 and 0 <= metrics["corloc"] <= 100
    again = run(spec)
    assert again.metrics == metrics and again.results["counts"]["n_cached"] == 3


def test_tokencut_box_is_the_seed_component_box(tmp_path):
    """In detection mode on stride-multiple images, the box given to CorLoc is exactly the
    bounding box of the predicted (binary) mask: the seed's component."""
    from harness.api import RunContext
    from harness.datasets.synthetic import SyntheticDataset
    from harness.methods.tokencut import TokenCut
    from harness.registry import get_registry

    backbone = get_registry().create("backbone", "effnet-lite0")
    method = TokenCut(mode="detection")
    method.setup(RunContext(backbone=backbone, cache_dir=tmp_path))
    dataset = SyntheticDataset(count=3, height=96, width=128)
    for sample in dataset:
        prediction = method.predict(sample.without_labels())
        assert set(np.unique(prediction.mask)) <= {0.0, 1.0}
        ys, xs = np.nonzero(prediction.mask)
        assert prediction.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


# ---- TokenCut's mode follows the run's evaluators (mode=auto) -------------------------------------

@pytest.mark.parametrize("evaluators,expected", [(["corloc"], "detection"), (["saliency"], "saliency"),
                                                 (["saliency", "corloc"], "saliency"), (None, "saliency")])
def test_tokencut_auto_mode_is_resolved_from_the_evaluators(tmp_path, evaluators, expected):
    from harness.runner import Runner

    spec = RunSpec(method="tokencut", dataset="synthetic", evaluators=evaluators, backbone="effnet-lite0",
                   out=tmp_path / "runs", progress=False)
    runner = Runner(spec)
    assert runner.config()["method"]["config"]["mode"] == expected
    assert runner.method.input_mode() == {"detection": "pad", "saliency": "resize"}[expected]
    explicit = Runner(RunSpec(**{**spec.__dict__, "method_args": {"mode": "saliency"}}))
    assert explicit.config()["method"]["config"]["mode"] == "saliency"  # what the user says is kept


def test_tokencut_scored_with_corloc_runs_in_detection_mode(tmp_path):
    """mode=auto under CorLoc records mode=detection in results.json and has the identity of an
    explicit mode=detection run (served from its cache); under saliency it is another identity."""
    common = dict(dataset="synthetic", dataset_args={"count": 2, "height": 72, "width": 100},
                  backbone="effnet-lite0", out=tmp_path / "runs", progress=False, cache_dir=tmp_path / "cache")
    auto = run(RunSpec(method="tokencut", evaluators=["corloc"], **common))
    assert auto.results["config"]["method"]["config"]["mode"] == "detection"
    assert auto.results["spec"]["method_args"] == {}
    features = set((tmp_path / "cache" / "features").rglob("*.entry"))
    explicit = run(RunSpec(method="tokencut", method_args={"mode": "detection"}, evaluators=["corloc"], **common))
    assert explicit.results["counts"]["n_cached"] == 2 and explicit.metrics == auto.metrics
    lost = run(RunSpec(method="lost", evaluators=["corloc"], **common))  # the same padded input
    assert lost.results["counts"]["n_computed"] == 2
    assert set((tmp_path / "cache" / "features").rglob("*.entry")) == features
    saliency = run(RunSpec(method="tokencut", evaluators=["saliency"], **common))
    assert saliency.results["config"]["method"]["config"]["mode"] == "saliency"
    assert saliency.results["counts"]["n_computed"] == 2
