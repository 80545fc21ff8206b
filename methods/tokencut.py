"""TokenCut (Wang et al., "Self-Supervised Transformers for Unsupervised Object Discovery
using Normalized Cut", CVPR 2022; TPAMI 2023 for saliency and video).

The definition (DESIGN.md, "Methods"), with the paper's defaults:

- features: the last block's attention keys of DINO ViT-S/16 (``dino-vits16``), the setting
  of the paper's saliency and object-discovery tables; any backbone can be given;
- graph: cosine similarity of the patch features, ``W_ij = 1`` where ``cos > tau`` (0.2),
  else ``eps`` (1e-5); self-loops kept;
- the second-smallest generalised eigenvector of ``(D - W) x = lambda D x``
  (:func:`harness.methods._spectral.fiedler_vector`: the symmetric normalised form with
  ARPACK from a start vector seeded by the run's ``--seed``, deterministic; ``solver=dense``
  gives the dense reference solver);
- bipartition at the eigenvector's mean; foreground is the side holding the patch with the
  largest ``|x|`` (the seed); only the seed's 4-connected component is kept;
- the mask is that component, upsampled to the image by nearest neighbour; the box given to
  CorLoc is that component's box.

Input (``mode``): ``saliency`` resizes the image (Lanczos) to the stride multiple nearest to
its size, as TokenCut's saliency code (``unsupervised_saliency_detection``) did;
``detection`` keeps full resolution and zero-pads (in the normalised space) to the next
multiple, as its object-discovery (CorLoc) code (``main_tokencut.py``) did. The default,
``auto``, is resolved when a run is set up (:meth:`TokenCut.configure_for_run`): ``detection``
when every evaluator of the run scores boxes (CorLoc), else ``saliency``; the resolved mode is
what the caches and ``results.json`` record. A method built outside a run resolves ``auto``
to ``saliency``.

``version`` 2: float32 features (the feature cache stored float16 before) and ``mode=auto``.
"""
from __future__ import annotations

import numpy as np

from harness.api import Option, Sample
from harness.patch_methods import Geometry, PatchFeatureMethod, component_box, seed_component
from harness.methods._spectral import fiedler_vector

MODES = {"saliency": "resize", "detection": "pad"}


def tokencut_affinity(features: np.ndarray, tau: float = 0.2, eps: float = 1e-5) -> np.ndarray:
    """TokenCut's graph: ``(N, N)`` float64, 1 where cosine similarity > ``tau``, else ``eps``.

    Parameters
    ----------
    features : np.ndarray
        ``(N, C)`` patch features.
    """
    feats = np.asarray(features, dtype=np.float32)
    feats = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    return np.where(feats @ feats.T > tau, 1.0, eps)


def ncut_bipartition(features: np.ndarray, grid: tuple[int, int], tau: float = 0.2, eps: float = 1e-5,
                     solver: str = "sparse", seed: int = 0) -> tuple[np.ndarray, np.ndarray, int]:
    """TokenCut's foreground on a patch grid.

    Parameters
    ----------
    features : np.ndarray
        ``(h * w, C)`` patch features, row-major over the grid.
    grid : tuple of int
        ``(h, w)``.
    tau, eps : float
        Affinity threshold and the weight below it.
    solver : {"sparse", "dense"}
        See :func:`~harness.methods._spectral.fiedler_vector`.
    seed : int
        Seeds the sparse solver's start vector (the run's ``--seed``).

    Returns
    -------
    bipartition : np.ndarray
        ``(h, w)`` bool, the side of the mean split that holds the seed.
    eigenvector : np.ndarray
        ``(h, w)`` float64, signed so that the foreground side is above its mean.
    seed : int
        Flat index of the patch with the largest ``|x|``.
    """
    _, x = fiedler_vector(tokencut_affinity(features, tau, eps), method=solver, seed=seed)
    seed = int(np.argmax(np.abs(x)))
    if x[seed] < x.mean():  # the seed defines the foreground side
        x = -x
    bipartition = x > x.mean()
    return bipartition.reshape(grid), x.reshape(grid), seed


def resolve_mode(mode: str, evaluators) -> str:
    """``auto`` -> ``detection`` when every evaluator scores boxes (CorLoc), else ``saliency``;
    an explicit mode is kept."""
    if mode != "auto":
        return mode
    boxes_only = bool(evaluators) and all(getattr(ev, "requires", None) == "boxes" for ev in evaluators)
    return "detection" if boxes_only else "saliency"


class TokenCut(PatchFeatureMethod):
    name = "tokencut"
    description = "TokenCut: normalized cut on last-block ViT keys, seed's component (Wang et al. 2022)"
    default_backbone = "dino-vits16"
    version = "2"
    options = (
        Option("tau", 0.2, "affinity threshold on cosine similarity"),
        Option("eps", 1e-5, "edge weight below the threshold"),
        Option("mode", "auto", "input handling: saliency (resize to the nearest stride multiple, TokenCut's "
               "saliency code), detection (full resolution, zero padding, its CorLoc code), or auto: detection "
               "when the run is scored with CorLoc only, else saliency", choices=("auto", *MODES)),
        Option("solver", "sparse", "eigen solver: sparse (ARPACK, default) or dense (reference)",
               choices=("sparse", "dense")),
    )

    def configure_for_run(self, evaluators) -> None:
        self.config["mode"] = resolve_mode(self.config["mode"], evaluators)

    def input_mode(self) -> str:
        return MODES[resolve_mode(self.config["mode"], ())]

    def uses_seed(self) -> bool:
        return self.config["solver"] == "sparse"  # ARPACK's start vector

    def segment(self, features: np.ndarray, geometry: Geometry, sample: Sample):
        c = self.config
        bipartition, _, seed = ncut_bipartition(features, geometry.grid, c["tau"], c["eps"], c["solver"],
                                                seed=self.run_seed)
        component = seed_component(bipartition, seed)
        return component, component_box(component)
