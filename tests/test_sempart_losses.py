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


def test_losses_ignore_autocast_and_refuse_half_precision():
    rng = np.random.default_rng(3)
    feats = torch.from_numpy(rng.standard_normal((2, 32, 6, 6))).float()
    coarse = torch.from_numpy(rng.random((2, 1, 6, 6))).float()
    fine = torch.from_numpy(rng.random((2, 1, 48, 48))).float()
    image = torch.from_numpy(rng.random((2, 3, 48, 48))).float()

    def terms():
        return [L.ncut_loss(coarse, L.cosine_affinity(feats, tau=0.1)), L.consistency_loss(fine, coarse),
                L.image_tv_loss(fine, image), L.feature_tv_loss(coarse, feats, tau=0.1), L.crop_mse(fine, 1 - fine)]

    plain = terms()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the CPU stand-in for the trainer's CUDA autocast
        assert (feats @ feats.transpose(2, 3)).dtype == torch.bfloat16  # autocast is really on
        under = terms()
    assert all(u.dtype == torch.float32 and u.item() == p.item() for u, p in zip(under, plain))
    with pytest.raises(TypeError, match="ncut_loss: Sempart losses run in float32; got torch.bfloat16"):
        L.ncut_loss(coarse.bfloat16(), L.cosine_affinity(feats))
    with pytest.raises(TypeError, match="cosine_affinity.*torch.float16"):
        L.cosine_affinity(feats.half())


def test_segtricks_crops_are_the_references_row_80_and_columns_10_to_29():
    gen = torch.Generator().manual_seed(0)
    corners = [c for _ in range(50) for c in L.segtricks_crops(8, 320, 320, 8, gen)]
    assert {top for top, _ in corners} == {80}
    assert {left for _, left in corners} == set(range(10, 30))
    # the draws follow the reference's order: rows (discarded), then columns, from one generator
    gen = torch.Generator().manual_seed(5)
    torch.randint(10, 30, (4,), generator=gen)
    expected = torch.randint(10, 30, (4,), generator=gen).tolist()
    assert [left for _, left in L.segtricks_crops(4, 320, 320, 8, torch.Generator().manual_seed(5))] == expected
    with pytest.raises(ValueError, match="at least 4 tokens"):
        L.segtricks_crops(1, 24, 320, 8, gen)


def test_head_transformer_has_the_vit_pytorch_form():
    head = SempartHead(384, 8)
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items() if k.startswith("encoder.")}
    assert shapes == {
        **{f"encoder.{i}.{k}": s for i in (0, 1) for k, s in {
            "attn_norm.weight": (64,), "attn_norm.bias": (64,),
            "attn.qkv.weight": (384, 64),  # 3 x 2 heads x 64, no bias
            "attn.proj.weight": (64, 128), "attn.proj.bias": (64,),
            "mlp_norm.weight": (64,), "mlp_norm.bias": (64,),
            "mlp_in.weight": (64, 64), "mlp_in.bias": (64,), "mlp_out.weight": (64, 64), "mlp_out.bias": (64,),
        }.items()}
    }
    assert sum(isinstance(m, torch.nn.LayerNorm) for m in head.modules()) == 4  # pre-norms only, no final norm
    # no position encoding: permuting the tokens permutes the coarse output
    head.eval()
    feats, image = torch.randn(1, 384, 4, 4), torch.randn(1, 3, 32, 32)
    _, coarse = head(feats, image)
    _, flipped = head(feats.flip(-1), image.flip(-1))
    assert torch.allclose(flipped, coarse.flip(-1), atol=1e-5)


def test_shorter_side_size_keeps_the_aspect_on_the_stride():
    from harness.training.augment import resize_to, shorter_side_size

    assert shorter_side_size(267, 400, 320, 8) == (320, 480)
    assert shorter_side_size(400, 300, 320, 8) == (424, 320)  # 426.7 -> 424
    assert shorter_side_size(320, 320, 320, 8) == (320, 320)
    image = np.random.default_rng(0).integers(0, 256, (320, 320, 3), dtype=np.uint8)
    assert torch.equal(resize_to(image, 320, 320), torch.from_numpy(image).permute(2, 0, 1).float() / 255)
