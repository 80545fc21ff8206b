"""A deterministic synthetic dataset: textured blobs on textured backgrounds, with exact
masks and boxes. It needs no files, so the main command runs on a fresh machine.

Textures are the photographs bundled with scikit-image, read through its public API
(``skimage.data.<name>()``; these ship inside its wheel, so no download is ever attempted).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from harness.api import Dataset, Option, Sample
from harness.boxes import mask_box
from harness.imageops import resize

#: ``skimage.data`` functions (``stereo_motorcycle`` returns the left view first)
_GRAY_TEXTURES = ("brick", "grass", "gravel", "moon", "camera")
_COLOR_TEXTURES = ("coffee", "chelsea", "astronaut", "rocket", "stereo_motorcycle")


@lru_cache(maxsize=None)
def _texture(name: str) -> np.ndarray:
    """A bundled scikit-image photo as float32 ``(H, W, 3)`` in [0, 1]."""
    import skimage.data

    img = getattr(skimage.data, name)()
    if isinstance(img, tuple):  # stereo_motorcycle: (left, right, disparity)
        img = img[0]
    if img.ndim == 2:  # grey, as Pillow's convert("RGB") spreads it
        img = np.repeat(img[..., None], 3, axis=2)
    return np.asarray(img, dtype=np.float32) / 255.0


def _crop(rng: np.random.Generator, name: str, height: int, width: int) -> np.ndarray:
    """A random ``(height, width, 3)`` crop, zoomed by a random factor and tinted if gray."""
    tex = _texture(name)
    zoom = rng.uniform(0.6, 1.6)
    ch, cw = min(tex.shape[0], int(height / zoom) + 1), min(tex.shape[1], int(width / zoom) + 1)
    y = rng.integers(0, tex.shape[0] - ch + 1)
    x = rng.integers(0, tex.shape[1] - cw + 1)
    patch = (tex[y : y + ch, x : x + cw] * 255).astype(np.uint8)
    patch = resize(patch, (height, width), "bilinear", antialias=True).astype(np.float32) / 255
    if name in _GRAY_TEXTURES:
        tint = rng.uniform(0.25, 1.0, size=3).astype(np.float32)
        patch = patch.mean(axis=2, keepdims=True) * tint + rng.uniform(0, 0.2)
    return patch


def _blob(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A smooth star-shaped blob (random radial harmonics) as a bool ``(H, W)`` mask."""
    radius = rng.uniform(0.15, 0.32) * min(height, width)
    cy = rng.uniform(radius, height - radius)
    cx = rng.uniform(radius, width - radius)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    angle = np.arctan2(ys - cy, xs - cx)
    scale = np.ones_like(angle)
    for k in range(2, 6):
        scale += rng.uniform(0, 0.25 / k * 2) * np.cos(k * angle + rng.uniform(0, 2 * np.pi))
    stretch = rng.uniform(0.7, 1.4)
    dist = np.hypot((ys - cy) * stretch, (xs - cx) / stretch)
    return dist <= radius * scale


def render(seed: int, index: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One synthetic image ``(H, W, 3)`` uint8, its mask ``(H, W)`` uint8 and boxes ``(K, 4)``."""
    rng = np.random.default_rng([seed, index])
    background = _crop(rng, _GRAY_TEXTURES[rng.integers(len(_GRAY_TEXTURES))], height, width)
    image = background * rng.uniform(0.4, 0.8)  # a dimmer background keeps objects distinct
    mask = np.zeros((height, width), dtype=bool)
    boxes = []
    for _ in range(1 if rng.random() < 0.75 else 2):
        blob = _blob(rng, height, width) & ~mask
        if not blob.any():
            continue
        texture = _crop(rng, _COLOR_TEXTURES[rng.integers(len(_COLOR_TEXTURES))], height, width)
        image[blob] = np.clip(texture[blob] * rng.uniform(1.0, 1.3) + 0.1, 0, 1)
        boxes.append(mask_box(blob))
        mask |= blob
    image_u8 = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    return image_u8, mask.astype(np.uint8) * 255, np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


class SyntheticDataset(Dataset):
    name = "synthetic"
    description = "deterministic textured blobs on textured backgrounds, exact masks and boxes (built in)"
    needs_root = False
    layout = "generated in memory; no files"
    default_evaluators = ("saliency", "corloc")
    labels = ("mask", "boxes")
    options = (
        Option("count", 24, "number of images"),
        Option("height", 192, "image height in pixels"),
        Option("width", 256, "image width in pixels"),
        Option("seed", 0, "generator seed (images differ per seed, never per run)"),
    )

    def __init__(self, root=None, **config):
        super().__init__(root=None, **config)
        from harness.errors import DataError

        if self.config["count"] < 1 or min(self.config["height"], self.config["width"]) < 32:
            raise DataError("dataset 'synthetic': count must be >= 1 and height, width >= 32")

    def ids(self) -> list[str]:
        return [f"synthetic_{i:04d}" for i in range(self.config["count"])]

    def load(self, sample_id: str) -> Sample:
        index = int(sample_id.rsplit("_", 1)[1])
        image, mask, boxes = render(self.config["seed"], index, self.config["height"], self.config["width"])
        return Sample(sample_id, image, mask, boxes)
