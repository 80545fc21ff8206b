"""The fast bilateral solver of Barron and Poole (ECCV 2016); "BF" in the Two Tricks paper's tables.

The soft mask ``t`` (the target) is replaced by the ``x`` that minimises

    lambda/2 * sum_ij W_ij (x_i - x_j)^2 + sum_i c_i (x_i - t_i)^2,

with ``W`` a bilateral affinity over pixel position (``sigma_spatial``), luma (``sigma_luma``)
and chroma (``sigma_chroma``). The problem is solved on a bilateral grid: every pixel is
splatted to its vertex (its XYLUV coordinates divided by the sigmas and truncated, i.e. floored
for the non-negative coordinates of an image in 0..255), the grid is blurred with a [1 2 1]
kernel along each of its dimensions (summed over dimensions), the blur is made bistochastic by
diagonal scaling, the sparse linear system

    A y = b,   A = lambda (D_m - D_n B D_n) + diag(S c),   b = S (c * t)

is solved with conjugate gradient and a Jacobi preconditioner, and ``x = S^T y`` is sliced back
to the pixels.

Settings follow TokenCut / MOVE: sigma_spatial 16, sigma_luma 16, sigma_chroma 8, lambda 256, a
uniform confidence of 0.999, PCG tolerance 1e-5, at most 25 iterations, diagonal floor 1e-5.
The post-processor's ``preset=segtricks`` is segmentation-tricks' ``get_bf_optimized_masks``
(the Two Tricks paper's "+ BF" rows): sigmas 24 / 4 / 4, the same lambda, confidence and CG, on
the colour values its ImageNet-normalised float32 tensor gives back (see :func:`imagenet_roundtrip`).

The colour transform is one BLAS matrix product of the ``(pixels, 3)`` RGB array, the product
the references compute: pixels whose luma or chroma falls exactly on a cell edge (grey pixels
with R = G = B = 16 k, for example) land in the cell the product's rounding gives, as in the
references (per-channel sums put 24 of 0005.jpg's pixels in the other cell).

The widely copied implementation no longer runs on current scipy (``cg(tol=...)`` was removed)
and hashes vertices into a float in base 255, which collides for images wider than
255 * sigma_spatial pixels; this module is written from the paper, with exact integer vertex
keys and scipy sparse arrays.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.api import Option, PostProcessor
from harness.errors import HarnessError
from harness.methods.guided_filter import check_pair

if TYPE_CHECKING:  # scipy is imported lazily so that `harness list` stays fast
    from scipy import sparse

__all__ = [
    "PRESETS",
    "BilateralGrid",
    "BilateralSolver",
    "BilateralSolverBF",
    "bilateral_grid",
    "bilateral_solve",
    "bilateral_system",
    "bistochastize",
    "image_yuv",
    "imagenet_roundtrip",
]

#: TokenCut's uniform confidence (``np.ones(...) * 0.999``).
DEFAULT_CONFIDENCE = 0.999

# ITU-R BT.601 RGB -> YCbCr (JPEG), chroma offset to 128 so that every coordinate is >= 0.
_RGB_TO_YUV = np.array(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]]
)
_YUV_OFFSET = np.array([0.0, 128.0, 128.0])
#: Rows per BLAS product: below OpenBLAS's threading threshold (4 * 65536 multiply-adds), so the
#: product stays on one thread (its threads stall on a busy machine); the rows are independent
#: 3-term dot products, so blocking does not change a bit.
_YUV_BLOCK = 16384

#: ImageNet's normalisation, as torchvision's ``Normalize`` receives it.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: The post-processor's presets: grid cell sizes, lambda and the colour values it sees.
PRESETS = {
    # TokenCut (get_saliency.py defaults) and MOVE (infer.py --bilateral)
    "harness": {"sigma_spatial": 16.0, "sigma_luma": 16.0, "sigma_chroma": 8.0, "lam": 256.0, "colour": "uint8"},
    # segmentation-tricks' get_bf_optimized_masks (bilateral_solver_output's defaults)
    "segtricks": {"sigma_spatial": 24.0, "sigma_luma": 4.0, "sigma_chroma": 4.0, "lam": 256.0, "colour": "imagenet"},
}


def image_yuv(image: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` float64 YUV (BT.601, chroma + 128) of an RGB image in 0..255.

    One BLAS product per block of rows, as the references' ``tensordot`` computes it, so that
    pixels on a cell edge round the same way.
    """
    rgb = np.ascontiguousarray(_as_rgb(image)).reshape(-1, 3)
    out = np.empty_like(rgb)
    for start in range(0, len(rgb), _YUV_BLOCK):
        np.matmul(rgb[start : start + _YUV_BLOCK], _RGB_TO_YUV.T, out=out[start : start + _YUV_BLOCK])
    return (out + _YUV_OFFSET).reshape(image.shape[0], image.shape[1], 3)


