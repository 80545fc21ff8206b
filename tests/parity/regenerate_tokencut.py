"""Regenerate ``goldens/tokencut``: TokenCut's saliency masks, its object-discovery boxes, and
its saliency metric code on the same predictions.

Run with the reference checkout importable::

    /work/refvenv/bin/python tests/parity/regenerate_tokencut.py --ref /path/to/TokenCut

The reference runs through its own entry points (``runpy``), each phase in its own process
(the two entry points import different modules under the same names):

- ``saliency``: ``unsupervised_saliency_detection/get_saliency.py --dataset ECSSD --vit-arch
  small --patch-size 16`` on every ECSSD image of the shared data (laid out as the script
  expects, ``../datasets/ECSSD/{img,gt}``). Its masks *before* the bilateral solver
  (``mask_lost``: the seed's component, upsampled to the image by nearest neighbour) are the
  goldens; then its ``metric.metrics`` scores them against the ground truth;
- ``detection``: ``main_tokencut.py --image_path <jpg> --no_evaluation`` (full resolution,
  zero padding after normalising) on every VOC2012 image of the shared data with ViT-S/16,
  and on :data:`S8_VOC_IDS` with ViT-S/8 (the 300-epoch checkpoint name of its
  ``networks.py``); the box it predicts and the seed's component on the patch grid.

Weights: the seeded random checkpoints of ``parity_common`` stand in for the official files the
reference downloads. The generalised eigenvalues (second and third smallest) of every image
are recorded too: where they nearly coincide the Fiedler vector is ill-determined and a
solver may legitimately return another partition.

What it stores:

- ``saliency.json``: per ECSSD id, the sha256 of the reference mask (uint8 0/1 at image size,
  first 16 hex digits),
  its foreground pixel count, the patch grid, the seed and the eigenvalues;
  ``saliency_<id>.png`` for :data:`MASK_IDS` (the masks themselves, 0/255);
- ``detection.json``: per (backbone, VOC id), the box, the seed, the grid, the eigenvalues
  and the seed's component (packed bits of the grid mask);
- ``metrics.json``: ``metric.metrics`` (IoU, accuracy, F_max) of the reference masks of
  :data:`MASK_IDS` and of all images, of soft predictions (``parity_common.fixed_prediction``)
  on :data:`MASK_IDS`, and of those soft predictions against a soft-edged ground truth
  (:func:`soft_edged_ground_truth`), where TokenCut's ``gt > 0.5`` on 8-bit masks (every
  non-zero pixel is foreground) differs from the harness's ``gt / 255 > 0.5``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import runpy
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from parity_common import GOLDENS, parity_checkpoint, require_shared_data, write_source  # noqa: E402

OUT = GOLDENS / "tokencut"
#: ECSSD masks stored in full (and used by the default parity test); the grayscale 0557 included
MASK_IDS = ("0005", "0100", "0355", "0557", "0730", "1000", "0085", "0440")
#: VOC images for the default detection test (ViT-S/16), and those also run with ViT-S/8
DETECTION_IDS = ("2007_000027", "2007_000129", "2007_000346", "2007_000559", "2007_000733", "2007_000837")
S8_VOC_IDS = ("2007_000129", "2007_000837")
OFFICIAL = {"vits16": "dino_deitsmall16_pretrain.pth", "vits8": "dino_deitsmall8_300ep_pretrain.pth"}


def mask_digest(mask: np.ndarray) -> str:
    """The first 16 hex digits of the sha256 of a binary mask as uint8 0/1 bytes (row-major)."""
    return hashlib.sha256(np.ascontiguousarray(np.asarray(mask) > 0.5, dtype=np.uint8).tobytes()).hexdigest()[:16]


def write_json_lines(path: Path, header: dict, images: dict) -> None:
    """JSON with one line per image (small, diff-friendly): ``{**header, "images": {...}}``."""
    lines = ["{"] + [f" {json.dumps(k)}: {json.dumps(v)}," for k, v in header.items()] + [' "images": {']
    items = list(images.items())
    for n, (key, value) in enumerate(items):
        lines.append(f"  {json.dumps(key)}: {json.dumps(value, separators=(',', ':'))}" + ("," if n + 1 < len(items) else ""))
    path.write_text("\n".join(lines + [" }", "}"]) + "\n")


def pack(mask: np.ndarray) -> str:
    """A boolean grid as hex of its packed bits (row-major)."""
    return np.packbits(np.asarray(mask, bool).ravel()).tobytes().hex()


def unpack(text: str, shape) -> np.ndarray:
    return np.unpackbits(np.frombuffer(bytes.fromhex(text), np.uint8))[: int(np.prod(shape))].reshape(shape).astype(bool)


def soft_edged_ground_truth(gt: np.ndarray) -> np.ndarray:
    """An 8-bit ground truth with a soft rim: background pixels 4-adjacent to the foreground
    set to 64 (foreground for TokenCut's ``gt > 0.5``, background for ``gt / 255 > 0.5``)."""
    fg = gt > 127
    near = np.zeros_like(fg)
    near[1:] |= fg[:-1]
    near[:-1] |= fg[1:]
    near[:, 1:] |= fg[:, :-1]
    near[:, :-1] |= fg[:, 1:]
    out = np.where(fg, 255, 0).astype(np.uint8)
    out[near & ~fg] = 64
    return out


# ---- shims (run only inside the phases) ------------------------------------------------------------

def _install_shims(checkpoints: dict[str, Path], record: list[str]) -> None:
    """No GPU and no downloads: ``.cuda()`` / ``.to('cuda')`` stay on the CPU, and
    ``torch.hub.load_state_dict_from_url`` returns the parity checkpoint named like the
    official file the reference asks for."""
    import torch

    torch.set_num_threads(1)

    def load_from_url(url, *args, **kwargs):
        name = url.rsplit("/", 1)[-1]
        record.append(name)
        if name not in checkpoints:
            raise RuntimeError(f"the reference asked for {url}, which has no parity stand-in")
        return torch.load(checkpoints[name], map_location="cpu")

    torch.hub.load_state_dict_from_url = load_from_url
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
    original_to = torch.Tensor.to

    def to_cpu(self, *args, **kwargs):
        args = tuple("cpu" if (isinstance(a, str) and a.startswith("cuda")) or
                     (isinstance(a, torch.device) and a.type == "cuda") else a for a in args)
        if str(kwargs.get("device", "")).startswith("cuda"):
            kwargs["device"] = "cpu"
        return original_to(self, *args, **kwargs)

    torch.Tensor.to = to_cpu


def _record_eigh(module, store: list) -> None:
    """Wrap the ``eigh`` a reference module imported, to record the eigenvalues it returns."""
    original = module.eigh

    def eigh(*args, **kwargs):
        values, vectors = original(*args, **kwargs)
        store.append([float(v) for v in values])
        return values, vectors

    module.eigh = eigh


def phase_saliency(ref: Path, data: Path, work: Path, ids: list[str]) -> dict:
    layout = work / "datasets" / "ECSSD"
    (layout / "img").mkdir(parents=True)
    (layout / "gt").mkdir(parents=True)
    for i in ids:
        os.symlink(data / "ECSSD" / "images" / f"{i}.jpg", layout / "img" / f"{i}.jpg")
        os.symlink(data / "ECSSD" / "ground_truth_mask" / f"{i}.png", layout / "gt" / f"{i}.png")
    folder = ref / "unsupervised_saliency_detection"
    sys.path.insert(0, str(folder))
    loaded: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        _install_shims({OFFICIAL["vits16"]: parity_checkpoint("vits16", tmp)}, loaded)
        import bilateral_solver
        import metric
        import object_discovery

        # the solver's outputs are not compared here (goldens/bilateral-solver holds them)
        bilateral_solver.bilateral_solver_output = lambda img_pth, target, **kw: (target.copy(), target.copy())
        eigenvalues: list = []
        _record_eigh(object_discovery, eigenvalues)
        seeds: list = []
        original_ncut = object_discovery.ncut

        def ncut(feats, dims, *args, **kwargs):
            seed, bipartition, eigvec = original_ncut(feats, dims, *args, **kwargs)
            seeds.append((int(seed), [int(d) for d in dims]))
            return seed, bipartition, eigvec

        object_discovery.ncut = ncut
        run_dir = work / "run"
        run_dir.mkdir()
        os.chdir(run_dir)
        sys.argv = [str(folder / "get_saliency.py"), "--dataset", "ECSSD", "--vit-arch", "small", "--patch-size",
                    "16", "--out-dir", str(work / "vis"), "--nb-vis", "1"]
        scope = runpy.run_path(str(folder / "get_saliency.py"), run_name="__main__")
    names = [n[:-4] for n in scope["img_list"]]
    assert names == ids and loaded and set(loaded) == {OFFICIAL["vits16"]}
    masks = [np.asarray(m) for m in scope["mask_lost"]]
    per_image = {}
    for i, mask, (seed, dims), values in zip(ids, masks, seeds, eigenvalues):
        per_image[i] = {"sha256_16": mask_digest(mask), "foreground": int((mask > 0.5).sum()), "grid": dims,
                        "seed": seed, "eigenvalues": [float(f"{v:.7g}") for v in values]}
    gts = [np.asarray(g) for g in scope["gt"]]
    subset = [ids.index(i) for i in MASK_IDS]
    from parity_common import fixed_prediction

    soft = [fixed_prediction(gts[j], k).astype(np.float32) / np.float32(255.0) for k, j in enumerate(subset)]
    metrics = {
        "masks_subset": metric.metrics([masks[j] for j in subset], [gts[j] for j in subset]),
        "masks_all": metric.metrics(masks, gts),
        "soft_subset": metric.metrics(soft, [gts[j] for j in subset]),
        "soft_subset_soft_edged_gt": metric.metrics(soft, [soft_edged_ground_truth(gts[j]) for j in subset]),
    }
    return {"per_image": per_image, "metrics": metrics, "masks": {i: masks[ids.index(i)] for i in MASK_IDS},
            "weights": loaded[0]}


def phase_detection(ref: Path, data: Path, work: Path, ids: list[str]) -> dict:
    sys.path.insert(0, str(ref))
    loaded: list[str] = []
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        _install_shims({OFFICIAL[a]: parity_checkpoint(a, tmp) for a in OFFICIAL}, loaded)
        import object_discovery

        eigenvalues: list = []
        _record_eigh(object_discovery, eigenvalues)
        calls: list = []
        original_ncut = object_discovery.ncut

        def ncut(feats, dims, *args, **kwargs):
            result = original_ncut(feats, dims, *args, **kwargs)
            calls.append((result, [int(d) for d in dims]))
            return result

        object_discovery.ncut = ncut
        script = ref / "main_tokencut.py"
        for arch, patch, image_ids in (("vits16", 16, ids), ("vits8", 8, [i for i in S8_VOC_IDS if i in ids])):
            for i in image_ids:
                sys.argv = [str(script), "--arch", "vit_small", "--patch_size", str(patch), "--image_path",
                            str(data / "VOC2012" / "JPEGImages" / f"{i}.jpg"), "--output_dir", str(work / "out")]
                runpy.run_path(str(script), run_name="__main__")
                (pred, _objects, component, seed, _bins, _eigvec), dims = calls[-1]
                out[f"{arch}/{i}"] = {"box": [float(v) for v in pred], "seed": int(seed), "grid": dims,
                                      "eigenvalues": [float(f"{v:.7g}") for v in eigenvalues[-1]],
                                      "component": pack(component > 0.5),
                                      "weights": loaded[-1]}
                print(arch, i, out[f"{arch}/{i}"]["box"], flush=True)
    return out


def _run_phase(phase: str, ref: Path, ids: list[str]) -> dict:
    """Run one phase in a fresh interpreter; it writes its result to a pickle."""
    import pickle

    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.pkl"
        subprocess.run([sys.executable, __file__, "--ref", str(ref), "--phase", phase, "--ids", ",".join(ids),
                        "--result", str(result)], check=True)
        with open(result, "rb") as handle:
            return pickle.load(handle)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", required=True, type=Path, help="checkout of YangtaoWANG95/TokenCut")
    parser.add_argument("--phase", choices=("saliency", "detection"), help=argparse.SUPPRESS)
    parser.add_argument("--ids", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    ref = args.ref.resolve()
    data = require_shared_data()
    if args.phase:
        import pickle

        with tempfile.TemporaryDirectory() as work:
            phase = phase_saliency if args.phase == "saliency" else phase_detection
            result = phase(ref, data, Path(work), args.ids.split(","))
        with open(args.result, "wb") as handle:
            pickle.dump(result, handle)
        return
    ecssd = sorted(p.stem for p in (data / "ECSSD" / "images").glob("*.jpg"))
    voc = sorted(p.stem for p in (data / "VOC2012" / "JPEGImages").glob("*.jpg"))
    saliency = _run_phase("saliency", ref, ecssd)
    detection = _run_phase("detection", ref, voc)
    OUT.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    for old in OUT.glob("saliency_*.png"):
        old.unlink()
    for i, mask in saliency["masks"].items():
        Image.fromarray(np.where(mask > 0.5, 255, 0).astype(np.uint8)).save(OUT / f"saliency_{i}.png", optimize=True)
    write_json_lines(OUT / "saliency.json", {"backbone": "vits16", "weights": saliency["weights"],
                                             "mask_ids": list(MASK_IDS)}, saliency["per_image"])
    write_json_lines(OUT / "detection.json", {"default_ids": list(DETECTION_IDS), "s8_ids": list(S8_VOC_IDS)},
                     detection)
    (OUT / "metrics.json").write_text(json.dumps(
        {"mask_ids": list(MASK_IDS), "all_ids": ecssd, **saliency["metrics"]}, indent=2) + "\n")
    write_source(
        OUT, "TokenCut",
        "/work/refvenv/bin/python tests/parity/regenerate_tokencut.py --ref <TokenCut checkout>",
        shims=[
            "torch.hub.load_state_dict_from_url returns the parity_common checkpoint (seeded random weights, official "
            "DINO layout) for the official file the reference asks for: dino_deitsmall16_pretrain.pth (ViT-S/16) and "
            "dino_deitsmall8_300ep_pretrain.pth (ViT-S/8, main_tokencut's networks.py)",
            "no GPU: torch.Tensor.cuda and torch.nn.Module.cuda return self, torch.Tensor.to maps 'cuda' to 'cpu'",
            "torch.set_num_threads(1)",
            "get_saliency.py: bilateral_solver.bilateral_solver_output returns the mask twice (its outputs are not "
            "compared here); the ECSSD images are symlinked as ../datasets/ECSSD/{img,gt} of its working directory",
            "object_discovery.ncut and object_discovery.eigh wrapped to record the seed, the grid, the component and "
            "the eigenvalues (the reference's own functions run unchanged)",
            "get_saliency.py cannot run ViT-S/8 (--vit-arch small --patch-size 8 leaves its url unset, a NameError "
            "in the reference), so ViT-S/8 is covered by the detection path only",
        ],
        compared=("unsupervised_saliency_detection/get_saliency.py masks before the bilateral solver (ECSSD, ViT-S/16) "
                  "and its metric.metrics on the same predictions; main_tokencut.py boxes and seed components "
                  "(VOC2012, ViT-S/16, and ViT-S/8 on two images)"),
    )


if __name__ == "__main__":
    main()
