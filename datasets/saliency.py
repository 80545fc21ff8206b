"""Saliency benchmarks in their official on-disk layouts: images and masks matched by stem.

``ecssd``, ``duts_te``, ``duts_tr``, ``dut_omron`` and ``pascal_s`` are the folders the
official archives unpack to; ``folder`` serves any custom data laid out the same way. The
whole layout is checked when the ids are first asked for (missing folders, images without a
mask, masks whose size differs from their image's, files that are not images), so a bad
folder fails before any work is done and never gives a silently wrong score.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from harness.api import Dataset, Option, Sample
from harness.errors import name_some
from harness.imageio import check_same_size, image_size, list_images, read_image, read_mask


class SaliencyFolders(Dataset):
    """Images in ``image_dir``, one ground-truth mask per image in ``mask_dir`` (same stem).

    Subclasses set the folder names. ``nests`` are folders an archive may add above the
    layout (``DUTS-TE/DUTS-TE-Image``): the root may be given at either level.
    """

    labels: ClassVar[tuple[str, ...]] = ("mask",)
    default_evaluators: ClassVar[tuple[str, ...]] = ("saliency",)
    split: ClassVar[str] = "test"
    image_dir: ClassVar[str] = "images"
    mask_dir: ClassVar[str | None] = "masks"
    #: Whether the masks folder may be absent (training sets): the dataset then has no labels.
    masks_optional: ClassVar[bool] = False
    nests: ClassVar[tuple[str, ...]] = ()

    def __init__(self, root: str | Path | None = None, **config: Any) -> None:
        super().__init__(root, **config)
        self.images_path, self.masks_path = self._locate()
        if self.masks_path is None:
            self.labels = ()  # an image-only training folder: no evaluator applies

    # ---- layout ----------------------------------------------------------------------
    def folder_names(self) -> tuple[str, str | None]:
        """The images folder and the masks folder (``None``: no masks), relative to the root."""
        return self.image_dir, self.mask_dir

    def _locate(self) -> tuple[Path, Path | None]:
        image_name, mask_name = self.folder_names()
        base = next(
            (cand for cand in [self.root, *(self.root / n for n in self.nests)] if (cand / image_name).is_dir()),
            self.root,
        )
        images = base / image_name
        masks = base / mask_name if mask_name else None
        if masks is not None and self.masks_optional and not masks.is_dir():
            masks = None
        return images, masks

    def scan(self) -> dict[str, tuple[Path, Path | None]]:
        if not self.images_path.is_dir():
            raise self._fail(f"no images folder {self.images_path}")
        images = list_images(self.images_path, strict=True)
        if not images:
            raise self._fail(f"no .jpg/.jpeg/.png/.bmp images in {self.images_path}")
        if self.masks_path is None:
            for path in images.values():
                image_size(path)  # unreadable files fail now, not halfway through
            return {stem: (path, None) for stem, path in images.items()}
        if not self.masks_path.is_dir():
            raise self._fail(f"no masks folder {self.masks_path}")
        masks = list_images(self.masks_path, strict=True)
        missing = [images[stem].name for stem in images if stem not in masks]
        if missing:
            raise self._fail(
                f"{len(missing)} of {len(images)} images have no mask in {self.masks_path} "
                f"(expected <stem>.png for each image): {name_some(missing)}"
            )
        pairs = {stem: (path, masks[stem]) for stem, path in images.items()}
        # header reads only (no decoding): cheap enough to check every pair up front
        for image_path, mask_path in pairs.values():
            check_same_size(image_path, mask_path, image_size(image_path), image_size(mask_path, "mask"))
        return pairs

    # ---- the Dataset interface ---------------------------------------------------------
    def files(self, sample_id: str) -> list[Path]:
        return [path for path in self.entry(sample_id, str(self.images_path)) if path is not None]

    def load(self, sample_id: str) -> Sample:
        image_path, mask_path = self.entry(sample_id, str(self.images_path))
        image = read_image(image_path)
        meta = {"image_path": str(image_path)}
        if mask_path is None:
            return Sample(sample_id, image, meta=meta)
        mask = read_mask(mask_path)
        check_same_size(image_path, mask_path, image.shape[:2], mask.shape)
        meta["mask_path"] = str(mask_path)
        return Sample(sample_id, image, mask, meta=meta)


class ECSSD(SaliencyFolders):
    name = "ecssd"
    title = "ECSSD"
    report_order = 2
    description = "ECSSD (Yan et al. 2013): 1000 images with binary masks"
    layout = "<root>/images/<stem>.jpg and <root>/ground_truth_mask/<stem>.png"
    image_dir = "images"
    mask_dir = "ground_truth_mask"
    nests = ("ECSSD",)


class DUTSTest(SaliencyFolders):
    name = "duts_te"
    title = "DUTS-TE"
    report_order = 1
    description = "DUTS-TE (Wang et al. 2017): 5019 test images with binary masks"
    layout = "<root>/DUTS-TE-Image/<stem>.jpg and <root>/DUTS-TE-Mask/<stem>.png"
    image_dir = "DUTS-TE-Image"
    mask_dir = "DUTS-TE-Mask"
    nests = ("DUTS-TE",)


class DUTSTrain(SaliencyFolders):
    name = "duts_tr"
    description = "DUTS-TR (Wang et al. 2017): 10553 training images; masks optional"
    layout = "<root>/DUTS-TR-Image/<stem>.jpg, optionally <root>/DUTS-TR-Mask/<stem>.png"
    split = "train"
    image_dir = "DUTS-TR-Image"
    mask_dir = "DUTS-TR-Mask"
    masks_optional = True
    nests = ("DUTS-TR",)


class DUTOMRON(SaliencyFolders):
    name = "dut_omron"
    title = "DUT-OMRON"
    report_order = 0  # the Two Tricks paper's column order: DUT-OMRON, DUTS-TE, ECSSD, VOC07, VOC12, COCO20K
    description = "DUT-OMRON (Yang et al. 2013): 5168 images with pixel-wise masks"
    layout = "<root>/DUT-OMRON-image/<stem>.jpg and <root>/pixelwiseGT-new-PNG/<stem>.png"
    image_dir = "DUT-OMRON-image"
    mask_dir = "pixelwiseGT-new-PNG"
    nests = ("DUT-OMRON",)


class PASCALS(SaliencyFolders):
    """PASCAL-S as the official ``salObj.zip`` unpacks: ``datasets/imgs/pascal`` and
    ``datasets/masks/pascal``. Its masks are soft (the fraction of 12 annotators who marked
    each pixel, times 255); the protocol's ``gt / 255 > 0.5`` makes them binary."""

    name = "pascal_s"
    description = "PASCAL-S (Li et al. 2014): 850 images, soft consensus masks"
    layout = "<root>/datasets/imgs/pascal/<stem>.jpg and <root>/datasets/masks/pascal/<stem>.png (salObj.zip)"
    image_dir = "datasets/imgs/pascal"
    mask_dir = "datasets/masks/pascal"
    nests = ("salObj",)

    def folder_names(self) -> tuple[str, str | None]:
        # the root may also be the archive's datasets/ folder itself
        if not (self.root / self.image_dir).is_dir() and (self.root / "imgs" / "pascal").is_dir():
            return "imgs/pascal", "masks/pascal"
        return self.image_dir, self.mask_dir


class FolderDataset(SaliencyFolders):
    name = "folder"
    description = "any images folder + masks folder matched by file stem (jpg/jpeg/png/bmp)"
    layout = "<root>/<images>/<stem>.jpg|png|bmp and <root>/<masks>/<stem>.png (options images=, masks=)"
    options = (
        Option("images", "images", "images folder, relative to the root (or absolute)"),
        Option("masks", "masks", "masks folder, relative to the root (or absolute); empty: no masks"),
    )

    def folder_names(self) -> tuple[str, str | None]:
        return self.config["images"], self.config["masks"] or None
