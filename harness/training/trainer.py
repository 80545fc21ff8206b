"""``harness train``: the training loop every trainable method shares.

Determinism: the epoch order is drawn from (seed, epoch), each item's augmentation from
(seed, epoch, image index) and each step's extra randomness from (seed, epoch, step, rank), so
a run resumed from a checkpoint continues exactly as an uninterrupted one would, whatever the
number of data-loading workers. Under torchrun the model is wrapped in
DistributedDataParallel, each rank takes its share of every global batch, and rank 0 writes
checkpoints and logs.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.cache import stable_hash
from harness.errors import HarnessError
from harness.registry import Registry, get_registry
from harness.runner import resolve_device, seed_everything
from harness.storage import atomic_write_json, atomic_write_text, check_writable
from harness import distributed
from harness.training.checkpoint import load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)
LAST = "checkpoint_last.pt"


@dataclass
class TrainSpec:
    """Everything ``harness train`` was asked to do."""

    method: str
    dataset: str
    data_root: str | None = None
    dataset_args: dict[str, Any] = field(default_factory=dict)
    method_args: dict[str, Any] = field(default_factory=dict)
    backbone: str | None = None
    weights: str | None = None
    backbone_args: dict[str, Any] = field(default_factory=dict)
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    seed: int = 0
    out: Path | None = None
    resume: bool = False
    device: str = "auto"
    workers: int | None = None
    limit: int | None = None
    amp: bool = True
    progress: bool | None = None
    #: pseudo-mask source (run directory, mask folder or COCO-RLE JSON) for methods with a
    #: ``pseudo_masks`` option
    pseudo_masks: str | None = None


class _Items:
    """A torch-style dataset of augmented training items for one epoch."""

    def __init__(self, dataset, method, ids: list[str], seed: int):
        self.dataset, self.method, self.ids, self.seed = dataset, method, ids, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int):
        rng = np.random.default_rng([self.seed, self.epoch, index])
        return self.method.train_item(self.dataset.load(self.ids[index]), rng)


def _step_seed(*parts: int) -> int:
    return int(stable_hash(list(parts), 15), 16)


class Trainer:
    def __init__(self, spec: TrainSpec, registry: Registry | None = None):
        self.spec = spec
        reg = registry or get_registry()
        method_args = dict(spec.method_args)
        if spec.pseudo_masks is not None:
            takes = [e.name for e in reg.entries("method") if any(o.name == "pseudo_masks" for o in e.cls.options)]
            if spec.method not in takes:
                raise HarnessError(f"method {spec.method!r} does not train on pseudo-masks; drop --pseudo-masks "
                                   f"(methods that do: {', '.join(takes) or 'none'})")
            method_args["pseudo_masks"] = str(spec.pseudo_masks)
        self.method = reg.create("method", spec.method, method_args)
        if not getattr(self.method, "trainable", False):
            trainable = [e.name for e in reg.entries("method") if getattr(e.cls, "trainable", False)]
            raise HarnessError(f"method {spec.method!r} cannot be trained; trainable methods: {', '.join(trainable)}")
        self.dataset = reg.create("dataset", spec.dataset, spec.dataset_args, root=spec.data_root)
        backbone_name = spec.backbone or self.method.default_backbone
        self.backbone = reg.create("backbone", backbone_name, spec.backbone_args, weights=spec.weights)
        self.epochs = spec.epochs if spec.epochs is not None else self.method.default_epochs
        self.batch_size = spec.batch_size or self.method.default_batch_size
        self.lr = spec.lr if spec.lr is not None else self.method.default_lr
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise HarnessError("--epochs and --batch-size must be positive and --lr above 0")
        if spec.limit is not None and spec.limit < 1:
            raise HarnessError(f"--limit {spec.limit}: give a positive number of images")

    def config(self) -> dict[str, Any]:
        """What determines the trained weights (not the number of epochs: runs can be extended)."""
        return {
            "method": self.method.identity(),
            "backbone": self.backbone.identity(),
            "dataset": self.dataset.identity(),
            "batch_size": self.batch_size,
            "lr": self.lr,
            "seed": self.spec.seed,
            "limit": self.spec.limit,
        }

    def out_dir(self, config: dict[str, Any]) -> Path:
        if self.spec.out is not None:
            return Path(self.spec.out)
        name = f"{self.method.name}-{self.dataset.name}-{self.backbone.name}-{stable_hash(config, 8)}"
        return Path("runs") / "train" / name

    def run(self) -> Path:
        import torch

        spec = self.spec
        device = resolve_device(spec.device)
        info = distributed.init(device)
        device = distributed.local_device(device, info)
        ids = self.dataset.ids()[: spec.limit] if spec.limit else self.dataset.ids()
        if self.batch_size % info.world:
            raise HarnessError(f"--batch-size {self.batch_size} must be divisible by the {info.world} processes")
        steps = len(ids) // self.batch_size
        if steps == 0:
            raise HarnessError(f"{len(ids)} training images are fewer than one batch of {self.batch_size}")
        self.method.prepare_training(self.dataset, ids)
        config = self.config()
        out = self.out_dir(config)
        if info.is_main:
            check_writable(out)
        seed_everything(spec.seed)
        self.backbone.load(device)
        model = self.method.build_model(self.backbone).to(device)
        optimizer = self.method.make_optimizer(model.parameters(), self.lr)
        scheduler = self.method.make_scheduler(optimizer, steps * self.epochs, steps_per_epoch=steps)
        history: list[dict[str, float]] = []
        start = 0
        if spec.resume and (out / LAST).exists():
            ckpt = load_checkpoint(out / LAST, (self.method.name,))
            if ckpt["config"] != _jsonable(config):
                raise HarnessError(f"{out / LAST} was trained with another configuration; resume with the same options")
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            if scheduler is not None and ckpt.get("scheduler"):
                scheduler.load_state_dict(ckpt["scheduler"])
            start, history = ckpt["epoch"], ckpt["history"]
            log.info("resuming %s at epoch %d", out, start)
        elif (out / LAST).exists():
            raise HarnessError(f"{out} already holds a training run; pass --resume to continue it or choose another --out")
        if start >= self.epochs:
            log.warning("%s has already trained %d epochs", out, start)
        wrapped = model
        if info.enabled:
            from torch.nn.parallel import DistributedDataParallel

            wrapped = DistributedDataParallel(model, device_ids=[info.local_rank] if device.startswith("cuda") else None)
        items = _Items(self.dataset, self.method, ids, spec.seed)
        per_rank = self.batch_size // info.world
        workers = spec.workers if spec.workers is not None else (4 if device.startswith("cuda") else 0)
        amp = spec.amp and device.startswith("cuda")
        weights = self.method.loss_weights()
        for epoch in range(start, self.epochs):
            t0 = time.perf_counter()
            items.epoch = epoch
            order = np.random.default_rng([spec.seed, epoch]).permutation(len(ids))[: steps * self.batch_size]
            shards = [order[s * self.batch_size + info.rank * per_rank :][:per_rank].tolist() for s in range(steps)]
            loader = torch.utils.data.DataLoader(items, batch_sampler=shards, num_workers=workers,
                                                 pin_memory=device.startswith("cuda"))
            model.train()
            sums: dict[str, float] = {}
            from tqdm.auto import tqdm

            show = info.is_main and spec.progress is not False
            bar = tqdm(loader, total=steps, desc=f"epoch {epoch + 1}/{self.epochs}", disable=None if show else True)
            for step, batch in enumerate(bar):
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                generator = torch.Generator().manual_seed(_step_seed(spec.seed, epoch, step, info.rank))
                with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=amp):
                    terms = self.method.training_losses(wrapped, self.backbone, batch, generator)
                total = sum(weights[k] * v.float() for k, v in terms.items())
                if not torch.isfinite(total):
                    raise HarnessError(f"the training loss became {total.item()} at epoch {epoch + 1}, step {step + 1}; lower --lr")
                optimizer.zero_grad(set_to_none=True)
                total.backward()
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                for k, v in {**{k: v.item() for k, v in terms.items()}, "total": total.item()}.items():
                    sums[k] = sums.get(k, 0.0) + v
                bar.set_postfix({k: f"{v / (step + 1):.4f}" for k, v in sums.items()})
            bar.close()
            means = distributed.mean_across_ranks({k: v / steps for k, v in sums.items()}, info)
            distributed.sync_buffers(model, info)
            digests = distributed.gather_to_main(_state_digest(model), info)
            if info.is_main and len(set(digests)) > 1:
                raise HarnessError(f"the processes' weights diverged at epoch {epoch + 1}: {digests}")
            extras = self.method.checkpoint_extras(model, self.backbone, self.dataset, ids, device) if info.is_main else {}
            row = {"epoch": epoch + 1, **means, "seconds": round(time.perf_counter() - t0, 3)}
            history.append(row)
            if info.is_main:
                payload = {
                    "method": self.method.name,
                    "method_version": self.method.version,
                    "config": _jsonable(config),
                    "backbone": self.backbone.name,
                    "weights_digest": self.backbone.weights_digest,
                    "epoch": epoch + 1,
                    "history": history,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    **extras,
                }
                save_checkpoint(out / f"checkpoint_epoch{epoch + 1:03d}.pt", payload)
                save_checkpoint(out / LAST, payload)
                _write_log(out, history)
                atomic_write_json(out / "train_config.json", {"config": config, "epochs": self.epochs,
                                                              "world_size": info.world, "rank_weight_digests": digests, **{
                    k: v for k, v in extras.items() if isinstance(v, (int, float, str))}})
            distributed.barrier(info)
        return out


def _state_digest(model) -> str:
    """A digest of every parameter and buffer (identical on all ranks when DDP is in sync)."""
    import hashlib

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _jsonable(obj: Any) -> Any:
    import json

    return json.loads(json.dumps(obj, default=str))


def _write_log(out: Path, history: list[dict[str, float]]) -> None:
    import pandas as pd

    atomic_write_text(out / "losses.csv", pd.DataFrame(history).to_csv(index=False, float_format="%.8g"))


def train(spec: TrainSpec, registry: Registry | None = None) -> Path:
    """Train a method; returns the output folder (checkpoints, losses.csv)."""
    return Trainer(spec, registry).run()
