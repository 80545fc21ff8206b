"""Regenerate ``goldens/segtricks-protocol``: segmentation-tricks' saliency evaluation (its
ECSSD transforms and ``token_metric``) on a few ECSSD images and fixed predictions.

Run with the reference checkout importable and its requirements installed::

    /work/refvenv/bin/python tests/parity/regenerate_segtricks_protocol.py --ref /path/to/segmentation-tricks

What it stores (the reference's outputs, no reference code):

- ``gt_<id>.png``: the ground truth as the reference's ``mySaliencyDataset`` + ECSSD
  ``transform_target`` give it (``Resize(335)`` + ``CenterCrop(320)`` + ``ToTensor``), x 255;
- ``image_sha256.json``: sha256 of each image crop as its ``transform_train`` gives it without
  the final ``Normalize`` (x 255, uint8), so the harness's view of the image is checked too;
- the predictions fed to the metric code are ``parity_common.fixed_prediction`` of each
  ground truth (integer arithmetic, so the test rebuilds them exactly);
- ``metrics.json``: ``token_metric.accuracy``, ``IoU`` and ``my_Fmax`` on those predictions.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from parity_common import GOLDENS, SEGTRICKS_IMPORT_SHIMS, fixed_prediction, import_segtricks, require_shared_data, segtricks_ecssd_crops, write_source  # noqa: E402

IDS = ("0005", "0100", "0355", "0557", "0730", "1000")
OUT = GOLDENS / "segtricks-protocol"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", required=True, type=Path, help="segmentation-tricks checkout")
    args = parser.parse_args()
    token_metric, utils_data = import_segtricks(args.ref, "token_metric", "utils_data")

    data = require_shared_data()
    OUT.mkdir(parents=True, exist_ok=True)
    preds, gts, digests = [], [], {}
    for index, (stem, _, gt, gt_u8, crop_u8) in enumerate(segtricks_ecssd_crops(utils_data, data, IDS)):
        assert np.allclose(gt_u8 / 255.0, gt[0].numpy(), atol=1e-6), "ground truth is not on 1/255 levels"
        Image.fromarray(gt_u8).save(OUT / f"gt_{stem}.png")
        digests[stem] = hashlib.sha256(crop_u8.tobytes()).hexdigest()
        pred_u8 = fixed_prediction(gt_u8, index)
        preds.append(torch.from_numpy(pred_u8).float()[None] / 255.0)
        gts.append(gt)
    pred_list, gt_list = torch.stack(preds), torch.stack(gts)
    metrics = {
        "acc": token_metric.accuracy(pred_list, gt_list),
        "iou": token_metric.IoU(pred_list, gt_list),
        "max_fbeta": token_metric.my_Fmax(pred_list, gt_list),
        "ids": list(IDS),
    }
    (OUT / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (OUT / "image_sha256.json").write_text(json.dumps(digests, indent=2) + "\n")
    write_source(
        OUT, "segmentation-tricks",
        "/work/refvenv/bin/python tests/parity/regenerate_segtricks_protocol.py --ref <segmentation-tricks>",
        [*SEGTRICKS_IMPORT_SHIMS,
         "pycocotools, h5py and wget installed (imported at module level by utils_data / utils)"],
        "utils_data.load_my_dataset_not_augment(dataset='ecssd', img_size=320): ground truth and image "
        "crops; token_metric.accuracy / IoU / my_Fmax on fixed predictions",
    )
    print(json.dumps(metrics))


if __name__ == "__main__":
    main()
