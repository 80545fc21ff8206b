"""Dataset plugins: the official layouts, the real data in ../shared/data, and one clear error
for every kind of bad input (checked before any work is done where it can be)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.datasets.coco import COCO20K
from harness.datasets.saliency import DUTSTrain, ECSSD, PASCALS, DUTSTest, FolderDataset
from harness.datasets.voc import VOC07, VOC12, parse_voc_xml
from harness.errors import DataError
from harness.registry import get_registry


def _save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(array)
    (img.convert(mode) if mode else img).save(path)
    return path


def _ecssd(root: Path, n: int = 3, size=(12, 16)) -> Path:
    """A tiny ECSSD layout: n RGB JPEGs and 0/255 PNG masks."""
    rng = np.random.default_rng(0)
    for i in range(n):
        _save(root / "images" / f"{i:04d}.jpg", rng.integers(0, 255, size + (3,), dtype=np.uint8))
        mask = np.zeros(size, np.uint8)
        mask[2:8, 3:9] = 255
        _save(root / "ground_truth_mask" / f"{i:04d}.png", mask)
    return root


# ---- the real data ------------------------------------------------------------------------
def test_ecssd_real_data_yields_201_rgb_pairs(ecssd_root):
    ds = ECSSD(ecssd_root)
    ids = ds.ids()
    assert len(ids) == 201 and "0557" in ids and ids[0] == "0005"
    gray = ds.load("0557")  # the one grayscale JPEG in ECSSD
    assert Image.open(ecssd_root / "images" / "0557.jpg").mode == "L"
    assert gray.image.dtype == np.uint8 and gray.image.shape == gray.mask.shape + (3,)
    assert np.array_equal(gray.image[..., 0], gray.image[..., 2])
    assert set(np.unique(gray.mask)) <= {0, 255} and gray.boxes is None


def test_voc12_real_data_yields_50_images_with_their_boxes(voc12_root):
    ds = VOC12(voc12_root)
    ids = ds.ids()
    assert len(ids) == 50 and ids[0] == "2007_000027"
    samples = [ds.load(i) for i in ids]
    assert sum(len(s.boxes) for s in samples) == 135  # SOURCES.md: 135 objects,
    assert sum(sum(s.meta["difficult"]) for s in samples) == 25  # 25 difficult (kept),
    assert sum(sum(s.meta["truncated"]) for s in samples) == 66  # 66 truncated (kept)
    first = samples[0]
    # XML (xmin, ymin, xmax, ymax) = (174, 101, 349, 351) -> pixel edges (173, 100, 349, 351)
    np.testing.assert_array_equal(first.boxes, [[173, 100, 349, 351]])
    assert first.boxes.dtype == np.float64 and first.mask is None
    # 2007_000033: three aeroplanes, the first at XML (9, 107, 499, 263)
    np.testing.assert_array_equal(ds.load("2007_000033").boxes[0], [8, 106, 499, 263])
    for s in samples:
        h, w = s.image.shape[:2]
        assert s.image.shape[2] == 3 and (s.boxes[:, :2] >= 0).all()
        assert (s.boxes[:, 2] <= w).all() and (s.boxes[:, 3] <= h).all()


def test_voc_root_may_be_the_year_folder_or_a_vocdevkit_above_it(voc12_root, tmp_path):
    devkit = tmp_path / "VOCdevkit"
    devkit.mkdir()
    (devkit / "VOC2012").symlink_to(voc12_root)
    for root in (voc12_root, devkit, tmp_path):
        assert len(VOC12(root).ids()) == 50


# ---- layouts and conversions ----------------------------------------------------------------
@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "LA", "I;16"])
def test_images_always_arrive_as_rgb(tmp_path, mode):
    root = _ecssd(tmp_path / "ECSSD", n=1)
    rgb = np.random.default_rng(1).integers(0, 255, (12, 16, 3), dtype=np.uint8)
    suffix = ".jpg" if mode == "CMYK" else ".png"
    (root / "images" / "0000.jpg").unlink()
    img = Image.fromarray(rgb)
    if mode == "I;16":
        img = Image.fromarray(rgb[..., 0].astype(np.uint16) * 257)
    else:
        img = img.convert(mode)
    img.save(root / "images" / f"0000{suffix}")
    sample = ECSSD(root).load("0000")
    assert sample.image.dtype == np.uint8 and sample.image.shape == (12, 16, 3)
    if mode in ("L", "LA", "I;16"):  # gray levels survive (16-bit scaled by 1/257, not clipped)
        np.testing.assert_array_equal(sample.image[..., 1], np.asarray(Image.fromarray(rgb).convert("L"))
                                      if mode != "I;16" else rgb[..., 0])


def test_masks_arrive_as_8bit(tmp_path):
    root = _ecssd(tmp_path / "ECSSD", n=2)
    binary = np.zeros((12, 16), np.uint8)
    binary[:6] = 1  # a 0/1 mask means 0/255
    _save(root / "ground_truth_mask" / "0000.png", binary)
    _save(root / "ground_truth_mask" / "0001.png", binary * 255, mode="P")
    ds = ECSSD(root)
    for sample_id in ("0000", "0001"):
        mask = ds.load(sample_id).mask
        assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 255} and (mask[:6] == 255).all()


def test_nested_official_folders_and_pascal_s(tmp_path):
    _ecssd(tmp_path / "DUTS-TE", n=2)
    (tmp_path / "DUTS-TE" / "images").rename(tmp_path / "DUTS-TE" / "DUTS-TE-Image")
    (tmp_path / "DUTS-TE" / "ground_truth_mask").rename(tmp_path / "DUTS-TE" / "DUTS-TE-Mask")
    assert DUTSTest(tmp_path).ids() == DUTSTest(tmp_path / "DUTS-TE").ids() == ["0000", "0001"]
    sal = tmp_path / "salObj" / "datasets"
    _ecssd(sal, n=2)
    (sal / "imgs").mkdir()
    (sal / "masks").mkdir()
    (sal / "images").rename(sal / "imgs" / "pascal")
    (sal / "ground_truth_mask").rename(sal / "masks" / "pascal")
    for root in (tmp_path / "salObj", tmp_path, sal):
        assert PASCALS(root).ids() == ["0000", "0001"]


def test_duts_tr_masks_are_optional(tmp_path):
    root = tmp_path / "DUTS-TR"
    _ecssd(root, n=2)
    (root / "images").rename(root / "DUTS-TR-Image")
    shutil.rmtree(root / "ground_truth_mask")
    ds = DUTSTrain(root)
    assert ds.labels == () and ds.ids() == ["0000", "0001"] and ds.load("0000").mask is None
    (root / "ground_truth_mask").mkdir()
    (root / "ground_truth_mask").rename(root / "DUTS-TR-Mask")
    with pytest.raises(DataError, match="2 of 2 images have no mask"):
        DUTSTrain(root).ids()  # once the masks folder is there, every image needs one


def test_folder_dataset_matches_by_stem_across_suffixes(tmp_path):
    rng = np.random.default_rng(2)
    for stem, suffix in (("a", ".jpg"), ("b", ".png"), ("c", ".bmp"), ("d", ".jpeg")):
        _save(tmp_path / "imgs" / f"{stem}{suffix}", rng.integers(0, 255, (8, 9, 3), dtype=np.uint8))
        _save(tmp_path / "gt" / f"{stem}.png", np.zeros((8, 9), np.uint8))
    ds = FolderDataset(tmp_path, images="imgs", masks="gt")
    assert ds.ids() == ["a", "b", "c", "d"] and ds.load("c").mask.shape == (8, 9)
    assert FolderDataset(tmp_path, images=str(tmp_path / "imgs"), masks="").labels == ()


# ---- bad input: one clear error per case ----------------------------------------------------
# (an unreadable image, an empty images folder, a missing mask and a mask of another size are
# checked through the command line, with "nothing written", in tests/test_bad_input.py)
def test_missing_root_names_the_option_and_the_layout(monkeypatch):
    monkeypatch.delenv("HARNESS_DATA_ECSSD", raising=False)
    monkeypatch.delenv("HARNESS_DATA", raising=False)
    with pytest.raises(DataError, match=r"--data-root.*HARNESS_DATA_ECSSD.*ground_truth_mask"):
        ECSSD(None)


def test_missing_images_folder(tmp_path):
    with pytest.raises(DataError, match=r"no images folder .*images \(expected layout: <root>/images"):
        ECSSD(tmp_path).ids()


def test_missing_masks_folder(tmp_path):
    root = _ecssd(tmp_path, n=1)
    shutil.rmtree(root / "ground_truth_mask")
    with pytest.raises(DataError, match=r"no masks folder .*ground_truth_mask"):
        ECSSD(root).ids()


def test_image_without_mask_lists_how_many_and_which(tmp_path):
    root = _ecssd(tmp_path, n=8)
    for i in range(7):
        (root / "ground_truth_mask" / f"{i:04d}.png").unlink()
    with pytest.raises(DataError, match=r"7 of 8 images have no mask in .*ground_truth_mask \(expected "
                                        r"<stem>.png for each image\): 0000.jpg, .*, 0004.jpg and 2 more"):
        ECSSD(root).ids()


def test_mask_size_change_after_the_scan_is_caught_at_load(tmp_path):
    root = _ecssd(tmp_path, n=2)
    ds = ECSSD(root)
    ds.ids()
    _save(root / "ground_truth_mask" / "0001.png", np.zeros((11, 16), np.uint8))
    with pytest.raises(DataError, match=r"0001.png is 16x11 .*0001.jpg is 16x12"):
        ds.load("0001")


def test_truncated_mask_fails_up_front_naming_it(tmp_path):
    """The scan checks every PNG's chunks through IEND: a mask whose pixel data was cut fails
    when the ids are first asked for, and again if it is cut after the scan."""
    root = _ecssd(tmp_path, n=1)
    path = root / "ground_truth_mask" / "0000.png"
    whole = path.read_bytes()
    path.write_bytes(whole[:60])  # header intact, pixel data cut
    with pytest.raises(DataError, match=r"mask .*0000.png cannot be read .*corrupted PNG"):
        ECSSD(root).ids()
    path.write_bytes(whole)
    ds = ECSSD(root)
    ds.ids()
    path.write_bytes(whole[:60])
    with pytest.raises(DataError, match=r"mask .*0000.png cannot be read"):
        ds.load("0000")


def test_two_images_with_one_stem_are_ambiguous(tmp_path):
    root = _ecssd(tmp_path, n=1)
    _save(root / "images" / "0000.png", np.zeros((12, 16, 3), np.uint8))
    with pytest.raises(DataError, match=r"0000.jpg and .*0000.png share the stem"):
        ECSSD(root).ids()


# ---- VOC bad input ----------------------------------------------------------------------------
def _voc(root: Path, ids=("2008_000001", "2008_000002"), size=(20, 30)) -> Path:
    base = root / "VOCdevkit" / "VOC2012"
    for i in ids:
        _save(base / "JPEGImages" / f"{i}.jpg", np.zeros(size + (3,), np.uint8))
        xml = (f"<annotation><size><width>{size[1]}</width><height>{size[0]}</height><depth>3</depth></size>"
               f"<object><name>dog</name><truncated>1</truncated><difficult>1</difficult>"
               f"<bndbox><xmin>1</xmin><ymin>2</ymin><xmax>10</xmax><ymax>12.5</ymax></bndbox>"
               f"<part><name>head</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax><ymax>2</ymax></bndbox></part>"
               f"</object></annotation>")
        (base / "Annotations").mkdir(parents=True, exist_ok=True)
        (base / "Annotations" / f"{i}.xml").write_text(xml)
    (base / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    (base / "ImageSets" / "Main" / "trainval.txt").write_text("".join(f"{i}\n" for i in ids))
    return base


def test_voc_boxes_keep_difficult_and_truncated_and_skip_parts(tmp_path):
    base = _voc(tmp_path)
    boxes, size, meta = parse_voc_xml(base / "Annotations" / "2008_000001.xml")
    np.testing.assert_array_equal(boxes, [[0, 1, 10, 12.5]])
    assert size == (20, 30) and meta == {"classes": ["dog"], "difficult": [1], "truncated": [1]}
    assert len(VOC12(tmp_path).ids()) == 2


def test_voc_missing_image_list(tmp_path):
    base = _voc(tmp_path)
    (base / "ImageSets" / "Main" / "trainval.txt").unlink()
    with pytest.raises(DataError, match=r"no image list .*ImageSets/Main/trainval.txt \(expected layout"):
        VOC12(tmp_path).ids()


def test_voc_missing_folder(tmp_path):
    with pytest.raises(DataError, match=r"no Annotations/ or JPEGImages/ under"):
        VOC12(tmp_path)


def test_voc_id_without_annotation_or_image(tmp_path):
    base = _voc(tmp_path, ids=("a", "b", "c"))
    (base / "Annotations" / "b.xml").unlink()
    with pytest.raises(DataError, match=r"1 of the 3 ids .* have no .*Annotations/<id>.xml: b.xml"):
        VOC12(tmp_path).ids()
    base = _voc(tmp_path / "2", ids=("a", "b"))
    (base / "JPEGImages" / "a.jpg").unlink()
    with pytest.raises(DataError, match=r"have no .*JPEGImages/<id>.jpg: a.jpg"):
        VOC12(tmp_path / "2").ids()


def test_voc_malformed_xml_and_bad_box(tmp_path):
    base = _voc(tmp_path)
    (base / "Annotations" / "2008_000002.xml").write_text("<annotation><size>")
    with pytest.raises(DataError, match=r"annotation .*2008_000002.xml is not valid XML"):
        VOC12(tmp_path).ids()
    xml = (base / "Annotations" / "2008_000001.xml").read_text().replace("<xmax>10</xmax>", "<xmax>x</xmax>")
    (base / "Annotations" / "2008_000002.xml").write_text(xml)
    with pytest.raises(DataError, match=r"2008_000002.xml: object 0 \(dog\) has no numeric <xmax>"):
        VOC12(tmp_path).ids()


def test_voc_image_size_differs_from_its_annotation(tmp_path):
    base = _voc(tmp_path)
    _save(base / "JPEGImages" / "2008_000002.jpg", np.zeros((21, 30, 3), np.uint8))
    with pytest.raises(DataError, match=r"image .*2008_000002.jpg is 30x21 .* annotation .*2008_000002.xml declares 30x20"):
        VOC12(tmp_path).ids()


def test_voc_wrong_year(tmp_path):
    base = _voc(tmp_path)
    with pytest.raises(DataError, match=r"looks like VOC2012, not VOC2007"):
        VOC07(base)


# ---- COCO20K ------------------------------------------------------------------------------------
def _coco(root: Path) -> Path:
    names = {9: (20, 30), 25: (16, 16), 30: (10, 12)}
    for image_id, size in names.items():
        _save(root / "train2014" / f"COCO_train2014_{image_id:012d}.jpg", np.zeros(size + (3,), np.uint8), mode="L")
    anns = [
        {"id": 1, "image_id": 9, "bbox": [1.4, 2.5, 10.2, 5.0], "iscrowd": 0, "category_id": 1},
        {"id": 2, "image_id": 9, "bbox": [0, 0, 30, 20], "iscrowd": 1, "category_id": 1},  # dropped
        {"id": 3, "image_id": 25, "bbox": [3.5, 0.5, 4.0, 4.0], "iscrowd": 0, "category_id": 2},
        {"id": 4, "image_id": 30, "bbox": [0, 0, 1, 1], "iscrowd": 0, "category_id": 2},  # not in the list
    ]
    images = [{"id": i, "file_name": f"COCO_train2014_{i:012d}.jpg", "height": s[0], "width": s[1]}
              for i, s in names.items()]
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_train2014.json").write_text(json.dumps({"images": images, "annotations": anns}))
    (root / "coco_20k_filenames.txt").write_text(
        "train2014/COCO_train2014_000000000009.jpg\ntrain2014/COCO_train2014_000000000025.jpg\n")
    return root


def test_coco20k_reads_the_list_drops_crowd_and_rounds_like_lost(tmp_path):
    ds = COCO20K(_coco(tmp_path))
    assert ds.ids() == ["COCO_train2014_000000000009", "COCO_train2014_000000000025"]
    a, b = ds.load(ds.ids()[0]), ds.load(ds.ids()[1])
    # [1.4, 2.5, 10.2, 5.0] -> (1.4, 2.5, 11.6, 7.5) -> rounded (halves to even): (1, 2, 12, 8)
    np.testing.assert_array_equal(a.boxes, [[1, 2, 12, 8]])
    np.testing.assert_array_equal(b.boxes, [[4, 0, 8, 4]])  # 3.5 -> 4, 0.5 -> 0, 7.5 -> 8, 4.5 -> 4
    assert a.image.shape == (20, 30, 3)  # a grayscale JPEG arrives as RGB


def test_coco20k_bad_input(tmp_path):
    root = _coco(tmp_path)
    (root / "coco_20k_filenames.txt").rename(root / "list.txt")
    with pytest.raises(DataError, match=r"no image list .*coco_20k_filenames.txt; get .* LOST"):
        COCO20K(root).ids()
    assert len(COCO20K(root, filenames="list.txt").ids()) == 2
    (root / "list.txt").write_text("train2014/COCO_train2014_000000000077.jpg\n")
    with pytest.raises(DataError, match=r"1 of the 1 images in list.txt are not in .*train2014: COCO_train2014_000000000077.jpg"):
        COCO20K(root, filenames="list.txt").ids()
    _save(root / "train2014" / "COCO_train2014_000000000077.jpg", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DataError, match=r"not in instances_train2014.json \(is it the 2014 train file\?\)"):
        COCO20K(root, filenames="list.txt").ids()


# ---- registry ---------------------------------------------------------------------------------
def test_every_dataset_declares_its_labels_layout_and_split():
    reg = get_registry()
    for name in ("ecssd", "duts_te", "duts_tr", "dut_omron", "pascal_s", "folder", "voc07", "voc12", "coco20k"):
        cls = reg.get("dataset", name)
        assert cls.layout and cls.split and set(cls.labels) <= {"mask", "boxes"}
        assert ("corloc" in cls.default_evaluators) == (cls.labels == ("boxes",))
