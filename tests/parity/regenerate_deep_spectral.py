"""Regenerate ``goldens/deep-spectral``: Deep Spectral Methods' object-localization boxes and
patch masks on the VOC2012 images of the shared data.

Run with the reference checkout and facebookresearch/dino (its torch-hub model) importable::

    /work/refvenv/bin/python tests/parity/regenerate_deep_spectral.py --ref /path/to/deep-spectral-segmentation --dino /path/to/dino

The reference runs the three steps of its README's object-localization recipe, each through
its own code:

1. ``extract/extract.py``'s ``extract_features(images_list, images_root, model_name='dino_vits16',
   batch_size=1, output_dir)``: keys of the last block, the image cropped to a multiple of 16;
2. ``extract_eigs(images_root, features_dir, output_dir, which_matrix='laplacian', K=5)``: the
   generalised eigenvectors of the normalised-key affinity's Laplacian (its defaults: features
   L2-normalised, affinity thresholded at zero, no colour term), sign fixed so that at most
   half of each vector is positive;
3. ``object-localization/main.py --eigenseg --precomputed_eigs_dir <dir>/laplacian --dataset
   VOC12 --set trainval``: the box of the largest connected component of ``eigenvector[1] > 0``
   (``get_bbox_from_patch_mask``, wrapped to record the patch mask it gets).

What it stores (``boxes.json``), per VOC id: the box, the patch grid, the patch mask (packed
bits), and the eigenvalues ``extract_eigs`` found (how far apart the second and third are tells
how well the Fiedler vector is determined).
"""
from __future__ import annotations

import argparse
import importlib.machinery
import os
import runpy
import sys
import tempfile
import types
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from parity_common import GOLDENS, parity_checkpoint, require_shared_data, write_source  # noqa: E402
from regenerate_tokencut import OFFICIAL, _install_shims, pack, write_json_lines  # noqa: E402

OUT = GOLDENS / "deep-spectral"
#: VOC images of the default parity test (the others run with HARNESS_PARITY_FULL=1)
DEFAULT_IDS = ("2007_000027", "2007_000129", "2007_000346", "2007_000559", "2007_000733", "2007_000837")
K = 5


