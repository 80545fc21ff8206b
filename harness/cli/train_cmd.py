"""``harness train``: train a trainable method (Sempart, Sempart + crop consistency, ...)."""
from __future__ import annotations

import argparse
from pathlib import Path

from harness.cli.base import Command, seed_type


class TrainCommand(Command):
    name = "train"
    help = "train a method's network on a dataset's images (checkpoints + loss log)"
    examples = """examples:
  harness train --method sempart --dataset duts_tr --data-root data/DUTS-TR --backbone dino-vits8 --weights dino_deitsmall8_pretrain.pth
  harness train --method sempart-crop --dataset ecssd --data-root data/ECSSD --backbone effnet-lite0 --epochs 2 --out runs/train/demo
  harness train ... --out runs/train/demo --resume          # continue an interrupted run exactly
  torchrun --nproc_per_node=2 -m harness train ...           # DistributedDataParallel
  harness train --method selfmask --pseudo-masks runs/duts_tr-tokencut-... --dataset duts_tr --data-root data/DUTS-TR

Then evaluate the last checkpoint:
  harness run --method sempart --method-args checkpoint=runs/train/demo/checkpoint_last.pt --dataset ecssd ...
"""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--method", required=True, help="a trainable method (sempart, sempart-crop, ...)")
        parser.add_argument("--dataset", required=True, help="any dataset plugin with images")
        parser.add_argument("--data-root", help="the dataset's folder")
        parser.add_argument("--dataset-args", default="", metavar="K=V,...")
        parser.add_argument("--method-args", default="", metavar="K=V,...",
                            help="method options (loss weights, ...); "
                                 "quote a value that holds a comma: --method-args \"dir='a,b'\"")
        parser.add_argument("--pseudo-masks", metavar="SOURCE",
                            help="training masks for distillation (selfmask): a `harness run` directory on the "
                                 "training dataset, a folder of mask images, or a COCO-RLE JSON keyed by file name")
        parser.add_argument("--backbone", help="frozen backbone (default: the method's)")
        parser.add_argument("--weights", help="local weights file for the backbone")
        parser.add_argument("--backbone-args", default="", metavar="K=V,...", help="backbone options (e.g. stride=8)")
        parser.add_argument("--epochs", type=int, help="number of epochs (default: the method's recipe)")
        parser.add_argument("--batch-size", type=int, help="global batch size (split over processes)")
        parser.add_argument("--lr", type=float, help="learning rate (default: the method's recipe)")
        parser.add_argument("--seed", type=seed_type, default=0, help="random seed, 0 <= seed < 2**63 (default 0)")
        parser.add_argument("--limit", type=int, help="train on the first N images only")
        parser.add_argument("--out", type=Path, help="output folder (default runs/train/<derived name>)")
        parser.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint_last.pt")
        parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
        parser.add_argument("--workers", type=int, help="data-loading processes (default 4 on GPU, 0 on CPU)")
        parser.add_argument("--no-amp", action="store_true", help="no bfloat16 autocast on the GPU")
        parser.add_argument("--no-progress", action="store_true")

    def run(self, args: argparse.Namespace) -> int:
        from harness.options import parse_kv
        from harness.training.trainer import TrainSpec, train

        spec = TrainSpec(
            method=args.method, dataset=args.dataset, data_root=args.data_root,
            dataset_args=parse_kv(args.dataset_args, "--dataset-args"),
            method_args=parse_kv(args.method_args, "--method-args"),
            backbone=args.backbone, weights=args.weights,
            backbone_args=parse_kv(args.backbone_args, "--backbone-args"), epochs=args.epochs, batch_size=args.batch_size,
            lr=args.lr, seed=args.seed, limit=args.limit, out=args.out, resume=args.resume, device=args.device,
            workers=args.workers, amp=not args.no_amp, progress=False if args.no_progress else None,
            pseudo_masks=args.pseudo_masks,
        )
        out = train(spec)
        from harness.distributed import from_environment

        if from_environment().is_main:
            print(f"checkpoints and losses.csv in {out}")
            print(f"evaluate: harness run --method {args.method} --method-args checkpoint={out / 'checkpoint_last.pt'} "
                  f"--dataset DATASET --data-root DIR")
        return 0
