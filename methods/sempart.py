"""Sempart, and Sempart with multi-scale crop consistency ("Two Tricks", trick 2).

Training (``harness train --method sempart|sempart-crop``) fits :class:`SempartHead` on
frozen backbone features with Sempart's losses. The backbone forward and every loss run in
float32 with autocast off (``--amp`` only covers the head). Evaluation (``harness run
--method sempart --method-args checkpoint=FILE``) predicts with the fine branch.

Two presets (the ``preset`` option):

- ``harness`` (default): each image keeps its aspect ratio (shorter side to the training size,
  the longer side rounded to the backbone's stride) and the mask is resized back to the image;
  BatchNorm in eval mode; the polarity stored in the checkpoint (fixed once per checkpoint from
  the training images' borders, never per batch or from test labels); crop consistency at a
  uniformly random position.
- ``segtricks``: segmentation-tricks' conventions, the code behind the Two Tricks paper's rows.
  The network sees an ``image_size`` square (an image of that size, e.g. a sample of
  ``--protocol segtricks``, passes unchanged; others are resized to it); BatchNorm uses the
  statistics of the evaluation batch (``harness run --batch-size`` images, in dataset order;
  the reference used 8) and the polarity is chosen per batch (mean above 0.5 inverts), so a
  mask depends on its batch: such runs are not cached per image and need one process. In
  training: the reference's transform order, the head in float32 too, and its crop position
  (see :func:`harness.methods.sempart_losses.segtricks_crops`).

``checkpoint`` also takes a head saved by segmentation-tricks' ``sempart_main.py``
(``{'segmenter_state_dict': ...}``, e.g. the released heads), converted on load. It stores no
backbone: the one its shapes imply is used (384 channels at stride 8: ``dino-vits8``, the
official ``dino_deitsmall8_pretrain.pth``; the released heads used its keys). It stores no
polarity either: ``polarity=auto`` then applies the reference's own per-batch rule; pass
``polarity=1`` or ``-1`` to fix it.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import numpy as np

from harness.api import FeatureRequest, Option, Prediction, RunContext, Sample
from harness.backbones.features import features_for
from harness.errors import HarnessError
from harness.training.trainable import TrainableMethod

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: images used to fix the polarity at each checkpoint, and the border band they are read on
POLARITY_IMAGES = 16
POLARITY_BAND = 1 / 16
PRESETS = ("harness", "segtricks")
POLARITIES = ("auto", "1", "-1", "batch")
#: (feature channels, stride) of a segmentation-tricks head -> the DINO backbone it implies
SEGTRICKS_BACKBONES = {(384, 8): "dino-vits8", (384, 16): "dino-vits16", (768, 8): "dino-vitb8",
                       (768, 16): "dino-vitb16"}


def normalize_image(images):
    """ImageNet normalisation of ``(B, 3, H, W)`` RGB in [0, 1] (the head's image input)."""
    import torch

    mean = torch.tensor(IMAGENET_MEAN, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images - mean) / std


def border_mean(masks) -> float:
    """Mean of ``(B, 1, H, W)`` masks over a band along the image border."""
    import torch

    h, w = masks.shape[-2:]
    band = max(1, int(round(min(h, w) * POLARITY_BAND)))
    ring = torch.ones(h, w, dtype=torch.bool, device=masks.device)
    ring[band:-band, band:-band] = False
    return float(masks[..., ring].mean())


@contextlib.contextmanager
def batch_statistics(model):
    """BatchNorm layers normalise with the batch's statistics (training mode) and leave their
    running statistics unchanged (momentum 0); restored on exit."""
    from torch import nn

    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.training, m.momentum) for m in norms]
    for m in norms:
        m.train()
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (training, momentum) in zip(norms, saved):
            m.train(training)
            m.momentum = momentum


