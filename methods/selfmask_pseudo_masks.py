"""Pseudo-masks for distillation (``harness train --pseudo-masks SOURCE``), from anywhere.

A source is one of:

- a **run directory** of ``harness run`` (any method, any post chain) on the training
  dataset, reopened with :func:`harness.runner.reopen` (which checks that the installed plugins
  still make that run's masks); its :meth:`~harness.runner.Runner.final_masks` reads the run's
  masks from the mask caches (an entry missing from the cache is predicted again by the same
  request, on the CPU, which gives the same mask but is slower);
- a **folder of mask images** (PNG or NPY, one per image, matched by stem), read through the
  ``masks`` method plugin (:class:`harness.methods.masks.MaskFolder`), which also resizes them;
- **SelfMask's JSON**: ``{"<file name>": RLE, ...}`` with COCO run-length encodings (a dict
  ``{"size": [h, w], "counts": str | list}``, or a list of them, which is read as their
  union), matched by the file name's stem; masks at another size than the image (SelfMask's
  are 224 x 224) are resized to it (nearest).

Pseudo-masks are binary: foreground where the source's mask is above 0.5. Every training
image's pseudo-mask is looked up before training starts; a missing one is a
:class:`~harness.errors.DataError` that says how many and which.

SelfMask's (:mod:`harness.methods.selfmask`); it was ``harness.training.pseudo_masks``, which
made the core import a plugin.
"""
from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import DataError, name_some
from harness.imageops import resize

# ---- COCO run-length encoding ---------------------------------------------------------
# The decoder is written here because pycocotools is not a dependency (the encoder, which
# only the tests need, is tests/coco_rle.py); the format is the one of COCO's
# maskApi.c: column-major runs that start with background, and in the string form each
# count (from the fourth on, as the difference to the count two before) in 5-bit groups,
# least significant first, offset by 48, bit 0x20 meaning "more groups follow".


def rle_counts_from_string(text: str) -> list[int]:
    """The run lengths of a compressed COCO RLE string.

    Raises
    ------
    ValueError
        For a character outside the alphabet or a string that ends inside a number.
    """
    counts: list[int] = []
    pos, n = 0, len(text)
    while pos < n:
        value, shift, more = 0, 0, True
        while more:
            if pos >= n:
                raise ValueError("the string ends inside a number")
            code = ord(text[pos]) - 48
            if not 0 <= code < 64:
                raise ValueError(f"character {text[pos]!r} is not in the RLE alphabet")
            value |= (code & 0x1F) << shift
            more = bool(code & 0x20)
            pos += 1
            shift += 5
            if not more and code & 0x10:
                value |= -1 << shift  # sign-extend a negative difference
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def rle_decode(rle: dict[str, Any]) -> np.ndarray:
    """``(h, w)`` bool mask of a COCO RLE (``counts`` compressed or a list of ints).

    Raises
    ------
    ValueError
        When the object is not an RLE or its runs do not cover ``h * w`` pixels.
    """
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise ValueError('expected {"size": [h, w], "counts": ...}')
    height, width = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    counts = rle_counts_from_string(counts) if isinstance(counts, str) else [int(c) for c in counts]
    if any(c < 0 for c in counts) or sum(counts) != height * width:
        raise ValueError(f"its runs cover {sum(counts)} pixels, not {height} x {width} = {height * width}")
    values = np.arange(len(counts)) % 2 == 1
    return np.repeat(values, counts).reshape((height, width), order="F")


