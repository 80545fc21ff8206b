"""Sempart, and Sempart with multi-scale crop consistency ("Two Tricks", trick 2).

Training (``harness train --method sempart|sempart-crop``) fits :class:`SempartHead` on
frozen backbone features with Sempart's losses; evaluation (``harness run --method sempart
--method-args checkpoint=FILE``) predicts with the fine branch, BatchNorm in eval mode, and
the mask polarity stored in the checkpoint (fixed once per checkpoint, from the training
images' borders, never per batch or from test labels).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from harness.api import Option, Prediction, RunContext, Sample
from harness.errors import HarnessError
from harness.training.trainable import TrainableMethod

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: images used to fix the polarity at each checkpoint, and the border band they are read on
POLARITY_IMAGES = 16
POLARITY_BAND = 1 / 16


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


class Sempart(TrainableMethod):
    name = "sempart"
    description = "Sempart head on frozen features: NCut + graph-TV, coarse and fine branches (trainable)"
    default_backbone = "dino-vits8"
    default_epochs = 30
    default_batch_size = 8
    default_lr = 1e-4
    crop_consistency = False
    options = (
        Option("checkpoint", None, "trained checkpoint (checkpoint_last.pt of `harness train`)"),
        Option("image_size", 320, "square input size in pixels (a multiple of the backbone stride)"),
        Option("tau", 0.4, "cosine threshold of the feature affinity"),
        Option("eps", 1e-6, "affinity below the threshold, and the mask clamp"),
        Option("w_ncut", 1.0, "weight of the coarse NCut loss"),
        Option("w_consistency", 1.0, "weight of the coarse/fine consistency MSE"),
        Option("w_fine_tv", 1.0, "weight of the fine (image) graph-TV"),
        Option("w_coarse_tv", 1.0, "weight of the coarse (feature) graph-TV"),
    )

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

        return {"image": sempart_augment(sample.image, rng, self.config["image_size"])}

    def loss_weights(self) -> dict[str, float]:
        c = self.config
        return {"ncut": c["w_ncut"], "consistency": c["w_consistency"], "fine_tv": c["w_fine_tv"],
                "coarse_tv": c["w_coarse_tv"]}

    def forward(self, model, backbone, images):
        """Backbone features and the head's fine and coarse masks (probabilities)."""
        import torch

        with torch.no_grad():
            features = backbone.features(images).float()
        fine, coarse = model(features, normalize_image(images))
        return features, torch.sigmoid(fine.float()), torch.sigmoid(coarse.float())

    def training_losses(self, model, backbone, batch, generator) -> dict:
        from harness.methods import sempart_losses as L

        images = batch["image"]
        features, fine, coarse = self.forward(model, backbone, images)
        tau, eps = self.config["tau"], self.config["eps"]
        return {
            "ncut": L.ncut_loss(coarse, L.cosine_affinity(features, tau, eps), eps),
            "consistency": L.consistency_loss(fine, coarse),
            "fine_tv": L.image_tv_loss(fine, normalize_image(images)),
            "coarse_tv": L.feature_tv_loss(coarse, features, tau, eps),
        }

    def checkpoint_extras(self, model, backbone, dataset, ids, device) -> dict[str, Any]:
        """Fix the polarity once: foreground is the side that does not hold the border."""
        import torch

        from harness.training.augment import resize_square

        was_training = model.training
        model.eval()
        with torch.no_grad():
            images = torch.stack([resize_square(dataset.load(i).image, self.config["image_size"])
                                  for i in ids[:POLARITY_IMAGES]]).to(device)
            _, fine, _ = self.forward(model, backbone, images)
        model.train(was_training)
        border = border_mean(fine)
        return {"polarity": -1 if border > 0.5 else 1, "polarity_border_mean": border}

    # ---- evaluation -------------------------------------------------------------------
    def _checkpoint_path(self):
        path = self.config["checkpoint"]
        if not path:
            raise HarnessError(
                f"method {self.name!r} needs a trained checkpoint: train one with "
                f"`harness train --method {self.name} --dataset duts_tr --data-root DIR`, then pass "
                f"--method-args checkpoint=<out>/checkpoint_last.pt"
            )
        return path

    def _checkpoint(self) -> dict:
        """The checkpoint, loaded once (the runner asks for its backbone before setup)."""
        if getattr(self, "_ckpt", None) is None:
            from harness.training.checkpoint import load_checkpoint

            self._ckpt = load_checkpoint(self._checkpoint_path(), (self.name,))
        return self._ckpt

    def cache_token(self) -> dict:
        from harness.training.checkpoint import file_token

        return {"checkpoint": file_token(self._checkpoint_path())}

    def preferred_backbone(self) -> str | None:
        """The backbone the checkpoint was trained with."""
        return self._checkpoint()["backbone"] if self.config["checkpoint"] else self.default_backbone

    def preferred_backbone_args(self) -> dict:
        """The backbone options the checkpoint was trained with (e.g. stride=8)."""
        return dict(self._checkpoint()["config"]["backbone"]["config"]) if self.config["checkpoint"] else {}

    def setup(self, context: RunContext) -> None:
        from harness.methods.sempart_model import SempartHead
        from harness.training.checkpoint import check_backbone

        ckpt = self._checkpoint()
        backbone = context.backbone
        check_backbone(ckpt, backbone)
        self.device = context.device
        backbone.load(self.device)
        self.model = SempartHead(backbone.feature_dim, backbone.stride)
        self.model.load_state_dict(ckpt["model"])
        self.model.to(self.device).eval()
        self.backbone = backbone
        self.polarity = int(ckpt.get("polarity", 1))
        self.image_size = int(ckpt["config"]["method"]["config"]["image_size"])

    def predict_batch(self, samples):
        import torch
        import torch.nn.functional as F

        from harness.training.augment import resize_square

        images = torch.stack([resize_square(s.image, self.image_size) for s in samples]).to(self.device)
        with torch.no_grad():
            _, fine, _ = self.forward(self.model, self.backbone, images)
            if self.polarity < 0:
                fine = 1 - fine
            out = []
            for sample, mask in zip(samples, fine):
                h, w = sample.image.shape[:2]
                full = F.interpolate(mask[None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
                out.append(Prediction(full.clamp(0, 1).cpu().numpy().astype(np.float32)))
        return out

    def predict(self, sample: Sample) -> Prediction:
        return self.predict_batch([sample])[0]


class SempartCrop(Sempart):
    name = "sempart-crop"
    description = "Sempart + multi-scale crop consistency with a guided-filtered teacher (Two Tricks, trick 2)"
    crop_consistency = True
    options = Sempart.options + (
        Option("w_crop_mse", 0.01, "weight of the crop-consistency MSE"),
        Option("w_crop_ncut", 0.01, "weight of the NCut on the crop's coarse mask"),
        Option("gf_radius", 9, "guided-filter radius of the teacher"),
        Option("gf_eps", 1e-3, "guided-filter eps of the teacher"),
    )

    def loss_weights(self) -> dict[str, float]:
        return {**super().loss_weights(), "crop_mse": self.config["w_crop_mse"], "crop_ncut": self.config["w_crop_ncut"]}

    def crop_views(self, model, backbone, images, fine, generator) -> dict:
        """The crop-consistency pair: the student's zoomed crop and the detached teacher.

        The same random half-size region of the image and of the fine mask is zoomed x2; the
        network's fine mask on the zoomed image, guided-filtered (guide = the zoomed image) and
        clamped, is the teacher.
        """
        from harness.methods import sempart_losses as L
        from harness.methods.guided_filter import guided_filter

        eps = self.config["eps"]
        corners = L.random_crops(images.shape[0], images.shape[-2], images.shape[-1], generator)
        zoomed = L.crop_and_zoom(images, corners)
        crop_features, crop_fine, crop_coarse = self.forward(model, backbone, zoomed)
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
            "ncut": L.ncut_loss(coarse, L.cosine_affinity(features, tau, eps), eps),
            "consistency": L.consistency_loss(fine, coarse),
            "fine_tv": L.image_tv_loss(fine, normalize_image(images)),
            "coarse_tv": L.feature_tv_loss(coarse, features, tau, eps),
            "crop_mse": (crop["student"] - crop["teacher"]).pow(2).mean(),
            "crop_ncut": L.ncut_loss(crop["coarse"], L.cosine_affinity(crop["features"], tau, eps), eps),
        }
