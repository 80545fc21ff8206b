"""Regenerate ``goldens/move``: how MOVE saves, solves and scores its masks, from its own scripts.

    /work/refvenv/bin/python tests/parity/regenerate_move.py --ref /path/to/move-seg

Runs, on a few ECSSD images, MOVE's ``infer.py --bilateral`` (its default ``--size 448``: shorter
side 448, bicubic, masks cropped to the resized image) with a stub in place of the trained
network that returns a fixed soft blob per image, then its ``segmentation_eval.py`` on the
saved masks and on the bilateral ones. Stored:

- ``saved/<id>.png``: the mask PNG ``infer.py`` wrote (8-bit, probability x 255, 448 shorter side);
- ``loaded_<id>.png``: that mask as ``segmentation_eval.py`` resized it to the ground truth's size
  before scoring (captured from ``PIL.Image.Image.resize``), and ``bilateral/<first id>.png``, the
  bilateral solver's output as ``infer.py`` saved it (image size, so the evaluation's resize is
  the identity: checked; sha256 of every image's in ``metrics.json``);
- ``bs_<id>.npz``: the float64 output of MOVE's ``bilateral_solver_output`` (sigmas 16/16/8) on
  that image and mask, summarised as in ``regenerate_bilateral_solver.py``;
- ``metrics.json``: ``segmentation_eval.py``'s per-image IoU and mean IoU / accuracy for both
  folders, sha256 of the solver's target after MOVE's ``cv2.resize`` to the image size and of
  the YUV image ``rgb2yuv`` computed.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import runpy
import shutil
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from parity_common import GOLDENS, require_shared_data, write_source  # noqa: E402
from regenerate_bilateral_solver import patch_cg, record_yuv, summarise  # noqa: E402

IDS = ("0005", "0557", "1000")
OUT = GOLDENS / "move"


def sha(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def blob(height: int, width: int, k: int):
    """The stub network's soft mask for the k-th image: a blob with a soft edge."""
    import torch

    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                            indexing="ij")
    cy, cx, radius = height * (0.45 + 0.05 * k), width * (0.5 - 0.04 * k), 0.3 * min(height, width)
    distance = ((ys - cy) ** 2 + (xs - cx) ** 2).sqrt()
    return 0.02 + 0.96 * torch.sigmoid((radius - distance) / 6.0)


