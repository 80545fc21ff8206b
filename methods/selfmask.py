"""SelfMask (Shin, Albanie & Xie, "Unsupervised Salient Object Detection with Spectral Cluster
Voting", CVPRW 2022) as pseudo-mask distillation: "SelfMask w/ X".

Training (``harness train --method selfmask --pseudo-masks SOURCE``) fine-tunes the backbone's
network inside a MaskFormer-style detector (:mod:`harness.methods.selfmask_model`) on
pseudo-masks from any earlier run, a folder of masks, or SelfMask's JSON of COCO-RLE masks
(:mod:`harness.methods.selfmask_pseudo_masks`), with the Dice loss of every query's mask plus the
objectness ranking loss (:mod:`harness.methods.selfmask_losses`), both summed over the queries
and the decoder layers and averaged over the images of a batch, as in SelfMask's release.
Recipe: 12 epochs, AdamW (weight decay 0.01) at lr 6e-6, batch 8, 224 px. The learning rate
follows SelfMask's released ``Poly`` schedule as its trainer runs it (``lr_schedule=released``):
the poly factor ``(1 - T / total) ** 0.9`` of an iteration counter T that wraps every epoch's
worth of counts and advances twice per step (the trainer's progress bar calls ``get_lr()``
too), so it restarts every half epoch and the rate stays between 0.925x and 1x of 6e-6 (mean
0.962x); ``lr_schedule=epoch`` is that scheduler alone (one restart per epoch, same range),
``lr_schedule=poly`` the true poly decay over the whole run (mean 0.526x). Augmentation, as
SelfMask's: the image and its pseudo-mask resized to 224 x 224, a random rescale in [0.1, 1]
pasted at a random place on the image's mean colour (mask: background), horizontal flip (p 0.5),
colour jitter (0.8, 0.8, 0.8, 0.2; p 0.8), grayscale (p 0.2), Gaussian blur (kernel 10 % of the
side, sigma in [0.1, 2]; p 0.5).

Evaluation (``harness run --method selfmask --method-args checkpoint=FILE``) runs at the image's
native resolution, as SelfMask's ``evaluator.py``: the normalised image zero-padded on the
right and bottom to a multiple of the stride, the mask of the query with the highest objectness
after the last decoder layer (at twice the token grid: 1/4 resolution for ViT-S/8) upsampled
bilinearly (``align_corners=False``) by stride / 2 (x4) to the padded size, then cropped to
the image. The checkpoint records the pseudo-mask source; the run's ``method_token`` carries it
and the row name "SelfMask w/ <source>" that ``harness report`` prints. A state dict saved by
SelfMask's own code (e.g. the released ``selfmask_nq20_model.pt``) is accepted as
``checkpoint=`` too, converted on load (:func:`~harness.methods.selfmask_model.convert_selfmask_state`).

Presets (``preset=``): ``harness`` (default) and ``selfmask``, the released code's conventions:

- the ranking loss with the released sign (worse masks asked to score higher;
  :func:`~harness.methods.selfmask_losses.ranking_loss`); the default asks better masks to
  score higher, which is what inference relies on (it keeps the top-scoring query);
- the rescaled training view always at the top-left corner: the released ``random_crop`` pads
  the rescaled image on the right and bottom to 224 and then draws the crop offset in
  ``[0, 0]``; the default places it at a random position, as the augmentation intends;
- the pad colour truncated to uint8 (``np.array(image).mean(...).astype(np.uint8)``);
- the pseudo-mask resized once, nearest, from the size the source stores it (a SelfMask JSON's
  224 x 224) to the rescaled view; the default resizes it with the image's antialiased
  resampling and thresholds at 0.5, so mask and image stay on the same pixel grid.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from harness.api import Option, Prediction, RunContext, Sample
from harness.errors import HarnessError
from harness.training.trainable import TrainableMethod

#: SelfMask's Gaussian-blur probability and sigma range (the SimCLR/MoCo-v2 convention)
BLUR_P, BLUR_SIGMA = 0.5, (0.1, 2.0)
PRESETS = ("harness", "selfmask")
LR_SCHEDULES = ("released", "epoch", "poly")


def lr_factor(step: int, steps_per_epoch: int, total_steps: int, schedule: str = "released",
              power: float = 0.9) -> float:
    """The learning-rate factor of optimiser step ``step`` (0-based) under ``schedule``.

    ``poly``: ``(1 - step / total) ** power``. ``released`` and ``epoch``: ``(1 - T / total) **
    power`` with SelfMask's ``Poly`` counter T, which starts at 0 and runs 1, 2, ..., n, 1, 2, ...
    (n = ``steps_per_epoch``); ``epoch`` takes one count per step (the scheduler alone: a
    restart every epoch), ``released`` two (SelfMask's trainer also calls ``get_lr()`` for its
    progress bar after every step: a restart every half epoch).
    """
    if schedule == "poly":
        return max(0.0, 1 - step / total_steps) ** power
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown lr_schedule {schedule!r}")
    if step == 0:
        return 1.0
    per_step = 2 if schedule == "released" else 1
    counter = (per_step * (step - 1)) % steps_per_epoch + 1
    return max(0.0, 1 - counter / total_steps) ** power


def selfmask_augment(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, size: int = 224,
                     scale: tuple[float, float] = (0.1, 1.0), photometric: bool = True, released: bool = False):
    """SelfMask's training view of an image and its pseudo-mask.

    Parameters
    ----------
    image : np.ndarray
        ``(H, W, 3)`` uint8 RGB.
    mask : np.ndarray
        ``(h, w)`` bool pseudo-mask (at the image's size, or, with ``released``, at any size).
    rng : np.random.Generator
        The item's generator (all randomness comes from it).
    size : int
        Output side.
    scale : (float, float)
        Range of the random rescale of the ``size`` x ``size`` image.
    photometric : bool
        Whether to apply colour jitter, grayscale and blur.
    released : bool
        SelfMask's released geometry (``preset=selfmask``): the mask resized once, nearest,
        straight to the rescaled side; a smaller view at the top-left corner on the
        uint8-truncated mean colour (instead of a random place on the exact mean).

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        ``(3, size, size)`` float32 image in [0, 1] and ``(1, size, size)`` float32 0/1 mask.
    """
    import torch
    import torchvision.transforms.v2.functional as TF

    from harness.training.augment import to_tensor

    def resize_mask(m, side):  # the image's resampling, then 0.5: both stay on the same pixel grid
        if released:
            return TF.resize(m, [side, side], interpolation=TF.InterpolationMode.NEAREST)
        return (TF.resize(m, [side, side], antialias=True) > 0.5).float()

    x = TF.resize(to_tensor(image), [size, size], antialias=True).clamp_(0, 1)
    m = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None]
    if not released:
        m = resize_mask(m, size)
    side = max(1, int(size * rng.uniform(*scale)))
    if side != size:
        x = TF.resize(x, [side, side], antialias=True).clamp_(0, 1)
    if side != size or released:
        m = resize_mask(m, side)
    if side < size:  # paste on the mean colour (SelfMask's pad-then-crop)
        if released:  # padded on the right and bottom, then a crop whose offset can only be 0
            top = left = 0
            fill = torch.floor(x.mean(dim=(1, 2), keepdim=True) * 255 + 1e-4) / 255
        else:
            top, left = int(rng.integers(0, size - side + 1)), int(rng.integers(0, size - side + 1))
            fill = x.mean(dim=(1, 2), keepdim=True)
        canvas = fill.expand(3, size, size).clone()
        canvas[:, top:top + side, left:left + side] = x
        mask_canvas = torch.zeros(1, size, size)
        mask_canvas[:, top:top + side, left:left + side] = m
        x, m = canvas, mask_canvas
    elif side > size:
        top, left = int(rng.integers(0, side - size + 1)), int(rng.integers(0, side - size + 1))
        x, m = x[:, top:top + size, left:left + size], m[:, top:top + size, left:left + size]
    if rng.random() < 0.5:
        x, m = x.flip(-1), m.flip(-1)
    if photometric:
        if rng.random() < 0.8:
            factors = [rng.uniform(0.2, 1.8), rng.uniform(0.2, 1.8), rng.uniform(0.2, 1.8), rng.uniform(-0.2, 0.2)]
            ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
            for k in rng.permutation(4):
                x = ops[k](x, float(factors[k])).clamp(0, 1)
        if rng.random() < 0.2:
            x = TF.rgb_to_grayscale(x, num_output_channels=3)
        if rng.random() < BLUR_P:
            kernel = int(0.1 * size // 2 * 2) + 1
            if kernel > 1:
                x = TF.gaussian_blur(x, [kernel, kernel], [float(rng.uniform(*BLUR_SIGMA))] * 2)
    return x.clamp(0, 1).contiguous(), (m > 0.5).float().contiguous()


def build_encoder(backbone, pretrained: bool = False):
    """A trainable copy of the backbone's network, wrapped as a :class:`~harness.methods.selfmask_model.Encoder`,
    through the backbone's public interface alone (``trainable_network``, ``network_features``,
    ``stride``, ``mean``, ``std``, ``family``, ``feature_dim``), so any backbone plugin that
    offers a trainable network serves.

    A ViT (``family == "vit"``) whose network has DINO's layout runs SelfMask's own ViT forward
    (final normalised tokens, SelfMask's position-embedding resize), as SelfMask's release does;
    any other network gives the backbone's ``network_features``.

    Parameters
    ----------
    backbone : harness.api.Backbone
    pretrained : bool
        With the backbone's weights (training starts from them), or the architecture only (the
        fine-tuned weights come from a checkpoint; no weights file is read).
    """
    from harness.methods.selfmask_model import Encoder, is_plain_vit

    net = backbone.trainable_network(pretrained=pretrained)
    if backbone.family == "vit" and is_plain_vit(net):
        return Encoder(net, backbone.stride, backbone.mean, backbone.std)
    return Encoder(net, backbone.stride, backbone.mean, backbone.std, features=backbone.network_features,
                   channels=backbone.feature_dim)


class SelfMask(TrainableMethod):
    name = "selfmask"
    description = "SelfMask: MaskFormer-style detector fine-tuned on pseudo-masks of any run (trainable)"
    default_backbone = "dino-vits8"
    default_epochs = 12
    default_batch_size = 8
    default_lr = 6e-6
    version = "2"  # native-resolution inference, SelfMask's position-embedding rule; preset, lr_schedule
    train_hint = " --pseudo-masks RUN_DIR"
    options = (
        Option("checkpoint", None, "trained checkpoint (checkpoint_last.pt of `harness train`, or a state dict "
                                   "saved by SelfMask's code such as selfmask_nq20_model.pt, converted on load)", type=Path),
        Option("pseudo_masks", None, "training pseudo-masks: a run directory, a folder of masks or a COCO-RLE "
                                     "JSON (`harness train --pseudo-masks` sets it)"),
        Option("preset", "harness", "conventions: harness (ranking loss that asks better masks to score higher, "
                                    "training view at a random place); selfmask: the released code's (ranking "
                                    "loss of the opposite sign, view at the top-left corner on the uint8 mean "
                                    "colour, pseudo-mask resized once, nearest, from its stored size)",
               choices=PRESETS),
        Option("image_size", 224, "square training size in pixels (a multiple of the backbone stride); "
                                  "inference runs at the image's native resolution"),
        Option("inference_size", 0, "0: infer at the image's native resolution (SelfMask's evaluator); N: resize "
                                    "the shorter side to N first (aspect kept), the mask back to the image"),
        Option("queries", 20, "number of learned queries"),
        Option("decoder_layers", 6, "transformer decoder layers"),
        Option("decoder_dim", 384, "decoder width (other encoder widths are projected by a 1x1 conv)"),
        Option("heads", 6, "attention heads of the decoder"),
        Option("scale_min", 0.1, "smallest random rescale of the training view"),
        Option("scale_max", 1.0, "largest random rescale of the training view"),
        Option("photometric", True, "colour jitter, grayscale and blur in the training view"),
        Option("w_dice", 1.0, "weight of the Dice loss"),
        Option("w_rank", 1.0, "weight of the objectness ranking loss"),
        Option("weight_decay", 0.01, "AdamW weight decay"),
        Option("lr_schedule", "released", "released: SelfMask's Poly as its trainer runs it (counter restarting "
                                          "every half epoch: 0.925x-1x of the rate); epoch: that scheduler alone "
                                          "(restart every epoch); poly: true poly decay over the whole run",
               choices=LR_SCHEDULES),
        Option("poly_power", 0.9, "power of the poly learning-rate schedule"),
    )

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        c = self.config
        if c["inference_size"] < 0:
            raise HarnessError(f"selfmask: inference_size must be 0 (native) or a positive side, "
                               f"got {c['inference_size']}")
        if not 0 < c["scale_min"] <= c["scale_max"]:
            raise HarnessError(f"selfmask: need 0 < scale_min <= scale_max, got {c['scale_min']} and {c['scale_max']}")
        self._source = None

    # ---- pseudo-masks ------------------------------------------------------------------
    def pseudo_source(self):
        """The training pseudo-masks (opened once)."""
        if self._source is None:
            from harness.methods.selfmask_pseudo_masks import open_pseudo_masks

            if not self.config["pseudo_masks"]:
                raise HarnessError("selfmask trains on pseudo-masks: pass --pseudo-masks RUN_DIR (a `harness run` "
                                   "on the training dataset), a folder of masks, or a COCO-RLE JSON")
            self._source = open_pseudo_masks(self.config["pseudo_masks"])
        return self._source

    def identity(self) -> dict[str, Any]:
        ident = super().identity()
        if self.config["pseudo_masks"]:  # training: the source's provenance keys the run, not just its path
            ident["pseudo_masks"] = self.pseudo_source().describe()
        return ident

    def prepare_training(self, dataset, ids: list[str]) -> None:
        self.pseudo_source().check(dataset, ids)

    # ---- training ---------------------------------------------------------------------
    def _net(self, backbone, c: dict[str, Any], pretrained: bool):
        from harness.methods.selfmask_model import SelfMaskNet

        if c["image_size"] % backbone.stride:
            raise HarnessError(f"image_size={c['image_size']} is not a multiple of {backbone.name}'s stride {backbone.stride}")
        encoder = build_encoder(backbone, pretrained)
        return SelfMaskNet(encoder, encoder.channels, c["queries"], c["decoder_layers"], c["decoder_dim"], c["heads"])

    def build_model(self, backbone):
        """The detector, its encoder a trainable copy of the backbone's network with its weights."""
        return self._net(backbone, self.config, pretrained=True).requires_grad_(True)

    def make_optimizer(self, parameters, lr):
        import torch

        return torch.optim.AdamW(parameters, lr=lr, weight_decay=self.config["weight_decay"])

    def make_scheduler(self, optimizer, total_steps, steps_per_epoch=None):
        """The ``lr_schedule`` option's factor (:func:`lr_factor`), stepped every batch."""
        import functools

        import torch

        schedule, power = self.config["lr_schedule"], self.config["poly_power"]
        if steps_per_epoch is None and schedule != "poly":
            raise HarnessError(f"selfmask: lr_schedule={schedule} restarts with the epochs and needs the steps "
                               f"per epoch")
        factor = functools.partial(lr_factor, steps_per_epoch=steps_per_epoch, total_steps=total_steps,
                                   schedule=schedule, power=power)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    @property
    def released(self) -> bool:
        """``preset=selfmask``: the released code's conventions."""
        return self.config["preset"] == "selfmask"

    def train_item(self, sample: Sample, rng) -> dict:
        c = self.config
        source = self.pseudo_source()
        mask = source.stored_mask(sample) if self.released else source.mask(sample)
        image, mask = selfmask_augment(sample.image, mask, rng, c["image_size"], (c["scale_min"], c["scale_max"]),
                                       c["photometric"], released=self.released)
        return {"image": image, "mask": mask}

    def loss_weights(self) -> dict[str, float]:
        return {"dice": self.config["w_dice"], "rank": self.config["w_rank"]}

    def training_losses(self, model, backbone, batch, generator) -> dict:
        import torch.nn.functional as F

        from harness.methods.selfmask_losses import dice_loss, ranking_loss

        images, target = batch["image"], batch["mask"]
        out = model(images)
        masks = out["masks"].float()
        b, layers, queries = masks.shape[:3]
        size = target.shape[-2:]
        masks = F.interpolate(masks.flatten(0, 1), size=size, mode="bilinear", align_corners=False)
        masks = masks.reshape(b, layers, queries, -1)
        target = target.reshape(b, 1, -1).float()  # one pseudo-mask, shared by every layer
        dice = dice_loss(masks, target)  # (B, L, Q)
        rank = ranking_loss(out["objectness"].float(), dice, "released" if self.released else "paper")  # (B, L)
        valid = (target.sum(-1) > 0).squeeze(1).float()  # an empty pseudo-mask teaches nothing (SelfMask skips it)
        count = valid.sum().clamp(min=1)
        return {"dice": (dice.sum((1, 2)) * valid).sum() / count, "rank": (rank.sum(1) * valid).sum() / count}

    def checkpoint_extras(self, model, backbone, dataset, ids, device) -> dict[str, Any]:
        return {"pseudo_masks": {**self.pseudo_source().describe(), "images": len(ids)},
                "pseudo_mask_source": self.pseudo_source().label}

    # ---- evaluation -------------------------------------------------------------------
    # The checkpoint (read once, its content digest, the backbone it implies) is
    # TrainableMethod's; a state dict saved by SelfMask's code is converted by convert_foreign_checkpoint.
    def convert_foreign_checkpoint(self, payload, path) -> dict | None:
        """A state dict saved by SelfMask's code as a checkpoint-like dict (``"released": True``),
        or ``None`` if ``payload`` is something else."""
        from harness.methods.selfmask_model import convert_selfmask_state, selfmask_geometry, unwrap_selfmask_state

        state = unwrap_selfmask_state(payload)
        if state is None:
            return None
        try:
            geometry = selfmask_geometry(state)
            converted = convert_selfmask_state(state)
        except ValueError as exc:
            raise HarnessError(f"{path} is not a usable SelfMask state dict: {exc}") from None
        backbone = RELEASED_BACKBONES.get((geometry["width"], geometry["patch"]))
        if backbone is None:
            raise HarnessError(f"{path}: a SelfMask network with a {geometry['width']}-wide ViT of patch size "
                               f"{geometry['patch']} matches no DINO backbone (known: {sorted(RELEASED_BACKBONES)})")
        config = {k: geometry[k] for k in ("queries", "decoder_layers", "decoder_dim", "heads")}
        return {"released": True, "model": converted, "geometry": geometry, "backbone": backbone,
                "backbone_geometry": (geometry["width"], geometry["patch"]),
                "describes": f"a SelfMask network with a {geometry['width']}-wide ViT of patch size {geometry['patch']}",
                "config": {"method": {"config": {"image_size": 224, **config}}, "backbone": {"config": {}}},
                "pseudo_masks": {"kind": "selfmask-state", "label": f"{Path(path).stem} (SelfMask's code)"}}

    def check_checkpoint(self, checkpoint, path) -> None:
        if "pseudo_masks" not in checkpoint:
            raise HarnessError(f"{path} does not record its pseudo-mask source; train it again")

    def display_name(self) -> str:
        return f"SelfMask w/ {self.checkpoint()['pseudo_masks']['label']}"

    def cache_token(self) -> dict:
        return {**super().cache_token(), "pseudo_masks": self.checkpoint()["pseudo_masks"],
                "display_name": self.display_name()}

    def setup(self, context: RunContext) -> None:
        ckpt = self.checkpoint()
        backbone = context.backbone
        # only the architecture matters for a released state dict (the encoder's weights are in the file)
        self.check_checkpoint_backbone(backbone)
        trained = ckpt["config"]["method"]["config"]  # the network's shape is the checkpoint's, not the options'
        self.device = context.device
        # the fine-tuned encoder is in the checkpoint: only the architecture is built here
        try:
            self.model = self._net(backbone, trained, pretrained=False)
            self.model.load_state_dict(ckpt["model"])
        except (RuntimeError, ValueError) as exc:
            raise HarnessError(f"the checkpoint does not fit backbone {backbone.name} with options "
                               f"{backbone.config}; pass the --backbone-args it was trained with ({exc})") from None
        self.model.to(self.device).eval()
        self.stride = backbone.stride

    def masks_from_outputs(self, masks, objectness, sizes):
        """SelfMask's evaluation of the network's outputs: per image, the last decoder layer's
        query with the highest objectness, its mask upsampled bilinearly (``align_corners=False``)
        by stride / 2 to the padded input and cropped to the image.

        Parameters
        ----------
        masks : torch.Tensor
            ``(B, L, Q, h, w)`` mask probabilities at twice the token grid of the padded input.
        objectness : torch.Tensor
            ``(B, L, Q)`` objectness scores.
        sizes : list of (int, int)
            Each image's ``(H, W)``.

        Returns
        -------
        list of np.ndarray
            ``(H, W)`` float32 masks in [0, 1].
        """
        import torch
        import torch.nn.functional as F

        masks, objectness = masks[:, -1].float(), objectness[:, -1].float()
        best = objectness.argmax(dim=1)
        chosen = masks[torch.arange(len(masks), device=masks.device), best]
        padded = (chosen.shape[-2] * self.stride // 2, chosen.shape[-1] * self.stride // 2)
        full = F.interpolate(chosen[:, None], size=padded, mode="bilinear", align_corners=False)[:, 0]
        return [full[i, :h, :w].clamp(0, 1).cpu().numpy().astype(np.float32) for i, (h, w) in enumerate(sizes)]

    def _input_size(self, height: int, width: int) -> tuple[int, int]:
        short = int(self.config["inference_size"])
        if not short:
            return height, width
        scale = short / min(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))

    def predict_batch(self, samples):
        import torch
        import torch.nn.functional as F

        from harness.training.augment import resize_to

        groups: dict[tuple, list[int]] = {}
        for i, sample in enumerate(samples):  # images of one input size go through the network together
            groups.setdefault(self._input_size(*sample.image.shape[:2]), []).append(i)
        result: list = [None] * len(samples)
        with torch.no_grad():
            for size, members in groups.items():
                images = torch.stack([resize_to(samples[i].image, *size) for i in members]).to(self.device)
                out = self.model(images)
                for i, mask in zip(members, self.masks_from_outputs(out["masks"], out["objectness"],
                                                                    [size] * len(members))):
                    if mask.shape != samples[i].image.shape[:2]:
                        mask = F.interpolate(torch.from_numpy(mask)[None, None], size=samples[i].image.shape[:2],
                                             mode="bilinear", align_corners=False)[0, 0].clamp(0, 1).numpy()
                    result[i] = Prediction(mask)
        return result

    def predict(self, sample: Sample) -> Prediction:
        return self.predict_batch([sample])[0]


#: the DINO backbone a SelfMask network was fine-tuned from, by (ViT width, patch size): SelfMask's
#: ``load_model`` starts ViT-S/8 from the 300-epoch checkpoint. Only the architecture is used
#: (the fine-tuned encoder is in the state dict); any backbone of the same shape is accepted.
RELEASED_BACKBONES = {(384, 8): "dino-vits8-300ep", (384, 16): "dino-vits16", (768, 8): "dino-vitb8",
                      (768, 16): "dino-vitb16"}