class Sempart(TrainableMethod):
    name = "sempart"
    description = "Sempart head on frozen features: NCut + graph-TV, coarse and fine branches (trainable)"
    ablation = {"family": "sempart", "crop_consistency": False}
    version = "2"
    default_backbone = "dino-vits8"
    default_epochs = 30
    default_batch_size = 8
    default_lr = 1e-4
    crop_consistency = False
    options = (
        Option("checkpoint", None, "checkpoint_last.pt of `harness train`, or a segmentation-tricks head "
               "(.pth holding 'segmenter_state_dict'; backbone implied by its shapes, dino-vits8 for the released ones)", type=Path),
        Option("preset", "harness", "harness: aspect kept (shorter side image_size), BatchNorm eval mode, polarity "
               "fixed per checkpoint, random crop position; segtricks: segmentation-tricks' conventions: an "
               "image_size square input, BatchNorm statistics and polarity (mean > 0.5 inverts) of each evaluation "
               "batch (--batch-size), its training transform order, a float32 head and its crop at row H/4",
               choices=PRESETS),
        Option("polarity", "auto", "foreground side: auto (the checkpoint's; per batch under preset=segtricks or "
               "for a segmentation-tricks head), 1 (the sigmoid), -1 (its complement) or batch", choices=POLARITIES),
        Option("image_size", 320, "training size; evaluation resizes the shorter side to it (a multiple of the stride)"),
        Option("tau", 0.4, "cosine threshold of the feature affinity"),
        Option("eps", 1e-6, "affinity below the threshold, and the mask clamp"),
        Option("w_ncut", 1.0, "weight of the coarse NCut loss"),
        Option("w_consistency", 1.0, "weight of the coarse/fine consistency MSE"),
        Option("w_fine_tv", 1.0, "weight of the fine (image) graph-TV"),
        Option("w_coarse_tv", 1.0, "weight of the coarse (feature) graph-TV"),
    )

    @property
    def segtricks(self) -> bool:
        return self.config["preset"] == "segtricks"

    # ---- training ---------------------------------------------------------------------
    def build_model(self, backbone):
        from harness.methods.sempart_model import SempartHead

        size = self.config["image_size"]
        if size % backbone.stride:
            raise HarnessError(f"image_size={size} is not a multiple of {backbone.name}'s stride {backbone.stride}")
        return SempartHead(backbone.feature_dim, backbone.stride)

    def make_optimizer(self, parameters, lr):
        import torch

        return torch.optim.AdamW(parameters, lr=lr, betas=(0.9, 0.99), weight_decay=0.0)

    def train_item(self, sample: Sample, rng) -> dict:
        from harness.training.augment import sempart_augment

        return {"image": sempart_augment(sample.image, rng, self.config["image_size"], segtricks=self.segtricks)}

    def loss_weights(self) -> dict[str, float]:
        c = self.config
        return {"ncut": c["w_ncut"], "consistency": c["w_consistency"], "fine_tv": c["w_fine_tv"],
                "coarse_tv": c["w_coarse_tv"]}

    def forward(self, model, backbone, images):
        """Backbone features (float32, autocast off) and the head's fine and coarse masks
        (float32 probabilities; the head runs under the caller's autocast, except with
        ``preset=segtricks``, which trains in float32 as the reference does)."""
        import torch

        with torch.no_grad(), torch.autocast(device_type=images.device.type, enabled=False):
            features = backbone.features(images.float()).float()
        return (features, *self.head(model, features, images))

    def head(self, model, features, images):
        """The head's fine and coarse masks (float32 probabilities) from backbone features
        ``(B, C, h, w)`` and the images ``(B, 3, H, W)`` in [0, 1]."""
        import torch

        device_type = images.device.type
        with torch.autocast(device_type=device_type, enabled=False) if self.segtricks else contextlib.nullcontext():
            fine, coarse = model(features, normalize_image(images.float()))
        return torch.sigmoid(fine.float()), torch.sigmoid(coarse.float())

    def loss_terms(self, images, features, fine, coarse) -> dict:
        """Sempart's four terms on one batch's features and masks."""
        from harness.methods import sempart_losses as L

        tau, eps = self.config["tau"], self.config["eps"]
        return {
            "ncut": L.ncut_loss(coarse, L.cosine_affinity(features, tau, eps), eps),
            "consistency": L.consistency_loss(fine, coarse),
            "fine_tv": L.image_tv_loss(fine, normalize_image(images.float())),
            "coarse_tv": L.feature_tv_loss(coarse, features, tau, eps),
        }

    def training_losses(self, model, backbone, batch, generator) -> dict:
        images = batch["image"]
        features, fine, coarse = self.forward(model, backbone, images)
        return self.loss_terms(images, features, fine, coarse)

    def checkpoint_extras(self, model, backbone, dataset, ids, device) -> dict[str, Any]:
        """Fix the polarity once: foreground is the side that does not hold the border."""
        import torch

        was_training = model.training
        model.eval()
        rings = []
        with torch.no_grad():
            for i in ids[:POLARITY_IMAGES]:
                image = self._eval_input(dataset.load(i).image, backbone.stride, self.config["image_size"])
                _, fine, _ = self.forward(model, backbone, image[None].to(device))
                rings.append(border_mean(fine))
        model.train(was_training)
        border = float(np.mean(rings))
        return {"polarity": -1 if border > 0.5 else 1, "polarity_border_mean": border}

    # ---- evaluation -------------------------------------------------------------------
    # The checkpoint (read once, its content digest, the backbone it implies) is
    # TrainableMethod's; a segmentation-tricks head is converted by convert_foreign_checkpoint.
    def convert_foreign_checkpoint(self, payload, path) -> dict | None:
        """A segmentation-tricks head (``{'segmenter_state_dict': ...}``) as a checkpoint-like
        dict with ``"segtricks": True``; ``None`` for anything else."""
        from harness.methods.sempart_model import convert_segtricks_state, is_segtricks_state, segtricks_geometry

        if not is_segtricks_state(payload):
            return None
        try:
            geometry = segtricks_geometry(payload)
            converted = convert_segtricks_state(payload)
        except ValueError as exc:
            raise HarnessError(f"{path} is not a usable segmentation-tricks head: {exc}") from None
        if geometry not in SEGTRICKS_BACKBONES:
            raise HarnessError(f"{path}: a segmentation-tricks head for {geometry[0]} channels at stride {geometry[1]} "
                               f"matches no DINO backbone (known: {sorted(SEGTRICKS_BACKBONES)})")
        return {"segtricks": True, "model": converted, "geometry": geometry, "backbone_geometry": geometry,
                "backbone": SEGTRICKS_BACKBONES[geometry],
                "describes": f"a segmentation-tricks head for {geometry[0]}-channel features at stride {geometry[1]}"}

    def check_checkpoint(self, checkpoint, path) -> None:
        if checkpoint.get("foreign"):
            return
        trained = str(checkpoint.get("method_version"))
        if trained != self.version:
            raise HarnessError(
                f"{path} holds a {self.name} head of version {trained}; this harness's head is version "
                f"{self.version} (vit-pytorch-form transformer): retrain it with `harness train`")

    def polarity_rule(self) -> int | str:
        """``1``, ``-1`` or ``"batch"``, from the option, the preset and the checkpoint."""
        choice = self.config["polarity"]
        if choice != "auto":
            return choice if choice == "batch" else int(choice)
        if self.segtricks or self.checkpoint().get("segtricks"):
            return "batch"
        return int(self.checkpoint().get("polarity", 1))

    @property
    def cacheable(self) -> bool:
        """Masks are cached per image only when they do not depend on the rest of the batch."""
        return not (self.segtricks or (self.has_checkpoint() and self.polarity_rule() == "batch"))

    def setup(self, context: RunContext) -> None:
        from harness.methods.sempart_model import SempartHead, load_head_state

        ckpt = self.checkpoint()
        backbone = context.backbone
        path = self.checkpoint_path()
        self.check_checkpoint_backbone(backbone)
        if ckpt.get("segtricks"):
            self.image_size = int(self.config["image_size"])
        else:
            self.image_size = int(ckpt["config"]["method"]["config"]["image_size"])
        if self.image_size % backbone.stride:
            raise HarnessError(f"image_size={self.image_size} is not a multiple of {backbone.name}'s stride {backbone.stride}")
        self.polarity = self.polarity_rule()
        if not self.cacheable:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                raise HarnessError(f"{self.name}: with preset=segtricks or polarity=batch a mask depends on its "
                                   f"evaluation batch; run it in one process, not under torchrun")
        if ckpt.get("segtricks") and self.config["polarity"] == "auto" and not self.segtricks:
            log.warning("%s: %s stores no polarity; choosing it per evaluation batch as segmentation-tricks does "
                        "(pass polarity=1 or polarity=-1 to fix it)", self.name, path)
        self.device = context.device
        backbone.load(self.device)
        self.model = SempartHead(backbone.feature_dim, backbone.stride)
        try:
            load_head_state(self.model, ckpt["model"], str(path))
        except ValueError as exc:
            raise HarnessError(str(exc)) from None
        self.model.to(self.device).eval()
        self.backbone = backbone
        self.features = features_for(context)  # evaluation reads the backbone through the feature cache

    def _eval_input(self, image: np.ndarray, stride: int, size: int):
        """``(3, h, w)`` float32 in [0, 1]: the image as the network sees it (an ``size``
        square under ``preset=segtricks``, else the shorter side to ``size``)."""
        from harness.training.augment import resize_to, shorter_side_size

        if self.segtricks:
            return resize_to(image, size, size)
        return resize_to(image, *shorter_side_size(*image.shape[:2], size, stride))

    def predict_batch(self, samples):
        import torch
        import torch.nn.functional as F

        inputs = [self._eval_input(s.image, self.backbone.stride, self.image_size) for s in samples]
        shape = "square" if self.segtricks else "shorter-side"
        grids = self.features.grids([
            FeatureRequest.of(s, f"sempart-{shape}-bilinear-antialias:{x.shape[1]}x{x.shape[2]}",
                              lambda x=x: x.permute(1, 2, 0).numpy())
            for s, x in zip(samples, inputs)])
        groups: dict[tuple, list[int]] = {}
        for j, x in enumerate(inputs):  # one group under preset=segtricks (all squares)
            groups.setdefault(tuple(x.shape), []).append(j)
        masks: list = [None] * len(samples)
        with torch.no_grad(), batch_statistics(self.model) if self.segtricks else contextlib.nullcontext():
            for members in groups.values():
                images = torch.stack([inputs[j] for j in members]).to(self.device)
                features = torch.from_numpy(np.stack([grids[j] for j in members])).to(self.device)
                fine, _ = self.head(self.model, features, images)
                for j, mask in zip(members, fine):
                    masks[j] = mask
            if self.polarity == "batch":  # the mean over every pixel of the batch, as the reference
                invert = bool(torch.cat([m.flatten() for m in masks]).mean() > 0.5)
            else:
                invert = self.polarity < 0
        out = []
        for sample, mask in zip(samples, masks):
            if invert:
                mask = 1 - mask
            h, w = sample.image.shape[:2]
            if tuple(mask.shape[-2:]) != (h, w):
                mask = F.interpolate(mask[None], size=(h, w), mode="bilinear", align_corners=False)[0]
            out.append(Prediction(mask[0].clamp(0, 1).cpu().numpy().astype(np.float32)))
        return out

    def predict(self, sample: Sample) -> Prediction:
        return self.predict_batch([sample])[0]


