"""The guided filter of He, Sun and Tang (ECCV 2010 / TPAMI 2013), the Two Tricks paper's trick 1.

A soft mask ``p`` is refined with a grey guide ``I`` (the mean of the RGB channels in [0, 1]):
in every (2r+1)^2 window the output is a linear function of the guide, ``q = a I + b``, with
``a = cov(I, p) / (var(I) + eps)`` and ``b = mean(p) - a mean(I)``; ``a`` and ``b`` are then
averaged over the windows covering each pixel. Window means are normalised by the count of
pixels that lie inside the image (the paper's ``N = boxfilter(ones)``), so borders need no
padding rule.

Own implementation, not ``kornia.filters.guided_blur``: kornia pads the borders (reflect,
replicate, circular or zeros counted in the mean) and never divides by the valid-pixel count,
and its reflect padding fails on images smaller than the radius.
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.api import Option, PostProcessor, RunContext
from harness.errors import HarnessError

if TYPE_CHECKING:  # torch is imported lazily so that `harness list` stays fast
    import torch

__all__ = ["GuidedFilter", "box_mean", "guided_filter", "guided_filter_cpu"]


def _counts(n: int, radius: int, like: "torch.Tensor") -> "torch.Tensor":
    """How many pixels of a length-``n`` axis each window ``[i - r, i + r]`` covers."""
    import torch

    i = torch.arange(n, device=like.device)
    return ((i + radius).clamp(max=n - 1) - (i - radius).clamp(min=0) + 1).to(like.dtype)


def _window_sum_(x: "torch.Tensor", radius: int, dim: int, work: "torch.Tensor") -> None:
    """Replace ``x`` by its sums over ``[i - r, i + r]`` along ``dim`` (clipped to the axis).

    Prefix sums and one subtraction per pixel (cost independent of the radius); ``work`` is a
    buffer of ``x``'s shape, re-used so that no image-sized tensor is allocated per call.
    """
    import torch

    n = x.shape[dim]
    torch.cumsum(x, dim, out=work)
    if n <= 2 * radius + 1:  # every window reaches a border: gather with clamped indices
        i = torch.arange(n, device=x.device)
        hi = work.index_select(dim, (i + radius).clamp(max=n - 1))
        lo = work.index_select(dim, (i - radius - 1).clamp(min=0))
        keep = (i > radius).to(x.dtype).view([-1] + [1] * (x.ndim - 1 - dim % x.ndim))
        x.copy_(hi.addcmul_(lo, keep, value=-1))
        return
    inner = n - 2 * radius - 1
    x.narrow(dim, 0, radius + 1).copy_(work.narrow(dim, radius, radius + 1))
    torch.sub(work.narrow(dim, 2 * radius + 1, inner), work.narrow(dim, 0, inner),
              out=x.narrow(dim, radius + 1, inner))
    torch.sub(work.narrow(dim, n - 1, 1), work.narrow(dim, inner, radius),
              out=x.narrow(dim, n - radius, radius))


def _box_mean_(x: "torch.Tensor", radius: int, work: "torch.Tensor") -> "torch.Tensor":
    """In-place :func:`box_mean` of ``x`` (``work``: a buffer of the same shape)."""
    height, width = x.shape[-2:]
    _window_sum_(x, radius, -1, work)
    _window_sum_(x, radius, -2, work)
    inv_count = (1 / _counts(height, radius, x))[:, None] * (1 / _counts(width, radius, x))
    return x.mul_(inv_count)


def _window_sum(x: "torch.Tensor", radius: int, dim: int) -> "torch.Tensor":
    """Out-of-place (differentiable) form of :func:`_window_sum_`."""
    import torch

    n = x.shape[dim]
    c = x.cumsum(dim)
    i = torch.arange(n, device=x.device)
    hi = c.index_select(dim, (i + radius).clamp(max=n - 1))
    lo = c.index_select(dim, (i - radius - 1).clamp(min=0))
    keep = (i > radius).to(x.dtype).view([-1] + [1] * (x.ndim - 1 - dim % x.ndim))
    return hi - lo * keep


def box_mean(x: "torch.Tensor", radius: int) -> "torch.Tensor":
    """Mean over each ``(2r+1) x (2r+1)`` window, normalised by the pixels inside the image.

    Parameters
    ----------
    x : torch.Tensor
        Floating tensor; the last two dimensions are (H, W).
    radius : int
        Window radius ``r >= 0``.

    Returns
    -------
    torch.Tensor
        Same shape and dtype as ``x``; differentiable.

    Shape
    -----
    - x: ``(*, H, W)``
    - output: ``(*, H, W)``
    """
    height, width = x.shape[-2:]
    summed = _window_sum(_window_sum(x, radius, -1), radius, -2)
    return summed / (_counts(height, radius, x)[:, None] * _counts(width, radius, x))


def _check(guide: "torch.Tensor", input: "torch.Tensor", radius: int) -> None:
    if guide.ndim != 4 or input.ndim != 4:
        raise ValueError(
            f"guided_filter: guide and input must be (B, C, H, W); got {tuple(guide.shape)} and "
            f"{tuple(input.shape)}"
        )
    if guide.shape[0] != input.shape[0] or guide.shape[-2:] != input.shape[-2:]:
        raise ValueError(
            f"guided_filter: guide {tuple(guide.shape)} and input {tuple(input.shape)} must have "
            f"the same batch size, height and width"
        )
    if not (guide.is_floating_point() and input.is_floating_point()):
        raise TypeError(
            f"guided_filter: guide and input must be floating tensors (guide in [0, 1]); got "
            f"{guide.dtype} and {input.dtype}"
        )
    if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or radius < 0:
        raise ValueError(f"guided_filter: radius must be an integer >= 0; got {radius!r}")
    if guide.device != input.device:
        raise ValueError(f"guided_filter: guide on {guide.device} but input on {input.device}")


def guided_filter(
    guide: "torch.Tensor",
    input: "torch.Tensor",
    radius: int = 9,
    eps: "float | torch.Tensor" = 1e-3,
) -> "torch.Tensor":
    """Guided filter with a grey guide and valid-pixel-normalised window means.

    A guide with several channels (RGB in [0, 1]) is reduced to their mean, the Two Tricks
    paper's grey guide; each input channel is filtered independently. Works on any device;
    differentiable in ``guide``, ``input`` and a tensor ``eps`` (a faster in-place path is
    taken when no gradient is needed).

    Parameters
    ----------
    guide : torch.Tensor
        Guide image, ``(B, 1, H, W)`` or ``(B, 3, H, W)`` in [0, 1].
    input : torch.Tensor
        The image to filter (e.g. soft masks), ``(B, C, H, W)``.
    radius : int, optional
        Window radius ``r``; windows are ``(2r+1) x (2r+1)``. Default 9.
    eps : float or torch.Tensor, optional
        Regularisation added to the guide's local variance, in squared guide units (guide in
        [0, 1]); a tensor of shape ``(B,)`` gives one value per sample. Default 1e-3.

    Returns
    -------
    torch.Tensor
        The filtered input, ``(B, C, H, W)``, in ``input``'s dtype (not clamped). Computed in
        the wider float dtype of the two, at least float32.

    Raises
    ------
    ValueError
        Wrong ranks, mismatched sizes or devices, or a negative radius.
    TypeError
        Non-floating tensors.

    Shape
    -----
    - guide: ``(B, C_g, H, W)``
    - input: ``(B, C, H, W)``
    - output: ``(B, C, H, W)``

    Examples
    --------
    >>> import torch
    >>> image = torch.rand(2, 3, 64, 48)
    >>> masks = torch.rand(2, 1, 64, 48)
    >>> guided_filter(image, masks, radius=9, eps=1e-3).shape
    torch.Size([2, 1, 64, 48])
    """
    import torch

    _check(guide, input, radius)
    dtype = torch.promote_types(guide.dtype, input.dtype)
    if dtype in (torch.float16, torch.bfloat16):  # prefix sums need more than 8-11 mantissa bits
        dtype = torch.float32
    guide = guide.to(dtype)
    if guide.shape[1] > 1:
        guide = guide.mean(1, keepdim=True)
    p = input.to(dtype)
    if isinstance(eps, torch.Tensor):
        eps = eps.to(device=p.device, dtype=dtype).reshape(-1, 1, 1, 1)
    radius = int(radius)
    needs_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (guide, p, eps) if isinstance(t, torch.Tensor)
    )
    if needs_grad:
        out = _guided_filter_autograd(guide, p, radius, eps)
    elif p.device.type == "cpu" and p.shape[0] > 1:
        # image by image on a CPU: the working set stays in cache (4.5 vs 7.5 ms per 400x300 image)
        per_sample = isinstance(eps, torch.Tensor) and eps.shape[0] > 1
        out = torch.cat([
            _guided_filter_inplace(guide[i : i + 1], p[i : i + 1], radius, eps[i : i + 1] if per_sample else eps)
            for i in range(p.shape[0])
        ])
    else:
        out = _guided_filter_inplace(guide, p, radius, eps)
    return out.to(input.dtype)


def _guided_filter_autograd(guide, p, radius, eps):
    import torch

    channels = p.shape[1]
    means = box_mean(torch.cat([p, guide * p, guide, guide * guide], 1), radius)
    mean_p, mean_ip, mean_i, mean_ii = means.split([channels, channels, 1, 1], 1)
    a = (mean_ip - mean_i * mean_p) / (mean_ii - mean_i * mean_i + eps)
    b = mean_p - a * mean_i
    mean_b, mean_a = box_mean(torch.cat([b, a], 1), radius).split([channels, channels], 1)
    return torch.addcmul(mean_b, mean_a, guide)


_scratch = threading.local()


def _scratch_pair(shape: tuple, like: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
    """Two scratch tensors; on a CPU the last pair is kept per thread, because faulting in
    fresh pages costs ~1.8 ms of a 400x300 call (CUDA's caching allocator already re-uses)."""
    import torch

    if like.device.type != "cpu":
        return (torch.empty(shape, dtype=like.dtype, device=like.device),
                torch.empty(shape, dtype=like.dtype, device=like.device))
    key = (shape, like.dtype)
    kept = getattr(_scratch, "pair", None)
    if kept is None or kept[0] != key:
        kept = (key, torch.empty(shape, dtype=like.dtype), torch.empty(shape, dtype=like.dtype))
        _scratch.pair = kept
    return kept[1], kept[2]


def _guided_filter_inplace(guide, p, radius, eps):
    """The same arithmetic as :func:`_guided_filter_autograd` in two scratch buffers."""
    import torch

    batch, channels, height, width = p.shape
    buf, work = _scratch_pair((batch, 2 * channels + 2, height, width), p)
    mean_p, mean_ip, mean_i, mean_ii = buf.split([channels, channels, 1, 1], 1)
    mean_p.copy_(p)
    torch.mul(p, guide, out=mean_ip)
    mean_i.copy_(guide)
    torch.mul(guide, guide, out=mean_ii)
    _box_mean_(buf, radius, work)
    var_i = mean_ii.addcmul_(mean_i, mean_i, value=-1).add_(eps)
    a = mean_ip.addcmul_(mean_i, mean_p, value=-1).div_(var_i)  # cov(I, p) / (var(I) + eps)
    mean_p.addcmul_(a, mean_i, value=-1)  # b = mean(p) - a mean(I), written over mean(p)
    coeffs = buf.narrow(1, 0, 2 * channels)  # (b, a)
    _box_mean_(coeffs, radius, work.narrow(1, 0, 2 * channels))
    mean_b, mean_a = coeffs.split([channels, channels], 1)
    return torch.addcmul(mean_b, mean_a, guide)


_cpu = threading.local()

_ONES_13 = np.ones((1, 3))
_INT_LIMIT = 2**31 - 1


class _CpuBuffers:
    """Per-thread scratch for :func:`guided_filter_cpu` at one (H, W, radius): fresh pages would
    cost ~1 ms of a 400x300 call. Also the border strips where a normalised ``cv2.boxFilter``
    (which always divides by ``(2r+1)^2``) needs the factor ``(2r+1)^2 / count``."""

    def __init__(self, height: int, width: int, radius: int) -> None:
        shape = (height, width)
        self.key = (height, width, radius)
        self.rgb = np.empty((height, width, 3), np.float32)
        self.g32 = np.empty(shape, np.float32)  # the integer guide G (exact in float32)
        self.g = np.empty(shape)  # G in float64
        self.ints = [np.empty(shape, np.int32) for _ in range(4)]  # G, G^2, p, G p (binary p)
        self.int_stack = np.empty((height, width, 4), np.int32)
        self.floats = [np.empty(shape) for _ in range(3)]  # G^2, p, G p
        self.float_stack = np.empty((height, width, 4))
        self.means = np.empty((height, width, 4))
        self.planes = [np.empty(shape) for _ in range(7)]
        self.flags = np.empty(shape, np.uint8)
        side = 2 * radius + 1

        def factor(n: int) -> np.ndarray:
            i = np.arange(n)
            return side / (np.minimum(i + radius, n - 1) - np.maximum(i - radius, 0) + 1)

        full = np.outer(factor(height), factor(width))
        top, left = min(radius, height), min(radius, width)
        bottom, right = max(height - radius, top), max(width - radius, left)
        self.strips = []  # (rows, cols) views of the image where the count is below (2r+1)^2
        for rows, cols in ((slice(0, top), slice(None)), (slice(bottom, height), slice(None)),
                           (slice(top, bottom), slice(0, left)), (slice(top, bottom), slice(right, width))):
            f = full[rows, cols]
            if f.size:
                self.strips.append((rows, cols, np.ascontiguousarray(f), np.ascontiguousarray(np.repeat(f[..., None], 4, 2))))
        # the integer path's window sums of G^2 (<= 765^2 each) stay below 2^31, with a row's
        # worth of margin for the running column sums
        self.int_ok = (min(side, height) + 1) * min(side, width) * 765**2 <= _INT_LIMIT

    def box_mean(self, src: np.ndarray, dst: np.ndarray, ddepth: int = -1) -> np.ndarray:
        """``dst`` = window means of ``src`` over the pixels inside the image (any channels)."""
        import cv2

        side = 2 * self.key[2] + 1
        cv2.boxFilter(src, ddepth, (side, side), dst=dst, normalize=True, borderType=cv2.BORDER_CONSTANT)
        for rows, cols, factor, factor4 in self.strips:
            view = dst[rows, cols]
            cv2.multiply(view, factor4 if dst.ndim == 3 else factor, dst=view)
        return dst


def _cpu_buffers(height: int, width: int, radius: int) -> _CpuBuffers:
    kept = getattr(_cpu, "kept", None)
    if kept is None or kept.key != (height, width, radius):
        kept = _cpu.kept = _CpuBuffers(height, width, radius)
    return kept


def _is_binary(mask: np.ndarray, flags: np.ndarray) -> bool:
    """Every value is exactly 0 or 1 (a NaN or any other value is not)."""
    import cv2

    if mask.dtype not in (np.float32, np.float64) or mask.size <= 4:  # cv2 takes a 1x1 array for a scalar
        return False
    cv2.compare(mask, 1.0, cv2.CMP_EQ, dst=flags)
    return cv2.countNonZero(flags) == cv2.countNonZero(mask)


def _means_int(b: _CpuBuffers, mask: np.ndarray) -> None:
    """Window means of (G, G^2, p, G p) for a 0/1 mask: exact int32 window sums (one 4-channel
    box filter), then one rounding to float64 in the normalisation."""
    import cv2

    g, g2, p, gp = b.ints
    cv2.multiply(b.g32, 1.0, dst=g, dtype=cv2.CV_32S)
    cv2.multiply(g, g, dst=g2)
    cv2.multiply(mask, 1.0, dst=p, dtype=cv2.CV_32S)
    cv2.multiply(g, p, dst=gp)
    cv2.merge(b.ints, dst=b.int_stack)
    b.box_mean(b.int_stack, b.means, cv2.CV_64F)


def _means_float(b: _CpuBuffers, mask: np.ndarray) -> None:
    """Window means of (G, G^2, p, G p) in float64 (one 4-channel box filter). The sums of G and
    G^2 are exact; so are those of p and G p when p's values are multiples of 2^-34 (a uint8
    mask / 255 in float32 is one of 2^-31), because float64 sums of such numbers are."""
    import cv2

    g2, p, gp = b.floats
    np.copyto(p, mask, casting="unsafe")
    cv2.multiply(b.g, b.g, dst=g2)
    cv2.multiply(b.g, p, dst=gp)
    cv2.merge([b.g, g2, p, gp], dst=b.float_stack)
    b.box_mean(b.float_stack, b.means)


def guided_filter_cpu(image: np.ndarray, mask: np.ndarray, radius: int = 9, eps: float = 1e-3) -> np.ndarray:
    """:func:`guided_filter` of one mask with :func:`image_guide`'s grey guide, in float64 with
    OpenCV core functions (no torch, no ximgproc): the plugin's CPU path.

    The guide is kept as the integer ``G = R + G + B`` (``I = G / 765``; a grey image's own
    values, ``I = G / 255``) and the filter is written on G's scale (``eps`` times the scale
    squared), so every first-round product is an exact integer. The four first-round window
    means (of G, G^2, p and G p) come from one 4-channel ``cv2.boxFilter``: with exact int32 sums
    when the mask is binary (0/1; "the integer path"), in float64 otherwise. Means divide by
    the count of in-image pixels (normalised box filter, border strips rescaled), so borders and
    images smaller than the window follow :func:`box_mean`'s definition. Agrees with the torch
    float64 path to ~1e-13.

    Parameters
    ----------
    image : np.ndarray
        ``(H, W, 3)`` RGB, ``(H, W, 1)`` or ``(H, W)``, 0..255 (uint8; other dtypes take the
        float guide of :func:`image_guide` and the float path).
    mask : np.ndarray
        ``(H, W)`` soft mask.
    radius, eps : see :func:`guided_filter`.

    Returns
    -------
    np.ndarray
        ``(H, W)`` float64, not clamped; a view of a per-thread buffer that the next call on
        this thread overwrites (copy it to keep it).
    """
    import cv2

    height, width = mask.shape
    b = _cpu_buffers(height, width, radius)
    if image.dtype == np.uint8:
        if image.ndim == 3 and image.shape[2] == 3:
            np.copyto(b.rgb, image, casting="unsafe")
            cv2.transform(b.rgb, _ONES_13, dst=b.g32)  # R + G + B, exact in float32
            scale = 765.0
        else:
            np.copyto(b.g32, image.reshape(height, width), casting="unsafe")
            scale = 255.0
        np.copyto(b.g, b.g32)
        integer = b.int_ok and _is_binary(mask, b.flags)
    else:
        np.copyto(b.g, image_guide(image, np.float64))
        scale, integer = 1.0, False
    _cpu.path = "int" if integer else "float"
    if integer:
        _means_int(b, mask)
    else:
        _means_float(b, mask)
    m_g, m_gg, m_p, m_gp, tmp, a, c = b.planes
    cv2.split(b.means, [m_g, m_gg, m_p, m_gp])
    cov = cv2.subtract(m_gp, cv2.multiply(m_g, m_p, dst=tmp), dst=m_gp)
    var_eps = cv2.addWeighted(m_gg, 1.0, cv2.multiply(m_g, m_g, dst=tmp), -1.0, float(eps) * scale * scale, dst=m_gg)
    cv2.divide(cov, var_eps, dst=a)  # the slope on G's scale: a_I / scale
    cv2.subtract(m_p, cv2.multiply(a, m_g, dst=tmp), dst=c)  # b = mean(p) - a mean(G)
    mean_a, mean_b = b.box_mean(a, m_gp), b.box_mean(c, m_gg)
    return cv2.add(cv2.multiply(mean_a, b.g, dst=tmp), mean_b, dst=tmp)


def image_guide(image: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
    """``(H, W)`` grey guide in [0, 1] (float32 unless ``dtype``): the mean of an RGB uint8
    image's channels."""
    if image.ndim == 2:
        return image.astype(dtype) / 255.0
    return image.astype(dtype).mean(axis=-1) / 255.0


class GuidedFilter(PostProcessor):
    """The guided filter as a post-processor: grey guide, valid-count window means, clamp."""

    name = "gf"
    title = "GF"
    report_order = 0
    version = "2"
    description = "guided filter (He et al.), grey guide, radius 9, eps 1e-3 (Two Tricks trick 1)"
    options = (
        Option("radius", 9, "window radius r (windows are 2r+1 pixels wide)"),
        Option("eps", 1e-3, "regularisation on the guide's variance (guide in [0, 1])"),
    )

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        if self.config["radius"] < 0:
            raise HarnessError(f"{self.label()}: radius={self.config['radius']} must be >= 0")
        if self.config["eps"] <= 0:
            raise HarnessError(f"{self.label()}: eps={self.config['eps']} must be > 0")
        self.device = "cpu"

    def setup(self, context: RunContext) -> None:
        self.device = context.device

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        check_pair(self.name, image, mask)
        if str(self.device) == "cpu":
            # OpenCV core in float64, ~3x the torch path's speed on one image; same numbers to ~1e-12
            out = guided_filter_cpu(image, mask, self.config["radius"], self.config["eps"])
            return np.clip(out, 0.0, 1.0, out=out).astype(np.float32)
        import torch

        # float64 (+0.5 ms per 320 x 320 image): float32 prefix sums lose up to 1.3e-5 on the parity
        # crops, more than the reference's own float32 rounding (4e-6)
        guide = torch.from_numpy(image_guide(image, np.float64)).to(self.device)[None, None]
        soft = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float64)).to(self.device)[None, None]
        with torch.no_grad():
            out = guided_filter(guide, soft, self.config["radius"], self.config["eps"])
        return out[0, 0].clamp_(0.0, 1.0).to(torch.float32).cpu().numpy()


def check_pair(owner: str, image: np.ndarray, mask: np.ndarray) -> None:
    """One clear error when a post-processor gets an image and a mask that do not fit."""
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3)):
        raise HarnessError(f"post-processor {owner!r}: image must be (H, W, 3) or (H, W); got {image.shape}")
    if mask.ndim != 2 or mask.shape != image.shape[:2]:
        raise HarnessError(
            f"post-processor {owner!r}: mask {mask.shape} must be (H, W) at the image's size {image.shape[:2]}"
        )
    if mask.size == 0:
        raise HarnessError(f"post-processor {owner!r}: empty image {image.shape}")
