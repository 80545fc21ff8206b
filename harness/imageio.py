"""Reading images and masks the one way the whole harness does it.

Images always come back as ``(H, W, 3)`` uint8 RGB (grayscale, palette, RGBA and CMYK are
converted); masks as ``(H, W)`` uint8 with 0/1 masks scaled to 0/255. Unreadable files raise
one :class:`~harness.errors.DataError` that names the file.
"""
from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path

import numpy as np

from harness.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def read_bytes(path: Path, what: str) -> bytes:
    """A file's bytes; every way it cannot be read becomes one :class:`DataError` naming it."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise DataError(f"{what} {path} is a folder, not a file") from None
    except PermissionError:
        raise DataError(f"{what} {path} cannot be read (permission denied); make it readable") from None
    except OSError as exc:
        raise DataError(f"{what} {path} cannot be read ({exc.strerror or exc})") from None
    if not data:
        raise DataError(f"{what} {path} is empty (0 bytes); re-copy it or remove it")
    return data


def _unreadable(path: Path, what: str, reason: str) -> DataError:
    return DataError(f"{what} {path} cannot be read as an image ({reason}); re-copy it or remove it")


def _parse(data: bytes, path: Path, what: str):
    """The PIL image of ``data`` with only its header read; refuses decompression bombs."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below, with the file named
            img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise DataError(f"{what} {path} is too large to decode safely ({exc}); downscale it") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise _unreadable(path, what, str(exc)) from None
    width, height = img.size
    if Image.MAX_IMAGE_PIXELS and width * height > Image.MAX_IMAGE_PIXELS:
        raise DataError(
            f"{what} {path} is {width}x{height} = {width * height} pixels, above the limit of "
            f"{Image.MAX_IMAGE_PIXELS} (Pillow's guard against decompression bombs); downscale it"
        )
    return img


def check_image_bytes(data: bytes, path: Path, what: str) -> tuple[int, int]:
    """Check an image file's structure without decoding its pixels; ``(H, W)`` from its header.

    PNG: every chunk's CRC through IEND (Pillow's ``load`` checks neither, so a flipped byte in
    the pixel data would decode to other pixels). JPEG: the end-of-image marker (a truncated
    file). JPEG has no checksum: a flipped byte inside its entropy-coded data cannot be found.
    """
    img = _parse(data, path, what)
    width, height = img.size
    if img.format == "PNG":
        try:
            img.verify()
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise _unreadable(path, what, f"corrupted PNG: {exc}") from None
    elif img.format == "JPEG" and _JPEG_END not in data[-_JPEG_TAIL:]:
        raise _unreadable(path, what, "truncated JPEG: no end-of-image marker")
    return height, width


# a JPEG ends with FF D9; some writers append padding or metadata after it
_JPEG_END, _JPEG_TAIL = b"\xff\xd9", 1 << 16


def _open(path: Path, what: str, data: bytes | None = None):
    """The decoded image of ``path`` (or of its bytes ``data``, already read), its structure
    checked first (truncated or corrupted files fail here)."""
    data = read_bytes(path, what) if data is None else data
    check_image_bytes(data, path, what)
    img = _parse(data, path, what)
    try:
        img.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise _unreadable(path, what, str(exc)) from None
    return img


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


def mask_levels(values: np.ndarray, path: Path, what: str) -> np.ndarray:
    """The one range rule for integer masks, ground truth and predictions alike: ``(H, W)``
    float64 in [0, 1].

    Values 0/1 mean background/foreground; values up to 255 are 8-bit levels (``v / 255``),
    whatever the file's bit depth; larger values are 16-bit levels (``v / 65535``).
    """
    if values.size == 0:
        raise DataError(f"{what} {path} has no pixels")
    low, high = values.min(), values.max()
    if low < 0 or high > 65535 or not np.isfinite(high):
        raise DataError(f"{what} {path} holds values from {low} to {high}; integer masks must lie in "
                        f"0..255 (8-bit) or 0..65535 (16-bit)")
    scale = 1.0 if high <= 1 else 255.0 if high <= 255 else 65535.0
    return values.astype(np.float64) / scale


