"""``harness run``: score a method (+ post-processors) on a dataset."""
from __future__ import annotations

import argparse
from pathlib import Path

from harness.cli.base import Command, seed_type


class RunCommand(Command):
    name = "run"
    help = "run a method on a dataset, post-process its masks and score them"
    examples = """examples:
  harness run --method center-prior --dataset synthetic
  harness run --method tokencut --backbone effnet-lite0 --post gf --dataset ecssd --data-root data/ECSSD
  harness run --method masks --method-args dir=preds/ --dataset ecssd --data-root data/ECSSD
  harness run --method tokencut --dataset voc12 --data-root data/VOC2012 --eval corloc

Masks are cached (see --cache-dir); the same command again re-uses them, and an
interrupted run resumes where it stopped.
"""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--method", required=True, help="method plugin (harness list methods)")
        parser.add_argument("--dataset", required=True, help="dataset plugin (harness list datasets)")
        parser.add_argument("--data-root", help="the dataset's folder (else $HARNESS_DATA_<NAME>)")
        parser.add_argument("--post", action="append", default=[], metavar="POST",
                            help="post-processor; repeat to chain them in order")
        parser.add_argument("--eval", action="append", dest="evaluators", metavar="EVALUATOR",
                            help="evaluator; repeat for several (default: the dataset's)")
        parser.add_argument("--backbone", help="backbone plugin for methods that use one")
        parser.add_argument("--weights", help="local weights file for the backbone")
        parser.add_argument("--backbone-args", default="", metavar="K=V,...",
                            help="backbone options, e.g. features=queries (harness list backbones --options)")
        parser.add_argument("--method-args", default="", metavar="K=V,...",
                            help="method options, e.g. tau=0.3,eps=1e-5 (harness list methods --options); "
                                 "quote a value that holds a comma: --method-args \"dir='a,b'\"")
        parser.add_argument("--post-args", action="append", default=[], metavar="K=V,...",
                            help="post-processor options; one per --post, in the same order")
        parser.add_argument("--dataset-args", default="", metavar="K=V,...", help="dataset options")
        parser.add_argument("--protocol", default="harness", metavar="NAME",
                            help="evaluation protocol: harness (default: native resolution) or segtricks "
                                 "(segmentation-tricks' Resize(335) + CenterCrop(320), soft ground truth)")
        parser.add_argument("--limit", type=int, help="only the first N images (smoke runs)")
        parser.add_argument("--seed", type=seed_type, default=0, help="random seed, 0 <= seed < 2**63 (default 0)")
        parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
        parser.add_argument("--batch-size", type=int, default=1)
        parser.add_argument("--out", type=Path, default=Path("runs"), help="parent of run directories")
        parser.add_argument("--name", help="run directory name (default: derived from the config)")
        parser.add_argument("--cache-dir", type=Path, help="cache folder (default $HARNESS_CACHE or ~/.cache/harness)")
        parser.add_argument("--threads", type=int, help="CPU threads for torch in the main process (default: a quarter of the cores, at least one, whatever --workers is)")
        parser.add_argument("--workers", type=int, metavar="N",
                            help="worker processes for the per-image work (eigen solves, post chain, PNG and cache "
                                 "writes, evaluation) while this process runs the network; 0: everything in one "
                                 "process, one image after another (default: the cores left by the main process's "
                                 "--threads, at least one); results are identical for every N")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def run(self, args: argparse.Namespace) -> int:
        from harness.run_files import format_metrics_table
        from harness.runner import run
        from harness.throughput import bottleneck_line

        spec = spec_from_args(args)
        result = run(spec)
        if not result.results:  # a non-zero rank under torchrun: rank 0 reports
            return 0
        counts = result.results["counts"]
        if result.metrics:
            print(format_metrics_table(result.metrics))
        else:
            print("no ground truth in this dataset: masks computed and cached, nothing scored")
        print(f"\n{counts['images']} images ({counts.get('n_cached', 0)} masks from the cache)")
        print(f"run directory: {result.run_dir}")
        print(bottleneck_line(result.results["throughput"]))
        return 0


def spec_from_args(args: argparse.Namespace):
    """The :class:`~harness.runner.RunSpec` of parsed ``harness run`` arguments (also what
    ``harness suite`` compares with a finished run's recorded request)."""
    from harness.options import parse_kv
    from harness.runner import RunSpec

    return RunSpec(
        method=args.method,
        dataset=args.dataset,
        posts=list(args.post),
        post_args=[parse_kv(text, "--post-args") for text in args.post_args],
        evaluators=args.evaluators,
        data_root=args.data_root,
        backbone=args.backbone,
        weights=args.weights,
        backbone_args=parse_kv(args.backbone_args, "--backbone-args"),
        method_args=parse_kv(args.method_args, "--method-args"),
        dataset_args=parse_kv(args.dataset_args, "--dataset-args"),
        limit=args.limit,
        seed=args.seed,
        device=args.device,
        batch_size=args.batch_size,
        out=args.out,
        name=args.name,
        cache_dir=args.cache_dir,
        progress=False if args.no_progress else None,
        threads=args.threads,
        protocol=args.protocol,
        workers=args.workers,
    )
