"""The guided filter of He, Sun and Tang (ECCV 2010 / TPAMI 2013), the Two Tricks paper's trick 1.

A soft mask ``p`` is refined with a grey guide ``I`` (the mean of the RGB channels in [0, 1]):
in every (2r+1)^2 window the output is a linear function of the guide, ``q = a I + b``, with
``a = cov(I, p) / (var(I) + eps)`` and ``b = mean(p) - a mean(I)``; ``a`` and ``b`` are then
averaged over the windows covering each pixel. Window means are normalised by the count of
pixels that lie inside the image (the paper's ``N = boxfilter(ones)``), so borders need no
padding rule.

On a CPU the plugin runs :func:`guided_filter_cpu`, one numba-compiled pass over the image (compiled
once per process on first use, cached on disk); on a GPU, for batches and for gradients, the torch
:func:`guided_filter`.

Own implementation, not ``kornia.filters.guided_blur``: kornia pads the borders (reflect,
replicate, circular or zeros counted in the mean) and never divides by the valid-pixel count,
and its reflect padding fails on images smaller than the radius.
"""
from __future__ import annotations

import threading
import warnings
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
_kernel_lock = threading.Lock()
_kernel_dispatcher = None

# the grey guide of a uint8 image by the sum of its channels: I = (S / 3) / 255 for RGB (what
# image_guide's mean computes), I = v / 255 for grey; the same float64 numbers, without divisions
_GUIDE_RGB = np.arange(766.0) / 3.0 / 255.0
_GUIDE_GREY = np.arange(256.0) / 255.0


