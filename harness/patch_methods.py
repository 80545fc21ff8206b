"""Methods that segment one image from its backbone's patch features (TokenCut, LOST, Deep
Spectral Methods, and any third-party method built on :class:`PatchFeatureMethod`): preparing
an image for the backbone, reading its patch features through the run's feature stage
(``RunContext.features``, cached), and mapping a patch-grid mask or box back to the image.

Three input preparations, as the original papers did them:

- ``resize``: resize (Lanczos) to the multiple of the stride nearest to each side
  (TokenCut's saliency protocol);
- ``pad``: keep full resolution and pad right/bottom up to the next multiple of the stride
  with zeros *in the normalised space* (the backbone's mean colour), as LOST and TokenCut's
  object discovery padded after normalising;
- ``crop``: keep full resolution and drop the right/bottom remainder (Deep Spectral Methods).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import ClassVar, Sequence

import numpy as np

from harness.api import FeatureRequest, Method, Prediction, RunContext, Sample
from harness.boxes import mask_box
from harness.cache import array_digest
from harness.errors import HarnessError
from harness.imageops import label_components, resize

PREPARATIONS = ("resize", "pad", "crop")
#: The environment variable that caps the memory of one image's patch graph, in GiB.
MAX_GRAPH_ENV = "HARNESS_MAX_GRAPH_GIB"
_DEFAULT_MAX_GRAPH_GIB = 8.0


def max_graph_bytes() -> float:
    """The most memory one image's patch graph may take (``$HARNESS_MAX_GRAPH_GIB``, default 8 GiB)."""
    text = os.environ.get(MAX_GRAPH_ENV, "")
    try:
        gib = float(text) if text else _DEFAULT_MAX_GRAPH_GIB
    except ValueError:
        gib = math.nan
    if not math.isfinite(gib) or gib <= 0:
        raise HarnessError(f"{MAX_GRAPH_ENV}={text!r}: give a positive number of GiB")
    return gib * 2**30


