"""Regenerate ``goldens/lost``: LOST's boxes and seeds on the VOC2012 images of the shared data.

Run with the reference checkout and its ``dino`` submodule (facebookresearch/dino) importable::

    /work/refvenv/bin/python tests/parity/regenerate_lost.py --ref /path/to/LOST --dino /path/to/dino

The reference runs through its own entry point: ``main_lost.py --arch vit_small --patch_size
<p> --image_path <jpg>`` is executed (``runpy``) once per image (full resolution, zero padding
after normalising, keys of the last block, ``k_patches`` 100), with ViT-S/16 on every VOC image
and with ViT-S/8 (the 300-epoch checkpoint name of its ``networks.py``) on
:data:`S8_VOC_IDS`. ``object_discovery.lost`` is wrapped to record what it returns: the box,
the seed and the degree scores (``-degree``), from which the number of patches tied at the
seed's degree and the lowest-index patch among them (what a stable sort would have chosen)
are recorded too (item 12 of issue 12: ``torch.argsort``'s CPU order among tied degrees).

What it stores: ``boxes.json``, per (backbone, VOC id): the box, the seed, the grid, the
number of patches tied at the lowest degree, and the stable sort's seed.
"""
from __future__ import annotations

import argparse
import runpy
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from parity_common import GOLDENS, parity_checkpoint, require_shared_data, write_source  # noqa: E402
from regenerate_tokencut import OFFICIAL, _install_shims, write_json_lines  # noqa: E402

OUT = GOLDENS / "lost"
#: VOC images of the default parity test (the others run with HARNESS_PARITY_FULL=1): the last
#: four have patches tied at the lowest degree, where torch's order picks another seed than a
#: stable sort would (2007_000862: all 768 tied)
DEFAULT_IDS = ("2007_000027", "2007_000129", "2007_000464", "2007_000648", "2007_000862", "2007_001239")
S8_VOC_IDS = ("2007_000129", "2007_000837")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", required=True, type=Path, help="checkout of valeoai/LOST")
    parser.add_argument("--dino", required=True, type=Path, help="checkout of facebookresearch/dino (LOST's submodule)")
    args = parser.parse_args()
    ref, dino = args.ref.resolve(), args.dino.resolve()
    data = require_shared_data()
    # LOST imports `dino.vision_transformer` (its git submodule) and that module imports `utils`
    sys.path[:0] = [str(ref), str(dino.parent), str(dino)]
    voc = sorted(p.stem for p in (data / "VOC2012" / "JPEGImages").glob("*.jpg"))
    loaded: list[str] = []
    records = {}
    with tempfile.TemporaryDirectory() as tmp:
        _install_shims({OFFICIAL[a]: parity_checkpoint(a, tmp) for a in OFFICIAL}, loaded)
        import object_discovery

        calls: list = []
        original = object_discovery.lost

        def lost(feats, dims, *a, **k):
            result = original(feats, dims, *a, **k)
            calls.append((result, [int(d) for d in dims]))
            return result

        object_discovery.lost = lost
        script = ref / "main_lost.py"
        for arch, patch, ids in (("vits16", 16, voc), ("vits8", 8, list(S8_VOC_IDS))):
            for i in ids:
                sys.argv = [str(script), "--arch", "vit_small", "--patch_size", str(patch), "--image_path",
                            str(data / "VOC2012" / "JPEGImages" / f"{i}.jpg"), "--output_dir", str(Path(tmp) / "out")]
                runpy.run_path(str(script), run_name="__main__")
                (pred, _A, scores, seed), dims = calls[-1]
                degree = -scores.numpy()
                lowest = np.flatnonzero(degree == degree.min())
                records[f"{arch}/{i}"] = {"box": [float(v) for v in pred], "seed": int(seed), "grid": dims,
                                          "tied_at_lowest_degree": int(len(lowest)), "stable_seed": int(lowest[0]),
                                          "weights": loaded[-1]}
                print(arch, i, records[f"{arch}/{i}"], flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    write_json_lines(OUT / "boxes.json", {"default_ids": list(DEFAULT_IDS), "s8_ids": list(S8_VOC_IDS)}, records)
    write_source(
        OUT, "LOST",
        "/work/refvenv/bin/python tests/parity/regenerate_lost.py --ref <LOST checkout> --dino <dino checkout>",
        shims=[
            "LOST's git submodule `dino` is facebookresearch/dino at 7c446df5b9f45747937fb0d72314eb9f7b66930a (its "
            "parent folder and the checkout itself on sys.path, for `dino.vision_transformer` and its `utils`)",
            "torch.hub.load_state_dict_from_url returns the parity_common checkpoint for the official file the "
            "reference asks for: dino_deitsmall16_pretrain.pth (ViT-S/16), dino_deitsmall8_300ep_pretrain.pth (ViT-S/8)",
            "no GPU: torch.Tensor.cuda and torch.nn.Module.cuda return self, torch.Tensor.to maps 'cuda' to 'cpu'; "
            "torch.set_num_threads(1)",
            "object_discovery.lost wrapped to record what it returns (the reference function runs unchanged)",
        ],
        compared=("main_lost.py (--image_path, k_patches 100, keys) boxes and seeds on the VOC2012 images of the "
                  "shared data with ViT-S/16, and on two of them with ViT-S/8; ties at the lowest degree recorded"),
    )


if __name__ == "__main__":
    main()
