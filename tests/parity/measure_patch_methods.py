"""Agreement of the harness's backbone, TokenCut, LOST and Deep Spectral Methods with their
goldens on every image the goldens hold, now and with the harness's behaviour before issue 12
switched back on, one deviation at a time (the numbers of the issue's closing note).

    .venv/bin/python tests/parity/measure_patch_methods.py [--before pos,f16,ties,mode | --before all]

``--before`` switches back on: ``pos`` timm's size-based antialiased position-embedding
resampling (item 7), ``f16`` float16 features (item 8, the old feature cache), ``ties`` LOST's
stable order among tied degrees (item 12), ``mode`` TokenCut's old default ``mode=saliency``
under CorLoc (item 9). It prints one line per comparison: agreeing / compared.
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
from _patch_parity import dataset, grid_output, method, parity_backbone  # noqa: E402
from parity_common import GOLDENS, load_image, shared_data_root  # noqa: E402

FACTORS = ("pos", "f16", "ties", "mode")


def switch_back(factors: set[str]) -> None:
    if "pos" in factors:
        import harness.backbones.vit as vit
        from timm.layers import resample_abs_pos_embed

        vit.dino_position_embeddings = lambda pos, grid, trained, prefix=1: resample_abs_pos_embed(
            pos, new_size=list(grid), old_size=list(trained), num_prefix_tokens=prefix)
    if "f16" in factors:
        from harness.backbones.features import FeatureExtractor

        extract = FeatureExtractor._extract
        FeatureExtractor._extract = lambda self, images: extract(self, images).astype(np.float16).astype(np.float32)


def keys(tmp: Path) -> list[str]:
    from regenerate_dino_keys import CASES, IMAGE_ID, case_input, projection

    golden = np.load(GOLDENS / "dino-keys" / "keys.npz")
    image = load_image(shared_data_root() / "ECSSD" / "images" / f"{IMAGE_ID}.jpg")
    lines = []
    for arch, tag in CASES:
        import torch

        backbone = parity_backbone(arch if arch == "vits16" else "vits8", tmp)
        grid = backbone.features(torch.from_numpy(case_input(image, arch, tag)).permute(2, 0, 1)[None])[0]
        proj = grid.reshape(grid.shape[0], -1).T.numpy().astype(np.float64) @ projection()
        ref = golden[f"{arch}_{tag}_proj"].astype(np.float64)
        lines.append(f"keys {arch} {tag}: RMS relative difference {np.sqrt(((proj - ref) ** 2).mean() / (ref ** 2).mean()):.2e}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="", help=f"comma-separated subset of {FACTORS}, or all")
    args = parser.parse_args()
    factors = set(FACTORS) if args.before == "all" else {f for f in args.before.split(",") if f}
    assert factors <= set(FACTORS), factors
    switch_back(factors)
    data = shared_data_root()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        out = [f"switched back: {sorted(factors) or 'nothing (the harness now)'}"] + keys(tmp)
        b16, b8 = parity_backbone("vits16", tmp), parity_backbone("vits8", tmp)
        backbones = {"vits16": b16, "vits8": b8}
        ecssd, voc = dataset("ecssd", data / "ECSSD"), dataset("voc12", data / "VOC2012")
        # TokenCut saliency masks
        golden = json.loads((GOLDENS / "tokencut" / "saliency.json").read_text())["images"]
        tokencut = method("tokencut", b16, tmp, mode="saliency")
        same = [hashlib.sha256(np.ascontiguousarray(tokencut.predict(ecssd.load(i).without_labels()).mask > 0.5,
                                                    dtype=np.uint8).tobytes()).hexdigest()[:16] == g["sha256_16"]
                for i, g in golden.items()]
        out.append(f"TokenCut saliency masks (ECSSD, S/16): {sum(same)}/{len(same)} identical")
        # TokenCut detection boxes
        golden = json.loads((GOLDENS / "tokencut" / "detection.json").read_text())["images"]
        mode = "saliency" if "mode" in factors else "detection"
        for arch in ("vits16", "vits8"):
            cases = [c for c in golden if c.startswith(arch)]
            tc = method("tokencut", backbones[arch], tmp, mode=mode)
            boxes = [list(tc.predict(voc.load(c.split("/")[1]).without_labels()).box) == golden[c]["box"] for c in cases]
            out.append(f"TokenCut detection boxes (VOC12, {arch}, mode={mode}): {sum(boxes)}/{len(boxes)} identical")
        # LOST boxes
        golden = json.loads((GOLDENS / "lost" / "boxes.json").read_text())["images"]
        ties = "stable" if "ties" in factors else "torch"
        for arch in ("vits16", "vits8"):
            cases = [c for c in golden if c.startswith(arch)]
            lost = method("lost", backbones[arch], tmp, ties=ties)
            boxes = [list(lost.predict(voc.load(c.split("/")[1]).without_labels()).box) == golden[c]["box"] for c in cases]
            out.append(f"LOST boxes (VOC12, {arch}, ties={ties}): {sum(boxes)}/{len(boxes)} identical")
        # Deep Spectral boxes and patch masks
        from test_deep_spectral import reference_mask

        golden = json.loads((GOLDENS / "deep-spectral" / "boxes.json").read_text())["images"]
        dsm = method("deep-spectral", b16, tmp)
        masks = boxes = 0
        for i, g in golden.items():
            sample = voc.load(i)
            mask, _, _ = grid_output(dsm, sample)
            masks += bool(np.array_equal(mask, reference_mask(g)))
            boxes += list(dsm.predict(sample.without_labels()).box) == g["box"]
        out.append(f"Deep Spectral (VOC12, S/16): patch masks {masks}/{len(golden)}, boxes {boxes}/{len(golden)} identical")
    print("\n".join(out))


if __name__ == "__main__":
    main()
