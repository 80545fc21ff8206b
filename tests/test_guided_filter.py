"""The guided filter (trick 1): OpenCV parity on ECSSD, border rule, behaviour, dtypes, plugin."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from harness.errors import HarnessError
from harness.imageio import read_image, read_mask
from harness.methods.guided_filter import GuidedFilter, box_mean, guided_filter, guided_filter_cpu, image_guide
from harness.registry import Registry

R, EPS = 9, 1e-3  # the Two Tricks paper's settings
ECSSD_IDS = ["0005", "0205", "0405", "0600", "0800"]


def _t(array: np.ndarray, dtype=torch.float32) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).to(dtype)[None, None]


def _ecssd(root, stem):
    """An ECSSD image, its grey guide in [0, 1], and a soft mask (blurred GT plus noise)."""
    import cv2

    image = read_image(root / "images" / f"{stem}.jpg")
    gt = read_mask(root / "ground_truth_mask" / f"{stem}.png").astype(np.float32) / 255
    rng = np.random.default_rng(int(stem))
    soft = cv2.GaussianBlur(gt, (0, 0), 8) + 0.1 * rng.standard_normal(gt.shape).astype(np.float32)
    return image, image.astype(np.float32).mean(-1) / 255, np.clip(soft, 0, 1)


def _ximgproc():
    """OpenCV's guided filter module, the oracle. Only the contrib wheel has it, installed in place
    of the plain one (README, "Install"); CI does so, and there its absence fails the test."""
    import cv2

    if hasattr(cv2, "ximgproc"):
        return cv2.ximgproc
    reason = ("cv2.ximgproc is missing: replace opencv-python-headless with opencv-contrib-python-headless "
              "of the same version (README, \"Install\")")
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def _naive_guided_filter(guide: np.ndarray, p: np.ndarray, r: int, eps: float) -> np.ndarray:
    """He et al.'s definition, window by window: means over the pixels inside the image."""
    h, w = guide.shape

    def window(y, x):
        return slice(max(0, y - r), y + r + 1), slice(max(0, x - r), x + r + 1)

    a = np.empty((h, w))
    b = np.empty((h, w))
    for y in range(h):
        for x in range(w):
            gi, pi = guide[window(y, x)], p[window(y, x)]
            a[y, x] = ((gi * pi).mean() - gi.mean() * pi.mean()) / (gi.var() + eps)
            b[y, x] = pi.mean() - a[y, x] * gi.mean()
    q = np.empty((h, w))
    for y in range(h):
        for x in range(w):
            q[y, x] = a[window(y, x)].mean() * guide[y, x] + b[window(y, x)].mean()
    return q


# ---- parity with OpenCV ----------------------------------------------------------------
def test_matches_opencv_ximgproc_in_the_interior_of_real_images(ecssd_root):
    """Equal to 1e-4 at least 2r pixels from the border; the border band differs by design.

    OpenCV's ``cv2.ximgproc.guidedFilter`` takes the radius as we do (windows of 2r+1) and
    adds ``eps`` to the variance of the guide on the guide's own scale: a float32 guide in
    [0, 1] takes eps = 1e-3 as is. Its window means reflect the image at the border
    (BORDER_REFLECT) while ours average only the pixels inside, so within 2r of the border
    (where the second round of means still sees the border) the two differ: by up to 0.040 on
    these five images (0.0075, 0.011, 0.040, 0.026, 0.014), never more than 0.05.
    """
    ximgproc = _ximgproc()
    border_max = []
    for stem in ECSSD_IDS:
        _, guide, soft = _ecssd(ecssd_root, stem)
        ours = guided_filter(_t(guide), _t(soft), R, EPS)[0, 0].numpy()
        ref = ximgproc.guidedFilter(guide, soft, R, EPS)
        diff = np.abs(ours - ref)
        assert diff[2 * R : -2 * R, 2 * R : -2 * R].max() < 1e-4, stem
        band = diff.copy()
        band[2 * R : -2 * R, 2 * R : -2 * R] = 0
        border_max.append(band.max())
    assert max(border_max) < 0.05
    assert min(border_max) > 1e-3  # the border rules really are different