def _stub_imports(dino: Path) -> None:
    """Modules the reference imports but never calls on this path, and hub/accelerate stand-ins."""
    import torch

    class Accelerator:  # accelerate's, as extract_features uses it: device, save, wait_for_everyone
        def __init__(self, *args, **kwargs):
            self.device = torch.device("cpu")

        def save(self, obj, path):
            torch.save(obj, path)

        def wait_for_everyone(self):
            pass

    stubs = {"fire": {"Fire": lambda *a, **k: None}, "accelerate": {"Accelerator": Accelerator},
             "sklearn": {}, "sklearn.cluster": {"KMeans": None, "MiniBatchKMeans": None},
             "sklearn.decomposition": {"PCA": None}, "traitlets": {}, "traitlets.traitlets": {"default": None}}
    for name, attrs in stubs.items():
        module = types.ModuleType(name)
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)  # torch's import checks read it
        module.__dict__.update(attrs)
        sys.modules[name] = module
    original_load = torch.hub.load

    def hub_load(repo, model, *args, **kwargs):
        if repo != "facebookresearch/dino:main":
            raise RuntimeError(f"unexpected hub repository {repo}")
        return original_load(str(dino), model, *args, source="local", **kwargs)

    torch.hub.load = hub_load
    original_loader = torch.utils.data.DataLoader

    class DataLoader(original_loader):
        def __init__(self, *args, **kwargs):
            kwargs["num_workers"] = 0
            super().__init__(*args, **kwargs)

    torch.utils.data.DataLoader = DataLoader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", required=True, type=Path, help="checkout of lukemelas/deep-spectral-segmentation")
    parser.add_argument("--dino", required=True, type=Path, help="checkout of facebookresearch/dino (its hub model)")
    args = parser.parse_args()
    ref, dino = args.ref.resolve(), args.dino.resolve()
    data = require_shared_data()
    voc_root = data / "VOC2012"
    voc = sorted(p.stem for p in (voc_root / "JPEGImages").glob("*.jpg"))
    loaded: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _install_shims({OFFICIAL[a]: parity_checkpoint(a, tmp) for a in OFFICIAL}, loaded)
        _stub_imports(dino)
        # steps 1 and 2: extract/extract.py
        sys.path.insert(0, str(ref / "extract"))
        import extract

        (tmp / "images.txt").write_text("".join(f"{i}.jpg\n" for i in voc))
        extract.extract_features(images_list=str(tmp / "images.txt"), images_root=str(voc_root / "JPEGImages"),
                                 model_name="dino_vits16", batch_size=1, output_dir=str(tmp / "features"))
        extract.extract_eigs(images_root=str(voc_root / "JPEGImages"), features_dir=str(tmp / "features"),
                             which_matrix="laplacian", output_dir=str(tmp / "eigs" / "laplacian"), K=K)
        import torch

        eigenvalues = {i: [float(v) for v in torch.load(tmp / "eigs" / "laplacian" / f"{i}.pth")["eigenvalues"]]
                       for i in voc}
        # step 3: object-localization/main.py on the precomputed eigenvectors
        work = tmp / "run"
        (work / "datasets" / "VOC2012" / "VOCdevkit").mkdir(parents=True)
        os.symlink(voc_root, work / "datasets" / "VOC2012" / "VOCdevkit" / "VOC2012")
        os.chdir(work)
        sys.path[:0] = [str(ref / "object-localization"), str(dino.parent), str(dino)]
        import object_discovery

        masks: list = []
        original = object_discovery.get_bbox_from_patch_mask

        def get_bbox_from_patch_mask(patch_mask, init_image_size, *a, **k):
            pred = original(patch_mask, init_image_size, *a, **k)
            masks.append((patch_mask.numpy().copy(), [int(s) for s in init_image_size[1:]], pred))
            return pred

        object_discovery.get_bbox_from_patch_mask = get_bbox_from_patch_mask
        script = ref / "object-localization" / "main.py"
        sys.argv = [str(script), "--eigenseg", "--precomputed_eigs_dir", str(tmp / "eigs" / "laplacian"),
                    "--dataset", "VOC12", "--set", "trainval", "--name", "example_eigs",
                    "--output_dir", str(work / "outputs")]
        sys.path.insert(0, str(script.parent))
        runpy.run_path(str(script), run_name="__main__")
        import pickle

        preds = pickle.loads((work / "outputs" / "VOC12_trainval" / "example_eigs" / "preds.pkl").read_bytes())
    names = [n[:-4] for n in preds]
    assert sorted(names) == voc and len(masks) == len(names)
    records = {}
    for name, (mask, size, pred) in zip(names, masks):
        height, width = size
        grid = [height // 16, width // 16]
        assert np.allclose(pred, preds[name + ".jpg"])
        records[name] = {"box": [float(v) for v in pred], "grid": grid, "image_size": size,
                         "patch_mask": pack(mask.reshape(grid)),
                         "eigenvalues": [float(f"{v:.7g}") for v in eigenvalues[name]]}
        print(name, records[name]["box"], flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    write_json_lines(OUT / "boxes.json", {"default_ids": list(DEFAULT_IDS), "K": K, "weights": sorted(set(loaded))},
                     records)
    write_source(
        OUT, "deep-spectral-segmentation",
        "/work/refvenv/bin/python tests/parity/regenerate_deep_spectral.py --ref <deep-spectral-segmentation checkout> "
        "--dino <dino checkout>",
        shims=[
            "torch.hub.load('facebookresearch/dino:main', 'dino_vits16') loads the local facebookresearch/dino checkout "
            "at 7c446df5b9f45747937fb0d72314eb9f7b66930a (source='local'); its hubconf's weight download "
            "(torch.hub.load_state_dict_from_url) returns the parity_common ViT-S/16 checkpoint "
            "(dino_deitsmall16_pretrain.pth); the same for object-localization/networks.py (built, unused on this path)",
            "object-localization imports `dino.vision_transformer`: the dino checkout's parent folder and the checkout "
            "on sys.path",
            "accelerate.Accelerator stubbed (CPU device, torch.save, no-op wait; the reference never prepares the model "
            "with it, so its fp16=True did not change the forward); stub modules fire, sklearn.cluster, "
            "sklearn.decomposition and traitlets.traitlets (imported, never called on this path); pymatting installed "
            "(row_sum of the degree)",
            "no GPU: torch.Tensor.cuda and torch.nn.Module.cuda return self, torch.Tensor.to maps 'cuda' to 'cpu'; "
            "torch.set_num_threads(1); torch.utils.data.DataLoader forced to num_workers=0 (same batches)",
            "main.py runs in a temporary directory with datasets/VOC2012/VOCdevkit/VOC2012 -> the shared VOC2012; "
            "object_discovery.get_bbox_from_patch_mask wrapped to record the patch mask it receives",
        ],
        compared=("extract_features (dino_vits16) + extract_eigs (laplacian, K 5) + object-localization/main.py "
                  "--eigenseg boxes and patch masks (eigenvector 1 > 0) on the VOC2012 images of the shared data"),
    )


if __name__ == "__main__":
    main()
