"""Sempart's polarity rule (methods/sempart.py): at each checkpoint the fine masks of the first 16
training images are read on a border band (1/16 of the shorter side); if their mean is above
0.5 the network's sigmoid marks the border, so the foreground is its complement (polarity -1);
evaluation then inverts every mask.

A stand-in network makes the masks known exactly: its fine logit is +200 where the image is
white and -200 where it is black (sigmoid: exactly 1 and 0 in float32), so a mask is the image's
white pixels.
On 32 x 32 images the band is round(32 / 16) = 2 pixels: a ring of 32 * 32 - 28 * 28 = 240 pixels.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.api import Sample
from harness.registry import get_registry

SIZE, BAND = 32, 2
RING = np.ones((SIZE, SIZE), bool)
RING[BAND:-BAND, BAND:-BAND] = False
assert RING.sum() == 240


class WhiteIsForeground(torch.nn.Module):
    """The head's interface: (features, normalised image) -> (fine logits, coarse logits)."""

    def forward(self, features, image):
        fine = torch.where(image[:, :1] > 0, 200.0, -200.0)  # normalised white > 0 > normalised black
        return fine, torch.zeros_like(features[:, :1])


class Backbone:
    stride = 8

    def features(self, images):
        return torch.zeros(images.shape[0], 4, images.shape[2] // 8, images.shape[3] // 8)


class Features:
    """The run's feature stage (``RunContext.features``) over :class:`Backbone`, uncached."""

    def grids(self, requests):
        inputs = [torch.from_numpy(np.asarray(r.make_input())).permute(2, 0, 1)[None] for r in requests]
        return [Backbone().features(x)[0].numpy() for x in inputs]


def _image(white_ring_pixels: int) -> np.ndarray:
    """Black except the first ``white_ring_pixels`` pixels of the border ring (row-major order)."""
    mask = np.zeros(SIZE * SIZE, bool)
    mask[np.flatnonzero(RING.ravel())[:white_ring_pixels]] = True
    return np.repeat(mask.reshape(SIZE, SIZE, 1), 3, axis=2).astype(np.uint8) * 255


class Images:
    def __init__(self, white_counts):
        self.images = [_image(k) for k in white_counts]

    def load(self, sample_id):
        return Sample(sample_id, self.images[int(sample_id)])


def _sempart(**options):
    return get_registry().create("method", "sempart", {"image_size": str(SIZE), **options})


@pytest.mark.parametrize("white_counts, border_mean, polarity", [
    ([216], 216 / 240, -1),  # the border is mostly foreground (0.9): flip
    ([60], 60 / 240, 1),  # 0.25: keep
    ([120], 0.5, 1),  # exactly half: "above 0.5" is strict, keep
    ([240, 48], (1.0 + 0.2) / 2, -1),  # the mean over images: 0.6
    ([114] * 16 + [240], 114 / 240, 1),  # only the first 16 images count: 0.475 (with the 17th: 0.506)
], ids=["mostly-foreground", "mostly-background", "half", "two-images", "first-16"])
def test_polarity_is_chosen_from_the_border_mean(white_counts, border_mean, polarity):
    model = WhiteIsForeground()
    model.train()
    extras = _sempart().checkpoint_extras(model, Backbone(), Images(white_counts),
                                          [str(i) for i in range(len(white_counts))], "cpu")
    assert extras["polarity"] == polarity
    assert extras["polarity_border_mean"] == pytest.approx(border_mean, abs=1e-7)  # a float32 mean
    assert model.training  # left as it was found


@pytest.mark.parametrize("polarity, inverted", [(-1, True), (1, False)])
def test_evaluation_inverts_the_masks_of_a_flipped_checkpoint(polarity, inverted):
    method = _sempart()
    # what setup() sets from the checkpoint's polarity (or the option), without a trained head
    method.polarity = polarity
    method.backbone, method.model, method.device, method.image_size = Backbone(), WhiteIsForeground(), "cpu", SIZE
    method.features = Features()
    image = _image(216)
    white = image[..., 0] == 255
    mask = method.predict_batch([Sample("x", image)])[0].mask
    np.testing.assert_array_equal(mask, (~white if inverted else white).astype(np.float32))


@pytest.mark.parametrize("option, rule", [("1", 1), ("-1", -1), ("batch", "batch")])
def test_an_explicit_polarity_option_is_the_rule(option, rule):
    assert _sempart(polarity=option).polarity_rule() == rule