def imagenet_roundtrip(image: np.ndarray) -> np.ndarray:
    """The colour values segmentation-tricks hands its bilateral solver, from a uint8 image.

    Its evaluation holds the image as the float32 tensor ``Normalize(ToTensor(image))``; its
    ``get_bf_optimized_masks`` undoes the normalisation (``std * x + mean``) and multiplies
    by 255 in float32, so 48 comes back as 47.999996 or 48.000004: on a 4-unit luma grid that
    moves pixels across cell edges. The same float32 operations, in the same order.

    Returns
    -------
    np.ndarray
        ``(H, W, 3)`` float32, close to ``image`` (within 2e-5).
    """
    import torch

    rgb = _as_rgb(image)
    if not np.array_equal(rgb, np.rint(rgb)) or rgb.min() < 0 or rgb.max() > 255:
        raise ValueError("imagenet_roundtrip: the image must hold integer values in 0..255")
    x = torch.from_numpy(rgb.astype(np.uint8)).permute(2, 0, 1).contiguous()
    x = x.to(torch.float32).div(255)  # ToTensor
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1)
    x = x.sub(mean).div(std)  # Normalize
    x = std * x + mean  # and back
    return x.permute(1, 2, 0).numpy() * np.float32(255.0)


@dataclass
class BilateralGrid:
    """A bilateral grid: the splat matrix and the blur of its occupied vertices.

    Attributes
    ----------
    splat : scipy.sparse.csr_array
        ``(V, P)`` 0/1 matrix, pixel -> vertex (``splat @ x`` sums pixels per vertex; its
        transpose slices vertex values back to pixels).
    blur : scipy.sparse.csr_array
        ``(V, V)`` symmetric [1 2 1] blur summed over the grid's dimensions.
    shape : tuple of int
        The image's ``(H, W)``.
    """

    splat: "sparse.csr_array"
    blur: "sparse.csr_array"
    shape: tuple[int, int]

    @property
    def nvertices(self) -> int:
        return self.splat.shape[0]

    @property
    def npixels(self) -> int:
        return self.splat.shape[1]


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` float64 in 0..255; greyscale ``(H, W)`` / ``(H, W, 1)`` becomes R = G = B."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"bilateral grid: image must be (H, W, 3) or (H, W); got {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"bilateral grid: empty image {image.shape}")
    return image.astype(np.float64)


def bilateral_grid(
    image: np.ndarray,
    sigma_spatial: float = 16.0,
    sigma_luma: float = 16.0,
    sigma_chroma: float = 8.0,
) -> BilateralGrid:
    """Build the bilateral grid of an image.

    Parameters
    ----------
    image : np.ndarray
        ``(H, W, 3)`` RGB or ``(H, W)`` greyscale, values in 0..255 (uint8 or float).
    sigma_spatial, sigma_luma, sigma_chroma : float
        Cell sizes along x/y (pixels), luma and chroma (0..255 units). A coordinate's cell is
        its value divided by the size, truncated toward zero.

    Returns
    -------
    BilateralGrid
    """
    from scipy import sparse

    for key, value in (("sigma_spatial", sigma_spatial), ("sigma_luma", sigma_luma),
                       ("sigma_chroma", sigma_chroma)):
        if not value > 0:
            raise ValueError(f"bilateral grid: {key}={value!r} must be > 0")
    yuv = image_yuv(image)
    height, width = yuv.shape[:2]
    ys, xs = np.mgrid[:height, :width]
    # truncated toward zero, as the references do (a float image's -1e-6 is in cell 0)
    coords = np.stack(
        [
            np.trunc(xs / sigma_spatial),
            np.trunc(ys / sigma_spatial),
            np.trunc(yuv[..., 0] / sigma_luma),
            np.trunc(yuv[..., 1] / sigma_chroma),
            np.trunc(yuv[..., 2] / sigma_chroma),
        ],
        axis=-1,
    ).reshape(-1, 5).astype(np.int64)
    coords -= coords.min(axis=0)  # start every dimension at 0 so that the key radix stays small
    # exact integer keys: mixed radix with one spare slot per dimension for the +1 neighbour
    radix = coords.max(axis=0) + 2
    strides = np.concatenate([[1], np.cumprod(radix[:-1])])
    keys = coords @ strides
    vertex_keys, pixel_vertex = np.unique(keys, return_inverse=True)
    pixel_vertex = pixel_vertex.reshape(-1)  # numpy 2.0.x returned the input's shape here
    nvertices, npixels = len(vertex_keys), len(keys)
    splat = sparse.csr_array(
        (np.ones(npixels), (pixel_vertex, np.arange(npixels))), shape=(nvertices, npixels)
    )
    rows, cols = [], []
    for dim in range(5):
        # the +1 neighbour along each dimension; the blur is symmetric, so -1 is its transpose
        neighbour = vertex_keys + strides[dim]
        at = np.searchsorted(vertex_keys, neighbour).clip(max=nvertices - 1)
        hit = vertex_keys[at] == neighbour  # no carry: the radix leaves room for coord + 1
        rows.append(np.flatnonzero(hit))
        cols.append(at[hit])
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    centre = np.arange(nvertices)
    blur = sparse.csr_array(
        (
            np.concatenate([np.ones(2 * len(rows)), np.full(nvertices, 2.0 * 5)]),
            (np.concatenate([rows, cols, centre]), np.concatenate([cols, rows, centre])),
        ),
        shape=(nvertices, nvertices),
    )
    return BilateralGrid(splat, blur, (height, width))


def bistochastize(grid: BilateralGrid, iterations: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Diagonal scalings ``(n, m)`` that make ``diag(n) B diag(n)`` have row sums ``m``.

    Sinkhorn-style updates ``n <- sqrt(n * m / (B n))`` towards row sums equal to the vertex
    pixel counts ``m = S 1``; ``m`` is then recomputed as ``n * (B n)`` so that the smoothness
    term is an exact graph Laplacian however many iterations ran.

    Returns
    -------
    n, m : np.ndarray
        ``(V,)`` each.
    """
    counts = grid.splat @ np.ones(grid.npixels)
    n = np.ones(grid.nvertices)
    for _ in range(iterations):
        n = np.sqrt(n * counts / (grid.blur @ n))
    return n, n * (grid.blur @ n)


def bilateral_system(
    image: np.ndarray,
    target: np.ndarray,
    confidence: "np.ndarray | float" = DEFAULT_CONFIDENCE,
    *,
    sigma_spatial: float = 16.0,
    sigma_luma: float = 16.0,
    sigma_chroma: float = 8.0,
    lam: float = 256.0,
) -> tuple["sparse.csr_array", np.ndarray, np.ndarray, BilateralGrid]:
    """The bilateral-space linear system ``A y = b`` of the solver.

    Parameters
    ----------
    image : np.ndarray
        ``(H, W, 3)`` RGB or ``(H, W)`` greyscale reference, 0..255.
    target : np.ndarray
        ``(H, W)`` values to smooth (a soft mask).
    confidence : np.ndarray or float
        ``(H, W)`` non-negative per-pixel confidence, or one value for all pixels.
    sigma_spatial, sigma_luma, sigma_chroma, lam : float
        Grid cell sizes and the smoothness weight lambda.

    Returns
    -------
    A : scipy.sparse.csr_array
        ``(V, V)`` symmetric positive definite (for positive confidence).
    b : np.ndarray
        ``(V,)`` right-hand side ``S (c * t)``.
    splat_confidence : np.ndarray
        ``(V,)`` ``S c`` (the data term's diagonal).
    grid : BilateralGrid
    """
    from scipy import sparse

    grid = bilateral_grid(image, sigma_spatial, sigma_luma, sigma_chroma)
    target = np.asarray(target, dtype=np.float64)
    if target.shape != grid.shape:
        raise ValueError(f"bilateral solver: target {target.shape} must match the image's {grid.shape}")
    conf = np.broadcast_to(np.asarray(confidence, dtype=np.float64), grid.shape).reshape(-1)
    if (conf < 0).any() or not conf.any():
        raise ValueError("bilateral solver: confidence must be >= 0 and not all zero")
    if not lam >= 0:
        raise ValueError(f"bilateral solver: lam={lam!r} must be >= 0")
    n, m = bistochastize(grid)
    smooth = sparse.diags_array(m) - sparse.diags_array(n) @ grid.blur @ sparse.diags_array(n)
    splat_confidence = grid.splat @ conf
    A = (lam * smooth + sparse.diags_array(splat_confidence)).tocsr()
    b = grid.splat @ (conf * target.reshape(-1))
    return A, b, splat_confidence, grid


def bilateral_solve(
    image: np.ndarray,
    target: np.ndarray,
    confidence: "np.ndarray | float" = DEFAULT_CONFIDENCE,
    *,
    sigma_spatial: float = 16.0,
    sigma_luma: float = 16.0,
    sigma_chroma: float = 8.0,
    lam: float = 256.0,
    cg_tol: float = 1e-5,
    cg_maxiter: int = 25,
    diag_min: float = 1e-5,
) -> np.ndarray:
    """Smooth ``target`` with the fast bilateral solver, edge-aware with respect to ``image``.

    Parameters
    ----------
    image : np.ndarray
        ``(H, W, 3)`` RGB or ``(H, W)`` greyscale reference, 0..255.
    target : np.ndarray
        ``(H, W)`` soft mask (any real values; the output is a weighted average of them).
    confidence : np.ndarray or float, optional
        Per-pixel confidence ``(H, W)`` or one value; default TokenCut's uniform 0.999.
    sigma_spatial, sigma_luma, sigma_chroma : float, optional
        Bilateral grid cell sizes; defaults 16, 16, 8 (TokenCut / MOVE).
    lam : float, optional
        Smoothness weight lambda; default 256.
    cg_tol, cg_maxiter : optional
        Relative residual tolerance and iteration cap of the preconditioned CG; defaults
        1e-5 and 25 (TokenCut / MOVE).
    diag_min : float, optional
        Floor of ``diag(A)`` in the Jacobi preconditioner.

    Returns
    -------
    np.ndarray
        ``(H, W)`` float64 solution (not clamped).

    Shape
    -----
    - image: ``(H, W, 3)`` or ``(H, W)``
    - target, confidence: ``(H, W)``
    - output: ``(H, W)``
    """
    from scipy import sparse
    from scipy.sparse.linalg import cg

    A, b, splat_confidence, grid = bilateral_system(
        image, target, confidence, sigma_spatial=sigma_spatial, sigma_luma=sigma_luma,
        sigma_chroma=sigma_chroma, lam=lam,
    )
    preconditioner = sparse.diags_array(1.0 / np.maximum(A.diagonal(), diag_min))
    # start from each vertex's confidence-weighted mean target (zero where no confidence)
    y0 = np.divide(b, splat_confidence, out=np.zeros_like(b), where=splat_confidence > 0)
    y, _ = cg(A, b, x0=y0, rtol=cg_tol, atol=0.0, maxiter=cg_maxiter, M=preconditioner)
    return (grid.splat.T @ y).reshape(grid.shape)


class BilateralSolver(PostProcessor):
    """The fast bilateral solver as a post-processor (soft output, clamped to [0, 1]).

    ``preset`` picks the grid, lambda and colour handling (:data:`PRESETS`); options given
    explicitly override the preset's values. Works at the size of the image it is given (the
    references do not resize): 320 x 320 under ``--protocol segtricks``, as in the paper.
    """

    name = "bs"
    title = "BF"  # the Two Tricks paper's name; the alias 'bf' inherits it and shares the column
    report_order = 1
    description = "fast bilateral solver (Barron & Poole), TokenCut/MOVE settings; preset=segtricks: the Two Tricks '+ BF'"
    version = "2"
    options = (
        Option("preset", "harness", "harness: TokenCut/MOVE (sigmas 16/16/8, lambda 256, the uint8 colours); "
               "segtricks: segmentation-tricks' get_bf_optimized_masks, the Two Tricks paper's '+ BF' rows "
               "(sigmas 24/4/4, lambda 256, colour=imagenet); explicit options override it",
               choices=tuple(PRESETS)),
        Option("sigma_spatial", None, "grid cell size in pixels (preset: 16, segtricks 24)", type=float),
        Option("sigma_luma", None, "grid cell size in luma, 0..255 (preset: 16, segtricks 4)", type=float),
        Option("sigma_chroma", None, "grid cell size in chroma, 0..255 (preset: 8, segtricks 4)", type=float),
        Option("lam", None, "smoothness weight lambda (preset: 256)", type=float),
        Option("colour", None, "uint8: the image's values; imagenet: the values of the image's ImageNet-normalised "
               "float32 tensor un-normalised x 255 (47.999996 for 48), and the mask x 255 in float32, as "
               "segmentation-tricks computes (preset: uint8, segtricks imagenet)", choices=("uint8", "imagenet")),
        Option("cg_tol", 1e-5, "relative residual tolerance of the preconditioned CG"),
        Option("cg_maxiter", 25, "most CG iterations"),
    )

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        preset = PRESETS[self.config["preset"]]
        for key, value in preset.items():
            if self.config[key] is None:
                self.config[key] = value
        for key in ("sigma_spatial", "sigma_luma", "sigma_chroma", "cg_tol", "cg_maxiter"):
            if not self.config[key] > 0:
                raise HarnessError(f"{self.label()}: {key}={self.config[key]} must be > 0")
        if self.config["lam"] < 0:
            raise HarnessError(f"{self.label()}: lam={self.config['lam']} must be >= 0")

    def solve(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The solver's ``(H, W)`` float64 answer under these settings, not clamped."""
        check_pair(self.name, image, mask)
        settings = {k: v for k, v in self.config.items() if k not in ("preset", "colour")}
        if self.config["colour"] == "imagenet":
            # segmentation-tricks solves for the mask x 255 (float32) and divides the answer by 255
            target = (np.asarray(mask, dtype=np.float32) * np.float32(255.0)).astype(np.float64)
            return bilateral_solve(imagenet_roundtrip(image), target, **settings) / 255.0
        return bilateral_solve(image, mask, **settings)

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return np.clip(self.solve(image, mask), 0.0, 1.0).astype(np.float32)


class BilateralSolverBF(BilateralSolver):
    """The same solver under the Two Tricks paper's name, "BF"."""

    name = "bf"
    description = "alias of 'bs': the fast bilateral solver (the Two Tricks paper's 'BF')"
