"""The fast bilateral solver: the CG answer is the linear system's, it denoises, edge cases work."""
from __future__ import annotations

import numpy as np
import pytest

from harness.errors import HarnessError, PluginError
from harness.imageio import read_image, read_mask
from harness.methods.bilateral_solver import (
    BilateralSolver,
    bilateral_grid,
    bilateral_solve,
    bilateral_system,
    bistochastize,
    imagenet_roundtrip,
)
from harness.registry import Registry


def _iou(pred: np.ndarray, gt: np.ndarray) -> float:
    pred, gt = pred > 0.5, gt > 0.5
    return float((pred & gt).sum() / (pred | gt).sum())


def _step_image(h=48, w=64, seed=0):
    """Dark left half, bright reddish right half, mild pixel noise; and its clean step mask."""
    rng = np.random.default_rng(seed)
    image = np.empty((h, w, 3))
    image[:, : w // 2] = (40, 60, 50)
    image[:, w // 2 :] = (200, 120, 90)
    image = np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)
    step = np.zeros((h, w))
    step[:, w // 2 :] = 1
    return image, step


def test_cg_solution_equals_a_direct_sparse_solve_on_a_real_crop(ecssd_root):
    from scipy.sparse.linalg import spsolve

    image = read_image(ecssd_root / "images" / "0205.jpg")[100:160, 120:200]
    rng = np.random.default_rng(0)
    target = rng.random(image.shape[:2])
    A, b, _, grid = bilateral_system(image, target)
    assert grid.nvertices > 50  # a real system, not one vertex
    assert abs(A - A.T).max() < 1e-12
    direct = (grid.splat.T @ spsolve(A.tocsc(), b)).reshape(image.shape[:2])
    converged = bilateral_solve(image, target, cg_tol=1e-12, cg_maxiter=1000)
    np.testing.assert_allclose(converged, direct, atol=1e-9)
    # TokenCut's budget (25 iterations, tolerance 1e-5) stops close to, not at, the solution
    np.testing.assert_allclose(bilateral_solve(image, target), direct, atol=2e-2)


def test_bistochastisation_gives_an_exact_laplacian_with_near_count_row_sums(ecssd_root):
    image = read_image(ecssd_root / "images" / "0005.jpg")
    grid = bilateral_grid(image)
    n, m = bistochastize(grid)
    counts = grid.splat @ np.ones(grid.npixels)
    np.testing.assert_allclose(n * (grid.blur @ n), m)  # Dn B Dn 1 = m exactly
    np.testing.assert_allclose(m, counts, rtol=1e-3)  # and m is the pixel count per vertex
    assert counts.sum() == image.shape[0] * image.shape[1]


def test_noisy_step_is_cleaned():
    image, step = _step_image()
    rng = np.random.default_rng(1)
    noisy = np.clip(step + rng.normal(0, 0.6, step.shape), 0, 1)
    solved = bilateral_solve(image, noisy)
    assert _iou(noisy, step) < 0.7  # 0.68 here
    assert _iou(solved, step) == 1.0  # the edge follows the image's colour step exactly


def test_noisy_ground_truth_on_a_real_image_gets_closer(ecssd_root):
    image = read_image(ecssd_root / "images" / "0005.jpg")
    gt = read_mask(ecssd_root / "ground_truth_mask" / "0005.png") / 255.0
    noisy = np.clip(gt + np.random.default_rng(0).normal(0, 0.4, gt.shape), 0, 1)
    before, after = _iou(noisy, gt), _iou(bilateral_solve(image, noisy), gt)
    assert before < 0.6 and after > before + 0.15  # 0.57 -> 0.79 measured


def test_constant_target_stays_constant(ecssd_root):
    image = read_image(ecssd_root / "images" / "0405.jpg")
    out = bilateral_solve(image, np.full(image.shape[:2], 0.3))
    np.testing.assert_allclose(out, 0.3, atol=1e-9)


def test_greyscale_is_its_rgb_copy():
    image, step = _step_image()
    grey = image.mean(-1).astype(np.uint8)
    noisy = np.clip(step + np.random.default_rng(2).normal(0, 0.3, step.shape), 0, 1)
    rgb_copy = bilateral_solve(np.repeat(grey[..., None], 3, 2), noisy)
    np.testing.assert_array_equal(bilateral_solve(grey, noisy), rgb_copy)
    np.testing.assert_array_equal(bilateral_solve(grey[..., None], noisy), rgb_copy)


@pytest.mark.parametrize("shape", [(1, 1), (1, 10), (10, 1), (2, 3)])
def test_tiny_uniform_images_average_their_single_vertex(shape):
    """All pixels of a uniform image smaller than one 16-pixel cell share one vertex."""
    image = np.full((*shape, 3), 128, np.uint8)
    target = np.random.default_rng(3).random(shape)
    out = bilateral_solve(image, target)
    assert out.shape == shape
    np.testing.assert_allclose(out, target.mean(), atol=1e-12)


def test_one_pixel_wide_image_smooths_along_its_length():
    image = np.full((200, 1, 3), 90, np.uint8)
    target = (np.arange(200) >= 96).astype(float)[:, None]  # the step on a 16-pixel cell edge
    out = bilateral_solve(image, target)
    assert out.shape == (200, 1) and np.isfinite(out).all()
    assert out[0, 0] < out[95, 0] < out[96, 0] < out[199, 0]  # monotone, and smoothed
    assert 0 < out.min() and out.max() < 1
    assert out[80, 0] == out[95, 0]  # one value per grid cell (nearest-vertex splat)


def test_wide_images_get_distinct_vertices():
    """The copied hash (base 255 floats) merged x-cells 255 apart; integer keys do not."""
    image = np.full((1, 16 * 300, 3), 100, np.uint8)
    assert bilateral_grid(image).nvertices == 300


def test_bad_inputs_are_rejected():
    image, step = _step_image()
    with pytest.raises(ValueError, match="target"):
        bilateral_solve(image, step[:-1])
    with pytest.raises(ValueError, match="sigma_luma"):
        bilateral_solve(image, step, sigma_luma=0)
    with pytest.raises(ValueError, match="image must be"):
        bilateral_solve(np.zeros((4, 4, 2)), np.zeros((4, 4)))


def test_plugins_bs_and_bf_are_the_same_solver():
    registry = Registry(autoload=False)
    image, step = _step_image()
    noisy = np.clip(step + np.random.default_rng(4).normal(0, 0.4, step.shape), 0, 1).astype(np.float32)
    out_bs = registry.create("post", "bs")(image, noisy)
    out_bf = registry.create("post", "bf")(image, noisy)
    assert out_bs.dtype == np.float32 and out_bs.min() >= 0 and out_bs.max() <= 1
    np.testing.assert_array_equal(out_bs, out_bf)
    assert BilateralSolver(sigma_spatial="8").config["sigma_spatial"] == 8.0
    with pytest.raises(HarnessError, match="cg_maxiter"):
        BilateralSolver(cg_maxiter=0)
    with pytest.raises(HarnessError, match="at the image's size"):
        registry.create("post", "bs")(image, noisy.T)


@pytest.mark.parametrize("post,post_args", [("gf", "radius=5"), ("bs", "sigma_spatial=8"), ("bf", "")])
def test_harness_run_with_a_post_processor(tmp_path, capsys, post, post_args):
    """The issue's command shape, on the built-in synthetic data."""
    import json

    from harness.cli import main

    args = ["run", "--method", "center-prior", "--dataset", "synthetic", "--dataset-args", "count=3",
            "--post", post, "--out", str(tmp_path / "runs"), "--no-progress"]
    args += ["--post-args", post_args] if post_args else []
    assert main(args) == 0, capsys.readouterr().err
    (results,) = (tmp_path / "runs").glob("*/results.json")
    data = json.loads(results.read_text())
    assert data["config"]["posts"][0]["name"] == post
    assert 0 <= data["metrics"]["iou"] <= 1


def test_preset_values_and_overrides():
    harness, segtricks = BilateralSolver().config, BilateralSolver(preset="segtricks").config
    assert (harness["sigma_spatial"], harness["sigma_luma"], harness["sigma_chroma"], harness["lam"]) == (16, 16, 8, 256)
    assert (segtricks["sigma_spatial"], segtricks["sigma_luma"], segtricks["sigma_chroma"]) == (24, 4, 4)
    assert segtricks["lam"] == 256 and segtricks["colour"] == "imagenet" and harness["colour"] == "uint8"
    mixed = BilateralSolver(preset="segtricks", sigma_luma="8", colour="uint8").config
    assert (mixed["sigma_spatial"], mixed["sigma_luma"], mixed["colour"]) == (24, 8, "uint8")
    assert BilateralSolver(preset="segtricks").identity() != BilateralSolver().identity()


def test_imagenet_roundtrip_is_close_to_the_image_but_not_on_it():
    image = np.random.default_rng(5).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    values = imagenet_roundtrip(image)
    assert values.dtype == np.float32 and values.shape == image.shape
    assert np.abs(values - image).max() < 2e-5
    assert (values != image).mean() > 0.1  # float32 steps: 47.999996 for 48
    np.testing.assert_array_equal(imagenet_roundtrip(image[..., 0]), imagenet_roundtrip(np.repeat(image[..., :1], 3, 2)))
    with pytest.raises(ValueError, match="integer values in 0..255"):
        imagenet_roundtrip(image + 0.5)


def test_segtricks_preset_solves_for_the_mask_times_255():
    """Scaling the target by 255 (float32) and the answer back changes it by float32 rounding only."""
    image, step = _step_image()
    noisy = np.clip(step + np.random.default_rng(6).normal(0, 0.4, step.shape), 0, 1).astype(np.float32)
    scaled = BilateralSolver(preset="segtricks").solve(image, noisy)
    plain = bilateral_solve(imagenet_roundtrip(image), noisy, sigma_spatial=24, sigma_luma=4, sigma_chroma=4)
    assert 0 < np.abs(scaled - plain).max() < 1e-6
    with pytest.raises(PluginError, match="not one of"):
        BilateralSolver(preset="tokencut")
