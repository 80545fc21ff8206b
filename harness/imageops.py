"""The two array operations the harness and its plugins share: resizing and connected components.

One function each, so that every caller resizes and labels the same way, and a difference
between two callers is a visible argument, not a second implementation.

Resizing has two families, because the literature used both and the numbers depend on it:

- ``antialias=False`` (OpenCV's ``cv2.resize``): a fixed-size kernel sampled at half-pixel
  centres, any float or integer dtype. The evaluation protocol resizes predictions this way
  (TokenCut's and MOVE's evaluation code), as do the mask adapters.
- ``antialias=True`` (Pillow's ``Image.resize``): the kernel widens with the shrink factor, on
  uint8 images (or float32 single-channel ones). The papers' data loaders (PIL, torchvision's
  ``Resize`` on PIL images) prepared their inputs this way: TokenCut's Lanczos resize,
  segmentation-tricks' ``Resize(335)``, Deep Spectral's colour grid, MOVE's prediction resize.
"""
from __future__ import annotations

import numpy as np

INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos")


def resize(array: np.ndarray, shape: tuple[int, int], interpolation: str = "bilinear",
           antialias: bool = False) -> np.ndarray:
    """``array`` (``(H, W)`` or ``(H, W, C)``) resized to ``shape = (height, width)``.

    Parameters
    ----------
    interpolation : str
        One of :data:`INTERPOLATIONS`.
    antialias : bool
        ``False``: OpenCV (see the module docstring); the dtype is kept (OpenCV rounds integer
        results). ``True``: Pillow, for uint8 ``(H, W)`` / ``(H, W, 3)`` or float32 ``(H, W)``.

    Returns
    -------
    np.ndarray
        The resized array; ``array`` itself when it already has that size.
    """
    height, width = (int(v) for v in shape)
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation {interpolation!r}: use one of {', '.join(INTERPOLATIONS)}")
    if height < 1 or width < 1:
        raise ValueError(f"cannot resize to {height}x{width}")
    if array.shape[:2] == (height, width):
        return array
    if antialias:
        from PIL import Image

        filters = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
                   "lanczos": Image.LANCZOS}
        if not (array.dtype == np.uint8 or (array.dtype == np.float32 and array.ndim == 2)):
            raise TypeError(f"Pillow resizes uint8 images and float32 single-channel arrays, not "
                            f"{array.dtype} {array.shape}")
        return np.asarray(Image.fromarray(array).resize((width, height), filters[interpolation]))
    import cv2

    flags = {"nearest": cv2.INTER_NEAREST, "bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC,
             "lanczos": cv2.INTER_LANCZOS4}
    return cv2.resize(array, (width, height), interpolation=flags[interpolation])


def label_components(mask: np.ndarray, connectivity: int = 4) -> tuple[np.ndarray, int]:
    """The connected components of a boolean ``(H, W)`` mask.

    Parameters
    ----------
    connectivity : int
        4 (edge neighbours: ``scipy.ndimage.label``'s default, which TokenCut and LOST used) or
        8 (edge and corner neighbours: the Two Tricks paper's box rule, Deep Spectral Methods).

    Returns
    -------
    labels : np.ndarray
        ``(H, W)`` int32: 0 for background, 1..count for the components, numbered in raster
        order of each component's first pixel (so ties broken "first" are broken the same way
        on every machine and library version).
    count : int
        The number of components.
    """
    from scipy import ndimage

    if connectivity not in (4, 8):
        raise ValueError(f"connectivity {connectivity}: use 4 or 8")
    structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    labels, count = ndimage.label(np.asarray(mask, dtype=bool), structure=structure)
    return labels.astype(np.int32, copy=False), int(count)


def component_boxes(labels: np.ndarray, count: int) -> np.ndarray:
    """``(count, 4)`` int64 boxes ``(x0, y0, x1, y1)`` (exclusive ends) of labels 1..count."""
    from scipy import ndimage

    slices = ndimage.find_objects(labels, max_label=count)
    return np.array([(xs.start, ys.start, xs.stop, ys.stop) for ys, xs in slices], dtype=np.int64).reshape(-1, 4)