def test_opencv_eps_is_on_the_uint8_scale_for_uint8_guides(ecssd_root):
    """With a uint8 guide (0..255) OpenCV needs eps * 255^2 to match eps on the [0, 1] guide."""
    ximgproc = _ximgproc()
    image, _, soft = _ecssd(ecssd_root, "0205")
    green = image[..., 1]  # an exact uint8 guide (the RGB mean is not an integer)
    ref = ximgproc.guidedFilter(green, soft, R, EPS * 255**2)
    ours = guided_filter(_t(green / 255.0), _t(soft), R, EPS)[0, 0].numpy()
    assert np.abs(ours - ref)[2 * R : -2 * R, 2 * R : -2 * R].max() < 1e-4


# ---- definition and border rule -----------------------------------------------------------
@pytest.mark.parametrize("shape,r", [((13, 17), 3), ((13, 17), 9), ((1, 1), 9), ((1, 12), 2), ((7, 1), 9), ((3, 4), 0)])
def test_equals_the_window_by_window_definition_everywhere(shape, r):
    """Borders, images smaller than the window and r = 0 follow the valid-count definition."""
    rng = np.random.default_rng(sum(shape) + r)
    guide, p = rng.random(shape), rng.random(shape)
    ours = guided_filter(_t(guide, torch.float64), _t(p, torch.float64), r, 1e-2)[0, 0].numpy()
    np.testing.assert_allclose(ours, _naive_guided_filter(guide, p, r, 1e-2), atol=1e-12)


def test_box_mean_divides_by_the_pixels_inside_the_image():
    ones = torch.ones(1, 1, 5, 6, dtype=torch.float64)
    assert torch.equal(box_mean(ones, 2), ones)  # zero padding would give 9/25 in a corner
    ramp = torch.arange(6, dtype=torch.float64).expand(1, 1, 5, 6)
    # corner window covers columns 0..2 -> mean 1; centre column 3 covers 1..5 -> mean 3
    assert box_mean(ramp, 2)[0, 0, 0, 0] == 1.0
    assert box_mean(ramp, 2)[0, 0, 2, 3] == 3.0


# ---- behaviour ------------------------------------------------------------------------------
def test_constant_mask_stays_constant(ecssd_root):
    _, guide, _ = _ecssd(ecssd_root, "0405")
    out = guided_filter(_t(guide), torch.full((1, 1, *guide.shape), 0.37), R, EPS)
    # cov(I, p) = 0 in every window, so a = 0 and b = 0.37
    assert torch.allclose(out, torch.tensor(0.37), atol=1e-6)


def test_mask_edge_along_a_guide_edge_is_sharpened_not_blurred():
    """A 16-pixel ramp centred on a guide step becomes a jump; a box blur would widen it."""
    guide = np.full((64, 64), 0.2, np.float32)
    guide[:, 32:] = 0.8
    ramp = np.clip((np.arange(64) - 24) / 16, 0, 1).astype(np.float32)[None].repeat(64, 0)
    out = guided_filter(_t(guide), _t(ramp), R, EPS)[0, 0].numpy()
    jump = out[32, 32] - out[32, 31]
    assert ramp[32, 32] - ramp[32, 31] == pytest.approx(1 / 16)
    assert jump > 0.45  # 0.51 measured: eight times the input's step
    box = box_mean(_t(ramp, torch.float64), R)[0, 0].numpy()
    assert box[32, 32] - box[32, 31] < 1 / 16  # what plain smoothing does
    assert (out[32, 27:32] < ramp[32, 27:32]).all() and (out[32, 32:37] > ramp[32, 32:37]).all()


# ---- tensors: batches, channels, dtypes, gradients ----------------------------------------
def test_batch_rgb_guide_and_channels_match_single_grey_calls():
    torch.manual_seed(0)
    rgb, masks = torch.rand(3, 3, 40, 30), torch.rand(3, 2, 40, 30)
    batched = guided_filter(rgb, masks)
    for i in range(3):
        for c in range(2):
            single = guided_filter(rgb[i : i + 1].mean(1, keepdim=True), masks[i : i + 1, c : c + 1])
            torch.testing.assert_close(batched[i : i + 1, c : c + 1], single, atol=1e-6, rtol=0)