def _colour_mask(rgb: np.ndarray, path: Path, what: str, mode: str) -> np.ndarray:
    """Grey levels of a colour mask: equal channels are grey; black and one colour are a
    binary mask (VOC-style palette masks draw index 1 as (128, 0, 0)); anything else is refused."""
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
        return rgb[..., 0]
    colours = np.unique(rgb.reshape(-1, 3), axis=0)
    black = (colours == 0).all(axis=1)
    if len(colours) == 2 and black.any():
        return np.where((rgb != 0).any(axis=2), np.uint8(255), np.uint8(0))
    shown = ", ".join(str(tuple(int(v) for v in c)) for c in colours[:4]) + (" ..." if len(colours) > 4 else "")
    raise DataError(
        f"{what} {path} is a {mode} image with {len(colours)} colour{'s' * (len(colours) > 1)} ({shown}); "
        f"a mask must be grayscale, "
        f"or black with one foreground colour: save it as 8-bit grayscale (foreground 255)"
    )


def read_mask(path: str | Path, what: str = "mask", data: bytes | None = None) -> np.ndarray:
    """``(H, W)`` uint8 ground truth, 0..255, from ``path`` (or its bytes ``data``, already read).

    Integer masks follow :func:`mask_levels` (0/1 masks become 0/255, 16-bit masks are scaled
    to 8 bits); palette and colour masks follow :func:`_colour_mask`; anything else raises a
    :class:`DataError`.
    """
    path = Path(path)
    img = _open(path, what, data)
    if img.mode == "1":
        return np.ascontiguousarray(np.asarray(img, dtype=np.uint8) * np.uint8(255))
    if img.mode in ("L", "I", "F") or img.mode.startswith("I;16"):
        levels = mask_levels(np.asarray(img), path, what)
    else:
        rgb = np.asarray(img.convert("RGBA").convert("RGB") if img.mode in ("P", "PA") else img.convert("RGB"),
                         dtype=np.uint8)
        levels = mask_levels(_colour_mask(rgb, path, what, img.mode), path, what)
    return np.ascontiguousarray(np.rint(levels * 255.0).astype(np.uint8))


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


def list_names(folder: Path) -> set[str]:
    """The names of the entries of ``folder``; an unreadable folder is one :class:`DataError`."""
    try:
        return {path.name for path in folder.iterdir()}
    except OSError as exc:
        raise DataError(f"folder {folder} cannot be listed ({exc.strerror or exc}); make it readable") from None


def list_images(folder: Path, *, strict: bool = False) -> dict[str, Path]:
    """Stem -> path for every image file in ``folder`` (not recursive), sorted by stem.

    With ``strict``, two files sharing a stem (``a.jpg`` and ``a.png``) raise a
    :class:`DataError` instead of the first one silently winning.
    """
    found: dict[str, Path] = {}
    for path in sorted(folder / name for name in list_names(folder)):
        if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
            if strict and path.stem in found:
                raise DataError(
                    f"{found[path.stem]} and {path} share the stem {path.stem!r}, so it is unclear "
                    f"which one is meant; remove or rename one of them"
                )
            found.setdefault(path.stem, path)
    return found


def image_size(path: str | Path, what: str = "image") -> tuple[int, int]:
    """``(H, W)`` of an image file, its structure checked, without decoding the pixels."""
    path = Path(path)
    return check_image_bytes(read_bytes(path, what), path, what)


def check_same_size(image_path: Path, mask_path: Path, image_hw: tuple, mask_hw: tuple) -> None:
    """Raise a :class:`DataError` naming both files when a mask's size differs from its image's."""
    if tuple(image_hw) != tuple(mask_hw):
        rotated = tuple(image_hw) == tuple(mask_hw)[::-1]
        hint = (" (the sizes are transposed: the image may carry an EXIF orientation tag, which the "
                "harness ignores for image and mask alike, as the literature's loaders do; rotate the "
                "stored pixels of one of them)") if rotated else ""
        raise DataError(
            f"mask {mask_path} is {mask_hw[1]}x{mask_hw[0]} (WxH) but its image {image_path} is "
            f"{image_hw[1]}x{image_hw[0]}; a ground-truth mask must have its image's size{hint}"
        )