def _resize_nearest(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if mask.shape == tuple(shape):
        return mask
    return resize(mask.astype(np.uint8), shape, "nearest") > 0


# ---- sources ---------------------------------------------------------------------------
class PseudoMaskSource:
    """Where the pseudo-masks come from; :meth:`mask` gives one image's, at its size."""

    kind = ""

    def __init__(self, path: Path):
        self.path = path

    def describe(self) -> dict[str, Any]:
        """What the checkpoint records: kind, path, a short label and the provenance."""
        raise NotImplementedError

    @property
    def label(self) -> str:
        return self.describe()["label"]

    def check(self, dataset, ids: list[str]) -> None:
        """Raise a :class:`DataError` unless every image in ``ids`` has a pseudo-mask."""
        raise NotImplementedError

    def mask(self, sample) -> np.ndarray:
        """``(H, W)`` bool pseudo-mask of ``sample`` (at its image's size)."""
        raise NotImplementedError

    def stored_mask(self, sample) -> np.ndarray:
        """``sample``'s pseudo-mask at the size the source stores it (its image's, unless a
        source says otherwise); ``preset=selfmask`` resizes it once, straight to the training view."""
        return self.mask(sample)

    def _missing(self, missing: list[str], total: int, where: str) -> DataError:
        return DataError(
            f"--pseudo-masks {self.path}: {len(missing)} of {total} training images have no pseudo-mask "
            f"{where}: {name_some(missing)}"
        )


class RunPseudoMasks(PseudoMaskSource):
    """The final masks (after its post chain) of a ``harness run`` directory."""

    kind = "run"

    def __init__(self, path: Path):
        super().__init__(path)
        from harness.run_files import load_results

        self.results = load_results(path / "results.json")
        self.spec = self.results.get("spec")
        if not self.spec:
            raise DataError(f"--pseudo-masks {path}: results.json does not record its request (an older harness "
                            f"made it); run `harness run` again")
        self._runner = None
        self._root: str | None = None

    def __getstate__(self):  # data-loading workers build their own runner
        return {**self.__dict__, "_runner": None}

    def describe(self) -> dict[str, Any]:
        config = self.results["config"]
        posts = [p["name"] for p in config.get("posts", [])]
        method = config["method"]["name"]
        return {
            "kind": self.kind,
            "path": str(self.path),
            "run": self.results.get("run", self.path.name),
            "method": method,
            "posts": posts,
            "backbone": (config.get("backbone") or {}).get("name"),
            "dataset": config["dataset"]["name"],
            "label": "+".join([method, *posts]),
        }

    def run_ids(self) -> list[str] | None:
        """The images the run scored (its per_image.csv), or ``None`` when it kept no rows."""
        rows = self.path / "per_image.csv"
        if not rows.is_file():
            return None
        with rows.open(newline="") as handle:
            return [row["id"] for row in csv.DictReader(handle)]

    def check(self, dataset, ids: list[str]) -> None:
        ran_on = self.results["config"]["dataset"]["name"]
        if ran_on != dataset.name:
            raise DataError(
                f"--pseudo-masks {self.path}: that run predicted dataset {ran_on!r}, not {dataset.name!r}; train "
                f"with --dataset {ran_on}, or make a run on {dataset.name!r} first"
            )
        covered = self.run_ids()
        if covered is None:
            limit = self.spec.get("limit")
            covered = dataset.ids()[:limit] if limit else dataset.ids()
        covered_set = set(covered)
        missing = [i for i in ids if i not in covered_set]
        if missing:
            raise self._missing(missing, len(ids), f"in that run (it covered {len(covered)} images; run it on the "
                                                   f"training images, without --limit, or train with --limit)")
        # the run's images are read from the training dataset's folder: the masks' cache keys
        # hold the image id and pixels, not the folder, so a moved dataset still finds them
        self._root = str(dataset.root) if getattr(dataset, "root", None) is not None else None
        self.runner()  # reopened now: a run the installed plugins no longer reproduce stops here, before training

    def runner(self):
        """The run's :class:`~harness.runner.Runner`, reopened once (on the CPU, the dataset read
        from the training dataset's folder)."""
        if self._runner is None:
            from harness.runner import reopen

            self._runner = reopen(self.path, data_root=self._root, device="cpu")
        return self._runner

    def mask(self, sample) -> np.ndarray:
        for found, mask_u8 in self.runner().final_masks([sample.id]):
            if mask_u8.shape != sample.image.shape[:2]:
                raise DataError(f"--pseudo-masks {self.path}: the run's mask of {sample.id!r} is "
                                f"{mask_u8.shape[1]}x{mask_u8.shape[0]}, not its image's size; was the dataset changed?")
            return mask_u8 >= 128  # u8 / 255 > 0.5
        raise DataError(f"--pseudo-masks {self.path}: no mask for image {sample.id!r}")


class FolderPseudoMasks(PseudoMaskSource):
    """Mask images (PNG or NPY) named by image stem, read and resized by the ``masks`` adapter."""

    kind = "folder"

    def __init__(self, path: Path):
        super().__init__(path)
        from harness.methods.masks import MaskFolder

        self.adapter = MaskFolder(dir=path)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": str(self.path), "label": self.path.name,
                "digest": self.adapter.cache_token()["predictions"]}

    def check(self, dataset, ids: list[str]) -> None:
        try:
            self.adapter.check_inputs(ids)
        except DataError as exc:
            raise DataError(f"--pseudo-masks {self.path}: {exc}") from None

    def mask(self, sample) -> np.ndarray:
        return self.adapter.predict(sample).mask > 0.5