def test_per_sample_eps_tensor():
    torch.manual_seed(1)
    guide, masks = torch.rand(2, 1, 20, 20, dtype=torch.float64), torch.rand(2, 1, 20, 20, dtype=torch.float64)
    eps = torch.tensor([1e-3, 1e-1], dtype=torch.float64)
    out = guided_filter(guide, masks, 4, eps)
    for i in range(2):
        torch.testing.assert_close(out[i : i + 1], guided_filter(guide[i : i + 1], masks[i : i + 1], 4, float(eps[i])))


def test_dtypes_follow_the_input_and_agree():
    torch.manual_seed(2)
    guide, masks = torch.rand(2, 3, 33, 21, dtype=torch.float64), torch.rand(2, 1, 33, 21, dtype=torch.float64)
    ref = guided_filter(guide, masks)
    assert ref.dtype == torch.float64
    out32 = guided_filter(guide.float(), masks.float())
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), ref, atol=1e-5, rtol=0)
    half = guided_filter(guide.half(), masks.half())  # computed in float32, returned in half
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.double(), ref, atol=2e-3, rtol=0)


def test_gradient_path_matches_and_passes_gradcheck():
    torch.manual_seed(3)
    guide = torch.rand(2, 1, 9, 11, dtype=torch.float64, requires_grad=True)
    masks = torch.rand(2, 1, 9, 11, dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        fast = guided_filter(guide, masks, 3, 1e-2)
    torch.testing.assert_close(guided_filter(guide, masks, 3, 1e-2), fast)
    assert torch.autograd.gradcheck(lambda g, p: guided_filter(g, p, 3, 1e-2), (guide, masks))


def test_the_batched_in_place_path_used_on_gpus_matches_on_cpu():
    """On a GPU a B > 1 batch is filtered in one go (on a CPU image by image): same numbers."""
    from harness.methods.guided_filter import _guided_filter_autograd, _guided_filter_inplace

    torch.manual_seed(5)
    guide, masks = torch.rand(4, 1, 25, 31, dtype=torch.float64), torch.rand(4, 2, 25, 31, dtype=torch.float64)
    eps = torch.tensor([1e-3, 1e-2, 1e-1, 1.0], dtype=torch.float64).view(-1, 1, 1, 1)
    torch.testing.assert_close(_guided_filter_inplace(guide, masks, 9, eps), _guided_filter_autograd(guide, masks, 9, eps))


def test_why_not_kornia_guided_blur():
    """kornia pads the borders: zeros darken a constant mask's corners, reflect needs H, W > r."""
    import kornia

    ones = torch.ones(1, 1, 30, 30)
    zero_padded = kornia.filters.guided_blur(ones, 0.5 * ones, 2 * R + 1, EPS, border_type="constant")
    assert zero_padded[0, 0, 0, 0] < 0.2  # 0.14 instead of 0.5
    assert guided_filter(ones, 0.5 * ones, R, EPS)[0, 0, 0, 0] == pytest.approx(0.5)
    with pytest.raises(RuntimeError):
        kornia.filters.guided_blur(ones[..., :5, :5], ones[..., :5, :5], 2 * R + 1, EPS, border_type="reflect")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    torch.manual_seed(4)
    guide, masks = torch.rand(8, 3, 320, 320), torch.rand(8, 1, 320, 320)
    out = guided_filter(guide.cuda(), masks.cuda())
    assert out.device.type == "cuda"
    torch.testing.assert_close(out.cpu(), guided_filter(guide, masks), atol=1e-5, rtol=0)


@pytest.mark.parametrize("guide,masks,kw,error", [
    (torch.rand(1, 3, 8, 8), torch.rand(1, 8, 8), {}, ValueError),
    (torch.rand(1, 3, 8, 8), torch.rand(1, 1, 8, 9), {}, ValueError),
    (torch.rand(2, 3, 8, 8), torch.rand(1, 1, 8, 8), {}, ValueError),
    (torch.rand(1, 1, 8, 8), torch.ones(1, 1, 8, 8, dtype=torch.uint8), {}, TypeError),
    (torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8), {"radius": -1}, ValueError),
])
def test_bad_tensors_are_rejected(guide, masks, kw, error):
    with pytest.raises(error, match="guided_filter"):
        guided_filter(guide, masks, **kw)


