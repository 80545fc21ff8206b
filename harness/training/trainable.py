"""The interface a method implements to be trainable with ``harness train``, and the
checkpoint plumbing every trained method shares at evaluation time.

Evaluation (``harness run --method M --method-args checkpoint=FILE``): the checkpoint is read
once (``weights_only=True``, :func:`harness.training.checkpoint.read_checkpoint`), identified by
the sha256 of its bytes (the cache token and, in place of its path, the ``checkpoint`` value of
the method's identity: a copy of the file elsewhere re-uses the cached masks, an edited file
never does), and decides the backbone unless ``--backbone`` is given. A file in a reference code
base's own format is converted by :meth:`TrainableMethod.convert_foreign_checkpoint`.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from harness.api import Method, Sample
from harness.errors import HarnessError

if TYPE_CHECKING:
    import numpy as np
    import torch


class TrainableMethod(Method):
    """A method whose network is trained by :mod:`harness.training.trainer`.

    The trainer owns the loop (sampling, distribution, AMP, checkpoints, logs); the method
    says what an item is, what the losses are and how they are weighted. A method that declares
    an option named ``pseudo_masks`` receives ``harness train --pseudo-masks SOURCE`` in it.

    The backbone is used through :class:`harness.api.Backbone`'s public interface only
    (``features``, ``feature_dim``, ``stride``, ``mean``/``std``, ``family`` and, to fine-tune
    it, ``trainable_network`` and ``network_features``), so any backbone plugin serves.
    """

    trainable: ClassVar[bool] = True
    uses_backbone: ClassVar[bool] = True
    default_epochs: ClassVar[int] = 1
    default_batch_size: ClassVar[int] = 8
    default_lr: ClassVar[float] = 1e-4
    #: the option that holds the trained checkpoint for evaluation
    checkpoint_option: ClassVar[str] = "checkpoint"
    #: arguments besides ``--method``, ``--dataset`` that ``harness train`` needs for this
    #: method, shown by the "needs a trained checkpoint" error (e.g. `` --pseudo-masks RUN_DIR``)
    train_hint: ClassVar[str] = ""

    def prepare_training(self, dataset, ids: list[str]) -> None:
        """Check and open what training reads besides the images (e.g. pseudo-masks), on
        every process, before the model is built; raise a clear error for anything missing."""

    def build_model(self, backbone) -> "torch.nn.Module":
        """The trainable network (the backbone stays frozen outside it; a method that fine-tunes
        the encoder puts ``backbone.trainable_network()``, a copy with the loaded weights, inside
        the network it returns and runs it with ``backbone.network_features``)."""
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

    # ---- evaluation: the checkpoint ------------------------------------------------------
    def checkpoint_path(self) -> Path:
        """The checkpoint option's file, or the error that says how to train one."""
        path = self.config.get(self.checkpoint_option)
        if not path:
            raise HarnessError(
                f"method {self.name!r} needs a trained checkpoint: train one with `harness train --method "
                f"{self.name}{self.train_hint} --dataset duts_tr --data-root DIR`, then pass "
                f"--method-args {self.checkpoint_option}=<out>/checkpoint_last.pt"
            )
        return Path(path)

    def has_checkpoint(self) -> bool:
        return bool(self.config.get(self.checkpoint_option))

    def checkpoint(self) -> dict[str, Any]:
        """The checkpoint, read once: a harness checkpoint of this method, or what
        :meth:`convert_foreign_checkpoint` made of another format (marked ``"foreign": True``).

        Raises
        ------
        HarnessError
            For a missing, unreadable or unsafe file (one that pickles code: refused unread),
            another method's checkpoint, or a file in no format this method reads.
        """
        if getattr(self, "_checkpoint_record", None) is None:
            from harness.training.checkpoint import is_harness_checkpoint, read_checkpoint, validate_checkpoint

            path = self.checkpoint_path()
            payload, digest = read_checkpoint(path)
            if is_harness_checkpoint(payload):
                ckpt = validate_checkpoint(payload, path, (self.name,))
            else:
                ckpt = self.convert_foreign_checkpoint(payload, path)
                if ckpt is None:
                    validate_checkpoint(payload, path)  # raises: not a harness checkpoint
                ckpt = {**ckpt, "foreign": True}
            self.check_checkpoint(ckpt, path)
            self._checkpoint_record = (ckpt, digest)
        return self._checkpoint_record[0]

    def checkpoint_digest(self) -> str:
        """sha256 of the checkpoint file's bytes (those that were loaded)."""
        self.checkpoint()
        return self._checkpoint_record[1]

    def convert_foreign_checkpoint(self, payload: Any, path: Path) -> dict[str, Any] | None:
        """A file saved by a reference code base (already read with ``weights_only=True``) as a
        checkpoint-like dict, or ``None`` when ``payload`` is not in a format this method reads.

        The dict holds ``model`` (the converted state dict), ``backbone`` (the backbone its
        shapes imply), ``backbone_geometry`` (``(feature_dim, stride)`` it needs) and
        ``describes`` (what it is, for messages: "a ... head for 384-channel features at stride
        8"); a method adds what else it needs. Default: no foreign format.
        """
        return None

    def check_checkpoint(self, checkpoint: dict[str, Any], path: Path) -> None:
        """Refuse a loaded checkpoint this version of the method cannot use (one clear error)."""

    def preferred_backbone(self) -> str | None:
        """The backbone the checkpoint was trained with (or that a foreign file implies)."""
        if not self.has_checkpoint():
            return self.default_backbone
        return self.checkpoint()["backbone"]

    def preferred_backbone_args(self) -> dict[str, Any]:
        """The backbone options the checkpoint was trained with (e.g. ``stride=8``)."""
        if not self.has_checkpoint():
            return {}
        return dict(self.checkpoint().get("config", {}).get("backbone", {}).get("config", {}))

    def check_checkpoint_backbone(self, backbone) -> None:
        """Refuse a backbone the checkpoint does not fit: for a harness checkpoint another name,
        options or weights file; for a foreign one, another feature width or stride."""
        from harness.training.checkpoint import check_backbone

        ckpt = self.checkpoint()
        if not ckpt.get("foreign"):
            check_backbone(ckpt, backbone)
            return
        channels, stride = ckpt["backbone_geometry"]
        if (backbone.feature_dim, backbone.stride) != (channels, stride):
            raise HarnessError(
                f"{self.checkpoint_path()} is {ckpt['describes']}; {backbone.name} gives {backbone.feature_dim}-channel "
                f"features at stride {backbone.stride}: pass --backbone {ckpt['backbone']}")

    def configure_for_run(self, evaluators) -> None:
        """Evaluation needs the checkpoint: read it now, so that a missing, unsafe or foreign file
        is the run's first error, before the backbone is resolved."""
        self.checkpoint()

    def cache_token(self) -> dict[str, Any]:
        """The checkpoint's content digest (sha256 of its bytes)."""
        return {"checkpoint": self.checkpoint_digest()}

    def identity(self) -> dict[str, Any]:
        """The options, with the checkpoint's content digest in place of its path: where the
        file lies does not change the masks (the path stays in ``results.json``'s ``spec``)."""
        ident = super().identity()
        if self.has_checkpoint():
            ident["config"][self.checkpoint_option] = f"sha256:{self.checkpoint_digest()}"
        return ident