def stub_trainer(calls: list):
    """``train.TrainerLite`` stand-in whose segmenter returns :func:`blob` (MOVE's own code runs
    everything else)."""
    import torch

    class Segmenter(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.feature_extractor = types.SimpleNamespace(patch_size=16)

        def forward(self, imgs):
            b, _, h, w = imgs.shape
            calls.append((h, w))
            return torch.stack([blob(h, w, len(calls) - 1)[None] for _ in range(b)])

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.segmenter = Segmenter()

    class TrainerLite:
        def __init__(self, *args, **kwargs):
            self.model = Model()

        def setup(self, model):
            return model

        def load(self, path):
            return {"model": {}}

    return TrainerLite


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", required=True, type=Path, help="move-seg checkout")
    args = parser.parse_args()
    import torch

    data = require_shared_data()
    sys.path.insert(0, str(args.ref))
    import bilateral_solver

    patch_cg(bilateral_solver)
    yuv_log: list = []
    record_yuv(bilateral_solver, yuv_log)
    solved, resized_targets = {}, []
    original_output = bilateral_solver.bilateral_solver_output
    original_resize = bilateral_solver.cv2.resize

    def recording_resize(*a, **k):  # records MOVE's cv2.resize of the target (values unchanged)
        out = original_resize(*a, **k)
        resized_targets.append(sha(out))
        return out

    def recording_output(path, target, **kwargs):
        output, binary = original_output(path, target, **kwargs)
        solved[Path(path).stem] = (output, kwargs, len(resized_targets))
        return output, binary

    bilateral_solver.cv2 = types.SimpleNamespace(resize=recording_resize)
    bilateral_solver.bilateral_solver_output = recording_output

    calls: list = []
    sys.modules["train"] = types.SimpleNamespace(TrainerLite=stub_trainer(calls))  # shim: no trained model
    load, cuda = torch.load, torch.Tensor.cuda
    torch.load = lambda *a, **k: load(*a, **{**k, "weights_only": False})  # shim: torch >= 2.6 default
    torch.Tensor.cuda = lambda self, *a, **k: self  # shim: no GPU needed

    work = Path(tempfile.mkdtemp(prefix="move_parity_"))
    try:
        (work / "images" / "ecssd").mkdir(parents=True)
        (work / "gt" / "ecssd").mkdir(parents=True)
        for sid in IDS:
            os.symlink(data / "ECSSD" / "images" / f"{sid}.jpg", work / "images" / "ecssd" / f"{sid}.jpg")
            os.symlink(data / "ECSSD" / "ground_truth_mask" / f"{sid}.png", work / "gt" / "ecssd" / f"{sid}.png")
        model = work / "model.pth"
        torch.save({"args": argparse.Namespace(precision=32)}, work / "model.args")
        # infer.py's own output folders (with --out_dir its --bilateral branch needs an undefined db_name)
        pred = work / "pred_images_448_keepAR_model"
        pred_bilateral = work / "pred_images_448_keepAR_model_bilateral"
        sys.argv = ["infer.py", "--model_path", str(model), "--dataset", str(work / "images"), "--bilateral"]
        runpy.run_path(str(args.ref / "infer.py"), run_name="__main__")

        opened: list = []
        loaded: dict = {}
        image_open, image_resize = Image.open, Image.Image.resize

        def recording_open(fp, *a, **k):
            opened.append(str(fp))
            return image_open(fp, *a, **k)

        def recording_image_resize(self, size, *a, **k):  # records the evaluation's resized masks
            out = image_resize(self, size, *a, **k)
            loaded[opened[-1]] = (np.asarray(out).copy(), self.size, a, k)
            return out

        Image.open, Image.Image.resize = recording_open, recording_image_resize
        metrics = {}
        try:
            for name, folder in (("saved", pred), ("bilateral", pred_bilateral)):
                sys.argv = ["segmentation_eval.py", str(work / "gt") + "/", str(folder)]
                runpy.run_path(str(args.ref / "segmentation_eval.py"), run_name="__main__")
                text = (folder / "metrics.txt").read_text()
                values = dict(line.split(": ", 1) for line in text.strip().splitlines())
                per_image = dict(line.rsplit(" ", 1) for line in (folder / "ious_metrics.txt").read_text().splitlines())
                metrics[name] = {"mean_iou": float(values["Mean IoU"]), "mean_acc": float(values["Mean Accuracy"]),
                                   "iou": {Path(k).stem: float(v) for k, v in per_image.items()}}
        finally:
            Image.open, Image.Image.resize = image_open, image_resize

        if OUT.exists():
            shutil.rmtree(OUT)
        (OUT / "saved").mkdir(parents=True)
        (OUT / "bilateral").mkdir()
        record = {"ids": list(IDS), "network_input_hw": [list(c) for c in calls], "images": {}}
        for index, sid in enumerate(IDS):
            shutil.copy(pred / "ecssd" / f"{sid}.png", OUT / "saved" / f"{sid}.png")
            if index == 0:  # one is enough to read back (the others: their sha256)
                shutil.copy(pred_bilateral / "ecssd" / f"{sid}.png", OUT / "bilateral" / f"{sid}.png")
            raw, in_size, rargs, rkw = loaded[str(pred / "ecssd" / f"{sid}.png")]
            assert rargs == (Image.BILINEAR,) and not rkw
            Image.fromarray(raw).save(OUT / f"loaded_{sid}.png")
            bil, _, _, _ = loaded[str(pred_bilateral / "ecssd" / f"{sid}.png")]
            with Image.open(pred_bilateral / "ecssd" / f"{sid}.png") as saved_bil:
                saved_bil = np.asarray(saved_bil)
            assert np.array_equal(bil, saved_bil), "the evaluation's resize of the bilateral mask is not the identity"
            output, settings, n_resized = solved[sid]
            np.savez_compressed(OUT / f"bs_{sid}.npz", **summarise(output, 1000 * index))
            record["images"][sid] = {"saved_hw": list(in_size[::-1]), "bs_settings": settings,
                                     "bs_target_sha256": resized_targets[n_resized - 1], **yuv_log[index],
                                     "bilateral_png_sha256": sha(saved_bil),
                                     "bs_range": [float(output.min()), float(output.max())]}
        record["metrics"] = metrics
        (OUT / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")
    finally:
        torch.load, torch.Tensor.cuda = load, cuda
        shutil.rmtree(work, ignore_errors=True)
    write_source(
        OUT, "move-seg", "/work/refvenv/bin/python tests/parity/regenerate_move.py --ref <move-seg>",
        ["a stub module `train` whose TrainerLite's segmenter returns a fixed soft blob per image (no trained "
         "MOVE model; infer.py does the resizing, padding, cropping, saving, loading and bilateral solving)",
         "torch.load called with weights_only=False (infer.py loads an argparse.Namespace; torch >= 2.6 refuses it)",
         "torch.Tensor.cuda is the identity (no GPU)",
         "scipy.sparse.linalg.cg called with rtol=tol, atol=0 in place of the removed tol= (legacy early exit "
         "asserted not to apply)",
         "rgb2yuv, cv2.resize (inside bilateral_solver), bilateral_solver_output, PIL Image.open and "
         "Image.resize wrapped to record their inputs and outputs (values unchanged)",
         "easydict installed (imported by infer.py)"],
        "infer.py --bilateral (saved masks, bilateral outputs) and segmentation_eval.py (masks as resized for "
        "scoring, per-image IoU) vs the harness's move adapter and bs post-processor",
    )
    print(json.dumps({k: v for k, v in record.items() if k != "images"}, indent=1))


if __name__ == "__main__":
    main()
