"""COCO20K (LOST's subset of COCO 2014 train) for CorLoc.

The 19,817 images are those named in ``coco_20k_filenames.txt`` (published with LOST; the
user supplies it, one ``train2014/COCO_train2014_<12 digits>.jpg`` per line). Boxes come
from the 2014 ``instances_train2014.json``; crowd annotations are dropped, and each box
``[x, y, w, h]`` becomes ``(x, y, x + w, y + h)`` rounded to whole pixels as LOST does
(Python's ``round``: halves to even).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from harness.api import Dataset, Option, Sample
from harness.errors import DataError, name_some
from harness.imageio import list_names, read_image

_IMAGE_ID = re.compile(r"(\d+)\.jpg$", re.IGNORECASE)


class COCO20K(Dataset):
    name = "coco20k"
    title = "COCO20K"
    report_order = 5
    description = "COCO20K (LOST): 19,817 COCO 2014 train images, non-crowd boxes, for CorLoc"
    layout = ("<root>/train2014/COCO_train2014_<id>.jpg, <root>/annotations/instances_train2014.json "
              "and <root>/coco_20k_filenames.txt (from the LOST repository)")
    labels: ClassVar[tuple[str, ...]] = ("boxes",)
    default_evaluators: ClassVar[tuple[str, ...]] = ("corloc",)
    split: ClassVar[str] = "train2014-20k"
    options = (
        Option("filenames", None, "the image list, relative to the root or absolute (default <root>/coco_20k_filenames.txt)"),
        Option("annotations", None, "instances JSON, relative to the root or absolute "
               "(default <root>/annotations/instances_train2014.json)"),
        Option("images", None, "images folder, relative to the root or absolute "
               "(default <root>/train2014, else <root>/images/train2014)"),
    )

    def __init__(self, root: str | Path | None = None, **config: Any) -> None:
        super().__init__(root, **config)

    def _path(self, option: str, *defaults: str) -> Path:
        given = Path(self.config[option]).expanduser() if self.config[option] is not None else None
        if given is not None:
            return given if given.is_absolute() else self.root / given
        candidates = [self.root / d for d in defaults]
        return next((c for c in candidates if c.exists()), candidates[0])

    def _read_list(self, listing: Path) -> list[tuple[str, int]]:
        if not listing.is_file():
            raise self._fail(f"no image list {listing}; get coco_20k_filenames.txt from the LOST "
                             f"repository (datasets/) and put it there, or pass filenames=FILE")
        entries = []
        for number, line in enumerate(listing.read_text().splitlines(), 1):
            if not line.strip():
                continue
            name = line.strip().replace("\\", "/").rsplit("/", 1)[-1]
            match = _IMAGE_ID.search(name)
            if match is None:
                raise self._fail(f"{listing} line {number}: {line.strip()!r} is not a COCO image file name")
            entries.append((name, int(match.group(1))))
        if not entries:
            raise self._fail(f"the image list {listing} is empty")
        return list(dict.fromkeys(entries))

    def scan(self) -> dict[str, tuple[Path, np.ndarray, tuple[int, int]]]:
        listing = self._path("filenames", "coco_20k_filenames.txt")
        entries = self._read_list(listing)
        images = self._path("images", "train2014", "images/train2014")
        if not images.is_dir():
            raise self._fail(f"no images folder {images}")
        present = list_names(images)
        missing = [name for name, _ in entries if name not in present]
        if missing:
            raise self._fail(f"{len(missing)} of the {len(entries)} images in {listing.name} are not in "
                             f"{images}: {name_some(missing)}")
        ann_path = self._path("annotations", "annotations/instances_train2014.json")
        if not ann_path.is_file():
            raise self._fail(f"no annotation file {ann_path}")
        try:
            with open(ann_path, "rb") as handle:
                coco = json.load(handle)
            wanted = {image_id for _, image_id in entries}
            sizes = {im["id"]: (int(im["height"]), int(im["width"])) for im in coco["images"] if im["id"] in wanted}
            boxes: dict[int, list] = {image_id: [] for image_id in wanted}
            for ann in coco["annotations"]:
                if ann["image_id"] in wanted and not ann.get("iscrowd", 0):
                    x, y, w, h = (float(v) for v in ann["bbox"])
                    boxes[ann["image_id"]].append([round(x), round(y), round(x + w), round(y + h)])
        except (ValueError, KeyError, TypeError) as exc:
            raise self._fail(f"{ann_path} is not a COCO instances file ({type(exc).__name__}: {exc})") from None
        del coco
        unknown = [name for name, image_id in entries if image_id not in sizes]
        if unknown:
            raise self._fail(f"{len(unknown)} images of {listing.name} are not in {ann_path.name} "
                             f"(is it the 2014 train file?): {name_some(unknown)}")
        return {
            Path(name).stem: (images / name, np.asarray(boxes[image_id], np.float64).reshape(-1, 4), sizes[image_id])
            for name, image_id in entries
        }

    def files(self, sample_id: str) -> list[Path]:
        return [self.entry(sample_id, "its list")[0]]

    def index_files(self) -> list[Path]:
        return [self._path("filenames", "coco_20k_filenames.txt"),
                self._path("annotations", "annotations/instances_train2014.json")]

    def load(self, sample_id: str) -> Sample:
        path, boxes, size = self.entry(sample_id, "its list")
        image = read_image(path)
        if image.shape[:2] != size:
            raise DataError(
                f"image {path} is {image.shape[1]}x{image.shape[0]} (WxH) but the annotation file "
                f"declares {size[1]}x{size[0]}; the boxes would not fit: re-copy the image"
            )
        return Sample(sample_id, image, None, boxes.copy(), meta={"image_path": str(path)})
