"""Deep Spectral Methods (Melas-Kyriazi et al., "Deep Spectral Methods: A Surprisingly Strong
Baseline for Unsupervised Semantic Segmentation and Localization", CVPR 2022), single-object
segmentation and localisation; a row of the Two Tricks paper's tables.

The method, with the defaults of the paper and its released extraction code:

- features: the last block's attention keys of DINO ViT-B/8 (``dino-vitb8``, the backbone
  later saliency tables list for this method), L2-normalised; the image at full resolution
  with the right/bottom remainder cropped to a multiple of the patch size (the released
  feature extraction);
- affinity ``W = F F^T * (F F^T > 0)`` (divided by its maximum, 1 for normalised features),
  plus ``knn_lambda`` times a KNN colour affinity of the image resized to the patch grid
  (KNN matting's features ``(r, g, b, w x, w y)`` with 20 neighbours at ``w = 2`` and 10 at
  ``w = 0.1``; colours in [0, 1]). The released code's default weight is 0 (features only),
  used here;
- the eigenvector of the generalised problem ``(D - W) x = lambda D x`` with the smallest
  non-zero eigenvalue (the Fiedler vector), computed with the same solver as TokenCut;
- sign: the positive side must be the smaller one (the code flips the vector when more than
  half of it is positive); the mask is ``x > 0``, upsampled by nearest neighbour;
- box (CorLoc): the bounding box of the mask's largest 8-connected component.

``version`` 2: float32 features (the feature cache stored float16 before).
"""
from __future__ import annotations

import numpy as np

from harness.api import Option, Sample
from harness.errors import HarnessError
from harness.imageops import label_components, resize
from harness.patch_methods import Geometry, PatchFeatureMethod, component_box
from harness.methods._spectral import fiedler_vector

#: (neighbours, weight of the pixel coordinates) of the KNN colour affinity
KNN_LEVELS = ((20, 2.0), (10, 0.1))


def knn_color_affinity(image: np.ndarray) -> np.ndarray:
    """KNN-matting affinity of a small image.

    Parameters
    ----------
    image : np.ndarray
        ``(h, w, 3)`` float RGB in [0, 1] (the image resized to the patch grid).

    Returns
    -------
    np.ndarray
        ``(h * w, h * w)`` float64, the count of KNN links between two pixels, symmetrised.
    """
    from scipy.spatial import cKDTree

    h, w = image.shape[:2]
    n = h * w
    xs = np.tile(np.linspace(0, 1, w), h)
    ys = np.repeat(np.linspace(0, 1, h), w)
    W = np.zeros((n, n))
    for k, weight in KNN_LEVELS:
        k = min(k, n)
        feats = np.column_stack([image.reshape(-1, 3), weight * xs, weight * ys])
        _, neighbours = cKDTree(feats).query(feats, k=k)
        rows = np.repeat(np.arange(n), k)
        cols = np.asarray(neighbours).reshape(-1)
        np.add.at(W, (rows, cols), 1.0)
        np.add.at(W, (cols, rows), 1.0)
    return W


def spectral_foreground(features: np.ndarray, grid: tuple[int, int], color: np.ndarray | None = None,
                        knn_lambda: float = 0.0, solver: str = "sparse", seed: int = 0
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Deep Spectral Methods' single-region segmentation on a patch grid.

    Parameters
    ----------
    features : np.ndarray
        ``(h * w, C)`` patch features.
    grid : tuple of int
        ``(h, w)``.
    color : np.ndarray, optional
        ``(h, w, 3)`` image in [0, 1] at grid size; needed when ``knn_lambda > 0``.
    knn_lambda : float
        Weight of the KNN colour affinity.
    solver : {"sparse", "dense"}
        See :func:`~harness.methods._spectral.fiedler_vector`.
    seed : int
        Seeds the sparse solver's start vector (the run's ``--seed``).

    Returns
    -------
    mask : np.ndarray
        ``(h, w)`` bool, ``x > 0`` with the minority-positive sign.
    eigenvector : np.ndarray
        ``(h, w)`` float64 Fiedler vector with that sign.
    """
    feats = np.asarray(features, dtype=np.float32)
    feats = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    A = (feats @ feats.T).astype(np.float64)
    W = A * (A > 0)
    W /= W.max()
    if knn_lambda > 0:
        W += knn_lambda * knn_color_affinity(color)
    _, x = fiedler_vector(W, method=solver, seed=seed)
    if 0.5 < np.mean(x > 0) < 1.0:  # the object is the smaller side
        x = -x
    return (x > 0).reshape(grid), x.reshape(grid)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a boolean mask (the mask itself if empty)."""
    labels, count = label_components(mask, connectivity=8)
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    return labels == int(np.argmax(sizes)) + 1


class DeepSpectral(PatchFeatureMethod):
    name = "deep-spectral"
    description = "Deep Spectral Methods: Fiedler vector of the feature-affinity Laplacian (Melas-Kyriazi et al. 2022)"
    default_backbone = "dino-vitb8"
    preparation = "crop"
    version = "2"
    options = (
        Option("knn_lambda", 0.0, "weight of the KNN colour affinity added to the feature affinity"),
        Option("solver", "sparse", "eigen solver: sparse (ARPACK, default) or dense (reference)",
               choices=("sparse", "dense")),
    )

    def __init__(self, **config):
        super().__init__(**config)
        if self.config["knn_lambda"] < 0:
            raise HarnessError(f"method 'deep-spectral': knn_lambda={self.config['knn_lambda']} must be >= 0")

    def uses_seed(self) -> bool:
        return self.config["solver"] == "sparse"  # ARPACK's start vector

    def segment(self, features: np.ndarray, geometry: Geometry, sample: Sample):
        color = None
        if self.config["knn_lambda"] > 0:
            h, w = geometry.grid
            color = resize(sample.image, (h, w), "bilinear", antialias=True).astype(np.float32) / 255.0
        mask, _ = spectral_foreground(features, geometry.grid, color, self.config["knn_lambda"], self.config["solver"],
                                      seed=self.run_seed)
        if not mask.any():  # a degenerate (constant) eigenvector: no object found, whole image
            mask = np.ones_like(mask)
        return mask, component_box(largest_component(mask))
