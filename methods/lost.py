"""LOST (Siméoni et al., "Localizing Objects with Self-Supervised Transformers and no
Labels", BMVC 2021), a row of the Two Tricks paper's tables.

The method, with the paper's defaults:

- features: the last block's attention keys of DINO ViT-S/16 (``dino-vits16``), *not*
  normalised; the image at full resolution, zero-padded (in the normalised space) to a
  multiple of the patch size;
- patch similarity ``A = F F^T``; each patch's degree is its number of positive
  similarities to the other patches;
- patches are ordered by degree as LOST's code orders them: ``torch.argsort`` (descending) of
  the negated degrees, on the CPU. Degrees are integer counts, so ties are common, and that
  sort is not stable: its order among tied patches is torch's (it decides the seed and which
  tied patches fill the last places of the ``k_patches``). ``ties=stable`` takes tied patches
  in index order instead. The reference run on CUDA sorts with CUDA's kernel, whose order
  among ties need not be the CPU's, so its boxes can differ there; the harness always sorts
  on the CPU, so its boxes do not depend on the device;
- the seed is the first patch of that order (a lowest-degree patch);
- seed expansion: among the ``k_patches`` (100) first patches of the order, those positively
  correlated with the seed; ``M`` sums their rows of ``A``;
- the object is the 4-connected component of ``M > 0`` that holds the seed; its box goes to
  CorLoc and the component, upsampled by nearest neighbour, is the mask.

For convolutional backbones (``family == "cnn"``, e.g. ``effnet-lite0``) the feature map is
first layer-normalised over all its values, as LOST did for its ResNet and VGG rows.

``version`` 2: float32 features (the feature cache stored float16 before) and torch's order
among tied degrees (a stable sort before).
"""
from __future__ import annotations

import numpy as np

from harness.api import Option, Sample
from harness.errors import HarnessError
from harness.patch_methods import Geometry, PatchFeatureMethod, component_box, seed_component


TIES = ("torch", "stable")


def degree_order(degree: np.ndarray, ties: str = "torch") -> np.ndarray:
    """Patch indices by increasing degree.

    Parameters
    ----------
    degree : np.ndarray
        ``(N,)`` integer degrees.
    ties : {"torch", "stable"}
        ``"torch"``: ``torch.argsort(-degree, descending=True)`` on the CPU (float32 scores),
        LOST's order, tied patches in the order torch's unstable CPU sort leaves them;
        ``"stable"``: tied patches by increasing index.
    """
    if ties == "stable":
        return np.argsort(degree, kind="stable")
    if ties != "torch":
        raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
    import torch

    scores = torch.from_numpy(-np.asarray(degree, dtype=np.float32))
    return torch.argsort(scores, descending=True).numpy()


def lost_seed_expansion(features: np.ndarray, k_patches: int = 100, ties: str = "torch"
                        ) -> tuple[np.ndarray, int, np.ndarray]:
    """LOST's seed selection and expansion.

    Parameters
    ----------
    features : np.ndarray
        ``(N, C)`` patch features.
    k_patches : int
        How many lowest-degree patches may join the seed.
    ties : {"torch", "stable"}
        The order among tied degrees (:func:`degree_order`).

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
    order = degree_order(degree, ties)
    seed = int(order[0])
    potentials = order[:k_patches]
    similars = potentials[A[seed, potentials] > 0]
    return A[similars].sum(axis=0), seed, similars


class LOST(PatchFeatureMethod):
    name = "lost"
    description = "LOST: lowest-degree seed, seed expansion, seed's component (Siméoni et al. 2021)"
    default_backbone = "dino-vits16"
    preparation = "pad"
    version = "2"
    options = (
        Option("k_patches", 100, "lowest-degree patches considered in the seed expansion"),
        Option("ties", "torch", "order among tied degrees: torch (torch.argsort on the CPU, LOST's code) or "
               "stable (lowest index first)", choices=TIES),
    )

    def __init__(self, **config):
        super().__init__(**config)
        if self.config["k_patches"] < 1:
            raise HarnessError(f"method 'lost': k_patches={self.config['k_patches']} must be at least 1")

    def segment(self, features: np.ndarray, geometry: Geometry, sample: Sample):
        if getattr(self.backbone, "family", "vit") == "cnn":
            # LOST's nn.LayerNorm over the whole (N, C) map, at its initial (identity) affine
            features = (features - features.mean()) / np.sqrt(features.var() + 1e-5)
        M, seed, _ = lost_seed_expansion(features, int(self.config["k_patches"]), self.config["ties"])
        component = seed_component((M > 0).reshape(geometry.grid), seed)
        return component, component_box(component)
