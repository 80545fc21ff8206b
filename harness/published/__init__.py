"""Published numbers shipped with the harness: named ``--reference`` tables.

``harness report runs/ --reference two-tricks`` shows every number of Tables 1-5 of "Two Tricks
to Improve Unsupervised Segmentation Learning" (Sari, Favaro, Locatello, arXiv 2404.03392) beside
the matching runs, with the difference and footnotes; from Python::

    from harness.published import load_reference
    from harness.report import find_runs, render_report

    text = render_report(find_runs(["runs/"]), reference=load_reference("two-tricks"))

The shipped CSV (``two_tricks_tables.csv``, transcribed as printed; ``shared/published/README.md``
says how two ambiguous rows were read) names methods, backbones, post chains and datasets as the
harness does; ``selfmask<-X`` is SelfMask distilled from the masks of X (a method, optionally
with a post chain: ``sempart-crop+gf``), and ``found`` is not a built-in method.
:func:`load_reference` returns it in :func:`harness.report.read_reference`'s format plus the
paper's columns (``table``, ``row``, ``note``) and what this module derives from each row:

- ``teacher``: X of ``selfmask<-X`` (``method`` becomes ``selfmask``);
- ``published_backbone``, ``backbone_source``: the backbone the row states, else the one the
  paper implies for that method (:data:`IMPLIED_BACKBONES`);
- ``conventions``: keys of :data:`CONVENTIONS`, the differences between the harness's default
  protocol and the code behind the number, each naming the preset that reproduces it, if any.

A reference with ``table`` and ``row`` columns is shown grouped by the paper's table and row
(see :func:`harness.report.paper_reference_table`): every run of the row's method (and
teacher), post chain and dataset is listed, under any preset or protocol unless the row names
one, each with footnotes where its backbone or its image count differs from the published
row's (:func:`line_footnotes`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError


@dataclass(frozen=True)
class PublishedReference:
    """A table of published numbers shipped as package data."""

    name: str
    file: str
    source: str


#: name -> the shipped reference (``harness report --reference NAME``).
REFERENCES = {
    "two-tricks": PublishedReference(
        "two-tricks", "two_tricks_tables.csv",
        "Sari, Favaro & Locatello, \"Two Tricks to Improve Unsupervised Segmentation Learning\" "
        "(arXiv 2404.03392), Tables 1-5 as printed"),
}

#: The columns of a shipped table (shared/published/README.md).
PAPER_COLUMNS = ("table", "row", "method", "backbone", "post", "dataset", "metric", "value", "note")

#: Methods of the paper's tables that are not built into the harness: the reason, for the footnote.
NOT_BUILTIN = {
    "found": "FOUND is not a built-in method: score its saved masks with `--method masks "
             "--method-args dir=...` (DESIGN.md); such a run is a `masks` row and is not matched to "
             "this row",
}

#: Dataset name -> the number of images of the whole split the papers score (the datasets'
#: descriptions: ECSSD 1000, DUTS-TE 5019, DUT-OMRON 5168, VOC07 / VOC12 trainval 5011 / 11540,
#: COCO20K 19,817, PASCAL-S 850). A run on fewer images is footnoted.
DATASET_SIZES = {"ecssd": 1000, "duts_te": 5019, "dut_omron": 5168, "pascal_s": 850,
                 "voc07": 5011, "voc12": 11540, "coco20k": 19817}

#: Method -> (backbones, source): what the paper implies where a row states no backbone.
#: MOVE's masks are read from files (its runs record no backbone) and FOUND is no built-in.
IMPLIED_BACKBONES: dict[str, tuple[tuple[str, ...], str]] = {
    "sempart": (("dino-vits8",), "Sempart rows are DINO ViT-S/8 unless the table says otherwise"),
    "sempart-crop": (("dino-vits8",), "Sempart rows are DINO ViT-S/8 unless the table says otherwise"),
    "tokencut": (("dino-vits16",), "the row's note: ViT-S/16"),
    "lost": (("dino-vits16",), "LOST's default ViT-S/16, the `lost` method's default"),
    "deep-spectral": (("dino-vitb8",), "Deep Spectral's default ViT-B/8, the `deep-spectral` method's default"),
    "selfmask": (("dino-vits8", "dino-vits8-300ep"),
                 "SelfMask's DINO ViT-S/8 encoder (its release fine-tunes the 300-epoch one)"),
}

#: Post-processor aliases: the paper's ``bf`` is the harness's ``bs`` (the same solver).
POST_ALIASES = {"bf": "bs"}

_SEGTRICKS = ("Published by segmentation-tricks, the Two Tricks authors' code: it scores a Resize(335) + "
              "CenterCrop(320) crop of image and ground truth against the resized, soft ground truth (max Fβ "
              "counts every non-zero ground-truth pixel as foreground), with BatchNorm on each evaluation "
              "batch's statistics and the mask polarity chosen per batch of 8 images; the harness default "
              "scores at native resolution with gt/255 > 0.5, BatchNorm in eval mode and one polarity per "
              "checkpoint. Reproduced by `--protocol segtricks` with `--method-args preset=segtricks` and "
              "`--batch-size 8`")

#: Convention key -> footnote: what differs between the harness's default protocol and the code
#: behind a published number (DESIGN.md, README), and which preset, if any, reproduces it.
CONVENTIONS = {
    "segtricks": _SEGTRICKS,
    "segtricks-corloc": (
        "Published by segmentation-tricks, the Two Tricks authors' code: its network conventions (BatchNorm "
        "on each evaluation batch's statistics, polarity per batch of 8) are `--method-args preset=segtricks "
        "--batch-size 8`; `--protocol segtricks` scores saliency only (it refuses box evaluators) and the "
        "harness documents no CorLoc convention of segmentation-tricks, so CorLoc runs use the default "
        "protocol"),
    "segtricks-crop": (
        "segmentation-tricks places the crop consistency's crop at a fixed row, (H // 2) // 2, and a column "
        "in [g // 4, 3 (g // 4)) (a bug), where the harness default draws it uniformly: `harness train "
        "--method-args preset=segtricks` reproduces it (and the reference's transform order)"),
    "segtricks-bf": (
        "BF with segmentation-tricks' settings (sigma_spatial 24, sigma_luma 4, sigma_chroma 4, λ 256, on "
        "its ImageNet-normalised colours, at 320 px), where the default `bs` uses TokenCut / MOVE's 16 / 16 / "
        "8: reproduced by `--post bs --post-args preset=segtricks` (with `--protocol segtricks` for the "
        "320 px crops)"),
    "gf": (
        "segmentation-tricks' guided filter (radius 9, eps 1e-3) equals `gf` but for a standardisation of the "
        "mask around the filter (at most 2.5e-6) and no clamp: thresholded masks are the same; no preset "
        "needed"),
    "tokencut": (
        "TokenCut's code: the harness default reproduces its masks and boxes (`mode=auto` resizes saliency "
        "inputs to a multiple of the stride as its `get_saliency.py`, masks identical on 201/201 ECSSD parity "
        "images, and keeps CorLoc inputs at full resolution, zero-padded, as its `main_tokencut.py`). Its "
        "metric code counts every non-zero ground-truth pixel as foreground for max Fβ where the protocol "
        "takes gt/255 > 0.5 (the same on 0/255 masks such as ECSSD's); no preset applies that rule alone "
        "(`--protocol segtricks` applies it together with 320 px crops)"),
    "bf-tokencut-move": (
        "BF with TokenCut / MOVE's settings (sigma_spatial 16, sigma_luma 16, sigma_chroma 8, λ 256): the "
        "default `bs`, equal to their solvers to 1e-13 on the parity images; TokenCut's largest-component "
        "binarisation of the solver's output (drawn in its figures, not scored) is not applied"),
    "move": (
        "MOVE's saved masks, read by the `move` adapter as MOVE's `segmentation_eval.py` reads them (equal "
        "value for value on MOVE's own files); no preset needed"),
    "move-bf": (
        "MOVE solves BF on its float mask resized by OpenCV, `--method move --post bs` on the resized 8-bit "
        "mask (max difference 2.6e-3); MOVE's own bilateral-solver masks are scored exactly by pointing "
        "`move` at its `*_bilateral` folder (a run without a post chain)"),
    "lost": (
        "LOST's code: the harness default reproduces its seeds and boxes (52/52 VOC12 parity images; "
        "full-resolution, zero-padded input; tied degrees ordered by torch.argsort on the CPU as its code, "
        "`ties=stable` takes the lowest index instead); LOST run on CUDA may order ties differently, so its "
        "boxes can differ there"),
    "deep-spectral": (
        "Deep Spectral's code: the harness default reproduces its patch masks and boxes (50/50 VOC12 parity "
        "images); no preset needed"),
    "selfmask": (
        "SelfMask's released code trains with the opposite ranking-loss sign, the rescaled view at the "
        "top-left corner, the mean pad colour truncated to uint8 and a nearest pseudo-mask resize; "
        "`harness train --method selfmask --method-args preset=selfmask` reproduces those (the default "
        "keeps the better choice of each)"),
    "per-image-fbeta": (
        "SelfMask's and FOUND's evaluation takes a per-image maximum F-beta with an effective β² of 0.09 "
        "(DESIGN.md), where the protocol takes the maximum over thresholds of the dataset's mean F-beta "
        "with β² = 0.3; no preset reproduces it"),
    "sempart-paper": (
        "The Sempart paper's own number [23], not a run of segmentation-tricks; the harness has no preset "
        "for the Sempart paper's own code"),
    "table1-duplicate": (
        "Table 1 prints this row's name twice; the first of the pair is read as the Sempart paper's own "
        "number (shared/published/README.md)"),
    "not-builtin": NOT_BUILTIN["found"],
}


def reference_names() -> list[str]:
    """The names ``--reference`` accepts besides a CSV path."""
    return sorted(REFERENCES)


def canonical_posts(chain: str) -> str:
    """A ``+``-joined post chain with each alias replaced (``gf+bf`` -> ``gf+bs``)."""
    return "+".join(POST_ALIASES.get(p, p) for p in str(chain).split("+") if p)


def canonical_teacher(teacher: str) -> str:
    """``method+post...`` (a SelfMask teacher) with the posts' aliases replaced."""
    method, _, posts = str(teacher).partition("+")
    return "+".join(filter(None, [method, canonical_posts(posts)]))


