"""The interface a method implements to be trainable with ``harness train``."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from harness.api import Method, Sample

if TYPE_CHECKING:
    import numpy as np
    import torch


class TrainableMethod(Method):
    """A method whose network is trained by :mod:`harness.training.trainer`.

    The trainer owns the loop (sampling, distribution, AMP, checkpoints, logs); the method
    says what an item is, what the losses are and how they are weighted. A method that declares
    an option named ``pseudo_masks`` receives ``harness train --pseudo-masks SOURCE`` in it.
    """

    trainable: ClassVar[bool] = True
    uses_backbone: ClassVar[bool] = True
    default_epochs: ClassVar[int] = 1
    default_batch_size: ClassVar[int] = 8
    default_lr: ClassVar[float] = 1e-4

    def prepare_training(self, dataset, ids: list[str]) -> None:
        """Check and open what training reads besides the images (e.g. pseudo-masks), on
        every process, before the model is built; raise a clear error for anything missing."""

    def build_model(self, backbone) -> "torch.nn.Module":
        """The trainable network (the backbone stays frozen outside it; a method that fine-tunes
        the encoder puts a copy of ``backbone.model`` inside the network it returns)."""
        raise NotImplementedError

    def make_optimizer(self, parameters, lr: float) -> "torch.optim.Optimizer":
        raise NotImplementedError

    def make_scheduler(self, optimizer, total_steps: int, steps_per_epoch: int | None = None):
        """A per-step learning-rate schedule, or ``None`` for a constant rate (``total_steps``
        optimiser steps in all, ``steps_per_epoch`` of them per epoch)."""
        return None

    def train_item(self, sample: Sample, rng: "np.random.Generator") -> dict[str, "torch.Tensor"]:
        """One augmented training item (tensors that the default collate can stack)."""
        raise NotImplementedError

    def training_losses(self, model, backbone, batch: dict[str, "torch.Tensor"], generator) -> dict[str, "torch.Tensor"]:
        """The unweighted loss terms of one batch (scalars)."""
        raise NotImplementedError

    def loss_weights(self) -> dict[str, float]:
        """Weight of each loss term; the total is their weighted sum."""
        raise NotImplementedError

    def checkpoint_extras(self, model, backbone, dataset, ids: list[str], device: str) -> dict[str, Any]:
        """Values fixed once per checkpoint (e.g. the mask polarity), stored with it."""
        return {}
