"""LOST (Siméoni et al., "Localizing Objects with Self-Supervised Transformers and no
Labels", BMVC 2021), a row of the Two Tricks paper's tables.

The method, with the paper's defaults:

- features: the last block's attention keys of DINO ViT-S/16 (``dino-vits16``), *not*
  normalised; the image at full resolution, zero-padded (in the normalised space) to a
  multiple of the patch size;
- patch similarity ``A = F F^T``; each patch's degree is its number of positive
  similarities to the other patches;
- the seed is the patch of lowest degree (ties: the lowest index, a stable sort);
- seed expansion: among the ``k_patches`` (100) lowest-degree patches, those positively
  correlated with the seed; ``M`` sums their rows of ``A``;
- the object is the 4-connected component of ``M > 0`` that holds the seed; its box goes to
  CorLoc and the component, upsampled by nearest neighbour, is the mask.

For convolutional backbones (``family == "cnn"``, e.g. ``effnet-lite0``) the feature map is
first layer-normalised over all its values, as LOST did for its ResNet and VGG rows.
"""
from __future__ import annotations

import numpy as np

from harness.api import Option, Sample
from harness.errors import HarnessError
from harness.methods._patch_methods import Geometry, PatchFeatureMethod, component_box, seed_component


def lost_seed_expansion(features: np.ndarray, k_patches: int = 100) -> tuple[np.ndarray, int, np.ndarray]:
    """LOST's seed selection and expansion.

    Parameters
    ----------
    features : np.ndarray
        ``(N, C)`` patch features.
    k_patches : int
        How many lowest-degree patches may join the seed.

    Returns
    -------
    M : np.ndarray
        ``(N,)`` summed similarity of the expanded seed set to every patch.
    seed : int
        Index of the seed patch.
    similars : np.ndarray
        Indices of the expanded seed set (the seed included).
    """
    feats = np.asarray(features, dtype=np.float64)
    A = feats @ feats.T
    positive = A > 0
    np.fill_diagonal(positive, False)
    degree = positive.sum(axis=1)
    order = np.argsort(degree, kind="stable")
    seed = int(order[0])
    potentials = order[:k_patches]
    similars = potentials[A[seed, potentials] > 0]
    return A[similars].sum(axis=0), seed, similars


class LOST(PatchFeatureMethod):
    name = "lost"
    description = "LOST: lowest-degree seed, seed expansion, seed's component (Siméoni et al. 2021)"
    default_backbone = "dino-vits16"
    preparation = "pad"
    options = (Option("k_patches", 100, "lowest-degree patches considered in the seed expansion"),)

    def __init__(self, **config):
        super().__init__(**config)
        if self.config["k_patches"] < 1:
            raise HarnessError(f"method 'lost': k_patches={self.config['k_patches']} must be at least 1")

    def segment(self, features: np.ndarray, geometry: Geometry, sample: Sample):
        if getattr(self.backbone, "family", "vit") == "cnn":
            # LOST's nn.LayerNorm over the whole (N, C) map, at its initial (identity) affine
            features = (features - features.mean()) / np.sqrt(features.var() + 1e-5)
        M, seed, _ = lost_seed_expansion(features, int(self.config["k_patches"]))
        component = seed_component((M > 0).reshape(geometry.grid), seed)
        return component, component_box(component)