def conventions_for(table: str, row: str, method: str, teacher: str, post: str, metric: str) -> list[str]:
    """The :data:`CONVENTIONS` keys of one published number, in footnote order."""
    posts = [p for p in post.split("+") if p]
    keys: list[str] = []
    if method in NOT_BUILTIN:
        keys.append("not-builtin")
    if "[23]" in row:  # the Sempart paper's own numbers (Table 1's first "Sempart + BF", "SelfMask w/ Sempart")
        keys.append("sempart-paper")
        if table == "1" and ("+ BF" in row or method == "selfmask"):
            keys.append("table1-duplicate")
        return keys + (["per-image-fbeta"] if method == "selfmask" and metric == "max_fbeta" else [])
    if method in ("sempart", "sempart-crop"):
        keys.append("segtricks-corloc" if metric == "corloc" else "segtricks")
        if method == "sempart-crop":
            keys.append("segtricks-crop")
        if "bf" in posts:
            keys.append("segtricks-bf")
    elif method in ("tokencut", "lost", "deep-spectral", "move", "selfmask"):
        keys.append(method)
        if "bf" in posts:
            keys.append("move-bf" if method == "move" else "bf-tokencut-move")
    if "gf" in posts:
        keys.append("gf")
    if method in ("selfmask", "found") and metric == "max_fbeta":
        keys.append("per-image-fbeta")
    return keys


