"""Fuzz: randomly corrupted PNG, JPEG and NPY files through the dataset readers, the ``masks``
method and the cache. Each is either decoded exactly as the original or refused with one
:class:`DataError` (exit status 2 on the command line), never scored as something else and
never an unexpected error (exit 1).

Two formats carry no checksum over their data: JPEG's entropy-coded segment and an ``.npy``
file's array bytes. A flipped bit there can decode to other pixels or values, and nothing in
the file can tell; for those cases the test asserts what does hold: the file's digest, part of
the run's identity (``data_digest``), changes, so the run never shares a name with a run on the
original file (README, "what a run guarantees").
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.cli import main
from harness.errors import DataError
from harness.imageio import inspect_file, read_image, read_mask, read_soft_mask

CASES = 40


def _mask() -> np.ndarray:
    mask = np.zeros((48, 64), np.uint8)
    mask[10:40, 12:50] = 255
    mask[20:30, 30:34] = 128
    return mask


def _image() -> np.ndarray:
    rng = np.random.default_rng(1)
    ramp = np.linspace(0, 255, 64, dtype=np.float32)[None, :, None]
    return np.clip(ramp + rng.normal(0, 20, (48, 64, 3)), 0, 255).astype(np.uint8)


def _encode(array: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    if fmt == "npy":
        np.save(buffer, array)
    else:
        Image.fromarray(array).save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def _corruptions(data: bytes, rng: np.random.Generator):
    """``(label, bytes)``: truncations and single-bit flips anywhere past the first 8 bytes."""
    for _ in range(CASES // 2):
        cut = int(rng.integers(1, len(data) - 1))
        yield f"truncated at {cut}", data[:cut]
    for _ in range(CASES // 2):
        pos = int(rng.integers(8, len(data)))
        flipped = bytearray(data)
        flipped[pos] ^= 1 << int(rng.integers(8))
        yield f"bit flipped at byte {pos}", bytes(flipped)


def _outcome(reader, path: Path):
    """The decoded array, or ``"refused"`` for a :class:`DataError`; any other exception fails."""
    try:
        return reader(path)
    except DataError as exc:
        assert str(path) in str(exc)
        return "refused"


def _npy_header_length(data: bytes) -> int:
    from numpy.lib import format as npy_format

    stream = io.BytesIO(data)
    npy_format.read_magic(stream)
    npy_format.read_array_header_1_0(stream)
    return stream.tell()


@pytest.mark.parametrize("fmt, reader, original", [
    ("PNG", read_mask, _mask()),
    ("PNG", read_image, _image()),
    ("PNG", read_soft_mask, _mask()),
    ("JPEG", read_image, _image()),
    ("npy", read_soft_mask, _mask().astype(np.float32) / 255),
], ids=["png-mask", "png-image", "png-prediction", "jpeg-image", "npy-prediction"])
def test_corrupted_files_are_decoded_exactly_or_refused(tmp_path, fmt, reader, original):
    data = _encode(original, fmt)
    suffix = ".npy" if fmt == "npy" else ".png" if fmt == "PNG" else ".jpg"
    clean = tmp_path / f"clean{suffix}"
    clean.write_bytes(data)
    expected = reader(clean)
    clean_digest = inspect_file(clean, "file")[0]
    rng = np.random.default_rng(len(data))  # a fixed seed per case (str hashes vary per process)
    unchecked_region = len(data) if fmt == "JPEG" else _npy_header_length(data) if fmt == "npy" else None
    counts = {"refused": 0, "exact": 0, "different, new digest": 0}
    for k, (label, corrupted) in enumerate(_corruptions(data, rng)):
        path = tmp_path / f"case{k}{suffix}"
        path.write_bytes(corrupted)
        got = _outcome(reader, path)
        if isinstance(got, str):
            counts["refused"] += 1
        elif got.shape == expected.shape and np.array_equal(got, expected):
            counts["exact"] += 1
        else:  # only possible where the format has no checksum: a flip inside JPEG or npy data
            assert label.startswith("bit flipped") and unchecked_region is not None, label
            assert fmt == "JPEG" or int(label.rsplit(" ", 1)[1]) >= unchecked_region, label
            assert inspect_file(path, "file")[0] != clean_digest
            counts["different, new digest"] += 1
    assert counts["refused"] >= CASES // 2, counts
    if fmt == "PNG":
        assert counts["different, new digest"] == 0, counts


@pytest.mark.parametrize("mode", ["RGBA-noise", "LA", "P-many", "I16-high", "1"])
def test_masks_of_unexpected_modes_are_read_by_rule_or_refused(tmp_path, mode):
    rng = np.random.default_rng(0)
    base = _mask()
    if mode == "RGBA-noise":
        img, outcome = Image.fromarray(rng.integers(0, 255, (48, 64, 4), dtype=np.uint8)), "refused"
    elif mode == "LA":
        img, outcome = Image.fromarray(np.stack([base, np.full_like(base, 255)], axis=2), mode="LA"), base
    elif mode == "P-many":
        img = Image.fromarray(rng.integers(0, 6, (48, 64), dtype=np.uint8), mode="P")
        img.putpalette(list(rng.integers(1, 255, 18)) + [0] * 750)
        outcome = "refused"
    elif mode == "I16-high":
        img, outcome = Image.fromarray(base.astype(np.uint16) * 257), base
    else:
        img, outcome = Image.fromarray(base > 0), (base > 0).astype(np.uint8) * 255
    img.save(tmp_path / "m.png")
    got = _outcome(read_mask, tmp_path / "m.png")
    if isinstance(outcome, str):
        assert got == outcome
    else:
        np.testing.assert_array_equal(got, outcome)


def _dataset(root: Path, n: int = 3) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        (root / "images" / f"im{i}.jpg").write_bytes(_encode(np.roll(_image(), 7 * i, axis=1), "JPEG"))
        (root / "masks" / f"im{i}.png").write_bytes(_encode(np.roll(_mask(), 5 * i, axis=1), "PNG"))
    return root


def _run(tmp_path: Path, root: Path, preds: Path, out: str) -> tuple[int, dict | None]:
    args = ["run", "--method", "masks", "--method-args", f"dir={preds}", "--post", "gf", "--dataset", "folder",
            "--data-root", str(root), "--out", str(tmp_path / out), "--name", "r", "--no-progress"]
    code = main(args)
    results = tmp_path / out / "r" / "results.json"
    return code, json.loads(results.read_text())["metrics"] if code == 0 else None


def test_corrupted_files_through_the_command_line_exit_2_or_score_the_same(tmp_path, capsys):
    """Ground-truth PNGs, prediction PNGs and NPYs and the post cache's entries, corrupted at
    random, through ``harness run --method masks --post gf``: exit 0 with the clean run's metrics,
    or exit 2 with one line and no run folder; never exit 1."""
    root = _dataset(tmp_path / "data")
    preds = tmp_path / "preds"
    preds.mkdir()
    for i in range(3):
        soft = np.roll(_mask(), 5 * i + 2, axis=1).astype(np.float32) / 255
        if i == 2:
            np.save(preds / f"im{i}.npy", soft)
        else:
            (preds / f"im{i}.png").write_bytes(_encode((soft * 255).astype(np.uint8), "PNG"))
    code, clean = _run(tmp_path, root, preds, "clean")
    assert code == 0
    targets = [root / "masks" / "im1.png", preds / "im0.png", preds / "im2.npy"]
    rng = np.random.default_rng(7)
    outcomes = []
    for k in range(12):
        target = targets[k % 3]
        whole = target.read_bytes()
        header = _npy_header_length(whole) if target.suffix == ".npy" else len(whole)
        corrupted = bytearray(whole)
        if k % 2:
            corrupted = corrupted[: int(rng.integers(8, len(whole) - 1))]
        else:  # a flip the format can detect: anywhere in a PNG, in the header of an npy
            pos = int(rng.integers(8, header))
            corrupted[pos] ^= 1 << int(rng.integers(8))
        target.write_bytes(bytes(corrupted))
        code, metrics = _run(tmp_path, root, preds, f"case{k}")
        err = capsys.readouterr().err
        target.write_bytes(whole)
        assert code in (0, 2), err
        if code == 0:
            assert metrics == clean
        else:
            assert len(err.strip().splitlines()) == 1 and target.name in err, err
            assert not (tmp_path / f"case{k}").exists()
        outcomes.append(code)
    assert outcomes.count(2) >= 6
    cache = Path(os.environ["HARNESS_CACHE"])
    for k, entry in enumerate(sorted(cache.rglob("*.entry"))):
        whole = entry.read_bytes()
        corrupted = bytearray(whole)
        pos = int(rng.integers(0, len(whole)))
        corrupted[pos] ^= 1 << int(rng.integers(8))
        entry.write_bytes(bytes(corrupted) if k % 2 == 0 else whole[: int(rng.integers(1, len(whole)))])
    code, metrics = _run(tmp_path, root, preds, "after-cache-damage")
    assert code == 0 and metrics == clean
