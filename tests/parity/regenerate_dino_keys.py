"""Regenerate ``goldens/dino-keys``: the last block's attention keys of facebookresearch/dino's
own Vision Transformer (``vision_transformer.py``), at 224 x 224 and at a non-square native
size, for the random-weight ViT-S/16 and ViT-S/8 of ``parity_common``.

Run with the reference checkout importable::

    /work/refvenv/bin/python tests/parity/regenerate_dino_keys.py --ref /path/to/dino

The reference network is ``vision_transformer.vit_small(patch_size, num_classes=0)`` with the
parity checkpoint loaded strictly; the input is ``torchvision``'s ``ToTensor`` + ``Normalize``
(ImageNet statistics) of the PIL image, resized (Lanczos) to 224 x 224 or to the stride
multiple nearest to its size (TokenCut's saliency input, :func:`case_input`). The keys are read
by a forward hook on the last block's ``attn.qkv`` during ``get_last_selfattention`` (the
``k`` third of the qkv output, heads concatenated in order, class token dropped), as TokenCut,
LOST and Deep Spectral Methods read them. At 224 no position embedding is resampled; at the
native size the reference resamples with ``interpolate_pos_encoding`` (item 7 of issue 12).

What it stores (``keys.npz``, one entry per case ``<arch>_<tag>``):

- ``<case>_proj``: ``keys @ R`` (float32), ``R`` the fixed seeded ``(384, 8)`` matrix of
  :func:`projection`, for every patch;
- ``<case>_rows``: the raw keys of the patches :func:`sample_rows` names;
- ``<case>_grid``: the patch grid ``(h, w)``;

and in ``meta.json`` the image, sizes, and the sha256 of the float32 network input and of the
checkpoint tensors, so the test knows both sides saw the same input and weights.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from parity_common import GOLDENS, load_image, parity_checkpoint, require_shared_data, write_source  # noqa: E402

OUT = GOLDENS / "dino-keys"
IMAGE_ID = "0005"  # ECSSD, H x W = 400 x 267: native input 400 x 272 (S/16), 400 x 264 (S/8)
CASES = (("vits16", "224"), ("vits16", "native"), ("vits8", "224"), ("vits8", "native"))
PATCH = {"vits16": 16, "vits8": 8}
PROJECTION_SEED, PROJECTION_DIM = 7, 8


def case_size(image_size: tuple[int, int], arch: str, tag: str) -> tuple[int, int]:
    """``(H, W)`` of the network input: 224 x 224, or each side rounded to the nearest
    multiple of the patch size (Python's ``round``, as TokenCut's ``resize_pil``)."""
    if tag == "224":
        return 224, 224
    p = PATCH[arch]
    return max(1, round(image_size[0] / p)) * p, max(1, round(image_size[1] / p)) * p


def case_input(image: np.ndarray, arch: str, tag: str) -> np.ndarray:
    """The ``(H, W, 3)`` float32 RGB input in [0, 1]: the uint8 image resized with PIL's
    Lanczos filter, divided by 255 (what ``ToTensor`` gives)."""
    from PIL import Image

    height, width = case_size(image.shape[:2], arch, tag)
    resized = Image.fromarray(image).resize((width, height), Image.LANCZOS)
    return np.asarray(resized, dtype=np.float32) / np.float32(255.0)


def projection() -> np.ndarray:
    """The fixed ``(384, 8)`` float64 projection of the keys."""
    return np.random.default_rng(PROJECTION_SEED).standard_normal((384, PROJECTION_DIM)) / np.sqrt(384)


def sample_rows(n: int) -> list[int]:
    """Patches whose raw keys are stored: first, a third of the way, two thirds, last."""
    return [0, n // 3, (2 * n) // 3, n - 1]


def state_digest(state: dict) -> str:
    """sha256 over the checkpoint's tensors (names sorted, float32 bytes)."""
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(np.ascontiguousarray(state[name].float().numpy()).tobytes())
    return h.hexdigest()


