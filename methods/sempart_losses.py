"""Sempart's losses, and the crop-consistency loss of "Two Tricks" (trick 2).

All masks are probabilities (after the sigmoid). Feature affinities threshold the cosine
similarity: W = 1 where cos > tau (0.4) else eps (1e-6).

Precision: every loss runs in float32 with autocast switched off, whatever the caller's
autocast region (segmentation-tricks trains in float32; a bfloat16 cosine moves entries across
the 0.4 threshold and a bfloat16 NCut product is off by ~1e-3). Half-precision inputs are
refused rather than silently upcast, so that a backbone or head run under autocast is noticed.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

TAU = 0.4
EPS = 1e-6
_HALF = (torch.float16, torch.bfloat16)


def float32_loss(fn):
    """Run ``fn`` with autocast disabled on its tensors' device; refuse float16/bfloat16 tensors."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        half = [str(t.dtype) for t in tensors if t.dtype in _HALF]
        if half:
            raise TypeError(f"{fn.__name__}: Sempart losses run in float32; got {', '.join(half)} inputs "
                            f"(compute the backbone features and the masks outside autocast, or call .float())")
        with torch.autocast(device_type=tensors[0].device.type if tensors else "cpu", enabled=False):
            return fn(*args, **kwargs)

    return wrapper


@float32_loss
def cosine_affinity(features: torch.Tensor, tau: float = TAU, eps: float = EPS) -> torch.Tensor:
    """Thresholded cosine affinity between all tokens.

    Shape
    -----
    features: (B, C, h, w) -> (B, N, N) with N = h * w.
    """
    flat = F.normalize(features.flatten(2), dim=1)
    cos = flat.transpose(1, 2) @ flat
    return torch.where(cos > tau, torch.ones_like(cos), torch.full_like(cos, eps))


@float32_loss
def ncut_loss(mask: torch.Tensor, affinity: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Soft normalised cut: s W (1-s)^T / (s W 1^T) + s W (1-s)^T / ((1-s) W 1^T), batch mean.

    Shape
    -----
    mask: (B, 1, h, w) probabilities; affinity: (B, N, N).
    """
    s = mask.flatten(1).clamp(eps, 1 - eps).unsqueeze(1)  # (B, 1, N)
    sw = s @ affinity
    tw = (1 - s) @ affinity
    cut = (sw * (1 - s)).sum(dim=(1, 2))
    return (cut / sw.sum(dim=(1, 2)).clamp_min(1e-6) + cut / tw.sum(dim=(1, 2)).clamp_min(1e-6)).mean()


def _neighbour_differences(x: torch.Tensor) -> torch.Tensor:
    """Squared differences to the 8 neighbours, summed over channels (reflect padding).

    Shape
    -----
    x: (B, C, H, W) -> (B, 8, H, W).
    """
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    h, w = x.shape[-2:]
    diffs = [
        (x - padded[:, :, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]).pow(2).sum(1)
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
        if (dy, dx) != (0, 0)
    ]
    return torch.stack(diffs, dim=1)


@float32_loss
def image_tv_loss(mask: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Fine graph-TV: mean over 8 neighbours of exp(-||dI||^2) * (ds)^2.

    Shape
    -----
    mask: (B, 1, H, W); image: (B, 3, H, W) normalised.
    """
    weights = torch.exp(-_neighbour_differences(image))
    return (weights * _neighbour_differences(mask)).mean()


@float32_loss
def feature_tv_loss(mask: torch.Tensor, features: torch.Tensor, tau: float = TAU, eps: float = EPS) -> torch.Tensor:
    """Coarse graph-TV: mean over 8 neighbours of W_ij * (ds)^2, W = 1[cos > tau] else eps.

    Shape
    -----
    mask: (B, 1, h, w); features: (B, C, h, w).
    """
    cos = 1 - _neighbour_differences(F.normalize(features, dim=1)) / 2  # ||a-b||^2 = 2 - 2cos
    weights = torch.where(cos > tau, torch.ones_like(cos), torch.full_like(cos, eps))
    return (weights * _neighbour_differences(mask)).mean()


@float32_loss
def consistency_loss(fine: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
    """MSE between the coarse mask and the fine mask downsampled (bilinear) to its grid."""
    down = F.interpolate(fine, size=coarse.shape[-2:], mode="bilinear", align_corners=False)
    return (coarse - down).pow(2).mean()


@float32_loss
def crop_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Crop consistency: MSE between the student's zoomed crop and the (detached) teacher."""
    return (student - teacher).pow(2).mean()


def random_crops(batch: int, height: int, width: int, generator: torch.Generator) -> list[tuple[int, int]]:
    """Top-left corners of half-size crops, uniformly random and inside the image."""
    tops = torch.randint(0, height - height // 2 + 1, (batch,), generator=generator)
    lefts = torch.randint(0, width - width // 2 + 1, (batch,), generator=generator)
    return list(zip(tops.tolist(), lefts.tolist()))


def segtricks_crops(batch: int, height: int, width: int, stride: int,
                    generator: torch.Generator) -> list[tuple[int, int]]:
    """The half-size crop corners segmentation-tricks actually uses (a bug, kept as a preset).

    It draws token offsets, rows then columns, each in ``[g // 4, 3 * (g // 4))`` (g = the token
    grid's side), meant to be scaled by the stride; but ``list * int`` repeats the list instead
    of scaling it, so the offsets arrive in pixels. The row, always below ``(height // 2) // 2``,
    is clamped up to it; the column is used as drawn. At 320 px and stride 8: row 80, columns
    10..29. The draws are made in the reference's order (the rows too, though unused), so a
    generator in the reference's RNG state gives its crops.
    """
    rows, cols = height // stride, width // stride
    if rows // 4 == 0 or cols // 4 == 0:
        raise ValueError(f"segtricks crops need at least 4 tokens a side; got {height}x{width} at stride {stride}")
    torch.randint(rows // 4, 3 * (rows // 4), (batch,), generator=generator)  # clamped away, see above
    lefts = torch.randint(cols // 4, 3 * (cols // 4), (batch,), generator=generator)
    return [((height // 2) // 2, left) for left in lefts.tolist()]


def crop_and_zoom(x: torch.Tensor, corners: list[tuple[int, int]]) -> torch.Tensor:
    """The half-size crop at each corner, zoomed x2 (bilinear) back to full size.

    Shape
    -----
    x: (B, C, H, W) -> (B, C, H, W).
    """
    h, w = x.shape[-2] // 2, x.shape[-1] // 2
    crops = torch.stack([x[i, :, top : top + h, left : left + w] for i, (top, left) in enumerate(corners)])
    return F.interpolate(crops, size=x.shape[-2:], mode="bilinear", align_corners=False)
