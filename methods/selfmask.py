"""SelfMask (Shin, Albanie & Xie, "Unsupervised Salient Object Detection with Spectral Cluster
Voting", CVPRW 2022) as pseudo-mask distillation: "SelfMask w/ X".

Training (``harness train --method selfmask --pseudo-masks SOURCE``) fine-tunes the backbone's
network inside a MaskFormer-style detector (:mod:`harness.methods.selfmask_model`) on
pseudo-masks from any earlier run, a folder of masks, or SelfMask's JSON of COCO-RLE masks
(:mod:`harness.training.pseudo_masks`), with the Dice loss of every query's mask plus the
objectness ranking loss (:mod:`harness.methods.selfmask_losses`), both summed over the queries
and the decoder layers and averaged over the images of a batch, as in SelfMask's release.
Recipe: 12 epochs, AdamW (weight decay 0.01) at lr 6e-6 with a poly schedule (power 0.9) over
every step, batch 8, 224 px. Augmentation, as SelfMask's: the image and its pseudo-mask
resized to 224 x 224, a random rescale in [0.1, 1] pasted at a random place on the image's
mean colour (mask: background), horizontal flip (p 0.5), colour jitter (0.8, 0.8, 0.8, 0.2;
p 0.8), grayscale (p 0.2), Gaussian blur (kernel 10 % of the side, sigma in [0.1, 2]; p 0.5).

Evaluation (``harness run --method selfmask --method-args checkpoint=FILE``) resizes an image to
the training size, takes the mask of the query with the highest objectness after the last
decoder layer, and resizes it back (bilinear). The checkpoint records the pseudo-mask source;
the run's ``method_token`` carries it and the row name "SelfMask w/ <source>" that
``harness report`` prints.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from harness.api import Option, Prediction, RunContext, Sample
from harness.errors import HarnessError
from harness.training.trainable import TrainableMethod

#: SelfMask's Gaussian-blur probability and sigma range (the SimCLR/MoCo-v2 convention)
BLUR_P, BLUR_SIGMA = 0.5, (0.1, 2.0)


def selfmask_augment(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, size: int = 224,
                     scale: tuple[float, float] = (0.1, 1.0), photometric: bool = True):
    """SelfMask's training view of an image and its pseudo-mask.

    Parameters
    ----------
    image : np.ndarray
        ``(H, W, 3)`` uint8 RGB.
    mask : np.ndarray
        ``(H, W)`` bool pseudo-mask.
    rng : np.random.Generator
        The item's generator (all randomness comes from it).
    size : int
        Output side.
    scale : (float, float)
        Range of the random rescale of the ``size`` x ``size`` image.
    photometric : bool
        Whether to apply colour jitter, grayscale and blur.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        ``(3, size, size)`` float32 image in [0, 1] and ``(1, size, size)`` float32 0/1 mask.
    """
    import torch
    import torchvision.transforms.v2.functional as TF

    from harness.training.augment import to_tensor

    def resize_mask(m, side):  # the image's resampling, then 0.5: both stay on the same pixel grid
        return (TF.resize(m, [side, side], antialias=True) > 0.5).float()

    x = TF.resize(to_tensor(image), [size, size], antialias=True).clamp_(0, 1)
    m = resize_mask(torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None], size)
    side = max(1, int(size * rng.uniform(*scale)))
    if side != size:
        x = TF.resize(x, [side, side], antialias=True).clamp_(0, 1)
        m = resize_mask(m, side)
    if side < size:  # paste on the mean colour at a random place (SelfMask's pad-then-crop)
        top, left = int(rng.integers(0, size - side + 1)), int(rng.integers(0, size - side + 1))
        canvas = x.mean(dim=(1, 2), keepdim=True).expand(3, size, size).clone()
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


def build_encoder(backbone):
    """A trainable copy of the backbone's network, wrapped as a :class:`~harness.methods.selfmask_model.Encoder`.

    The copy is built with the backbone's own ``build()`` (same architecture, no weights);
    load the weights into it afterwards.
    """
    from harness.methods.selfmask_model import Encoder

    build = getattr(backbone, "build", None)
    if build is None:
        raise HarnessError(f"selfmask fine-tunes the backbone's network, which backbone {backbone.name!r} does not "
                           f"expose; use a DINO/iBOT ViT or effnet-lite0")
    net = build()
    if backbone.family == "vit" and hasattr(net, "forward_features"):
        return Encoder(net, "vit", backbone.stride, backbone.mean, backbone.std)
    from harness.backbones.effnet import STAGE_FOR_STRIDE, EffNetLite0

    if isinstance(backbone, EffNetLite0):
        return Encoder(net, "stages", backbone.stride, backbone.mean, backbone.std, STAGE_FOR_STRIDE[backbone.stride][0])
    raise HarnessError(f"selfmask cannot fine-tune backbone {backbone.name!r}; use a DINO/iBOT ViT or effnet-lite0")


class SelfMask(TrainableMethod):
    name = "selfmask"
    description = "SelfMask: MaskFormer-style detector fine-tuned on pseudo-masks of any run (trainable)"
    default_backbone = "dino-vits8"
    default_epochs = 12
    default_batch_size = 8
    default_lr = 6e-6
    options = (
        Option("checkpoint", None, "trained checkpoint (checkpoint_last.pt of `harness train`)"),
        Option("pseudo_masks", None, "training pseudo-masks: a run directory, a folder of masks or a COCO-RLE "
                                     "JSON (`harness train --pseudo-masks` sets it)"),
        Option("image_size", 224, "square input size in pixels (a multiple of the backbone stride)"),
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
        Option("poly_power", 0.9, "power of the poly learning-rate schedule"),
    )

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        c = self.config
        if not 0 < c["scale_min"] <= c["scale_max"]:
            raise HarnessError(f"selfmask: need 0 < scale_min <= scale_max, got {c['scale_min']} and {c['scale_max']}")
        self._source = None
        self._ckpt: dict | None = None

    # ---- pseudo-masks ------------------------------------------------------------------
    def pseudo_source(self):
        """The training pseudo-masks (opened once)."""
        if self._source is None:
            from harness.training.pseudo_masks import open_pseudo_masks

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
    def _net(self, backbone, c: dict[str, Any]):
        from harness.methods.selfmask_model import SelfMaskNet

        if c["image_size"] % backbone.stride:
            raise HarnessError(f"image_size={c['image_size']} is not a multiple of {backbone.name}'s stride {backbone.stride}")
        return SelfMaskNet(build_encoder(backbone), backbone.feature_dim, c["queries"], c["decoder_layers"],
                           c["decoder_dim"], c["heads"])

    def build_model(self, backbone):
        """The detector, its encoder initialised from the backbone's (loaded) weights."""
        model = self._net(backbone, self.config)
        model.encoder.load_backbone_state(backbone.model.state_dict())
        return model.requires_grad_(True)

    def make_optimizer(self, parameters, lr):
        import torch

        return torch.optim.AdamW(parameters, lr=lr, weight_decay=self.config["weight_decay"])

    def make_scheduler(self, optimizer, total_steps):
        """Poly: ``lr * (1 - step / total) ** power``, stepped every batch."""
        import torch

        power = self.config["poly_power"]
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / total_steps) ** power)

    def train_item(self, sample: Sample, rng) -> dict:
        c = self.config
        image, mask = selfmask_augment(sample.image, self.pseudo_source().mask(sample), rng, c["image_size"],
                                       (c["scale_min"], c["scale_max"]), c["photometric"])
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
        rank = ranking_loss(out["objectness"].float(), dice)  # (B, L)
        valid = (target.sum(-1) > 0).squeeze(1).float()  # an empty pseudo-mask teaches nothing (SelfMask skips it)
        count = valid.sum().clamp(min=1)
        return {"dice": (dice.sum((1, 2)) * valid).sum() / count, "rank": (rank.sum(1) * valid).sum() / count}

    def checkpoint_extras(self, model, backbone, dataset, ids, device) -> dict[str, Any]:
        return {"pseudo_masks": {**self.pseudo_source().describe(), "images": len(ids)},
                "pseudo_mask_source": self.pseudo_source().label}

    # ---- evaluation -------------------------------------------------------------------
    def _checkpoint(self) -> dict:
        if self._ckpt is None:
            path = self.config["checkpoint"]
            if not path:
                raise HarnessError(
                    "method 'selfmask' needs a trained checkpoint: train one with `harness train --method selfmask "
                    "--pseudo-masks RUN_DIR --dataset duts_tr --data-root DIR`, then pass "
                    "--method-args checkpoint=<out>/checkpoint_last.pt"
                )
            from harness.training.checkpoint import load_checkpoint

            self._ckpt = load_checkpoint(path, (self.name,))
            if "pseudo_masks" not in self._ckpt:
                raise HarnessError(f"{path} does not record its pseudo-mask source; train it again")
        return self._ckpt

    def display_name(self) -> str:
        return f"SelfMask w/ {self._checkpoint()['pseudo_masks']['label']}"

    def cache_token(self) -> dict:
        from harness.training.checkpoint import file_token

        ckpt = self._checkpoint()
        return {"checkpoint": file_token(self.config["checkpoint"]),
                "pseudo_masks": ckpt["pseudo_masks"], "display_name": self.display_name()}

    def preferred_backbone(self) -> str | None:
        """The backbone the checkpoint was trained with."""
        if not self.config["checkpoint"]:
            return self.default_backbone
        return self._checkpoint()["backbone"]

    def preferred_backbone_args(self) -> dict:
        """The backbone options the checkpoint was trained with (e.g. stride=8)."""
        if not self.config["checkpoint"]:
            return {}
        return dict(self._checkpoint()["config"]["backbone"]["config"])

    def setup(self, context: RunContext) -> None:
        from harness.training.checkpoint import check_backbone

        ckpt = self._checkpoint()
        backbone = context.backbone
        check_backbone(ckpt, backbone)
        trained = ckpt["config"]["method"]["config"]  # the network's shape is the checkpoint's, not the options'
        self.device = context.device
        # the fine-tuned encoder is in the checkpoint: only the architecture is built here
        try:
            self.model = self._net(backbone, trained)
            self.model.load_state_dict(ckpt["model"])
        except RuntimeError as exc:
            raise HarnessError(f"the checkpoint does not fit backbone {backbone.name} with options "
                               f"{backbone.config}; pass the --backbone-args it was trained with ({exc})") from None
        self.model.to(self.device).eval()
        self.image_size = int(trained["image_size"])

    def predict_batch(self, samples):
        import torch
        import torch.nn.functional as F

        from harness.training.augment import resize_square

        images = torch.stack([resize_square(s.image, self.image_size) for s in samples]).to(self.device)
        with torch.no_grad():
            out = self.model(images)
            masks, objectness = out["masks"][:, -1].float(), out["objectness"][:, -1].float()
            best = objectness.argmax(dim=1)
            chosen = masks[torch.arange(len(samples), device=masks.device), best]
            result = []
            for sample, mask in zip(samples, chosen):
                h, w = sample.image.shape[:2]
                full = F.interpolate(mask[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
                result.append(Prediction(full.clamp(0, 1).cpu().numpy().astype(np.float32)))
        return result

    def predict(self, sample: Sample) -> Prediction:
        return self.predict_batch([sample])[0]