def input_digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array, dtype=np.float32).tobytes()).hexdigest()


def _reference_keys(vits, state: dict, patch: int, normalised) -> np.ndarray:
    """``(N, 384)`` keys of the reference network on a ``(1, 3, H, W)`` normalised input."""
    import torch

    model = vits.vit_small(patch_size=patch, num_classes=0)
    model.load_state_dict(state, strict=True)
    model.eval()
    captured = {}
    hook = model.blocks[-1].attn.qkv.register_forward_hook(lambda m, i, o: captured.__setitem__("qkv", o))
    with torch.no_grad():
        attention = model.get_last_selfattention(normalised)
    hook.remove()
    batch, heads, tokens, _ = attention.shape
    qkv = captured["qkv"].reshape(batch, tokens, 3, heads, -1).permute(2, 0, 3, 1, 4)  # (3, B, heads, T, 64)
    keys = qkv[1].transpose(1, 2).reshape(batch, tokens, -1)[0, 1:]
    return keys.numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", required=True, help="checkout of facebookresearch/dino")
    args = parser.parse_args()
    import torch
    from PIL import Image
    from torchvision import transforms

    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(args.ref).resolve()))
    import vision_transformer as vits  # the reference's own ViT

    data = require_shared_data()
    image = load_image(data / "ECSSD" / "images" / f"{IMAGE_ID}.jpg")
    to_network = transforms.Compose([transforms.ToTensor(),
                                     transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    R = projection()
    arrays, meta = {}, {"image": f"ECSSD/images/{IMAGE_ID}.jpg", "image_size": list(image.shape[:2]),
                        "projection_seed": PROJECTION_SEED, "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for arch, tag in CASES:
            state = torch.load(parity_checkpoint(arch, tmp), map_location="cpu")
            height, width = case_size(image.shape[:2], arch, tag)
            pil = Image.fromarray(image).resize((width, height), Image.LANCZOS)
            x = to_network(pil)[None]
            # the same input the harness builds (ToTensor is uint8 / 255 in float32)
            assert np.array_equal(transforms.ToTensor()(pil).permute(1, 2, 0).numpy(), case_input(image, arch, tag))
            keys = _reference_keys(vits, state, PATCH[arch], x)
            grid = (height // PATCH[arch], width // PATCH[arch])
            assert keys.shape == (grid[0] * grid[1], 384)
            case = f"{arch}_{tag}"
            arrays[f"{case}_proj"] = (keys.astype(np.float64) @ R).astype(np.float32)
            arrays[f"{case}_rows"] = keys[sample_rows(len(keys))]
            arrays[f"{case}_grid"] = np.array(grid)
            meta["cases"][case] = {"input_size": [height, width], "grid": list(grid),
                                   "rows": sample_rows(len(keys)),
                                   "input_sha256": input_digest(case_input(image, arch, tag)),
                                   "checkpoint_tensors_sha256": state_digest(state)}
            print(case, grid, "keys rms", float(np.sqrt((keys.astype(np.float64) ** 2).mean())))
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT / "keys.npz", **arrays)
    (OUT / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    write_source(
        OUT, "dino",
        "/work/refvenv/bin/python tests/parity/regenerate_dino_keys.py --ref <dino checkout>",
        shims=["none: vision_transformer.vit_small is built and loaded directly (no hub download); "
               "the keys are read by a forward hook on blocks[-1].attn.qkv"],
        compared=("last-block attention keys of vision_transformer.vit_small (random-weight ViT-S/16 and "
                  "ViT-S/8 of parity_common) on ECSSD 0005 at 224x224 and at its native size rounded to the "
                  "patch size (400x272, 400x264 HxW: position embeddings resampled by interpolate_pos_encoding); "
                  "stored as keys @ a seeded (384, 8) projection plus four raw rows"),
    )


if __name__ == "__main__":
    main()
