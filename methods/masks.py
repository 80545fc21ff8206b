"""Mask adapters: score predictions made elsewhere by reading them from a folder.

``masks`` reads any folder of predicted masks (PNG or NPY, one per image, matched by the
image's stem through a file-name pattern) and resizes each to its image with OpenCV's bilinear
interpolation (half-pixel centres, no antialiasing, float values). ``move`` is the preset for
MOVE's output (8-bit PNGs holding probability x 255, named by image stem, at MOVE's working
resolution: shorter side 448), read the way MOVE's ``segmentation_eval.py`` reads them: converted
to 8-bit greyscale and resized to the image with PIL's bilinear filter (antialiased when
shrinking, rounded to 8 bits), then divided by 255. Every image's prediction is looked up
before the first one is read, and a missing one is an error that says how many and which.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from harness.api import Method, Option, Prediction, Sample
from harness.errors import DataError, PluginError, name_some
from harness.imageops import resize
from harness.imageio import PREDICTION_SUFFIXES, _open, image_size, inspect_file, list_names, read_soft_mask

log = logging.getLogger(__name__)


def resize_bilinear(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``(h, w)`` float32 -> ``(H, W)`` float32, bilinear (OpenCV, half-pixel centres)."""
    if mask.shape == tuple(shape):
        return mask
    return np.clip(resize(mask.astype(np.float32), shape, "bilinear"), 0.0, 1.0)


def same_aspect(pred_hw: tuple[int, int], image_hw: tuple[int, int]) -> bool:
    """Whether a prediction is the image scaled uniformly, up to rounding (1 px + 1 %)."""
    (ph, pw), (ih, iw) = pred_hw, image_hw
    expected_h, expected_w = pw * ih / iw, ph * iw / ih
    return abs(ph - expected_h) <= 1 + 0.01 * ph or abs(pw - expected_w) <= 1 + 0.01 * pw


class MaskFolder(Method):
    name = "masks"
    description = "reads predicted masks (PNG or NPY, by image stem) from a folder; resizes them to the image"
    cacheable: ClassVar[bool] = False  # reading a file is faster than the cache
    #: The file types this adapter accepts.
    suffixes: ClassVar[tuple[str, ...]] = PREDICTION_SUFFIXES
    #: The file name pattern when the options do not set one.
    default_pattern: ClassVar[str] = "{id}"
    options = (
        Option("dir", None, "the predictions' folder", type=Path, required=True, metavar="FOLDER"),
        Option("subdir", "", "sub-folder of dir to read (e.g. the dataset's name)"),
        Option("pattern", "{id}", "file name with {id} for the image id; without a suffix, "
                                  "<name>.png then <name>.npy are tried"),
        Option("allow_aspect_change", False, "accept masks whose aspect ratio differs from the image's "
                                             "(predictions made on a stretched image)"),
    )

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)  # dir is a required option: missing, it is a PluginError naming it
        self.pattern = self.config.get("pattern", self.default_pattern)
        self.allow_aspect_change = bool(self.config.get("allow_aspect_change", False))
        if "{id}" not in self.pattern:
            raise PluginError(f"{self.label()}: pattern={self.pattern!r} must contain {{id}} "
                              f"(e.g. pattern={{id}}_pred.png)")
        self.folder = Path(self.config["dir"]).expanduser() / self.config["subdir"]
        if not self.folder.is_dir():
            raise DataError(f"{self.label()}: predictions folder {self.folder} does not exist")
        self._paths: dict[str, Path] = {}
        self._digest: str | None = None

    # ---- finding the files -----------------------------------------------------------
    def _candidates(self, sample_id: str) -> list[str]:
        name = self.pattern.replace("{id}", sample_id)
        if Path(name).suffix.lower() in self.suffixes:
            return [name]
        return [name + ".png", name + ".npy"] if ".npy" in self.suffixes else [name + ".png"]

    def _expected(self) -> str:
        example = self._candidates("<id>")
        return " or ".join(str(self.folder / name) for name in example)

    def _find(self, ids: list[str]) -> dict[str, Path]:
        present = list_names(self.folder)
        missing, paths = [], {}
        for sample_id in ids:
            found = [name for name in self._candidates(sample_id) if name in present]
            if not found:
                missing.append(sample_id)
            elif len(found) > 1:
                raise DataError(f"{self.label()}: both {found[0]} and {found[1]} exist in {self.folder}; "
                                f"remove one or give pattern= with a suffix")
            else:
                paths[sample_id] = self.folder / found[0]
        if missing:
            raise DataError(
                f"{self.label()}: {len(missing)} of {len(ids)} images have no prediction "
                f"(expected {self._expected()}): {name_some(missing)}"
            )
        return paths

    def check_inputs(self, ids: list[str]) -> None:
        """Find and read every image's prediction now: a missing or bad file fails before any
        work is done. The files' bytes key any cached post-processing of these masks."""
        paths = self._find(ids)
        self._paths = paths
        self._check_files(paths)
        digest = hashlib.sha256()
        for sample_id, path in sorted(paths.items()):
            self.read_prediction(path)
            digest.update(f"{sample_id}\0{path.name}\0{inspect_file(path, 'predicted mask')[0]}\n".encode())
        self._digest = digest.hexdigest()

    def _check_files(self, paths: dict[str, Path]) -> None:
        """Per-adapter checks of the files found (none for the generic adapter)."""

    def cache_token(self) -> dict[str, Any]:
        return {"predictions": self._digest}

    def _path(self, sample_id: str) -> Path:
        if sample_id not in self._paths:
            self._paths.update(self._find([sample_id]))  # used outside the runner: look it up now
        return self._paths[sample_id]

    # ---- reading -----------------------------------------------------------------------
    def _check_aspect(self, path: Path, mask_hw: tuple[int, int], sample: Sample) -> None:
        image_hw = sample.image.shape[:2]
        if not self.allow_aspect_change and not same_aspect(mask_hw, image_hw):
            raise DataError(
                f"{self.label()}: {path} is {mask_hw[1]}x{mask_hw[0]} (WxH) but image "
                f"{sample.id!r} is {image_hw[1]}x{image_hw[0]}: not the same aspect ratio, so it is "
                f"probably not this image's mask (or it was cropped). If the method stretched the "
                f"image, pass allow_aspect_change=true"
            )

    def read_prediction(self, path: Path) -> np.ndarray:
        """``(h, w)`` float32 soft mask in [0, 1] from one prediction file."""
        return read_soft_mask(path)

    def predict(self, sample: Sample) -> Prediction:
        path = self._path(sample.id)
        mask = self.read_prediction(path)
        self._check_aspect(path, mask.shape, sample)
        return Prediction(resize_bilinear(mask, sample.image.shape[:2]))


