"""Regenerate ``goldens/selfmask``: SelfMask's criterion, evaluator, learning-rate schedule and
training geometry, as the released code computes them.

Run with the reference checkout importable and its requirements installed (torch, timm,
scipy, opencv, pycocotools, matplotlib, natsort, ujson, pyyaml)::

    /work/refvenv/bin/python tests/parity/regenerate_selfmask.py --ref /path/to/selfmask

The reference is driven through its own classes: ``criterion.Loss``, ``evaluator.Evaluator``
(its ``__call__`` over the reference's ``ECSSDDataset``), ``utils.lr_scheduler.Poly`` stepped as
``trainer.Trainer`` steps it, and ``BaseDataset._geometric_augmentations``. The module-level
functions below only build inputs by seeded rules (numpy), so that ``test_selfmask.py``
rebuilds the same inputs without storing them.

What it stores (the reference's outputs, no reference code):

- ``losses.json``: ``Loss()(masks, [gt], objectness)`` (the released training call) on
  :func:`loss_inputs` (3 images, 2 decoder layers, 5 queries, 14 x 14 masks against 28 x 28
  pseudo-masks): the total and, per image, the Dice and ranking sums, with the objectness as
  given (the released sign) and replaced by ``1 - objectness`` (which turns the released
  ranking into the paper's: the harness's default); ``loss_grads.npz``: the total's gradients
  with respect to the masks and the objectness, both conventions;
- ``network_keys.json``: names and shapes of the decoder, queries and objectness MLP of
  ``get_model("maskformer", <configs/*.yaml>)`` (ViT-S/8, 20 queries, 6 layers), whose values
  :func:`decoder_state` fills; the encoder is the random-weight DINO ViT-S/8 of
  ``parity_common`` (official layout, loaded by the reference's own ``load_model`` path);
- ``eval_<id>.npz``: ``Evaluator.__call__`` of that network on ECSSD images of odd sizes, at
  native resolution: the last layer's objectness, the selected query's mask at 1/4 resolution
  (the network's output before the x4 upsampling), and the mask the evaluator scores (after
  x4 and the crop): thresholded at 0.5 (packed bits), its sum, and its values at 4096 seeded
  pixels;
- ``lr.json``: the learning-rate factors ``Poly`` gives at every optimiser step of 12 epochs,
  stepped as the released trainer does (``step()`` then ``get_lr()`` for the progress bar:
  ``released``) and alone (``step()``: ``epoch``), for 5 and 6 steps per epoch;
- ``augment.npz``: ``_geometric_augmentations`` (the training view's geometry) of an ECSSD
  image resized to 224 and its mask, with the rescale fixed (``random_scale_range=(s, s)``)
  and no flip (``random_hflip_p=1.0``): side, pad colour, the mask (packed bits) and the
  image at 2048 seeded pixels.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import types
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from parity_common import GOLDENS, parity_checkpoint, require_shared_data, write_source  # noqa: E402

OUT = GOLDENS / "selfmask"
SEED = 12
#: fixed-tensor losses: images, decoder layers, queries, mask side, pseudo-mask side
LOSS_SHAPE = (3, 2, 5, 14, 28)
#: evaluation images (ECSSD stems): 267 x 400 and 400 x 225, neither side of one a multiple of 8
EVAL_IDS = ("0005", "0240")
N_SAMPLES = 4096
#: learning-rate cases: (training images, batch size, epochs)
LR_CASES = ((40, 8, 12), (48, 8, 12))
#: training-view geometry: image and rescale factors
AUG_ID, AUG_SCALES, AUG_SIZE, AUG_SAMPLES = "0010", (0.5, 0.37), 224, 2048
SHIMS = [
    "utils.misc.load_model (called by get_model for the ViT encoder) loads the parity_common random-weight "
    "ViT-S/8 file strictly instead of downloading dino_deitsmall8_300ep_pretrain.pth",
    "evaluator.get_dataset returns the reference's own ECSSDDataset (mode 'test') restricted to EVAL_IDS",
    "Evaluator._visualize is a no-op (it draws matplotlib figures of batch 0)",
    "Evaluator._update_meters records the mask it is given and computes no metric (metrics.s_measure "
    "calls .cuda(); the metrics are not compared here)",
    "networks.timm_deit is an empty module: get_model imports it for the supervised DeiT encoder, and its "
    "timm_vit imports timm.models.helpers.overlay_external_default_cfg, which timm 1.0 no longer has "
    "(the DINO encoder used here never touches it)",
    "pip: natsort and ujson (imported at module level by utils.misc and datasets.base_dataset)",
]


def _rng(*parts) -> np.random.Generator:
    return np.random.default_rng([SEED, *[zlib.crc32(str(p).encode()) for p in parts]])


def loss_inputs() -> dict[str, np.ndarray]:
    """Masks ``(B, L, Q, m, m)`` in (0, 1), objectness ``(B, L, Q)`` in (0, 1) with no ties, and
    pseudo-masks ``(B, g, g)`` (a random rectangle each, never empty)."""
    b, layers, queries, m, g = LOSS_SHAPE
    rng = _rng("loss")
    logits = rng.normal(0.0, 2.0, (b, layers, queries, m, m))
    masks = (1 / (1 + np.exp(-logits))).astype(np.float32)
    objectness = rng.uniform(0.05, 0.95, (b, layers, queries)).astype(np.float32)
    gt = np.zeros((b, g, g), bool)
    for i in range(b):
        top, left = rng.integers(0, g // 2, 2)
        height, width = rng.integers(g // 4, g // 2, 2)
        gt[i, top:top + height, left:left + width] = True
    return {"masks": masks, "objectness": objectness, "gt": gt}


def decoder_state(keys: dict[str, list[int]]) -> dict[str, np.ndarray]:
    """Seeded values for every non-encoder tensor of the reference network, by name and shape:
    LayerNorm weights near 1, biases small, matrices scaled by 1 / sqrt(fan-in), queries N(0, 1)."""
    state = {}
    for name, shape in keys.items():
        rng = _rng("net", name)
        if name == "query_embed":
            value = rng.normal(0.0, 1.0, shape)
        elif ".norm" in name or name.startswith("decoder.norm"):
            value = (1.0 if name.endswith("weight") else 0.0) + rng.normal(0.0, 0.1, shape)
        elif len(shape) > 1:
            value = rng.normal(0.0, 1.0 / np.sqrt(shape[-1]), shape)
        else:
            value = rng.normal(0.0, 0.02, shape)
        state[name] = value.astype(np.float32)
    return state


def sample_positions(height: int, width: int, count: int, tag: str) -> np.ndarray:
    """``count`` seeded flat pixel indices of an ``height`` x ``width`` image."""
    return _rng("pixels", tag, height, width).choice(height * width, size=min(count, height * width), replace=False)


# ---- the reference ---------------------------------------------------------------------
def _import_reference(ref: Path, dino: Path):
    """Import the reference from ``ref`` with the shims of :data:`SHIMS` applied."""
    import torch

    sys.path.insert(0, str(ref))
    sys.modules["networks.timm_deit"] = types.ModuleType("networks.timm_deit")  # shim (see SHIMS)
    import utils.misc as misc

    def load_model(model, arch, patch_size):  # shim: the parity weights instead of the download
        assert (arch, patch_size) == ("deit_small", 8), (arch, patch_size)
        model.load_state_dict(torch.load(dino, map_location="cpu"), strict=True)

    misc.load_model = load_model
    import criterion
    import evaluator
    import utils.lr_scheduler as lr_scheduler
    from datasets.base_dataset import BaseDataset
    from datasets.ecssd import ECSSDDataset

    evaluator.Evaluator._visualize = lambda self, *args, **kwargs: None
    return types.SimpleNamespace(misc=misc, criterion=criterion, evaluator=evaluator, lr_scheduler=lr_scheduler,
                                 BaseDataset=BaseDataset, ECSSDDataset=ECSSDDataset)


def _losses(ref) -> tuple[dict, dict]:
    import torch

    x = loss_inputs()
    out, grads = {}, {}
    for convention, objectness in (("released", x["objectness"]), ("paper", 1 - x["objectness"])):
        masks = torch.tensor(x["masks"], requires_grad=True)
        obj = torch.tensor(objectness, requires_grad=True)
        gts = [torch.from_numpy(g[None].astype(np.int64)) for g in x["gt"]]
        total = ref.criterion.Loss()(masks, gts, obj[..., None], use_classification_loss=False)["loss"]
        total.backward()
        per_image = []
        for i in range(len(gts)):
            one = ref.criterion.Loss()(masks[i:i + 1].detach(), gts[i:i + 1], obj[i:i + 1, ..., None].detach(),
                                       use_classification_loss=False)
            per_image.append({"dice": one["avg_dice_loss"], "rank": one["avg_ranking_loss"]})
        out[convention] = {"total": total.item(), "per_image": per_image,
                           "objectness": "as given" if convention == "released" else "1 - objectness"}
        grads[f"{convention}_masks"] = masks.grad.numpy()
        grads[f"{convention}_objectness"] = obj.grad.numpy()
    return out, grads


def _network(ref, config_dir: Path):
    import torch
    import yaml

    config = yaml.safe_load(next(config_dir.glob("*.yaml")).read_text())
    model = ref.misc.get_model(arch="maskformer", configs=types.SimpleNamespace(**config))
    keys = {k: list(v.shape) for k, v in model.state_dict().items() if not k.startswith("encoder.")}
    state = model.state_dict()
    state.update({k: torch.from_numpy(v) for k, v in decoder_state(keys).items()})
    model.load_state_dict(state, strict=True)
    return model.eval(), keys


def _evaluation(ref, model, ecssd: Path, tmp: Path) -> dict[str, dict[str, np.ndarray]]:
    import torch

    dataset = ref.ECSSDDataset(str(ecssd))
    dataset.p_test_imgs = [str(ecssd / "images" / f"{i}.jpg") for i in EVAL_IDS]
    dataset.p_test_gts = [str(ecssd / "ground_truth_mask" / f"{i}.png") for i in EVAL_IDS]
    dataset.set_mode("test")
    ref.evaluator.get_dataset = lambda **kwargs: dataset  # shim: these images only
    outputs, scored = [], []
    forward = model.forward

    def recording_forward(*args, **kwargs):
        result = forward(*args, **kwargs)
        outputs.append({k: v.detach().clone() for k, v in result.items()})
        return result

    model.forward = recording_forward
    evaluator = ref.evaluator.Evaluator(network=model, dir_dataset=str(tmp))

    def recording_update(pred_mask, gt_mask, ub_mask=None):  # shim: record, no metrics (see SHIMS)
        scored.append(pred_mask.detach().clone())

    evaluator._update_meters = recording_update
    evaluator(dataset_name="ecssd", dir_ckpt=str(tmp / "eval"), batch_size=1, device=torch.device("cpu"))
    model.forward = forward
    result = {}
    for sample_id, out, mask in zip(EVAL_IDS, outputs, scored, strict=True):
        objectness = out["objectness"][0, -1, :, 0].numpy()
        best = int(np.argmax(objectness))
        mask = mask.numpy().astype(np.float32)
        positions = sample_positions(*mask.shape, N_SAMPLES, sample_id)
        result[sample_id] = {
            "objectness": out["objectness"][0, :, :, 0].numpy(),
            "quarter": out["mask_pred"][0, -1, best].numpy(),
            "shape": np.array(mask.shape),
            "bits": np.packbits(mask > 0.5),
            "sum": np.float64(mask.astype(np.float64).sum()),
            "samples": mask.reshape(-1)[positions],
        }
    return result


def _learning_rates(ref) -> list[dict]:
    import math

    import torch

    cases = []
    for samples, batch, epochs in LR_CASES:
        case = {"samples": samples, "batch": batch, "epochs": epochs,
                "steps_per_epoch": math.ceil(samples / batch)}
        for name, progress_bar in (("released", True), ("epoch", False)):
            parameter = torch.nn.Parameter(torch.zeros(1))
            optimizer = torch.optim.AdamW([parameter], lr=1.0)
            scheduler = ref.misc.get_lr_scheduler(optimizer=optimizer, n_epochs=epochs,
                                                  n_iters_per_epoch=case["steps_per_epoch"], warmup_iters=0)
            factors = []
            for _ in range(epochs * case["steps_per_epoch"]):  # as trainer.Trainer._backward and its tqdm line
                factors.append(optimizer.param_groups[0]["lr"])
                optimizer.step()
                scheduler.step()
                if progress_bar:
                    scheduler.get_lr()
            case[name] = factors
        cases.append(case)
    return cases


def _augment(ref, ecssd: Path) -> dict[str, np.ndarray]:
    import random

    import torch
    import torchvision.transforms.functional as TF
    from PIL import Image
    from torchvision.transforms.functional import InterpolationMode

    image = Image.open(ecssd / "images" / f"{AUG_ID}.jpg").convert("RGB")
    gt = np.array(Image.open(ecssd / "ground_truth_mask" / f"{AUG_ID}.png").convert("L")) > 127
    resized = TF.resize(image, [AUG_SIZE, AUG_SIZE], InterpolationMode.BILINEAR)  # DUTSDataset.__getitem__
    cases = {}
    for k, scale in enumerate(AUG_SCALES):
        random.seed(0)
        view, mask = ref.BaseDataset._geometric_augmentations(
            image=resized, mask=torch.from_numpy(gt[None].astype(np.int64)), random_scale_range=(scale, scale),
            random_crop_size=AUG_SIZE, ignore_index=0, random_hflip_p=1.0)
        view = np.array(view)
        positions = sample_positions(AUG_SIZE, AUG_SIZE, AUG_SAMPLES, f"augment-{scale}")
        cases.update({f"scale{k}": np.float64(scale), f"side{k}": np.int64(AUG_SIZE * scale),
                      f"fill{k}": view[-1, -1], f"mask_bits{k}": np.packbits(mask.numpy()[0] > 0),
                      f"samples{k}": view.reshape(-1, 3)[positions]})
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", required=True, type=Path, help="selfmask checkout")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(2)
    data = require_shared_data()
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ref = _import_reference(args.ref.resolve(), parity_checkpoint("vits8", tmp))
        losses, grads = _losses(ref)
        (OUT / "losses.json").write_text(json.dumps(losses, indent=2) + "\n")
        np.savez_compressed(OUT / "loss_grads.npz", **grads)
        model, keys = _network(ref, args.ref.resolve() / "configs")
        (OUT / "network_keys.json").write_text(json.dumps(keys) + "\n")
        with torch.no_grad():
            for sample_id, record in _evaluation(ref, model, data / "ECSSD", tmp).items():
                np.savez_compressed(OUT / f"eval_{sample_id}.npz", **record)
        (OUT / "lr.json").write_text(json.dumps(_learning_rates(ref)) + "\n")
        np.savez_compressed(OUT / "augment.npz", **_augment(ref, data / "ECSSD"))
    write_source(
        OUT, "selfmask",
        "/work/refvenv/bin/python tests/parity/regenerate_selfmask.py --ref <selfmask>",
        SHIMS,
        "criterion.Loss (Dice + ranking, every decoder layer) on fixed tensors, both ranking signs, values and "
        "gradients; evaluator.Evaluator on ECSSD 0005 (267x400) and 0240 (400x225) at native resolution with "
        "get_model('maskformer', configs/*.yaml) filled by seeded values (random-weight DINO ViT-S/8 encoder): "
        "objectness, the selected query's 1/4-resolution mask and the scored mask after x4 and the crop; "
        "utils.lr_scheduler.Poly stepped as trainer.Trainer steps it (and alone); "
        "BaseDataset._geometric_augmentations with a fixed rescale and no flip",
    )


if __name__ == "__main__":
    main()
