"""Regenerate ``goldens/bilateral-solver/<reference>``: a reference's bilateral solver on a few
ECSSD images and fixed masks, as that reference calls it.

Run once per reference checkout (the script recognises which one it is given)::

    /work/refvenv/bin/python tests/parity/regenerate_bilateral_solver.py --ref /path/to/TokenCut
    /work/refvenv/bin/python tests/parity/regenerate_bilateral_solver.py --ref /path/to/segmentation-tricks

(MOVE's solver runs inside its own ``infer.py --bilateral``: ``regenerate_move.py`` stores it.)

- TokenCut: ``unsupervised_saliency_detection/bilateral_solver.bilateral_solver_output(path,
  target, sigma_spatial=16, sigma_luma=16, sigma_chroma=8)``, the call and settings of its
  ``get_saliency.py``, on the native image, for a soft target (``parity_common.fixed_prediction``
  of the ground truth / 255, float32) and a binary one (that prediction > 127). TokenCut scores
  the soft output (``mask_bfs``); its binary output (holes filled, largest component) is stored
  too, as what it draws.
- segmentation-tricks: ``bilateral_solver.get_bf_optimized_masks(image, prediction)``, the call
  of ``sempart_main.py --use_bf``, on the ImageNet-normalised 320 x 320 crop its ECSSD loader
  gives (``load_my_dataset_not_augment``) and the soft prediction above (on the crop's ground
  truth), as a batch of one.

What is stored per case (``<id>_<target>.npz``): the solver's float64 output at 512 fixed pixels
(half of them within 12 pixels of a border), its sum and its dot product with a fixed pattern
over all pixels, the output > 0.5 at every pixel (``np.packbits``), and for TokenCut its binary
output. ``cases.json`` holds, per case, sha256 of the image the solver got and of the YUV image
the reference computed (``rgb2yuv``), so that a test can tell a machine whose BLAS rounds the
colour product differently.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from parity_common import GOLDENS, SEGTRICKS_IMPORT_SHIMS, fixed_prediction, import_segtricks, require_shared_data, segtricks_ecssd_crops, write_source  # noqa: E402

CASES = {"TokenCut": ("0005", "0355", "0557", "1000"), "segmentation-tricks": ("0005", "0557", "1000")}
SAMPLES = 512
BORDER = 12


def sha(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def pattern(shape: tuple[int, int]) -> np.ndarray:
    """The fixed weights of the stored dot product (also in the test)."""
    rows, cols = np.indices(shape)
    return ((rows * 31 + cols * 17) % 101) / 100.0


def sample_positions(shape: tuple[int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows, cols = np.indices(shape)
    near = (np.minimum(rows, shape[0] - 1 - rows) < BORDER) | (np.minimum(cols, shape[1] - 1 - cols) < BORDER)
    border, inner = np.flatnonzero(near.ravel()), np.flatnonzero(~near.ravel())
    picked = np.concatenate([rng.choice(border, SAMPLES // 2, replace=False), rng.choice(inner, SAMPLES // 2, replace=False)])
    return np.sort(picked).astype(np.int32)


def summarise(out: np.ndarray, seed: int, **extra) -> dict:
    idx = sample_positions(out.shape, seed)
    return {"idx": idx, "values": out.ravel()[idx], "shape": np.array(out.shape),
            "moments": np.array([out.sum(), (out * pattern(out.shape)).sum()]),
            "above": np.packbits((out > 0.5).ravel()), **extra}


def targets(gt_u8: np.ndarray, index: int) -> dict[str, np.ndarray]:
    """The soft and binary targets of case ``index`` (float32, as a post-processor gets them)."""
    pred = fixed_prediction(gt_u8, index)
    return {"soft": pred.astype(np.float32) / np.float32(255.0), "binary": (pred > 127).astype(np.float32)}


def patch_cg(module) -> None:
    """Shim: scipy >= 1.14 has no ``cg(tol=...)``; pass it as ``rtol`` with ``atol=0`` (the old
    default's relative test). The old default also returned ``x0`` at once when
    ``||b - A x0|| <= tol``: checked never to happen here."""
    from scipy.sparse.linalg import cg

    def cg_tol(A, b, x0=None, *, tol, **kwargs):
        assert np.linalg.norm(b - A @ x0) > tol, "the legacy early exit would apply"
        return cg(A, b, x0=x0, rtol=tol, atol=0.0, **kwargs)

    module.cg = cg_tol


def record_yuv(module, log: list) -> None:
    """Record sha256 of what the reference's ``rgb2yuv`` gets and returns (no change)."""
    original = module.rgb2yuv

    def rgb2yuv(im):
        out = original(im)
        log.append({"image_sha256": sha(im), "image_dtype": str(im.dtype), "yuv_sha256": sha(out)})
        return out

    module.rgb2yuv = rgb2yuv


def tokencut(ref: Path, data: Path, out_dir: Path) -> dict:
    sys.path.insert(0, str(ref / "unsupervised_saliency_detection"))
    import bilateral_solver as bs

    patch_cg(bs)
    log: list = []
    record_yuv(bs, log)
    cases = []
    for index, sid in enumerate(CASES["TokenCut"]):
        path = data / "ECSSD" / "images" / f"{sid}.jpg"
        with Image.open(data / "ECSSD" / "ground_truth_mask" / f"{sid}.png") as img:
            gt = np.asarray(img.convert("L"))
        for kind, target in targets(gt, index).items():
            soft, binary = bs.bilateral_solver_output(str(path), target, sigma_spatial=16, sigma_luma=16, sigma_chroma=8)
            seed = 1000 * index + len(kind)
            np.savez_compressed(out_dir / f"{sid}_{kind}.npz", **summarise(soft, seed, binary=np.packbits(binary.ravel())))
            cases.append({"id": sid, "index": index, "target": kind, **log[-1],
                          "range": [float(soft.min()), float(soft.max())]})
    return {"cases": cases, "settings": {"sigma_spatial": 16, "sigma_luma": 16, "sigma_chroma": 8}}


def segtricks(ref: Path, data: Path, out_dir: Path) -> dict:
    import torch

    bs, utils_data = import_segtricks(ref, "bilateral_solver", "utils_data")
    patch_cg(bs)
    log: list = []
    record_yuv(bs, log)
    cases = []
    crops = segtricks_ecssd_crops(utils_data, data, CASES["segmentation-tricks"])
    for index, (sid, image, _, gt_u8, crop_u8) in enumerate(crops):
        target = targets(gt_u8, index)["soft"]
        out = bs.get_bf_optimized_masks(image[None], torch.from_numpy(target)[None, None])[0, 0].numpy()
        np.savez_compressed(out_dir / f"{sid}_soft.npz", **summarise(out, 1000 * index))
        cases.append({"id": sid, "index": index, "target": "soft", "crop_sha256": sha(crop_u8), **log[-1],
                      "range": [float(out.min()), float(out.max())]})
    return {"cases": cases, "settings": "get_bf_optimized_masks: bilateral_solver_output's defaults (24, 4, 4)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", required=True, type=Path, help="TokenCut or segmentation-tricks checkout")
    args = parser.parse_args()
    data = require_shared_data()
    if (args.ref / "unsupervised_saliency_detection" / "bilateral_solver.py").exists():
        reference, make = "TokenCut", tokencut
        compared = ("unsupervised_saliency_detection/bilateral_solver.bilateral_solver_output(path, target, 16, 16, 8) "
                    "on native ECSSD images, soft and binary targets: the soft output (and the binary one it draws)")
    elif (args.ref / "sempart_main.py").exists():
        reference, make = "segmentation-tricks", segtricks
        compared = ("bilateral_solver.get_bf_optimized_masks(normalised 320x320 ECSSD crop, soft prediction) "
                    "vs the harness's bs preset=segtricks")
    else:
        raise SystemExit(f"{args.ref}: neither TokenCut nor segmentation-tricks")
    out_dir = GOLDENS / "bilateral-solver" / reference
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.npz"):
        old.unlink()
    record = make(args.ref, data, out_dir)
    (out_dir / "cases.json").write_text(json.dumps(record, indent=2) + "\n")
    shims = ["scipy.sparse.linalg.cg called with rtol=tol, atol=0 in place of the removed tol= (the legacy "
             "relative test; its early exit at ||b - A x0|| <= tol is asserted not to apply)",
             "rgb2yuv wrapped to record sha256 of its input and output (values unchanged)"]
    if reference == "segmentation-tricks":
        shims += SEGTRICKS_IMPORT_SHIMS
    write_source(out_dir, reference,
                 f"/work/refvenv/bin/python tests/parity/regenerate_bilateral_solver.py --ref <{reference}>",
                 shims, compared)
    print(json.dumps(record["cases"], indent=1))


if __name__ == "__main__":
    main()