class MOVEMasks(MaskFolder):
    """MOVE (Bielski and Favaro, NeurIPS 2022) as its evaluation script saves masks."""

    name = "move"
    description = "MOVE's saved masks: 8-bit PNGs (probability x 255) by image stem, shorter side 448, resized as MOVE does"
    version = "2"
    suffixes: ClassVar[tuple[str, ...]] = (".png",)
    #: MOVE's working resolution (shorter side), at which it saves its masks.
    short_side: ClassVar[int] = 448
    options = (
        Option("dir", None, "the folder of MOVE's saved masks", type=Path, required=True, metavar="FOLDER"),
        Option("subdir", "", "sub-folder of dir to read (e.g. the dataset's name)"),
    )

    default_pattern = "{id}.png"

    def _check_files(self, paths: dict[str, Path]) -> None:
        if not paths:
            return
        first = next(iter(paths.values()))
        height, width = image_size(first, "predicted mask")
        if min(height, width) != self.short_side:
            log.warning("%s is %dx%d, not at MOVE's working resolution (shorter side %d); scoring it anyway",
                        first, width, height, self.short_side)

    def read_prediction(self, path: Path):
        """The PIL 8-bit greyscale image, as MOVE's ``segmentation_eval.py`` converts it."""
        img = _open(path, "predicted mask")
        if img.mode.startswith("I") or img.mode == "F":
            raise DataError(f"{self.label()}: {path} is a {img.mode} image, not one of MOVE's 8-bit PNGs; "
                            f"score it with the generic adapter (--method masks)")
        return img.convert("L")

    def predict(self, sample: Sample) -> Prediction:
        """As MOVE's ``segmentation_eval.py``: ``convert("L")``, PIL bilinear resize to the image's
        size (the ground truth's), ``/ 255``."""
        path = self._path(sample.id)
        grey = self.read_prediction(path)
        self._check_aspect(path, (grey.height, grey.width), sample)
        grey = resize(np.asarray(grey), sample.image.shape[:2], "bilinear", antialias=True)
        return Prediction(grey.astype(np.float32) / np.float32(255.0))