#: File types a predicted mask may come in (see :func:`read_soft_mask`).
PREDICTION_SUFFIXES = (".png", ".npy", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff")


def read_soft_mask(path: str | Path) -> np.ndarray:
    """A predicted soft mask ``(h, w)`` float32 in [0, 1], from an image file or an ``.npy``.

    Integer images and arrays follow :func:`mask_levels`, the ground truth's rule (0/1, 8-bit
    ``v / 255``, 16-bit ``v / 65535``); float images and arrays must lie in [0, 1]; bool arrays
    are 0/1; leading singleton axes are dropped (``(1, h, w)`` is fine).
    """
    path = Path(path)
    what = "predicted mask"
    if path.suffix.lower() == ".npy":
        return _soft_levels(_read_npy(path, what), path, what)
    img = _open(path, what)
    if img.mode == "F":
        return _soft_levels(np.asarray(img), path, what)
    if img.mode in ("L", "I") or img.mode.startswith("I;16"):
        return mask_levels(np.asarray(img), path, what).astype(np.float32)
    return read_mask(path, what).astype(np.float32) / np.float32(255.0)


def _read_npy(path: Path, what: str) -> np.ndarray:
    """An ``(H, W)`` array from an ``.npy`` file (leading singleton axes dropped)."""
    data = read_bytes(path, what)
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{what} {path} cannot be read as a .npy array ({exc}); re-save it with numpy.save") from None
    if not isinstance(arr, np.ndarray):
        raise DataError(f"{what} {path} is an .npz archive, not one .npy array; save one array per image")
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2 or arr.size == 0:
        raise DataError(f"{what} {path} has shape {arr.shape}; save one non-empty (H, W) array per image")
    return arr


def _soft_levels(arr: np.ndarray, path: Path, what: str) -> np.ndarray:
    """float32 in [0, 1] from a bool, integer or float array (floats must already lie in [0, 1])."""
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.integer):
        return mask_levels(arr, path, what).astype(np.float32)
    if not np.issubdtype(arr.dtype, np.floating):
        raise DataError(f"{what} {path} has dtype {arr.dtype}; use float in [0, 1], bool or integers")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise DataError(f"{what} {path} holds NaN or infinite values")
    if arr.min() < -1e-3 or arr.max() > 1 + 1e-3:
        raise DataError(
            f"{what} {path} holds values from {arr.min():.4g} to {arr.max():.4g}; soft "
            f"masks must lie in [0, 1] (divide by 255 if they are 0..255)"
        )
    return np.clip(arr, 0.0, 1.0)


def inspect_file(path: str | Path, what: str) -> tuple[str, tuple[int, int] | None]:
    """blake2b of a data file's bytes, after checking its structure without decoding it
    (:func:`check_image_bytes` for images, the header and length for ``.npy``), and an
    image's ``(H, W)`` (``None`` for other files)."""
    path = Path(path)
    data = read_bytes(path, what)
    size = None
    if path.suffix.lower() == ".npy":
        _check_npy_bytes(data, path, what)
    elif path.suffix.lower() in IMAGE_SUFFIXES + PREDICTION_SUFFIXES:
        size = check_image_bytes(data, path, what)
    return bytes_digest(data), size


def bytes_digest(data: bytes) -> str:
    """The digest a data file contributes to a run's ``data_digest``."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _check_npy_bytes(data: bytes, path: Path, what: str) -> None:
    """An ``.npy`` header that parses and a payload of exactly the length it declares."""
    from numpy.lib import format as npy_format

    stream = io.BytesIO(data)
    try:
        major, _ = npy_format.read_magic(stream)
        read_header = npy_format.read_array_header_1_0 if major == 1 else npy_format.read_array_header_2_0
        shape, _, dtype = read_header(stream)
    except (OSError, ValueError, EOFError, SyntaxError) as exc:
        raise DataError(f"{what} {path} cannot be read as a .npy array ({exc}); re-save it with numpy.save") from None
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if not dtype.hasobject and len(data) - stream.tell() < expected:
        raise DataError(f"{what} {path} is truncated: its header promises {expected} bytes of data, "
                        f"it holds {len(data) - stream.tell()}; re-save it with numpy.save")
