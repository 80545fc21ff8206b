"""Regenerate ``goldens/sempart``: segmentation-tricks' Sempart losses, head and evaluation.

Run with the reference checkout importable and its requirements installed::

    /work/refvenv/bin/python tests/parity/regenerate_sempart.py --ref /path/to/segmentation-tricks

The reference is driven through its own entry point: ``sempart_main.py`` is executed (``runpy``)
with ``--epochs 0`` for its training function ``segment_from_feature`` and with
``--just_evaluate`` for its evaluation loop; the goldens are what it returns or scores. The
module-level functions below only build inputs by seeded rules (numpy), so that
``test_sempart.py`` rebuilds the same inputs without storing them.

What it stores (the reference's outputs, no reference code):

- ``head_keys.json``: the names and shapes of ``segmenterNetRGB(384, 1, 64, patch_size=8)``'s
  state dict (the layout of the released heads, ``{'segmenter_state_dict': ...}``);
- ``head_forward.npz``: that head, filled by :func:`head_state`, on :func:`head_inputs`
  (a non-square 8 x 6 grid): fine and coarse logits with BatchNorm in training mode (batch
  statistics) and in eval mode (running statistics);
- ``losses.json``: ``segment_from_feature(mode='train', --use_multi_scale)`` on fixed tensors
  (a stand-in feature extractor and head that return :func:`loss_inputs`) and end to end (the
  random-weight DINO ViT-S/8 of ``parity_common`` and the head above, two ECSSD 224 crops);
  the six loss terms, and the crop offsets ``crop_my_images`` received;
- ``eval_<tag>.npz``: the evaluation loop of ``sempart_main.py --just_evaluate`` (BatchNorm in
  training mode, polarity per batch) on four ECSSD images in batches of two: ``224`` with the
  DINO keys, ``320stub`` at 320 with :func:`stub_features` in place of DINO (so that the
  comparison does not depend on the backbone's position-embedding interpolation). The head's
  final bias is shifted (``final_bias_offset``, found on the reference's own raw outputs) so
  that the per-batch rule inverts one batch and keeps the other (``inverted``). Per image: the
  mask thresholded at 0.5 (packed bits), its mean, and its values at 2048 seeded pixels.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.machinery
import io
import json
import os
import runpy
import sys
import tempfile
import types
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from parity_common import GOLDENS, parity_checkpoint, require_shared_data, write_source  # noqa: E402

OUT = GOLDENS / "sempart"
SEED = 12
FEATURE_DIM = 384
STRIDE = 8
#: fixed-tensor losses: batch, image side (a 20 x 20 grid)
LOSS_BATCH, LOSS_SIDE = 2, 160
#: head forward: a non-square grid
HEAD_GRID = (8, 6)
#: evaluation images (ECSSD stems; batches in this order) and the batch size
EVAL_IDS = ("0005", "0100", "0010", "0200")
EVAL_BATCH = 2
#: end-to-end training-loss images
TRAIN_IDS = ("0355", "0730")
N_SAMPLES = 2048


def _rng(*parts) -> np.random.Generator:
    return np.random.default_rng([SEED, *[zlib.crc32(str(p).encode()) for p in parts]])


def _smooth(rng: np.random.Generator, shape: tuple, cells: int) -> np.ndarray:
    """Smooth random fields: a coarse uniform grid, upsampled by pixel repetition and box blur."""
    *lead, h, w = shape
    coarse = rng.random((*lead, cells, cells))
    up = np.repeat(np.repeat(coarse, -(-h // cells), axis=-2), -(-w // cells), axis=-1)[..., :h, :w]
    k = max(1, h // cells // 2)
    pad = np.pad(up, [(0, 0)] * len(lead) + [(k, k), (k, k)], mode="edge")
    c = pad.cumsum(-2).cumsum(-1)
    c = np.pad(c, [(0, 0)] * len(lead) + [(1, 0), (1, 0)])
    n = 2 * k + 1
    box = (c[..., n:, n:] - c[..., :-n, n:] - c[..., n:, :-n] + c[..., :-n, :-n]) / n**2
    return box[..., :h, :w]


def loss_inputs() -> dict[str, np.ndarray]:
    """Fixed tensors for the losses (float32): an image in [0, 1], features with a two-region
    structure (cosines on both sides of 0.4), and the head's logits on the image and on the
    zoomed crop."""
    b, side, grid = LOSS_BATCH, LOSS_SIDE, LOSS_SIDE // STRIDE
    rng = _rng("losses")
    image = 0.8 * _smooth(rng, (b, 3, side, side), 8) + 0.2 * rng.random((b, 3, side, side))

    def features(tag):
        r = _rng("features", tag)
        regions = _smooth(r, (b, 1, grid, grid), 4) > 0.5
        protos = r.random((2, FEATURE_DIM)) - 0.5
        f = np.where(regions, protos[0][None, :, None, None], protos[1][None, :, None, None])
        return f + 0.9 * (r.random((b, FEATURE_DIM, grid, grid)) - 0.5) + 0.3

    def logits(tag, size, cells):
        r = _rng("logits", tag)
        return 6 * (_smooth(r, (b, 1, size, size), cells) - 0.5) + 0.5 * (r.random((b, 1, size, size)) - 0.5)

    out = {
        "image": image,
        "features": features("image"),
        "fine_logits": logits("fine", side, 8),
        "coarse_logits": logits("coarse", grid, 8),
        "crop_features": features("crop"),
        "crop_fine_logits": logits("crop_fine", side, 6),
        "crop_coarse_logits": logits("crop_coarse", grid, 6),
    }
    return {k: v.astype(np.float32) for k, v in out.items()}


def head_state(keys: list) -> dict[str, np.ndarray]:
    """Deterministic values for a state dict, from its ``[name, shape]`` pairs alone.

    Weights of rank >= 2: uniform in +-1/sqrt(fan in); 1-D ``weight`` (LayerNorm, BatchNorm):
    1 + u(-0.3, 0.3); biases and BatchNorm running means: u(-0.2, 0.2); running variances
    u(0.5, 1.5); ``num_batches_tracked``: 0. One numpy generator per key name.
    """
    state = {}
    for name, shape in keys:
        rng = _rng("head", name)
        shape = tuple(shape)
        if name.endswith("num_batches_tracked"):
            state[name] = np.zeros(shape, dtype=np.int64)
            continue
        u = rng.random(shape)
        if name.endswith("running_var"):
            v = 0.5 + u
        elif len(shape) >= 2:
            v = (2 * u - 1) / np.sqrt(np.prod(shape[1:]))
        elif name.endswith("weight"):
            v = 1 + 0.6 * (u - 0.5)
        else:
            v = 0.4 * (u - 0.5)
        state[name] = v.astype(np.float32)
    return state


def head_inputs() -> dict[str, np.ndarray]:
    """Features ``(2, 384, 8, 6)`` and a normalised image ``(2, 3, 64, 48)`` (float32)."""
    h, w = HEAD_GRID
    rng = _rng("head-inputs")
    feats = rng.random((2, FEATURE_DIM, h, w)) - 0.5
    image = (_smooth(rng, (2, 3, h * STRIDE, w * STRIDE), 6) - 0.45) / 0.225
    return {"features": feats.astype(np.float32), "image": image.astype(np.float32)}


def stub_weight():
    """The stand-in feature extractor's filters: ``(384, 3, 8, 8)`` float32."""
    return ((_rng("stub").random((FEATURE_DIM, 3, STRIDE, STRIDE)) - 0.5) / 8).astype(np.float32)