def _package_file(name: str):
    from importlib.resources import files

    return files("harness.published") / name


def load_reference(name: str):
    """The shipped table ``name`` (see :data:`REFERENCES`) as a DataFrame in
    :func:`harness.report.read_reference`'s format (method, dataset, metric, value, backbone,
    post, preset, protocol; empty preset and protocol: any) plus ``table``, ``row``, ``note``,
    ``paper_method`` (as the CSV writes it), ``teacher``, ``published_backbone``,
    ``backbone_source``, ``conventions`` (``|``-joined keys) and ``source``."""
    import io

    import pandas as pd

    if name not in REFERENCES:
        raise HarnessError(f"--reference {name!r} is not a shipped reference; known: {', '.join(reference_names())} "
                           f"(or give the path of a CSV file)")
    ref = REFERENCES[name]
    where = _package_file(ref.file)
    try:
        text = where.read_text(encoding="utf-8")
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError) as exc:
        raise HarnessError(f"{where}: the shipped reference {name!r} cannot be read ({exc}); reinstall the "
                           f"harness") from None
    missing = [c for c in PAPER_COLUMNS if c not in frame.columns]
    if missing:
        raise HarnessError(f"{where} lacks the column(s) {', '.join(missing)}; reinstall the harness")
    try:
        frame["value"] = frame["value"].astype(float)
    except ValueError:
        raise HarnessError(f"{where}: the value column must hold numbers; reinstall the harness") from None
    frame = frame.rename(columns={"method": "paper_method"})
    split = frame["paper_method"].str.split("<-", n=1, expand=True).reindex(columns=[0, 1]).fillna("")
    frame["method"], frame["teacher"] = split[0], split[1]
    implied = [IMPLIED_BACKBONES.get(m) for m in frame["method"]]
    frame["published_backbone"] = [b if b else ("|".join(i[0]) if i else "")
                                   for b, i in zip(frame["backbone"], implied)]
    frame["backbone_source"] = [("stated" if b else (i[1] if i else "")) for b, i in zip(frame["backbone"], implied)]
    frame["conventions"] = ["|".join(conventions_for(*values)) for values in
                            zip(frame["table"], frame["row"], frame["method"], frame["teacher"], frame["post"],
                                frame["metric"])]
    frame["preset"], frame["protocol"], frame["source"] = "", "", ref.source
    return frame


