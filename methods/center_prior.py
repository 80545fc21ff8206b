"""The centre-bias baseline: a Gaussian bump in the middle of the image.

Salient objects sit near the image centre far more often than chance (Judd et al., ICCV
2009; Borji et al., "Salient Object Detection: A Benchmark", TIP 2015), so a fixed
anisotropic Gaussian is the classic floor every saliency method should beat.
"""
from __future__ import annotations

import numpy as np

from harness.api import Method, Option, Prediction, Sample


def center_prior(height: int, width: int, sigma: float) -> np.ndarray:
    """``(H, W)`` float32 Gaussian centred in the image, 1 at the centre.

    ``sigma`` is a fraction of each side (the bump is stretched with the aspect ratio).
    """
    ys = (np.arange(height, dtype=np.float32) + 0.5) / height - 0.5
    xs = (np.arange(width, dtype=np.float32) + 0.5) / width - 0.5
    return np.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / (2.0 * sigma**2)).astype(np.float32)


class CenterPrior(Method):
    name = "center-prior"
    description = "Gaussian centre-bias baseline (no learning, no backbone)"
    options = (Option("sigma", 0.25, "standard deviation as a fraction of each image side"),)

    def predict(self, sample: Sample) -> Prediction:
        height, width = sample.image.shape[:2]
        return Prediction(center_prior(height, width, float(self.config["sigma"])))
