"""The COCO RLE encoder, which only the tests need: they write SelfMask's JSON of RLE masks and
check the package's decoder (``harness.methods.selfmask_pseudo_masks.rle_decode``) against it
and against pycocotools. The format is the one of COCO's maskApi.c: column-major runs that
start with background, and in the string form each count (from the fourth on, as the
difference to the count two before) in 5-bit groups, least significant first, offset by 48,
bit 0x20 meaning "more groups follow"."""
from __future__ import annotations

from typing import Any

import numpy as np


def rle_counts_to_string(counts: list[int]) -> str:
    """The compressed COCO RLE string of some run lengths (inverse of ``rle_counts_from_string``)."""
    out = []
    for i, count in enumerate(counts):
        value = int(count) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            code = value & 0x1F
            value >>= 5  # arithmetic shift: a negative value tends to -1
            more = value != -1 if code & 0x10 else value != 0
            if more:
                code |= 0x20
            out.append(chr(code + 48))
    return "".join(out)


def rle_encode(mask: np.ndarray) -> dict[str, Any]:
    """COCO RLE ``{"size": [h, w], "counts": str}`` of a ``(h, w)`` binary mask."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        runs = [0] + runs  # counts always start with a background run
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": rle_counts_to_string(runs)}
