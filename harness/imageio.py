"""Reading images and masks the one way the whole harness does it.

Images always come back as ``(H, W, 3)`` uint8 RGB (grayscale, palette, RGBA and CMYK are
converted); masks as ``(H, W)`` uint8 with 0/1 masks scaled to 0/255. Unreadable files raise
one :class:`~harness.errors.DataError` that names the file.
"""
from __future__ import annotations

import io
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from harness.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@contextmanager
def _readable(path: Path, what: str):
    """Open an image file; every way it can be unreadable becomes one :class:`DataError`."""
    from PIL import Image, UnidentifiedImageError

    try:
        if path.stat().st_size == 0:
            raise DataError(f"{what} {path} is empty (0 bytes); re-copy it or remove it")
        with Image.open(path) as img:
            yield img
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{what} {path} does not exist") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(
            f"{what} {path} cannot be read as an image ({exc}); re-copy it or remove it"
        ) from None


def _open(path: Path, what: str):
    """The decoded image (truncated files fail here, not later)."""
    with _readable(path, what) as img:
        img.load()
        return img.copy()  # the file closes on leaving the block, which frees the original


def read_image(path: str | Path) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB from any image file PIL can read."""
    img = _open(Path(path), "image")
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        # PIL's own conversion clips 16-bit values at 255; scale them to 8 bits instead
        arr = np.asarray(img, dtype=np.float64)
        wide = img.mode.startswith("I;16") or (arr.size and arr.max() > 255)
        gray = np.rint(np.clip(arr / (257.0 if wide else 1.0), 0, 255)).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode != "RGB":
        img = img.convert("RGBA").convert("RGB") if img.mode in ("P", "PA") else img.convert("RGB")
    return np.asarray(img, dtype=np.uint8).copy()


def read_mask(path: str | Path) -> np.ndarray:
    """``(H, W)`` uint8 ground truth, 0..255.

    Masks that hold only 0 and 1 are scaled to 0/255; colour masks whose channels are equal
    are reduced to one channel; anything else raises a :class:`DataError`.
    """
    path = Path(path)
    img = _open(path, "mask")
    if img.mode == "1":
        arr = np.asarray(img, dtype=np.uint8) * 255
    elif img.mode in ("L", "P"):
        arr = np.asarray(img.convert("L") if img.mode == "P" else img, dtype=np.uint8)
    elif img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        arr = np.asarray(img)
        if arr.min() < 0 or arr.max() > 255:
            raise DataError(
                f"mask {path} holds values from {arr.min()} to {arr.max()}; masks must be 8-bit "
                f"(0..255, or 0/1): convert it to an 8-bit grayscale PNG"
            )
        arr = arr.astype(np.uint8)
    else:
        rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
        if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
            raise DataError(
                f"mask {path} has {len(img.getbands())} different channels ({img.mode}); masks "
                f"must be single-channel 8-bit: save it as grayscale"
            )
        arr = rgb[..., 0]
    if arr.size and arr.max() <= 1:
        arr = arr * np.uint8(255)  # a 0/1 mask means the same as 0/255
    return np.ascontiguousarray(arr)


def encode_png(array: np.ndarray, text: dict[str, str] | None = None) -> bytes:
    """PNG bytes of a ``(H, W)`` uint8 array, with optional text chunks."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = None
    if text:
        info = PngInfo()
        for key, value in text.items():
            info.add_text(key, value)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", pnginfo=info, compress_level=1)
    return buffer.getvalue()


def list_images(folder: Path, *, strict: bool = False) -> dict[str, Path]:
    """Stem -> path for every image file in ``folder`` (not recursive), sorted by stem.

    With ``strict``, two files sharing a stem (``a.jpg`` and ``a.png``) raise a
    :class:`DataError` instead of the first one silently winning.
    """
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
            if strict and path.stem in found:
                raise DataError(
                    f"{found[path.stem]} and {path} share the stem {path.stem!r}, so it is unclear "
                    f"which one is meant; remove or rename one of them"
                )
            found.setdefault(path.stem, path)
    return found


def image_size(path: str | Path, what: str = "image") -> tuple[int, int]:
    """``(H, W)`` of an image file, read from its header without decoding the pixels."""
    with _readable(Path(path), what) as img:
        width, height = img.size
    return height, width


def check_same_size(image_path: Path, mask_path: Path, image_hw: tuple, mask_hw: tuple) -> None:
    """Raise a :class:`DataError` naming both files when a mask's size differs from its image's."""
    if tuple(image_hw) != tuple(mask_hw):
        raise DataError(
            f"mask {mask_path} is {mask_hw[1]}x{mask_hw[0]} (WxH) but its image {image_path} is "
            f"{image_hw[1]}x{image_hw[0]}; a ground-truth mask must have its image's size"
        )


#: File types a predicted mask may come in (see :func:`read_soft_mask`).
PREDICTION_SUFFIXES = (".png", ".npy", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff")


def read_soft_mask(path: str | Path) -> np.ndarray:
    """A predicted soft mask ``(h, w)`` float32 in [0, 1], from an image file or an ``.npy``.

    8-bit images give ``v / 255`` (0/1 images mean 0/255, as in :func:`read_mask`), 16-bit
    images ``v / 65535``; ``.npy`` arrays may be float in [0, 1], bool, or uint8 (``v / 255``),
    with leading singleton axes dropped (``(1, h, w)`` is fine).
    """
    path = Path(path)
    if path.suffix.lower() == ".npy":
        return _read_npy_mask(path)
    img = _open(path, "predicted mask")
    if img.mode.startswith("I;16"):
        return np.asarray(img, dtype=np.float32) / 65535.0
    if img.mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        high = 1.0 if img.mode == "F" else 65535.0
        if arr.size and (arr.min() < 0 or arr.max() > high):
            raise DataError(
                f"predicted mask {path} holds values from {arr.min():.4g} to {arr.max():.4g}; "
                f"save soft masks as 8-bit PNGs (probability x 255) or float .npy in [0, 1]"
            )
        if img.mode == "F":
            return arr.astype(np.float32)
        # 32-bit integer images: 16-bit data unless every value fits in 8 bits
        return (arr / (255.0 if arr.size and arr.max() <= 255 else 65535.0)).astype(np.float32)
    return read_mask(path).astype(np.float32) / 255.0


def _read_npy_mask(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"predicted mask {path} does not exist") from None
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"predicted mask {path} cannot be read as a .npy array ({exc})") from None
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise DataError(
            f"predicted mask {path} has shape {arr.shape}; save one (H, W) array per image"
        )
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if not np.issubdtype(arr.dtype, np.floating):
        raise DataError(
            f"predicted mask {path} has dtype {arr.dtype}; use float in [0, 1], bool or uint8"
        )
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise DataError(f"predicted mask {path} holds NaN or infinite values")
    if arr.size and (arr.min() < -1e-3 or arr.max() > 1 + 1e-3):
        raise DataError(
            f"predicted mask {path} holds values from {arr.min():.4g} to {arr.max():.4g}; soft "
            f"masks must lie in [0, 1] (divide by 255 if they are 0..255)"
        )
    return np.clip(arr, 0.0, 1.0)
