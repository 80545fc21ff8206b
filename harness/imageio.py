"""Reading images and masks the one way the whole harness does it.

Images always come back as ``(H, W, 3)`` uint8 RGB (grayscale, palette, RGBA and CMYK are
converted); masks as ``(H, W)`` uint8 with 0/1 masks scaled to 0/255. Unreadable files raise
one :class:`~harness.errors.DataError` that names the file.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from harness.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def _open(path: Path, what: str):
    from PIL import Image, UnidentifiedImageError

    try:
        if path.stat().st_size == 0:
            raise DataError(f"{what} {path} is empty (0 bytes); re-copy it or remove it")
        img = Image.open(path)
        img.load()  # decode now, so truncated files fail here and not later
        return img
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{what} {path} does not exist") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(
            f"{what} {path} cannot be read as an image ({exc}); re-copy it or remove it"
        ) from None


def read_image(path: str | Path) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB from any image file PIL can read."""
    img = _open(Path(path), "image")
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


def list_images(folder: Path) -> dict[str, Path]:
    """Stem -> path for every image file in ``folder`` (not recursive), sorted by stem."""
    found = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
            found.setdefault(path.stem, path)
    return found