def _filter_rows(image, mask, radius, eps, table, direct, clamp, buf, out):  # pragma: no cover - numba
    """The whole filter of one image, streamed row by row (compiled by numba: :func:`_kernel`).

    ``image``: ``(H, W, 3)`` or ``(H, W, 1)`` uint8 read through ``table`` (the guide of a channel
    sum), or ``(H, W, 1)`` float64 holding the guide itself (``direct``). ``buf``: float64 scratch
    from :func:`_scratch_rows` (row 0 zeros). ``out``: ``(H, W)``, clamped to [0, 1] when ``clamp``.

    The arithmetic is :func:`_guided_filter_inplace`'s, operation by operation: window sums are
    prefix sums along a row (from 0), differenced at ``[x - r, x + r]`` clipped to the row, then
    prefix sums of those down the columns, differenced the same way; means multiply by
    ``(1 / count_h) * (1 / count_w)``. Only rings of ``S = min(2 r + 2, H)`` rows of the column
    prefix sums (of p, I p, I, I^2, interleaved per pixel, then of b, a) and of the guide are kept:
    input row k completes mean row ``k - r`` (a, b), which completes output row ``k - 2 r``.
    Quantities are interleaved per pixel so that each loop touches few rows (and vectorizes).
    """
    height, width, channels = image.shape
    r = radius
    slots = min(2 * r + 2, height)
    zero = buf[0]
    inv_w = buf[1]
    guide_at, p_at, q_at = 2, 2 + slots, 2 + 2 * slots  # rings: guide; (p, Ip, I, II); (b, a)
    # prefix sums along a row of the n = 4 or 2 quantities, interleaved: cc[n (x + 1) + j], cc[:n] = 0
    cc4, cc2 = buf[2 + 3 * slots], buf[3 + 3 * slots]
    for x in range(width):
        inv_w[x] = 1.0 / (min(x + r, width - 1) - max(x - r, 0) + 1)
    mid_lo = min(r + 1, width)  # x < mid_lo: the window starts at 0
    mid_hi = max(mid_lo, width - r)  # x >= mid_hi: the window ends at W - 1
    n_mean = 0  # mean rows (b, a) done
    n_out = 0  # output rows done
    for k in range(height + 1):
        if k < height:
            # guide row, then running sums of p, I p, I, I^2 along the row
            g = buf[guide_at + k % slots]
            if direct:
                for x in range(width):
                    g[x] = image[k, x, 0]
            elif channels == 3:
                for x in range(width):
                    g[x] = table[np.uintp(image[k, x, 0]) + np.uintp(image[k, x, 1]) + np.uintp(image[k, x, 2])]
            else:
                for x in range(width):
                    g[x] = table[np.uintp(image[k, x, 0])]
            m = mask[k]
            s0 = s1 = s2 = s3 = 0.0
            for x in range(width):
                p = np.float64(m[x])
                i = g[x]
                s0 += p
                s1 += p * i
                s2 += i
                s3 += i * i
                cc4[4 * x + 4] = s0
                cc4[4 * x + 5] = s1
                cc4[4 * x + 6] = s2
                cc4[4 * x + 7] = s3
            # window sums along the row, added to the column prefix sums
            prev = zero if k == 0 else buf[p_at + (k - 1) % slots]
            _window_add(cc4, prev, buf[p_at + k % slots], 4, r, width, mid_lo, mid_hi)
            ready = k - r + 1  # mean rows 0 .. k - r are complete
        else:
            ready = height
        while n_mean < min(ready, height):
            y = n_mean
            hi = buf[p_at + min(y + r, height - 1) % slots]
            lo = buf[p_at + (y - r - 1) % slots] if y > r else zero
            f_h = 1.0 / (min(y + r, height - 1) - max(y - r, 0) + 1)
            sb = sa = 0.0
            for x in range(width):  # a, b and their running sums along the row
                f = f_h * inv_w[x]
                mean_p = (hi[4 * x] - lo[4 * x]) * f
                mean_ip = (hi[4 * x + 1] - lo[4 * x + 1]) * f
                mean_i = (hi[4 * x + 2] - lo[4 * x + 2]) * f
                mean_ii = (hi[4 * x + 3] - lo[4 * x + 3]) * f
                var_eps = (mean_ii - mean_i * mean_i) + eps
                a = (mean_ip - mean_i * mean_p) / var_eps
                sb += mean_p - a * mean_i
                sa += a
                cc2[2 * x + 2] = sb
                cc2[2 * x + 3] = sa
            prev = zero if y == 0 else buf[q_at + (y - 1) % slots]
            _window_add(cc2, prev, buf[q_at + y % slots], 2, r, width, mid_lo, mid_hi)
            n_mean += 1
            # output rows whose (b, a) windows are complete (before the ring of b, a moves on)
            done = n_mean - r if n_mean < height else height
            while n_out < done:
                y = n_out
                hi = buf[q_at + min(y + r, height - 1) % slots]
                lo = buf[q_at + (y - r - 1) % slots] if y > r else zero
                f_h = 1.0 / (min(y + r, height - 1) - max(y - r, 0) + 1)
                g = buf[guide_at + y % slots]
                o = out[y]
                for x in range(width):
                    f = f_h * inv_w[x]
                    v = (hi[2 * x] - lo[2 * x]) * f + (hi[2 * x + 1] - lo[2 * x + 1]) * f * g[x]
                    if clamp:
                        v = 0.0 if v < 0.0 else (1.0 if v > 1.0 else v)
                    o[x] = v
                n_out += 1


def _window_add(cc, prev, dst, n, r, width, mid_lo, mid_hi):  # pragma: no cover - numba
    """``dst = prev +`` the window sums along a row of ``n`` interleaved quantities whose prefix
    sums are ``cc`` (``cc[n (x + 1) + j]``: the sum to x; ``cc[j] = 0``)."""
    for x in range(mid_lo):
        top = n * min(x + r + 1, width)
        for j in range(n):
            dst[n * x + j] = prev[n * x + j] + (cc[top + j] - cc[j])
    hi_off, lo_off = np.uintp(n * (r + 1)), np.uintp(n * r)
    for i in range(np.uintp(n * mid_lo), np.uintp(n * mid_hi)):
        dst[i] = prev[i] + (cc[i + hi_off] - cc[i - lo_off])
    for x in range(mid_hi, width):
        bottom = n * max(x - r, 0)
        for j in range(n):
            dst[n * x + j] = prev[n * x + j] + (cc[n * width + j] - cc[bottom + j])