def resolve_reference(spec: str | Path):
    """``--reference SPEC``: a shipped table's name (:func:`load_reference`), else a CSV path
    (:func:`harness.report.read_reference`); anything else is one error naming the choices."""
    from harness.report import read_reference

    text = str(spec)
    if text in REFERENCES:
        return load_reference(text)
    if Path(text).is_file():
        return read_reference(text)
    raise HarnessError(f"--reference {text}: no such file, and not a shipped reference (known: "
                       f"{', '.join(reference_names())}); give one of those names or the path of a CSV file")


def _field(ref: Any, name: str, default: str = "") -> str:
    value = getattr(ref, name, default)
    return default if value is None else str(value)


def accepted_backbones(ref: Any) -> tuple[tuple[str, ...], str]:
    """The backbones a published row was measured with (stated, else implied) and the source."""
    stated = _field(ref, "published_backbone") or _field(ref, "backbone")
    names = tuple(b for b in stated.split("|") if b)
    return names, _field(ref, "backbone_source") or ("stated" if names else "")


def line_footnotes(ref: Any, run=None) -> list[str]:
    """Footnotes of one line of the reproduction table: the published row ``ref`` (a row of
    :func:`load_reference`'s frame, or of any reference with ``table`` and ``row``) and the
    :class:`~harness.report.RunRecord` shown beside it (``None``: no run). Where the run's
    backbone differs from the published one, where it scored fewer (or more) images than the
    dataset holds, then the conventions of the code behind the number and the row's note."""
    notes = []
    if run is not None:
        names, source = accepted_backbones(ref)
        if names and run.backbone not in names:
            published = " or ".join(names) + ("" if source == "stated" else f" (implied: {source})")
            notes.append(f"measured with {run.backbone or 'no backbone'}, published with {published}")
        size = DATASET_SIZES.get(run.dataset)
        count = run.results.get("counts", {}).get("images")
        if size is not None and isinstance(count, int) and count != size:
            notes.append(f"measured on {count} of {size} images" if count < size
                         else f"measured on {count} images, more than the {size} of the published dataset")
    for key in filter(None, _field(ref, "conventions").split("|")):
        if key not in CONVENTIONS:
            raise HarnessError(f"reference convention {key!r} is unknown; known: {', '.join(sorted(CONVENTIONS))}")
        notes.append(CONVENTIONS[key])
    note = _field(ref, "note")
    if note:
        notes.append(f"Transcription note: {note}")
    return notes
