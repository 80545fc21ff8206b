"""What every parity test and golden-regeneration script shares: the reference repositories
(name, commit), the random-weight DINO checkpoints in the official layout, the parity images,
and where the golden files live.

The goldens under ``tests/parity/goldens/<reference>/`` are outputs of the reference code,
run outside this repository by ``tests/parity/regenerate_<reference>.py`` (see
``tests/parity/README.md``); the reference code itself never enters the repository.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

PARITY_DIR = Path(__file__).resolve().parent
GOLDENS = PARITY_DIR / "goldens"

#: the reference repositories the goldens came from: name -> (GitHub repository, commit)
REFERENCES = {
    "TokenCut": ("YangtaoWANG95/TokenCut", "fed52cd5b60891baefd8ec7110dafa73be816ee1"),
    "LOST": ("valeoai/LOST", "fcedbecb644f18358a660ce58c739cc6374feda8"),
    "deep-spectral-segmentation": ("lukemelas/deep-spectral-segmentation",
                                   "b89b6506cd6c300e6c954d12f27d5215362b7ca1"),
    "segmentation-tricks": ("alpErenSari/segmentation-tricks", "d4b8700c9deefd95fd1f65bdb97b941b7360028f"),
    "selfmask": ("NoelShin/selfmask", "4c1cda21e13bcc3a1ee007881a221e0a130af1f2"),
    "move-seg": ("adambielski/move-seg", "074d0afcc434c7f2c4e2d6f826bc1cad5020cb4c"),
    "dino": ("facebookresearch/dino", "7c446df5b9f45747937fb0d72314eb9f7b66930a"),
}

#: seeds of the random-weight checkpoints (official DINO key layout) both sides load
CHECKPOINT_SEEDS = {"vits16": 0, "vits8": 1}
_ARCH = {"vits16": (384, 12, 16), "vits8": (384, 12, 8)}


def parity_checkpoint(arch: str, folder: str | Path) -> Path:
    """Write (once) and return the seeded random-weight checkpoint ``arch`` ("vits16" or
    "vits8") in the official DINO layout, e.g. ``dino_deitsmall16_pretrain.pth``'s keys."""
    import torch

    from harness.backbones.vit import random_official_state

    dim, depth, patch = _ARCH[arch]
    path = Path(folder) / f"parity_dino_{arch}_seed{CHECKPOINT_SEEDS[arch]}.pth"
    if not path.exists():
        torch.save(random_official_state(dim, depth, patch, grid=224 // patch, seed=CHECKPOINT_SEEDS[arch]), path)
    return path


def shared_data_root() -> Path | None:
    """``$HARNESS_TEST_DATA`` or ``../shared/data`` beside the checkout, if it holds ECSSD."""
    env = os.environ.get("HARNESS_TEST_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(PARITY_DIR.parents[2] / "shared" / "data")
    return next((p for p in candidates if (p / "ECSSD").is_dir()), None)


def write_source(folder: Path, reference: str, command: str, shims: list[str], compared: str) -> None:
    """Record where a golden folder came from (``SOURCE.json``)."""
    repo, commit = REFERENCES[reference]
    folder.mkdir(parents=True, exist_ok=True)
    record = {"reference": reference, "repository": repo, "commit": commit, "command": command,
              "shims": shims, "compared": compared}
    (folder / "SOURCE.json").write_text(json.dumps(record, indent=2) + "\n")


def load_image(path: Path) -> np.ndarray:
    """An RGB uint8 image, as the harness datasets load it."""
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def fixed_prediction(gt: np.ndarray, index: int) -> np.ndarray:
    """A plausible soft uint8 prediction made from a uint8 ground truth ``(H, W)``: shifted by
    an ``index``-dependent offset and mixed with an integer ramp pattern (exact everywhere)."""
    shifted = np.roll(gt.astype(np.int64), (7 * index - 15, 11 - 4 * index), axis=(0, 1))
    rows, cols = np.indices(gt.shape)
    pattern = (rows * 7 + cols * 13 + 29 * index) % 64 * 4  # 0..252
    return ((3 * shifted + pattern) // 4).astype(np.uint8)


def require_shared_data() -> Path:
    """:func:`shared_data_root`, or exit a regeneration script with what to set."""
    root = shared_data_root()
    if root is None:
        raise SystemExit("shared data not found: set HARNESS_TEST_DATA to shared/data")
    return root


#: what :func:`import_segtricks` does to import segmentation-tricks' modules today
SEGTRICKS_IMPORT_SHIMS = [
    "a stub module `wandb` in sys.modules (utils.py imports it at module level; unused here)",
    "torch.zeros ignores device= while utils.py is imported (it builds a constant on 'cuda')",
]


def import_segtricks(ref: Path, *names: str) -> list:
    """Import segmentation-tricks' modules ``names`` from the checkout ``ref`` on a CPU-only
    machine (the shims in :data:`SEGTRICKS_IMPORT_SHIMS`)."""
    import importlib
    import sys
    import types

    import torch

    sys.modules.setdefault("wandb", types.ModuleType("wandb"))
    sys.path.insert(0, str(ref))
    zeros = torch.zeros
    torch.zeros = lambda *a, device=None, **k: zeros(*a, **k)
    try:
        return [importlib.import_module(name) for name in names]
    finally:
        torch.zeros = zeros


def segtricks_ecssd_crops(utils_data, data: Path, stems):
    """ECSSD samples as segmentation-tricks' evaluation loads them (``load_my_dataset_not_augment``
    with ``img_size=320``): per stem ``(stem, image, gt, gt_u8, crop_u8)``, where ``image`` is
    its normalised ``(3, 320, 320)`` tensor, ``gt`` its soft ``(1, 320, 320)`` ground truth,
    ``gt_u8`` that ground truth x 255 as uint8 and ``crop_u8`` the ``(320, 320, 3)`` uint8 crop
    its transforms give without the final ``Normalize``."""
    import argparse

    import torch
    from PIL import Image

    options = argparse.Namespace(dataset="ecssd", root_dir=str(data), img_size=320)
    dataset, _ = utils_data.load_my_dataset_not_augment(options)
    names = [Path(p).stem for p in dataset.image_path_list]
    unnormalised = dataset.transform.transforms[:-1]  # everything but Normalize
    for stem in stems:
        image, gt = dataset[names.index(stem)]
        gt_u8 = torch.round(gt[0] * 255).to(torch.uint8).numpy()
        with Image.open(Path(dataset.image_root) / dataset.image_path_list[names.index(stem)]) as img:
            crop = img.convert("RGB")
            for transform in unnormalised:
                crop = transform(crop)
        crop_u8 = torch.round(crop * 255).to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
        yield stem, image, gt, gt_u8, crop_u8
