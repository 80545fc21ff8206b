"""What ``harness run`` checks before it writes anything: every data file the run will read.

Each file the dataset names (:meth:`harness.api.Dataset.files`) is read: its structure is
checked without decoding (PNG checksums, a JPEG's end marker, an ``.npy`` header and length),
ground-truth masks are decoded with their value rules (:func:`harness.imageio.read_mask`), and
every file's bytes are hashed. The hashes make the run's ``data_digest``, part of its identity, so
two runs on different data never share a name; the image headers give each image's size, so a
method can refuse an image it cannot handle (too small, a graph too large) before it starts.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from harness.imageio import IMAGE_SUFFIXES, bytes_digest, inspect_file, read_bytes, read_mask


@dataclass
class DataCheck:
    """The result of :func:`check_data`.

    Attributes
    ----------
    digest : str
        blake2b over every id and every file's name and bytes, in order (for generated data,
        whose identity fixes the pixels, over the ids alone).
    sizes : dict
        ``id -> (H, W)`` from each image's header (only for datasets that read files).
    """

    digest: str
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)


def check_data(dataset, ids: list[str], progress: bool | None = None) -> DataCheck:
    """Check and hash every file ``dataset`` reads for ``ids`` (see the module docstring)."""
    from tqdm.auto import tqdm

    total = hashlib.blake2b(digest_size=16)
    for path in dataset.index_files():
        total.update(json.dumps(["index", path.name, inspect_file(path, "file")[0]]).encode())
    sizes: dict[str, tuple[int, int]] = {}
    bar = tqdm(ids, desc=f"checking {dataset.name}'s files", unit="img", leave=False,
               disable=None if progress is None else not progress)
    for sample_id in bar:
        paths = dataset.files(sample_id)
        total.update(json.dumps(["id", sample_id]).encode())
        for k, path in enumerate(paths):
            if k > 0 and path.suffix.lower() in IMAGE_SUFFIXES:  # a mask: small, so decoded now with its rules
                data = read_bytes(path, "mask")
                read_mask(path, data=data)
                digest = bytes_digest(data)
            else:
                digest, hw = inspect_file(path, "image" if k == 0 else "label file")
                if k == 0 and hw is not None:
                    sizes[sample_id] = hw
            total.update(json.dumps([path.name, digest]).encode())
    bar.close()
    return DataCheck(total.hexdigest(), sizes)
