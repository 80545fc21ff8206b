"""Evaluation protocols: the harness's canonical one, and named presets that reproduce the
evaluation code behind published numbers.

Every run records its protocol's name and version (``results.json`` -> ``protocol``); numbers
from different protocols are not comparable, and ``harness report`` says which one each row used.

- ``harness`` (the default, ``harness-saliency-corloc`` 1.0): DESIGN.md's protocol; images
  and ground truth at their native size, ground-truth foreground ``gt / 255 > 0.5``.
- ``segtricks`` (``segtricks-320crop`` 1.0): the evaluation of segmentation-tricks
  (alpErenSari/segmentation-tricks, the code behind the Two Tricks paper's Sempart rows).
  Every image *and* its ground truth are resized so that the shorter side is 335 (PIL
  bilinear, torchvision ``Resize(335)``'s size rule) and centre-cropped to 320 x 320
  (``CenterCrop(320)``); the method sees that crop and is scored on it against the resized,
  therefore soft, ground truth. Acc and IoU take ``gt / 255 > 0.5``; max F-beta counts every
  non-zero ground-truth pixel as foreground (the reference casts the soft mask to bool).
  Saliency only: boxes are not transformed, so box evaluators are refused.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from harness.errors import HarnessError

if TYPE_CHECKING:
    import numpy as np

    from harness.api import Sample

PROTOCOL_NAME = "harness-saliency-corloc"
#: Bump when any metric's definition changes; results from other versions are not comparable.
PROTOCOL_VERSION = "1.0"
BETA2 = 0.3
#: Thresholds t = k / 255 for k = 0 .. 254 (prediction > t).
N_THRESHOLDS = 255
#: Size-binned IoU: images binned by ground-truth foreground ratio into this many equal bins.
N_SIZE_BINS = 20


def resize_shorter_side(array: "np.ndarray", shorter: int) -> "np.ndarray":
    """PIL bilinear resize of a uint8 ``(H, W[, 3])`` array so that its shorter side is
    ``shorter``; the longer side is ``int(shorter * long / short)`` (torchvision's rule)."""
    from harness.imageops import resize

    height, width = array.shape[:2]
    if height <= width:
        size = (shorter, int(shorter * width / height))
    else:
        size = (int(shorter * height / width), shorter)
    return resize(array, size, "bilinear", antialias=True)


def center_crop(array: "np.ndarray", side: int) -> "np.ndarray":
    """The centred ``side x side`` crop (torchvision ``CenterCrop``'s offsets, rounded)."""
    height, width = array.shape[:2]
    if height < side or width < side:
        raise ValueError(f"cannot centre-crop {side}x{side} from a {height}x{width} image")
    top, left = int(round((height - side) / 2.0)), int(round((width - side) / 2.0))
    return array[top : top + side, left : left + side]


@dataclass(frozen=True)
class Protocol:
    """How samples are presented to the method and the evaluators.

    Attributes
    ----------
    key : str
        The name ``harness run --protocol`` takes.
    name, version : str
        What ``results.json`` records.
    summary : str
        One line for ``harness run --help`` and report notes.
    resize_crop : tuple of int, optional
        ``(shorter side, crop side)``: resize then centre-crop every image and mask.
    evaluator_args : dict
        Options given to evaluators by name (e.g. the F-beta foreground rule).
    """

    key: str
    name: str
    version: str
    summary: str
    resize_crop: tuple[int, int] | None = None
    evaluator_args: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def is_default(self) -> bool:
        return self.key == DEFAULT_PROTOCOL

    def record(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version}

    def view(self, sample: "Sample") -> "Sample":
        """The sample as this protocol presents it (the method and evaluators see this)."""
        if self.resize_crop is None:
            return sample
        shorter, side = self.resize_crop
        image = center_crop(resize_shorter_side(sample.image, shorter), side)
        mask = None if sample.mask is None else center_crop(resize_shorter_side(sample.mask, shorter), side)
        return replace(sample, image=image, mask=mask, boxes=None)

    def view_size(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        """``(H, W)`` of :meth:`view`'s image for an image of ``image_hw``."""
        if self.resize_crop is None:
            return tuple(image_hw)
        side = self.resize_crop[1]
        return side, side

    def check(self, evaluators: list) -> None:
        """Refuse evaluators this protocol cannot serve."""
        if self.resize_crop is not None:
            bad = [ev.name for ev in evaluators if ev.requires != "mask"]
            if bad:
                raise HarnessError(
                    f"--protocol {self.key} scores masks on a resized centre crop; evaluator(s) "
                    f"{', '.join(bad)} need boxes: run them under --protocol {DEFAULT_PROTOCOL}"
                )


DEFAULT_PROTOCOL = "harness"
PROTOCOLS = {
    "harness": Protocol("harness", PROTOCOL_NAME, PROTOCOL_VERSION,
                        "native resolution; ground-truth foreground gt/255 > 0.5 (DESIGN.md)"),
    "segtricks": Protocol(
        "segtricks", "segtricks-320crop", "1.0",
        "segmentation-tricks' evaluation: Resize(335) + CenterCrop(320) of image and ground truth "
        "(soft, bilinear); F-beta counts every non-zero ground-truth pixel as foreground",
        resize_crop=(335, 320),
        evaluator_args={"saliency": {"fbeta_foreground": "nonzero"}},
    ),
}


def get_protocol(key: str) -> Protocol:
    """The protocol named ``key``, or one error listing the choices."""
    if key not in PROTOCOLS:
        raise HarnessError(f"--protocol {key!r}: choose one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[key]
