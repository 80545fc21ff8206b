"""PASCAL VOC 2007 and 2012 ``trainval`` for CorLoc, read from the official VOCdevkit layout.

Boxes follow LOST / TokenCut: every object is kept (difficult and truncated too), and the
1-based inclusive VOC box ``(xmin, ymin, xmax, ymax)`` becomes the pixel-edge box
``(xmin - 1, ymin - 1, xmax, ymax)``. All annotations are parsed, and every image's header
is checked against its XML ``<size>``, when the ids are first asked for.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from harness.api import Dataset, Sample
from harness.errors import DataError, name_some
from harness.imageio import image_size, list_names, read_image


def parse_voc_xml(path: Path) -> tuple[np.ndarray, tuple[int, int], dict[str, list]]:
    """Boxes, image size and object attributes from one VOC annotation file.

    Returns
    -------
    boxes : np.ndarray
        ``(K, 4)`` float64 ``(x0, y0, x1, y1)`` pixel-edge boxes, ``(xmin-1, ymin-1, xmax, ymax)``.
    size : tuple of int
        ``(H, W)`` from ``<size>``.
    meta : dict
        ``classes``, ``difficult``, ``truncated``: one entry per object, in file order.
    """
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise DataError(f"annotation {path} is not valid XML ({exc}); re-copy it") from None
    except OSError as exc:
        raise DataError(f"annotation {path} cannot be read ({exc})") from None

    def number(node: ET.Element | None, tag: str, where: str) -> float:
        text = node.findtext(tag) if node is not None else None
        try:
            return float(text)  # a few VOC2012 files write coordinates as "273.5"
        except (TypeError, ValueError):
            raise DataError(f"annotation {path}: {where} has no numeric <{tag}> ({text!r})") from None

    size = root.find("size")
    height, width = int(number(size, "height", "<size>")), int(number(size, "width", "<size>"))
    boxes, meta = [], {"classes": [], "difficult": [], "truncated": []}
    for k, obj in enumerate(root.findall("object")):
        where = f"object {k} ({obj.findtext('name')})"
        bndbox = obj.find("bndbox")
        x0, y0 = number(bndbox, "xmin", where) - 1, number(bndbox, "ymin", where) - 1
        x1, y1 = number(bndbox, "xmax", where), number(bndbox, "ymax", where)
        if not (x1 > x0 and y1 > y0):
            raise DataError(f"annotation {path}: {where} has an empty box {(x0 + 1, y0 + 1, x1, y1)}")
        boxes.append((x0, y0, x1, y1))
        meta["classes"].append(obj.findtext("name", ""))
        meta["difficult"].append(int(obj.findtext("difficult", "0") or 0))
        meta["truncated"].append(int(obj.findtext("truncated", "0") or 0))
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4), (height, width), meta


class VOCDetection(Dataset):
    """One VOC year's ``trainval`` image set, with every object's box."""

    labels: ClassVar[tuple[str, ...]] = ("boxes",)
    default_evaluators: ClassVar[tuple[str, ...]] = ("corloc",)
    split: ClassVar[str] = "trainval"
    year: ClassVar[str] = ""

    def __init__(self, root: str | Path | None = None, **config: Any) -> None:
        super().__init__(root, **config)
        self.base = self._locate()

    def _locate(self) -> Path:
        folder = f"VOC{self.year}"
        candidates = [self.root, self.root / folder, self.root / "VOCdevkit" / folder]
        base = next((c for c in candidates if (c / "Annotations").is_dir() or (c / "JPEGImages").is_dir()), None)
        if base is None:
            raise self._fail(f"no Annotations/ or JPEGImages/ under {self.root}, {self.root / folder} "
                             f"or {self.root / 'VOCdevkit' / folder}")
        other = re.fullmatch(r"VOC(\d{4})", base.name)
        if other and other.group(1) != self.year:
            raise self._fail(f"{base} looks like VOC{other.group(1)}, not VOC{self.year}; "
                             f"use the dataset for that year or point --data-root at VOC{self.year}")
        return base

    def _listing(self) -> Path:
        return self.base / "ImageSets" / "Main" / f"{self.split}.txt"

    def _read_ids(self) -> list[str]:
        listing = self._listing()
        if not listing.is_file():
            raise self._fail(f"no image list {listing}")
        ids = list(dict.fromkeys(line.split()[0] for line in listing.read_text().splitlines() if line.strip()))
        if not ids:
            raise self._fail(f"the image list {listing} is empty")
        return ids

    def scan(self) -> dict[str, tuple[np.ndarray, tuple[int, int], dict]]:
        ids = self._read_ids()
        for sub, suffix in (("Annotations", ".xml"), ("JPEGImages", ".jpg")):
            folder = self.base / sub
            if not folder.is_dir():
                raise self._fail(f"no folder {folder}")
            present = list_names(folder)
            missing = [f"{i}{suffix}" for i in ids if f"{i}{suffix}" not in present]
            if missing:
                raise self._fail(f"{len(missing)} of the {len(ids)} ids in ImageSets/Main/{self.split}.txt "
                                 f"have no {folder}/<id>{suffix}: {name_some(missing)}")
        annotations = {}
        for sample_id in ids:
            xml_path = self.base / "Annotations" / f"{sample_id}.xml"
            boxes, size, meta = parse_voc_xml(xml_path)
            image_path = self.base / "JPEGImages" / f"{sample_id}.jpg"
            self._check_size(image_path, xml_path, image_size(image_path), size)
            annotations[sample_id] = (boxes, size, meta)
        return annotations

    @staticmethod
    def _check_size(image_path: Path, xml_path: Path, actual: tuple, declared: tuple) -> None:
        if tuple(actual) != tuple(declared):
            raise DataError(
                f"image {image_path} is {actual[1]}x{actual[0]} (WxH) but its annotation {xml_path} "
                f"declares {declared[1]}x{declared[0]}; the boxes would not fit the image: re-copy both"
            )

    def files(self, sample_id: str) -> list[Path]:
        self.entry(sample_id, f"its {self.split} list")
        return [self.base / "JPEGImages" / f"{sample_id}.jpg", self.base / "Annotations" / f"{sample_id}.xml"]

    def index_files(self) -> list[Path]:
        return [self._listing()]

    def load(self, sample_id: str) -> Sample:
        boxes, size, meta = self.entry(sample_id, f"its {self.split} list")
        image_path = self.base / "JPEGImages" / f"{sample_id}.jpg"
        image = read_image(image_path)
        self._check_size(image_path, self.base / "Annotations" / f"{sample_id}.xml", image.shape[:2], size)
        return Sample(sample_id, image, None, boxes.copy(), meta={**meta, "image_path": str(image_path)})


class VOC07(VOCDetection):
    name = "voc07"
    title = "VOC07"
    report_order = 3
    description = "PASCAL VOC 2007 trainval (5011 images), all object boxes, for CorLoc"
    layout = ("the VOC2007 folder (or a VOCdevkit above it) holding Annotations/<id>.xml, "
              "JPEGImages/<id>.jpg and ImageSets/Main/trainval.txt")
    year = "2007"


class VOC12(VOCDetection):
    name = "voc12"
    title = "VOC12"
    report_order = 4
    description = "PASCAL VOC 2012 trainval (11540 images), all object boxes, for CorLoc"
    layout = ("the VOC2012 folder (or a VOCdevkit above it) holding Annotations/<id>.xml, "
              "JPEGImages/<id>.jpg and ImageSets/Main/trainval.txt")
    year = "2012"
