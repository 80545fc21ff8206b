"""Regenerate ``goldens/guided-filter``: segmentation-tricks' guided filter (trick 1) on a few
ECSSD crops, as its evaluation calls it.

    /work/refvenv/bin/python tests/parity/regenerate_guided_filter.py --ref /path/to/segmentation-tricks

``sempart_main.py --use_gf`` filters the sigmoid mask with ``myGuidedFilter2d(9, 1e-3)(mask,
image)``, ``image`` being the ImageNet-normalised float32 tensor of the 320 x 320 crop its ECSSD
loader gives; its crop-consistency teacher calls the same module on the normalised crop. Inputs
here: that crop (``load_my_dataset_not_augment``) and the soft prediction
``parity_common.fixed_prediction(ground truth crop) / 255`` (float32), a batch of one.

Two runs of the reference module per case:

- ``f32``: as the evaluation runs it (float32);
- ``f64``: the same code in float64 (the module built under ``torch.set_default_dtype(float64)``,
  so that its un-normalisation constants are float64, and fed the image normalised in float64),
  to separate the algorithm from float32 rounding.

Stored per case (``<id>.npz``): each run's output at 512 fixed pixels (half within 12 pixels of
a border, where the window counts matter), its sum, and for ``f32`` the output > 0.5 at every
pixel (``np.packbits``); ``cases.json``: sha256 of the crop, the outputs' ranges.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from parity_common import GOLDENS, SEGTRICKS_IMPORT_SHIMS, fixed_prediction, import_segtricks, require_shared_data, segtricks_ecssd_crops, write_source  # noqa: E402
from regenerate_bilateral_solver import sample_positions  # noqa: E402

IDS = ("0005", "0557", "1000")
OUT = GOLDENS / "guided-filter"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def sha(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", required=True, type=Path, help="segmentation-tricks checkout")
    args = parser.parse_args()
    import torch

    guided_filter, utils_data = import_segtricks(args.ref, "guided_filter", "utils_data")
    data = require_shared_data()

    gf32 = guided_filter.myGuidedFilter2d(9, 1e-3)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        gf64 = guided_filter.myGuidedFilter2d(9, 1e-3)
    finally:
        torch.set_default_dtype(default)
    assert gf64.unnorm.mean.dtype == torch.float64

    OUT.mkdir(parents=True, exist_ok=True)
    cases = []
    for index, (sid, image, _, gt_u8, crop_hwc) in enumerate(segtricks_ecssd_crops(utils_data, data, IDS)):
        crop_u8 = torch.from_numpy(crop_hwc).permute(2, 0, 1)  # (3, H, W)
        pred = torch.from_numpy(fixed_prediction(gt_u8, index).astype(np.float32) / np.float32(255.0))[None, None]
        image64 = ((crop_u8.double() / 255 - torch.tensor(MEAN, dtype=torch.float64).view(3, 1, 1))
                   / torch.tensor(STD, dtype=torch.float64).view(3, 1, 1))
        with torch.no_grad():
            out32 = gf32(pred, image[None])[0, 0].numpy()
            out64 = gf64(pred.double(), image64[None])[0, 0].numpy()
        assert out32.dtype == np.float32 and out64.dtype == np.float64
        idx = sample_positions(out32.shape, 1000 * index)
        np.savez_compressed(
            OUT / f"{sid}.npz", idx=idx, shape=np.array(out32.shape),
            f32=out32.ravel()[idx], f64=out64.ravel()[idx],
            f32_sum=np.float64(out32.astype(np.float64).sum()), f64_sum=np.float64(out64.sum()),
            f32_above=np.packbits((out32 > 0.5).ravel()),
        )
        cases.append({"id": sid, "index": index, "crop_sha256": sha(crop_hwc),
                      "f32_range": [float(out32.min()), float(out32.max())],
                      "f64_range": [float(out64.min()), float(out64.max())]})
    (OUT / "cases.json").write_text(json.dumps({"radius": 9, "eps": 1e-3, "cases": cases}, indent=2) + "\n")
    write_source(
        OUT, "segmentation-tricks",
        "/work/refvenv/bin/python tests/parity/regenerate_guided_filter.py --ref <segmentation-tricks>",
        [*SEGTRICKS_IMPORT_SHIMS,
         "the float64 run builds myGuidedFilter2d under torch.set_default_dtype(torch.float64) (its "
         "UnNormalize constants in float64) and feeds it the crop normalised in float64"],
        "guided_filter.myGuidedFilter2d(9, 1e-3)(soft prediction, normalised 320x320 ECSSD crop), float32 "
        "and float64, vs the harness's gf",
    )
    print(json.dumps(cases, indent=1))


if __name__ == "__main__":
    main()