def stub_features(normalized, weight):
    """A deterministic stand-in for DINO keys: ``tanh`` of a stride-8 convolution of the
    ImageNet-normalised image, plus a constant (so that cosines spread around 0.4)."""
    import torch
    import torch.nn.functional as F

    return torch.tanh(F.conv2d(normalized, weight, stride=STRIDE)) + 0.25


def sample_positions(height: int, width: int) -> np.ndarray:
    """``N_SAMPLES`` seeded flat pixel indices of an ``height x width`` mask."""
    return _rng("positions", height, width).choice(height * width, N_SAMPLES, replace=False)


def summarize_masks(masks: np.ndarray) -> dict[str, np.ndarray]:
    """What the goldens keep of ``(N, H, W)`` soft masks."""
    n, h, w = masks.shape
    pos = sample_positions(h, w)
    return {
        "binary": np.packbits(masks > 0.5, axis=-1),
        "mean": masks.reshape(n, -1).mean(1).astype(np.float64),
        "samples": masks.reshape(n, -1)[:, pos].astype(np.float32),
    }


# ---- running the reference ------------------------------------------------------------------
SHIMS = [
    "stub modules `wandb` (init/log/Image no-ops: logging only) and `sklearn.utils.extmath` "
    "(imported by utils_dis, never called) in sys.modules",
    "torch.zeros ignores device= while utils.py is imported (it builds a constant on 'cuda')",
    "utils_data.load_my_dataset_not_augment wrapped to return a Subset of its ECSSD datasets "
    "(the chosen stems); its transforms are the reference's",
    "torch.utils.data.DataLoader forced to num_workers=0 (same batches, no worker processes)",
    "utils_data.crop_my_images and token_metric.accuracy wrapped to record their arguments",
    "for eval_320stub only: segmenter_model.DINOWrapper replaced by a subclass whose forward returns "
    "stub_features of the (normalised) batch",
    "sempart_main.py runs in a temporary directory (it creates outputs/<experiment>/)",
]


