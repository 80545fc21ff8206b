"""Training augmentations, drawn from a per-image generator so that a run is reproducible
whatever the number of workers or processes (and so that resuming is exact)."""
from __future__ import annotations

import numpy as np


def to_tensor(image: np.ndarray):
    """``(H, W, 3)`` uint8 -> ``(3, H, W)`` float32 tensor in [0, 1]."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)


def resize_square(image: np.ndarray, size: int):
    """``(H, W, 3)`` uint8 -> ``(3, size, size)`` float32 in [0, 1] (bilinear, antialiased)."""
    import torchvision.transforms.v2.functional as TF

    return TF.resize(to_tensor(image), [size, size], antialias=True).clamp_(0, 1)


def resize_to(image: np.ndarray, height: int, width: int):
    """``(H, W, 3)`` uint8 -> ``(3, height, width)`` float32 in [0, 1] (bilinear, antialiased;
    the exact pixels when the size is already right)."""
    import torchvision.transforms.v2.functional as TF

    x = to_tensor(image)
    if tuple(x.shape[-2:]) == (height, width):
        return x
    return TF.resize(x, [height, width], antialias=True).clamp_(0, 1)


def shorter_side_size(height: int, width: int, short: int, stride: int) -> tuple[int, int]:
    """The size that keeps the aspect ratio with the shorter side ``short`` (a multiple of
    ``stride``) and the longer side rounded to the nearest multiple of ``stride``."""
    if height <= width:
        return short, max(stride, int(round(width * short / height / stride)) * stride)
    return max(stride, int(round(height * short / width / stride)) * stride), short


def _jitter(x, rng: np.random.Generator):
    """Colour jitter (brightness .4, contrast .4, saturation .2, hue .1, random order; p 0.8),
    then grayscale (p 0.2)."""
    import torchvision.transforms.v2.functional as TF

    if rng.random() < 0.8:
        factors = [rng.uniform(0.6, 1.4), rng.uniform(0.6, 1.4), rng.uniform(0.8, 1.2), rng.uniform(-0.1, 0.1)]
        ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
        for k in rng.permutation(4):
            x = ops[k](x, float(factors[k]))
    if rng.random() < 0.2:
        x = TF.rgb_to_grayscale(x, num_output_channels=3)
    return x


def sempart_augment(image: np.ndarray, rng: np.random.Generator, size: int = 320, segtricks: bool = False):
    """Sempart's training view of one image.

    Shorter side resized to ``size * 335 / 320``, a random ``size`` crop, horizontal flip
    (p 0.5), colour jitter (brightness .4, contrast .4, saturation .2, hue .1, random order;
    p 0.8), grayscale (p 0.2).

    ``segtricks=True`` follows segmentation-tricks' DUTS-TR transform order instead: shorter
    side to ``size + 15``, jitter and grayscale on the whole resized image (so contrast pivots
    on the whole image's mean), then the crop and the flip. (The reference jitters PIL uint8
    images; here the same operations run on floats.)

    Returns
    -------
    torch.Tensor
        ``(3, size, size)`` float32 in [0, 1].
    """
    import torchvision.transforms.v2.functional as TF

    x = to_tensor(image)
    short = size + 15 if segtricks else int(round(size * 335 / 320))
    x = TF.resize(x, short, antialias=True).clamp_(0, 1)  # an int resizes the shorter side
    if segtricks:
        x = _jitter(x, rng).clamp(0, 1)
    h, w = x.shape[-2:]
    top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    x = x[:, top : top + size, left : left + size]
    if rng.random() < 0.5:
        x = x.flip(-1)
    if not segtricks:
        x = _jitter(x, rng)
    return x.clamp(0, 1).contiguous()