class SempartCrop(Sempart):
    name = "sempart-crop"
    description = "Sempart + multi-scale crop consistency with a guided-filtered teacher (Two Tricks, trick 2)"
    ablation = {"family": "sempart", "crop_consistency": True}
    crop_consistency = True
    options = Sempart.options + (
        Option("w_crop_mse", 0.01, "weight of the crop-consistency MSE"),
        Option("w_crop_ncut", 0.01, "weight of the NCut on the crop's coarse mask"),
        Option("gf_radius", 9, "guided-filter radius of the teacher"),
        Option("gf_eps", 1e-3, "guided-filter eps of the teacher"),
    )

    def loss_weights(self) -> dict[str, float]:
        return {**super().loss_weights(), "crop_mse": self.config["w_crop_mse"], "crop_ncut": self.config["w_crop_ncut"]}

    def crop_corners(self, images, stride: int, generator) -> list[tuple[int, int]]:
        """Top-left corners of the half-size crops: uniformly random, or segmentation-tricks'
        fixed row and narrow column range under ``preset=segtricks``."""
        from harness.methods import sempart_losses as L

        b, _, h, w = images.shape
        if self.segtricks:
            return L.segtricks_crops(b, h, w, stride, generator)
        return L.random_crops(b, h, w, generator)

    def crop_views(self, model, backbone, images, fine, generator) -> dict:
        """The crop-consistency pair: the student's zoomed crop and the detached teacher.

        The same half-size region of the image and of the fine mask is zoomed x2; the
        network's fine mask on the zoomed image, guided-filtered (guide = the zoomed image) and
        clamped, is the teacher.
        """
        import torch

        from harness.methods import sempart_losses as L
        from harness.methods.guided_filter import guided_filter

        eps = self.config["eps"]
        corners = self.crop_corners(images, backbone.stride, generator)
        zoomed = L.crop_and_zoom(images.float(), corners)
        crop_features, crop_fine, crop_coarse = self.forward(model, backbone, zoomed)
        with torch.autocast(device_type=images.device.type, enabled=False):
            teacher = guided_filter(zoomed, crop_fine, self.config["gf_radius"], self.config["gf_eps"])
        return {
            "student": L.crop_and_zoom(fine, corners),
            "teacher": teacher.clamp(eps, 1 - eps).detach(),
            "features": crop_features,
            "coarse": crop_coarse,
        }

    def training_losses(self, model, backbone, batch, generator) -> dict:
        from harness.methods import sempart_losses as L

        images = batch["image"]
        features, fine, coarse = self.forward(model, backbone, images)
        tau, eps = self.config["tau"], self.config["eps"]
        crop = self.crop_views(model, backbone, images, fine, generator)
        return {
            **self.loss_terms(images, features, fine, coarse),
            "crop_mse": L.crop_mse(crop["student"], crop["teacher"]),
            "crop_ncut": L.ncut_loss(crop["coarse"], L.cosine_affinity(crop["features"], tau, eps), eps),
        }