# ---- the plugin -----------------------------------------------------------------------------
def test_plugin_on_a_real_image(ecssd_root):
    image, guide, soft = _ecssd(ecssd_root, "0600")
    post = Registry(autoload=False).create("post", "gf")
    out = post(image, soft)
    assert out.dtype == np.float32 and out.shape == soft.shape
    assert out.min() >= 0 and out.max() <= 1
    # the plugin filters in float64 (float32 prefix sums lose up to 1.3e-5)
    guide64 = image.astype(np.float64).mean(-1) / 255
    raw = guided_filter(_t(guide64, torch.float64), _t(soft, torch.float64), R, EPS)[0, 0].numpy()
    np.testing.assert_allclose(out, np.clip(raw, 0, 1), atol=1e-6)
    assert raw.min() < 0 or raw.max() > 1  # so the clamp is doing something here


# ---- the plugin's CPU path (OpenCV core, float64) against the torch float64 path ------------
CPU_PATH_ATOL = 1e-10  # measured: 2e-14 on ECSSD (the numba kernel); float32 rounding of the output is 6e-8


def _torch_reference(image: np.ndarray, mask: np.ndarray, r: int, eps: float) -> np.ndarray:
    guide = image_guide(image, np.float64)
    return guided_filter(_t(guide, torch.float64), _t(mask, torch.float64), r, eps)[0, 0].numpy()


def test_cpu_path_equals_the_torch_float64_path_on_real_images(ecssd_root):
    """All 5 images, unclamped, within CPU_PATH_ATOL; the plugin's uint8 masks are identical."""
    from harness.cache import quantize_mask

    for stem in ECSSD_IDS:
        image, _, soft = _ecssd(ecssd_root, stem)
        ref = _torch_reference(image, soft, R, EPS)
        out = guided_filter_cpu(image, soft, R, EPS).copy()
        np.testing.assert_allclose(out, ref, rtol=0, atol=CPU_PATH_ATOL, err_msg=stem)
        plugin = GuidedFilter()(image, soft)
        np.testing.assert_array_equal(quantize_mask(plugin), quantize_mask(np.clip(ref, 0, 1).astype(np.float32)))


@pytest.mark.parametrize("shape,r", [((13, 17), 3), ((13, 17), 9), ((5, 3), 9), ((1, 1), 9), ((1, 12), 2),
                                     ((1, 40), 9), ((7, 1), 9), ((40, 1), 3), ((3, 4), 0), ((2, 2), 1)])
def test_cpu_path_on_small_images_borders_and_tiny_windows(shape, r):
    """Images smaller than the radius, one-pixel-wide ones and r = 0: the valid-count definition."""
    rng = np.random.default_rng(7 * sum(shape) + r)
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    mask = rng.random(shape, dtype=np.float32)
    out = guided_filter_cpu(image, mask, r, 1e-2).copy()
    np.testing.assert_allclose(out, _torch_reference(image, mask, r, 1e-2), rtol=0, atol=CPU_PATH_ATOL)
    guide = image.astype(np.float64).mean(-1) / 255
    np.testing.assert_allclose(out, _naive_guided_filter(guide, mask.astype(np.float64), r, 1e-2), atol=1e-10)
    # grey images, (H, W) and (H, W, 1), take the channel itself / 255
    grey = image[..., 1]
    for form in (grey, grey[..., None]):
        np.testing.assert_allclose(guided_filter_cpu(form, mask, r, 1e-2), _torch_reference(grey, mask, r, 1e-2),
                                   rtol=0, atol=CPU_PATH_ATOL)