@dataclass(frozen=True)
class Geometry:
    """How an image was turned into a backbone input and a patch grid.

    Attributes
    ----------
    mode : str
        One of :data:`PREPARATIONS`.
    image_size : tuple of int
        ``(H, W)`` of the original image.
    input_size : tuple of int
        ``(H', W')`` of the backbone input (multiples of ``stride``).
    stride : int
        The backbone's stride.
    """

    mode: str
    image_size: tuple[int, int]
    input_size: tuple[int, int]
    stride: int

    @property
    def grid(self) -> tuple[int, int]:
        """``(h, w)`` of the feature grid."""
        return self.input_size[0] // self.stride, self.input_size[1] // self.stride

    @property
    def tag(self) -> str:
        """The preparation and input size, as it keys the feature cache."""
        suffix = "-lanczos" if self.mode == "resize" else ("-mean" if self.mode == "pad" else "")
        return f"{self.mode}{suffix}:{self.input_size[0]}x{self.input_size[1]}"

    def mask_to_image(self, grid_mask: np.ndarray) -> np.ndarray:
        """Nearest-neighbour upsampling of an ``(h, w)`` grid mask to ``(H, W)`` float32."""
        height, width = self.image_size
        h, w = self.grid
        if self.mode == "resize":
            rows = np.arange(height) * h // height
            cols = np.arange(width) * w // width
        else:  # pad / crop: each cell covers stride x stride pixels; pixels past a crop take the last cell
            rows = np.minimum(np.arange(height) // self.stride, h - 1)
            cols = np.minimum(np.arange(width) // self.stride, w - 1)
        return np.asarray(grid_mask, dtype=np.float32)[np.ix_(rows, cols)]

    def box_to_image(self, box: tuple[int, int, int, int]) -> tuple[float, float, float, float]:
        """A grid box ``(x0, y0, x1, y1)`` (x1, y1 exclusive) in image pixels, clipped to the image."""
        height, width = self.image_size
        h, w = self.grid
        x0, y0, x1, y1 = box
        if self.mode == "resize":
            sx, sy = width / w, height / h
        else:
            sx = sy = float(self.stride)
        return (min(x0 * sx, width), min(y0 * sy, height), min(x1 * sx, width), min(y1 * sy, height))


def geometry_for(image_size: tuple[int, int], stride: int, mode: str) -> Geometry:
    """The input size that ``mode`` gives an image of ``image_size`` (see module docstring)."""
    height, width = image_size
    if mode == "resize":  # round() as TokenCut's resize: the nearest multiple
        size = (max(1, round(height / stride)) * stride, max(1, round(width / stride)) * stride)
    elif mode == "pad":
        size = (math.ceil(height / stride) * stride, math.ceil(width / stride) * stride)
    elif mode == "crop":  # an image smaller than one patch is padded instead
        size = (max(1, height // stride) * stride, max(1, width // stride) * stride)
    else:
        raise ValueError(f"unknown preparation {mode!r}; use one of {PREPARATIONS}")
    return Geometry(mode, (height, width), size, stride)


def prepare_input(image: np.ndarray, geometry: Geometry, mean: Sequence[float]) -> np.ndarray:
    """The backbone input ``(H', W', 3)`` float32 in [0, 1] for an ``(H, W, 3)`` uint8 image."""
    target_h, target_w = geometry.input_size
    if geometry.mode == "resize":  # TokenCut's PIL Lanczos resize
        return resize(image, (target_h, target_w), "lanczos", antialias=True).astype(np.float32) / 255.0
    out = np.empty((target_h, target_w, 3), dtype=np.float32)
    out[:] = np.asarray(mean, dtype=np.float32)
    h, w = min(target_h, image.shape[0]), min(target_w, image.shape[1])
    out[:h, :w] = image[:h, :w].astype(np.float32) / 255.0
    return out


#: Grid box ``(x0, y0, x1, y1)`` (exclusive ends) of a non-empty boolean ``(h, w)`` mask.
component_box = mask_box


def seed_component(mask: np.ndarray, seed: int) -> np.ndarray:
    """The 4-connected component of boolean ``(h, w)`` ``mask`` holding flat index ``seed``
    (``scipy.ndimage.label``'s default connectivity, as TokenCut and LOST used)."""
    labels, _ = label_components(mask, connectivity=4)
    label = labels.flat[seed]
    if label == 0:  # the seed is outside the mask: keep the seed patch alone
        single = np.zeros(mask.shape, dtype=bool)
        single.flat[seed] = True
        return single
    return labels == label


class PatchFeatureMethod(Method):
    """A method that segments one image from its backbone's patch features.

    Subclasses set :attr:`preparation` (or override :meth:`input_mode`) and implement
    :meth:`segment`, which gets the ``(h * w, C)`` features and returns a grid mask and box.
    In a pipelined run the features are extracted in batches in the main process
    (:meth:`device_stage`) and :meth:`segment` runs in a worker process (:meth:`cpu_stage`),
    so a subclass gets the pipeline without writing anything for it.
    Features come from ``RunContext.features`` (the run's feature cache); ``self.backbone`` is
    the run's backbone and ``self.run_seed`` the run's ``--seed`` (for a random start, e.g. an
    eigen solver's: a subclass that uses it returns True from :meth:`uses_seed`).
    """

    uses_backbone: ClassVar[bool] = True
    default_backbone: ClassVar[str | None] = "dino-vits16"
    preparation: ClassVar[str] = "pad"
    #: The run's seed (``RunContext.seed``), set by :meth:`setup`.
    run_seed: int = 0

    def input_mode(self) -> str:
        return self.preparation

    #: How many ``(N, N)`` float64 matrices of the patch graph are alive at once, at most.
    graph_matrices: ClassVar[int] = 3
    #: The fewest patches a graph needs (a Fiedler vector needs two nodes).
    min_patches: ClassVar[int] = 2

    def check_image_sizes(self, sizes: dict[str, tuple[int, int]], backbone=None) -> None:
        """Refuse images whose patch graph is too small to cut or too large for memory."""
        if backbone is None:
            return
        for sample_id, size in sizes.items():
            self._check_graph(sample_id, size, int(backbone.stride))

    def _check_graph(self, sample_id: str, size: tuple[int, int], stride: int) -> None:
        grid = geometry_for(size, stride, self.input_mode()).grid
        patches = grid[0] * grid[1]
        if patches < self.min_patches:
            raise HarnessError(
                f"image {sample_id!r} is {size[1]}x{size[0]} pixels: {grid[1]}x{grid[0]} patches of "
                f"{stride} px, too few for {self.name}'s patch graph (at least {self.min_patches}); "
                f"leave it out of the dataset"
            )
        needed = self.graph_matrices * 8 * patches**2
        limit = max_graph_bytes()
        if needed > limit:
            raise HarnessError(
                f"image {sample_id!r} is {size[1]}x{size[0]} pixels: {patches} patches of {stride} px, whose "
                f"graph needs about {needed / 2**30:.1f} GiB, above the limit of {limit / 2**30:.1f} GiB "
                f"({MAX_GRAPH_ENV}); downscale the image or raise {MAX_GRAPH_ENV}"
            )

    def setup(self, context: RunContext) -> None:
        from harness.backbones.features import features_for

        if context.backbone is None:
            raise HarnessError(f"method {self.name!r} needs a backbone (see `harness list backbones`)")
        self.backbone = context.backbone
        self.run_seed = int(context.seed)
        self.extractor = features_for(context)

    def patch_features(self, samples: Sequence[Sample]) -> list[tuple[np.ndarray, Geometry]]:
        """``(h * w, C)`` float32 features (row-major over the grid) and the geometry, per sample."""
        if not hasattr(self, "extractor"):
            raise HarnessError(f"method {self.name!r}: call setup(context) before predicting")
        stride, mode = int(self.backbone.stride), self.input_mode()
        for s in samples:
            self._check_graph(s.id, s.image.shape[:2], stride)
        geometries = [geometry_for(s.image.shape[:2], stride, mode) for s in samples]
        requests = [
            FeatureRequest(s.id, array_digest(s.image), g.tag,
                           (lambda s=s, g=g: prepare_input(s.image, g, self.backbone.mean)))
            for s, g in zip(samples, geometries)
        ]
        grids = self.extractor.grids(requests)
        out = []
        for grid, geometry in zip(grids, geometries):
            if grid.shape[1:] != geometry.grid:
                raise HarnessError(
                    f"backbone {self.backbone.name!r} returned a {grid.shape[1]}x{grid.shape[2]} grid for a "
                    f"{geometry.input_size[0]}x{geometry.input_size[1]} input; expected {geometry.grid}"
                )
            out.append((grid.reshape(grid.shape[0], -1).T.copy(), geometry))
        return out

    def segment(self, features: np.ndarray, geometry: Geometry, sample: Sample
                ) -> tuple[np.ndarray, tuple[int, int, int, int]]:
        """The foreground ``(h, w)`` boolean grid mask and its grid box for one image."""
        raise NotImplementedError

    def device_stage(self, samples: Sequence[Sample]) -> list[tuple[np.ndarray, Geometry]]:
        """The batched stage: the patch features and geometry of each sample (:meth:`patch_features`)."""
        return self.patch_features(samples)

    def cpu_stage(self, sample: Sample, staged: tuple[np.ndarray, Geometry]) -> Prediction:
        """The per-image stage (in a worker process of a pipelined run): :meth:`segment` on the
        features, the grid mask and box mapped back to the image."""
        features, geometry = staged
        grid_mask, box = self.segment(features, geometry, sample)
        return Prediction(geometry.mask_to_image(grid_mask), geometry.box_to_image(box))

    def predict_batch(self, samples: Sequence[Sample]) -> list[Prediction]:
        return [self.cpu_stage(s, staged) for s, staged in zip(samples, self.device_stage(samples))]

    def predict(self, sample: Sample) -> Prediction:
        return self.predict_batch([sample])[0]