def _kernel():
    """:func:`_filter_rows` compiled by numba, once per process: imported and compiled on first use
    (``harness list`` does not pay for numba), cached on disk (next to this module, else in the
    user's cache directory) so that a new process loads it instead (~0.4 s with numba's import,
    against ~2 s to compile; forked workers inherit it); without any writable cache directory it is
    compiled in memory, with a warning."""
    global _kernel_dispatcher, _window_add
    with _kernel_lock:
        if _kernel_dispatcher is None:
            import numba

            try:
                jit = numba.njit(cache=True, nogil=True)
                window_add = jit(_window_add)
            except RuntimeError as exc:  # "cannot cache function ...: no locator available"
                warnings.warn(f"guided filter: numba {exc}; compiling it in memory, once per process", stacklevel=2)
                jit = numba.njit(nogil=True)
                window_add = jit(_window_add)
            _window_add = window_add  # the kernel calls it: a compiled function by then
            _kernel_dispatcher = jit(_filter_rows)
        return _kernel_dispatcher


def _scratch_rows(height: int, width: int, radius: int) -> np.ndarray:
    """The kernel's float64 scratch, kept per thread (fresh pages would cost more than the filter)."""
    slots = min(2 * radius + 2, height)
    shape = (3 * slots + 4, 4 * (width + 1))
    kept = getattr(_cpu, "buf", None)
    if kept is None or kept.shape != shape:
        kept = _cpu.buf = np.zeros(shape)
    return kept


def _filter_cpu(image: np.ndarray, mask: np.ndarray, radius: int, eps: float, out: np.ndarray, clamp: bool) -> np.ndarray:
    height, width = mask.shape
    radius = int(radius)
    if radius < 0:
        raise ValueError(f"guided_filter_cpu: radius must be an integer >= 0; got {radius}")
    if image.dtype == np.uint8:
        source = np.ascontiguousarray(image).reshape(height, width, -1)
        table, direct = (_GUIDE_RGB if source.shape[2] == 3 else _GUIDE_GREY), False
    else:
        source = image_guide(image, np.float64).reshape(height, width, 1)
        table, direct = _GUIDE_GREY, True
    if mask.dtype != np.float32:
        mask = mask.astype(np.float64, copy=False)
    mask = np.ascontiguousarray(mask)
    _kernel()(source, mask, radius, float(eps), table, direct, clamp, _scratch_rows(height, width, radius), out)
    return out


def guided_filter_cpu(image: np.ndarray, mask: np.ndarray, radius: int = 9, eps: float = 1e-3) -> np.ndarray:
    """:func:`guided_filter` of one mask with :func:`image_guide`'s grey guide, in float64 on the CPU
    (no torch): the plugin's CPU path, one numba-compiled pass over the image.

    The same operations as the torch float64 path, in the same order (prefix sums along rows,
    then columns; means times ``(1 / count_h) * (1 / count_w)``), so the results agree to the
    last bit or nearly: to 2e-14 on ECSSD, half the values bitwise (torch's ``addcmul`` fuses
    multiply-adds where the kernel rounds twice). Window means divide by the count of in-image
    pixels, so borders and images smaller than the window follow :func:`box_mean`'s definition.
    Only a few rows of running sums are kept (scratch kept per thread), so the working set stays
    in the cache: ~0.8 ms per 400x300 image at one thread, below ``cv2.ximgproc.guidedFilter``.

    Parameters
    ----------
    image : np.ndarray
        ``(H, W, 3)`` RGB, ``(H, W, 1)`` or ``(H, W)``, 0..255 (uint8 read directly; other dtypes
        go through :func:`image_guide` first).
    mask : np.ndarray
        ``(H, W)`` soft mask (float32 read directly; other dtypes as float64).
    radius, eps : see :func:`guided_filter`.

    Returns
    -------
    np.ndarray
        ``(H, W)`` float64, not clamped.
    """
    return _filter_cpu(image, mask, radius, eps, np.empty(mask.shape), clamp=False)


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
        if str(self.device) == "cpu":  # the numba kernel, clamping as it writes float32
            out = np.empty(mask.shape, np.float32)
            return _filter_cpu(image, mask, self.config["radius"], self.config["eps"], out, clamp=True)
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
