"""Sempart's losses and head on small inputs whose values are known."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.methods import sempart_losses as L
from harness.methods.sempart_model import SempartHead


def test_ncut_on_two_blocks_equals_the_closed_form_cut_ratio():
    # 6 tokens: block A = 0..1 (a = 2), block B = 2..5 (b = 4); W = 1 inside blocks, w between.
    a, b, w = 2, 4, 1e-3
    W = torch.full((6, 6), w)
    W[:a, :a] = 1
    W[a:, a:] = 1
    s = torch.tensor([1.0, 1, 0, 0, 0, 0]).view(1, 1, 2, 3)
    loss = L.ncut_loss(s, W[None], eps=1e-12)
    cut = a * b * w
    expected = cut / (a * (a + b * w)) + cut / (b * (b + a * w))
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_ncut_is_symmetric_under_swapping_the_sides():
    torch.manual_seed(0)
    features = torch.randn(2, 16, 5, 5)
    affinity = L.cosine_affinity(features, tau=0.1)
    s = torch.rand(2, 1, 5, 5)
    assert L.ncut_loss(s, affinity).item() == pytest.approx(L.ncut_loss(1 - s, affinity).item(), rel=1e-5)


def test_cosine_affinity_thresholds():
    f = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]).T.reshape(1, 2, 1, 3)
    W = L.cosine_affinity(f, tau=0.4, eps=1e-6)[0]
    assert W[0, 1] == 1 and W[0, 2] == pytest.approx(1e-6) and torch.all(W.diagonal() == 1)


def _tv_by_loops(mask: np.ndarray, guide: np.ndarray, weight_fn) -> float:
    """Independent oracle: explicit loops over pixels and their 8 reflected neighbours."""
    _, _, h, w = mask.shape
    reflect = lambda i, n: -i if i < 0 else (2 * (n - 1) - i if i >= n else i)  # noqa: E731
    total, count = 0.0, 0
    for y in range(h):
        for x in range(w):
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    if dy == dx == 0:
                        continue
                    ny, nx = reflect(y + dy, h), reflect(x + dx, w)
                    total += weight_fn(guide[0, :, y, x], guide[0, :, ny, nx]) * (mask[0, 0, y, x] - mask[0, 0, ny, nx]) ** 2
                    count += 1
    return total / count


def test_image_tv_matches_an_explicit_loop():
    rng = np.random.default_rng(1)
    mask, image = rng.random((1, 1, 4, 5)), rng.random((1, 3, 4, 5))
    expected = _tv_by_loops(mask, image, lambda p, q: np.exp(-np.sum((p - q) ** 2)))
    got = L.image_tv_loss(torch.tensor(mask), torch.tensor(image)).item()
    assert got == pytest.approx(expected, rel=1e-10)


def test_feature_tv_matches_an_explicit_loop():
    rng = np.random.default_rng(2)
    mask, feats = rng.random((1, 1, 4, 4)), rng.standard_normal((1, 6, 4, 4))

    def weight(p, q):
        cos = p @ q / np.linalg.norm(p) / np.linalg.norm(q)
        return 1.0 if cos > 0.4 else 1e-6

    got = L.feature_tv_loss(torch.tensor(mask), torch.tensor(feats)).item()
    assert got == pytest.approx(_tv_by_loops(mask, feats, weight), rel=1e-9)


def test_tv_is_zero_on_a_constant_mask():
    image = torch.rand(2, 3, 8, 8)
    assert L.image_tv_loss(torch.full((2, 1, 8, 8), 0.3), image).item() == 0.0
    assert L.feature_tv_loss(torch.full((2, 1, 8, 8), 0.7), torch.rand(2, 5, 8, 8)).item() == 0.0


def test_consistency_is_zero_when_the_branches_agree():
    coarse = torch.rand(2, 1, 5, 5)
    fine = coarse.repeat_interleave(8, dim=2).repeat_interleave(8, dim=3)  # each token's 8x8 block
    assert L.consistency_loss(fine, coarse).item() == pytest.approx(0.0, abs=1e-12)
    assert L.consistency_loss(fine, 1 - coarse).item() > 0.01


def test_crop_and_zoom_takes_the_half_size_crop():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    zoomed = L.crop_and_zoom(x, [(2, 0)])
    # the crop is rows 2-3, cols 0-1 = [[8, 9], [12, 13]], zoomed x2 bilinear
    assert zoomed.shape == (1, 1, 4, 4)
    assert zoomed[0, 0, 0, 0] == 8 and zoomed[0, 0, -1, -1] == 13
    corners = L.random_crops(64, 40, 30, torch.Generator().manual_seed(0))
    assert all(0 <= t <= 20 and 0 <= l <= 15 for t, l in corners)


@pytest.mark.parametrize("stride, blocks", [(8, 3), (16, 4)])
def test_head_shapes(stride, blocks):
    head = SempartHead(384, stride)
    assert len(head.blocks) == blocks
    grid = 320 // stride
    fine, coarse = head(torch.randn(1, 384, grid, grid), torch.randn(1, 3, 320, 320))
    assert fine.shape == (1, 1, 320, 320) and coarse.shape == (1, 1, grid, grid)


def test_head_channels_follow_sempart_for_stride_8():
    head = SempartHead(384, 8)
    convs = [m for m in head.modules() if isinstance(m, torch.nn.Conv2d)]
    shapes = [(c.in_channels, c.out_channels) for c in convs]
    assert shapes == [(384, 64), (64, 1), (67, 192), (195, 128), (131, 128), (128, 128), (131, 1)]