class RleJsonPseudoMasks(PseudoMaskSource):
    """SelfMask's JSON: file name -> COCO RLE (or a list of RLEs, read as their union)."""

    kind = "rle-json"

    def __init__(self, path: Path):
        super().__init__(path)
        try:
            raw = path.read_bytes()
            table = json.loads(raw)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"--pseudo-masks {path} cannot be read as JSON ({exc})") from None
        if not isinstance(table, dict):
            raise DataError(f"--pseudo-masks {path}: expected an object mapping file names to COCO RLE masks")
        self.digest = hashlib.sha256(raw).hexdigest()
        self.table = table
        self.keys: dict[str, str] = {}
        for key in table:
            stem = Path(key).stem
            if stem in self.keys:
                raise DataError(f"--pseudo-masks {path}: {self.keys[stem]!r} and {key!r} share the stem {stem!r}, "
                                f"so it is unclear which image each belongs to")
            self.keys[stem] = key

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": str(self.path), "label": self.path.name, "digest": self.digest}

    def check(self, dataset, ids: list[str]) -> None:
        missing = [i for i in ids if i not in self.keys]
        if missing:
            raise self._missing(missing, len(ids), "(no key with that file-name stem in the JSON)")

    def decode(self, sample_id: str) -> np.ndarray:
        """``(h, w)`` bool mask as stored (the union when the entry is a list)."""
        if sample_id not in self.keys:
            raise self._missing([sample_id], 1, "(no key with that file-name stem in the JSON)")
        key = self.keys[sample_id]
        entry = self.table[key]
        entries = entry if isinstance(entry, list) else [entry]
        try:
            masks = [rle_decode(e) for e in entries]
        except (ValueError, TypeError) as exc:
            raise DataError(f"--pseudo-masks {self.path}: entry {key!r} is not a COCO RLE mask ({exc})") from None
        if not masks or any(m.shape != masks[0].shape for m in masks):
            raise DataError(f"--pseudo-masks {self.path}: entry {key!r} holds no mask, or masks of several sizes")
        return np.logical_or.reduce(masks)

    def mask(self, sample) -> np.ndarray:
        return _resize_nearest(self.decode(sample.id), sample.image.shape[:2])

    def stored_mask(self, sample) -> np.ndarray:
        """The mask at the size the JSON stores it (SelfMask's: 224 x 224)."""
        return self.decode(sample.id)


def open_pseudo_masks(source: str | Path) -> PseudoMaskSource:
    """The source at ``source``: a run directory, a folder of masks, or a JSON of RLE masks."""
    path = Path(source).expanduser()
    if path.is_dir():
        return RunPseudoMasks(path) if (path / "results.json").is_file() else FolderPseudoMasks(path)
    if path.is_file() and path.suffix.lower() == ".json":
        return RleJsonPseudoMasks(path)
    raise DataError(
        f"--pseudo-masks {path}: give a run directory (with results.json), a folder of mask images "
        f"named by image stem, or a JSON file of COCO RLE masks keyed by file name"
        + ("" if path.exists() else "; that path does not exist")
    )
