"""``harness suite``: plan or run a suite of train / run / distil jobs (a paper's every table)."""
from __future__ import annotations

import argparse
from pathlib import Path

from harness.cli.base import Command


def _input(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=PATH (e.g. --input move=/data/move_masks)")
    return name.strip(), path.strip()


class SuiteCommand(Command):
    name = "suite"
    help = "plan or run a suite: every train, run and distillation job of a paper's tables, then the report"
    examples = """examples:
  harness suite plan two-tricks                      # every job, its command, dependencies and state
  harness suite run smoke --out suites/smoke         # the same shape on the synthetic and sample data
  harness suite run two-tricks --input move=/data/MOVE --input found=/data/FOUND
  harness suite run two-tricks --only 'tokencut-*'   # matching jobs and what they need
  harness suite run two-tricks --dry-run
  harness suite run two-tricks --launcher slurm --partition gpu --gpus-per-job 1 --timeout 720

A suite is a TOML file (or a built-in name: two-tricks, smoke); jobs land in OUT/train/<job>/
and OUT/runs/<job>/, the report in OUT/report.md. Running it again runs only what is not
done; an interrupted call resumes.
"""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from harness.cli import _HelpFormatter  # loaded: build_parser calls this

        sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
        for action, text in (("plan", "print every job in order: its command, dependencies and state"),
                             ("run", "run what is not done, in dependency order, then write the report")):
            child = sub.add_parser(action, help=text, description=text, epilog=self.examples,
                                   formatter_class=_HelpFormatter)
            child.add_argument("suite", metavar="FILE|NAME", help="a suite .toml file or a built-in suite's name")
            child.add_argument("--out", type=Path, help="the suite's output folder (default suites/<suite name>)")
            child.add_argument("--input", action="append", type=_input, default=[], metavar="NAME=PATH",
                               help="a folder or file the suite's [inputs] names (else its environment variable)")
            child.add_argument("--only", action="append", metavar="PATTERN",
                               help="only jobs whose name matches this glob (comma-separated or repeated), "
                                    "with what they depend on that is not done")
            if action == "run":
                child.add_argument("--dry-run", action="store_true", help="print what would run; run nothing")
                child.add_argument("--skip-missing-inputs", action="store_true",
                                   help="leave out the jobs whose inputs are not given instead of refusing")
                child.add_argument("--launcher", default="local", help="local (default: in this process) or slurm")
                child.add_argument("--gpus-per-job", type=int, metavar="N", help="slurm: GPUs of each job")
                child.add_argument("--partition", metavar="P", help="slurm: the partition")
                child.add_argument("--timeout", type=int, metavar="MIN", help="slurm: each job's time limit, minutes")

    def run(self, args: argparse.Namespace) -> int:
        from harness.errors import HarnessError
        from harness.suites.plan import make_plan
        from harness.suites.run import print_plan, run_suite, select
        from harness.suites.spec import load_suite

        suite = load_suite(args.suite)
        inputs: dict[str, str] = {}
        for name, path in args.input:
            if name in inputs:
                raise HarnessError(f"--input {name}=...: given twice; give each input once")
            inputs[name] = path
        plan = make_plan(suite, args.out or Path("suites") / suite.name, inputs)
        if args.action == "plan":
            print_plan(plan, select(plan, args.only))
            return 0
        options = {"gpus_per_job": args.gpus_per_job, "partition": args.partition, "timeout_min": args.timeout}
        return run_suite(plan, only=args.only, dry_run=args.dry_run, launcher=args.launcher,
                         launcher_options=options, skip_missing_inputs=args.skip_missing_inputs)