def _stub(name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    return module


def _install_stubs() -> None:
    wandb = _stub("wandb")
    wandb.init = lambda *a, **k: None
    wandb.log = lambda *a, **k: None
    wandb.Image = lambda *a, **k: None
    sys.modules["wandb"] = wandb
    for name in ("sklearn", "sklearn.utils", "sklearn.utils.extmath"):
        sys.modules.setdefault(name, _stub(name))
    sys.modules["sklearn.utils"].extmath = sys.modules["sklearn.utils.extmath"]


class Reference:
    """The reference modules, imported from ``--ref`` with the shims above."""

    def __init__(self, ref: Path, data: Path, dino: Path, head_file: Path, work: Path):
        import torch

        _install_stubs()
        sys.path.insert(0, str(ref))
        zeros = torch.zeros
        torch.zeros = lambda *a, device=None, **k: zeros(*a, **k)
        try:
            import segmenter_model
            import token_metric
            import utils_data
        finally:
            torch.zeros = zeros
        self.ref, self.data, self.dino, self.head_file, self.work = ref, data, dino, head_file, work
        self.segmenter_model, self.token_metric, self.utils_data = segmenter_model, token_metric, utils_data
        self.crops: list = []
        self.scored: list = []
        self._patch()

    def _patch(self) -> None:
        import torch

        ud, tm = self.utils_data, self.token_metric
        load, crop, accuracy = ud.load_my_dataset_not_augment, ud.crop_my_images, tm.accuracy
        data_loader = torch.utils.data.DataLoader

        def subset(args):
            train, val = load(args)
            stems = [Path(p).stem for p in val.image_path_list]
            keep = [stems.index(s) for s in self.stems]
            return torch.utils.data.Subset(train, keep), torch.utils.data.Subset(val, keep)

        def recording_crop(imgs, masks, crop_i, crop_j, *a, **k):
            self.crops.append((crop_i.tolist(), crop_j.tolist()))
            return crop(imgs, masks, crop_i, crop_j, *a, **k)

        def recording_accuracy(pred, gt):
            self.scored.append((pred.clone(), gt.clone()))
            return accuracy(pred, gt)

        def loader(*a, **k):
            k["num_workers"] = 0
            return data_loader(*a, **k)

        ud.load_my_dataset_not_augment = subset
        ud.crop_my_images = recording_crop
        tm.accuracy = recording_accuracy
        torch.utils.data.DataLoader = loader

    def run_main(self, stems, img_size: int, extra: list[str]) -> dict:
        """Execute sempart_main.py with these arguments; returns its globals."""
        self.stems = list(stems)
        argv = ["sempart_main.py", "--dataset=ecssd", f"--root_dir={self.data}", f"--img_size={img_size}",
                f"--patch_size={STRIDE}", "--use_keys", "--n_last_blocks=1", "--ncut_thr=0.4",
                f"--batch_size={EVAL_BATCH}", f"--ckpt_path={self.dino}", f"--ckpt_segmenter_path={self.head_file}",
                "--wandb_off", "--use_multi_scale", *extra]
        old_argv, old_cwd = sys.argv, os.getcwd()
        sys.argv = argv
        os.chdir(self.work)
        try:
            with contextlib.redirect_stdout(io.StringIO()) as printed:
                env = runpy.run_path(str(self.ref / "sempart_main.py"), run_name="sempart_main")
        finally:
            sys.argv = old_argv
            os.chdir(old_cwd)
        text = printed.getvalue()
        # the classifier head (num_classes=1000) is not in DINO checkpoints and is never used
        loaded = "missing_keys=['head.weight', 'head.bias'], unexpected_keys=[]"
        assert loaded in text, f"the DINO checkpoint did not load completely:\n{text}"
        return env


def _write_head_file(ref_mod, path: Path) -> list:
    import torch

    segmenter = ref_mod.segmenterNetRGB(FEATURE_DIM, 1, 64, patch_size=STRIDE)
    keys = [[name, list(t.shape)] for name, t in segmenter.state_dict().items()]
    state = {k: torch.from_numpy(v) for k, v in head_state(keys).items()}
    segmenter.load_state_dict(state)
    torch.save({"segmenter_state_dict": segmenter.state_dict()}, path)
    return keys


def _head_forward(ref_mod, keys) -> dict[str, np.ndarray]:
    import torch

    inputs = {k: torch.from_numpy(v) for k, v in head_inputs().items()}
    out = {}
    with torch.no_grad():
        for mode in ("train", "eval"):  # a fresh head each (a training-mode forward moves the running stats)
            segmenter = ref_mod.segmenterNetRGB(FEATURE_DIM, 1, 64, patch_size=STRIDE)
            segmenter.load_state_dict({k: torch.from_numpy(v) for k, v in head_state(keys).items()})
            segmenter.train(mode == "train")
            fine, coarse = segmenter(inputs["features"], inputs["image"])
            out[f"fine_{mode}"], out[f"coarse_{mode}"] = fine.numpy(), coarse.numpy()
    return out


class _Sequence:
    """A stand-in module that returns prepared outputs in order (features, or head logits)."""

    def __init__(self, outputs):
        self.outputs = list(outputs)

    def __call__(self, *args):
        return self.outputs.pop(0)


def _fixed_tensor_losses(ref: Reference, env: dict) -> dict:
    import torch

    x = {k: torch.from_numpy(v) for k, v in loss_inputs().items()}
    args = argparse.Namespace(**vars(env["args"]))
    args.img_size = LOSS_SIDE
    args.h_featmap = args.w_featmap = args.num_patches = LOSS_SIDE // STRIDE
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    normalized = (x["image"] - mean) / std
    features = _Sequence([x["features"], x["crop_features"]])
    head = _Sequence([(x["fine_logits"], x["coarse_logits"]), (x["crop_fine_logits"], x["crop_coarse_logits"])])
    ref.crops.clear()
    torch.manual_seed(SEED)
    terms, _ = env["segment_from_feature"](head, env["guided_filter"], features, normalized, args, 0, mode="train")
    (rows, cols), = ref.crops
    return {"terms": {k: float(v) for k, v in terms.items()}, "crop_feature_rows": rows, "crop_feature_cols": cols}


def _unnormalized_crop(dataset, stem: str) -> np.ndarray:
    """The reference's image transform without ``Normalize`` (the uint8 crop it normalises)."""
    import torch

    base = dataset.dataset
    index = [Path(p).stem for p in base.image_path_list].index(stem)
    with open(Path(base.image_root) / base.image_path_list[index], "rb") as fh:
        from PIL import Image

        img = Image.open(fh).convert("RGB")
        for t in base.transform.transforms[:-1]:
            img = t(img)
    return torch.round(img * 255).to(torch.uint8).permute(1, 2, 0).numpy()


def _end_to_end_losses(ref: Reference, env: dict) -> dict:
    import torch

    val = env["val_dataset"]
    crops = [_unnormalized_crop(val, s) for s in TRAIN_IDS]
    images = torch.stack([val[i][0] for i in range(len(TRAIN_IDS))])  # the Subset keeps TRAIN_IDS order
    for crop, img in zip(crops, images):  # the uint8 crop is what the reference normalises
        mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
        again = (torch.from_numpy(crop).permute(2, 0, 1).float() / 255 - mean) / std
        assert torch.allclose(again, img, atol=1e-6)
    segmenter = env["segmenter"]
    segmenter.train()
    ref.crops.clear()
    torch.manual_seed(SEED)
    terms, _ = env["segment_from_feature"](segmenter, env["guided_filter"], env["model"], images, env["args"], 0,
                                           mode="train")
    (rows, cols), = ref.crops
    return {"ids": list(TRAIN_IDS), "image_size": env["args"].img_size,
            "crop_sha256": [hashlib.sha256(c.tobytes()).hexdigest() for c in crops],
            "terms": {k: float(v) for k, v in terms.items()}, "crop_feature_rows": rows, "crop_feature_cols": cols}


def _bias_offset(logits: list) -> float:
    """An offset of the final bias that puts one batch's mean mask above 0.5 and the other's
    below (so that the per-batch polarity rule both inverts and keeps): the midpoint of the
    offsets at which each batch's mean crosses 0.5."""
    roots = []
    for batch in logits:
        lo, hi = -20.0, 20.0
        for _ in range(100):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if (1 / (1 + np.exp(-(batch + mid)))).mean() > 0.5 else (mid, hi)
        roots.append((lo + hi) / 2)
    assert len(roots) == 2 and abs(roots[0] - roots[1]) > 0.005, roots  # a margin far above float error
    return float(np.mean(roots))


def _evaluation(ref: Reference, img_size: int, stub: bool) -> dict[str, np.ndarray]:
    """The reference's evaluation loop on EVAL_IDS (in that order, batches of EVAL_BATCH), with
    the head's final bias shifted by :func:`_bias_offset` (found on its raw outputs)."""
    import torch

    wrapper = ref.segmenter_model.DINOWrapper
    if stub:
        weight = torch.from_numpy(stub_weight())

        class Stub(wrapper):
            def forward(self, samples):
                return stub_features(samples, weight)

        ref.segmenter_model.DINOWrapper = Stub
    head_file = ref.head_file
    try:
        env = ref.run_main(EVAL_IDS, img_size, ["--epochs=0"])
        raw = [env["segment_from_feature"](env["segmenter"], env["guided_filter"], env["model"], img, env["args"], 0,
                                           mode="eval").double().numpy() for img, _ in env["val_loader"]]
        offset = _bias_offset([np.log(p / (1 - p)) for p in raw])
        inverted = [bool((1 / (1 + np.exp(-(np.log(p / (1 - p)) + offset)))).mean() > 0.5) for p in raw]
        assert sorted(inverted) == [False, True], inverted
        state = torch.load(head_file)
        state["segmenter_state_dict"]["conv_final.bias"] += offset
        ref.head_file = head_file.with_name(f"segtricks_head_offset_{img_size}.pth")
        torch.save(state, ref.head_file)
        ref.scored.clear()
        ref.run_main(EVAL_IDS, img_size, ["--just_evaluate", "--epochs=1"])
    finally:
        ref.segmenter_model.DINOWrapper = wrapper
        ref.head_file = head_file
    (pred, gt), = ref.scored
    masks = pred[:, 0].numpy()
    out = dict(summarize_masks(masks))
    out["ids"] = np.array(EVAL_IDS)
    out["batch_size"] = np.array(EVAL_BATCH)
    out["final_bias_offset"] = np.array(offset, dtype=np.float32)
    out["inverted"] = np.array(inverted)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", required=True, type=Path, help="segmentation-tricks checkout")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(2)
    data = require_shared_data()
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        dino = parity_checkpoint("vits8", tmp)
        ref = Reference(args.ref.resolve(), data, dino, tmp / "segtricks_head.pth", tmp)
        keys = _write_head_file(ref.segmenter_model, ref.head_file)
        (OUT / "head_keys.json").write_text(json.dumps(keys) + "\n")
        np.savez_compressed(OUT / "head_forward.npz", **_head_forward(ref.segmenter_model, keys))

        env = ref.run_main(TRAIN_IDS, 224, ["--epochs=0"])
        losses = {"fixed_tensors": _fixed_tensor_losses(ref, env), "end_to_end_224": _end_to_end_losses(ref, env)}
        (OUT / "losses.json").write_text(json.dumps(losses, indent=2) + "\n")

        np.savez_compressed(OUT / "eval_224.npz", **_evaluation(ref, 224, stub=False))
        np.savez_compressed(OUT / "eval_320stub.npz", **_evaluation(ref, 320, stub=True))
    write_source(
        OUT, "segmentation-tricks",
        "/work/refvenv/bin/python tests/parity/regenerate_sempart.py --ref <segmentation-tricks>",
        SHIMS,
        "segmenterNetRGB's state-dict layout and forward (BN train and eval); sempart_main.segment_from_feature "
        "(--use_multi_scale) loss terms on fixed tensors and end to end at 224 with random-weight DINO ViT-S/8 "
        "keys; sempart_main --just_evaluate masks (BN batch statistics, per-batch polarity) at 224 (DINO keys) "
        "and 320 (stub features)",
    )


if __name__ == "__main__":
    main()