def test_cpu_path_buffers_follow_the_size():
    """Per-thread buffers are re-made when the size changes; results do not leak between calls."""
    rng = np.random.default_rng(11)
    a = (rng.integers(0, 256, (20, 30, 3), dtype=np.uint8), rng.random((20, 30), dtype=np.float32))
    b = (rng.integers(0, 256, (9, 4, 3), dtype=np.uint8), rng.random((9, 4), dtype=np.float32))
    first = guided_filter_cpu(*a).copy()
    guided_filter_cpu(*b)
    np.testing.assert_array_equal(guided_filter_cpu(*a), first)


def test_plugin_options_and_errors():
    post = GuidedFilter(radius="4", eps="0.01")
    assert post.config == {"radius": 4, "eps": 0.01}
    gray = np.zeros((5, 1), np.uint8)
    assert post(gray, np.full((5, 1), 0.5, np.float32)).shape == (5, 1)
    with pytest.raises(HarnessError, match="at the image's size"):
        post(np.zeros((5, 6, 3), np.uint8), np.zeros((6, 5), np.float32))
    with pytest.raises(HarnessError, match="eps"):
        GuidedFilter(eps=0)


# ---- the numba kernel against the torch float64 path: mask kinds, dtypes, layouts, caching ----
def _masks_of(gt: np.ndarray, seed: int) -> dict:
    """What the runner passes (a method's uint8 mask / 255): binary, soft (blurred), a TokenCut-like
    mask on a 16-pixel grid; and a float32 and a float64 mask."""
    import cv2

    from harness.cache import quantize_mask

    h, w = gt.shape
    soft = np.clip(cv2.GaussianBlur(gt, (0, 0), 6), 0, 1)
    rng = np.random.default_rng(seed)
    tokens = cv2.resize(gt, (max(w // 16, 1), max(h // 16, 1)), interpolation=cv2.INTER_AREA)
    tokens = np.clip(tokens + 0.2 * rng.standard_normal(tokens.shape).astype(np.float32), 0, 1)
    grid = cv2.resize(tokens, (w, h), interpolation=cv2.INTER_NEAREST)
    return {
        "binary": quantize_mask(gt > 0.5).astype(np.float32) / 255.0,
        "soft": quantize_mask(soft).astype(np.float32) / 255.0,
        "grid16": quantize_mask(grid).astype(np.float32) / 255.0,
        "float": soft,
        "float64": quantize_mask(soft) / 255.0,
    }


def test_kernel_equals_the_torch_float64_path_on_real_images_and_mask_kinds(ecssd_root):
    """Within CPU_PATH_ATOL (measured ~3e-15: torch's addcmul fuses multiply-adds, the kernel does
    not), and the plugin's float32 output is the kernel's, clamped: the same uint8 masks."""
    from harness.cache import quantize_mask

    for stem in ECSSD_IDS:
        image = read_image(ecssd_root / "images" / f"{stem}.jpg")
        gt = read_mask(ecssd_root / "ground_truth_mask" / f"{stem}.png").astype(np.float32) / 255
        for kind, mask in _masks_of(gt, int(stem)).items():
            ref = _torch_reference(image, mask, R, EPS)
            out = guided_filter_cpu(image, mask, R, EPS)
            np.testing.assert_allclose(out, ref, rtol=0, atol=CPU_PATH_ATOL, err_msg=f"{stem} {kind}")
            plugin = GuidedFilter()(image, mask)
            assert plugin.dtype == np.float32
            np.testing.assert_array_equal(plugin, np.clip(out, 0, 1).astype(np.float32))
            np.testing.assert_array_equal(quantize_mask(plugin), quantize_mask(np.clip(ref, 0, 1).astype(np.float32)))


@pytest.mark.parametrize("shape,r", [((50, 37), 2), ((40, 1), 3), ((1, 40), 3), ((140, 150), 29), ((140, 150), 60),
                                     ((9, 300), 4), ((300, 9), 4), ((21, 21), 10)])
def test_kernel_row_rings_wrap_around(shape, r):
    """Images taller than the kernel's rings of 2r + 2 rows, and windows larger than the image."""
    rng = np.random.default_rng(3 * sum(shape) + r)
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    mask = (rng.random(shape) > 0.5).astype(np.float32)
    np.testing.assert_allclose(guided_filter_cpu(image, mask, r, 1e-3), _torch_reference(image, mask, r, 1e-3),
                               rtol=0, atol=CPU_PATH_ATOL)


def test_kernel_takes_other_dtypes_and_layouts():
    """Non-uint8 images go through image_guide; masks of any dtype; views that are not contiguous."""
    rng = np.random.default_rng(13)
    image = rng.integers(0, 256, (31, 45, 3), dtype=np.uint8)
    mask = rng.random((31, 45), dtype=np.float32)
    ref = _torch_reference(image, mask, 5, 1e-3)
    for form in (image.astype(np.float64), image.astype(np.uint16), image.astype(np.float32)):
        np.testing.assert_allclose(guided_filter_cpu(form, mask, 5, 1e-3), ref, rtol=0, atol=CPU_PATH_ATOL)
    binary = mask > 0.5
    for form in (binary, binary.astype(np.uint8), binary.astype(np.float16), binary.astype(np.float64)):
        np.testing.assert_allclose(guided_filter_cpu(image, form, 5, 1e-3), _torch_reference(image, binary, 5, 1e-3),
                                   rtol=0, atol=CPU_PATH_ATOL)
    flipped, transposed = image[:, ::-1], np.ascontiguousarray(mask.T).T  # strided views
    np.testing.assert_allclose(guided_filter_cpu(flipped, transposed, 5, 1e-3),
                               _torch_reference(np.ascontiguousarray(flipped), mask, 5, 1e-3), rtol=0, atol=CPU_PATH_ATOL)
    grey = image[..., 1]
    np.testing.assert_allclose(guided_filter_cpu(grey.astype(np.float64), mask, 5, 1e-3),
                               _torch_reference(grey, mask, 5, 1e-3), rtol=0, atol=CPU_PATH_ATOL)


def test_plugin_keeps_nan_and_clamps():
    image = np.full((12, 14, 3), 128, np.uint8)
    mask = np.full((12, 14), 0.5, np.float32)
    mask[3, 4] = np.nan
    out = GuidedFilter(radius=2)(image, mask)
    # prefix sums carry a NaN to the end of its row and column, in the torch path too; not clamped away
    np.testing.assert_array_equal(np.isnan(out), np.isnan(_torch_reference(image, mask, 2, 1e-3)))
    assert np.isnan(out).any()
    steep = np.zeros((12, 14), np.float32)
    steep[:, 7:] = 1
    image[:, 7:] = 200
    out = GuidedFilter(radius=2)(image, steep)
    assert out.min() == 0.0 and out.max() == 1.0


def _run_python(code: str, **env) -> str:
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root,
                            env={**os.environ, **env}, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


PLUGIN_TWICE = """
import time, numpy as np
from harness.methods.guided_filter import GuidedFilter, _kernel
image, mask = np.zeros((30, 40, 3), np.uint8), np.full((30, 40), 0.5, np.float32)
start = time.perf_counter(); GuidedFilter()(image, mask); first = time.perf_counter() - start
GuidedFilter()(image, mask)
stats = _kernel().stats
print(stats.cache_hits.most_common(1)[0][1] if stats.cache_hits else 0, sum(stats.cache_misses.values()), first)
"""


def test_a_new_process_loads_the_compiled_kernel_from_the_disk_cache():
    """Compiled once (here, or by an earlier run), a new process loads the plugin's kernel: no compile."""
    GuidedFilter()(np.zeros((30, 40, 3), np.uint8), np.full((30, 40), 0.5, np.float32))
    hits, misses, first = _run_python(PLUGIN_TWICE).split()
    assert (int(hits), int(misses)) == (1, 0), "the kernel was compiled again"
    assert float(first) < 5


def test_the_plugin_works_without_any_cache_directory():
    """Where numba finds no writable cache directory, the kernel is compiled in memory, with a warning."""
    code = ("import warnings; warnings.simplefilter('always')\n"
            "import numba.core.caching as c; c.CacheImpl._locator_classes = []\n" + PLUGIN_TWICE)
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    hits, misses, _ = result.stdout.split()
    assert int(hits) == 0 and int(misses) == 1  # compiled here, nothing loaded
    assert "cannot cache" in result.stderr
