"""``harness compare RUN_A RUN_B``: is A's gain over B real? A paired bootstrap over images."""
from __future__ import annotations

import argparse
from pathlib import Path

from harness.cli.base import Command, seed_type


class CompareCommand(Command):
    name = "compare"
    help = "paired bootstrap difference (A - B) of two runs on the same images, with 95% intervals"
    examples = """examples:
  harness compare runs/ecssd-tokencut-effnet-lite0+gf-* runs/ecssd-tokencut-effnet-lite0-*
    +1.2 IoU [0.8, 1.6]     (A - B in points, 95% interval over images)
"""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("run_a", type=Path, metavar="RUN_A")
        parser.add_argument("run_b", type=Path, metavar="RUN_B")
        parser.add_argument("--resamples", type=int, default=4000)
        parser.add_argument("--seed", type=seed_type, default=0, help="bootstrap seed, 0 <= seed < 2**63 (default 0)")

    def run(self, args: argparse.Namespace) -> int:
        from harness.compare import compare_runs, format_comparison
        from harness.errors import HarnessError
        from harness.report import find_runs

        runs = []
        for path in (args.run_a, args.run_b):
            found = find_runs([path], resamples=args.resamples, seed=args.seed)
            if len(found) != 1:
                raise HarnessError(f"{path} holds {len(found)} runs; give one run directory")
            runs.append(found[0])
        a, b = runs
        intervals = compare_runs(a, b, args.resamples, args.seed)  # refuses unpaired runs before printing
        print(f"A = {a.row_label} ({a.path.name})\nB = {b.row_label} ({b.path.name})\n"
              f"A - B on {a.results['counts']['images']} images, 95% paired bootstrap interval "
              f"({args.resamples} resamples):")
        for line in format_comparison(intervals):
            print(f"  {line}")
        return 0
