"""``harness report``: markdown tables from run directories."""
from __future__ import annotations

import argparse
from pathlib import Path

from harness.cli.base import Command


class ReportCommand(Command):
    name = "report"
    help = "write the comparison tables (markdown) of one or more runs"
    examples = """examples:
  harness report runs/                         # print the tables of every run under runs/
  harness report runs/ -o reports/table1.md    # write them to a file
  harness report runs/ecssd-tokencut-* runs/ecssd-sempart-*
"""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("paths", nargs="+", metavar="RUN_DIR_OR_PARENT")
        parser.add_argument("-o", "--output", type=Path, help="markdown file to write (default: print)")
        parser.add_argument("--title", default="Results", help="the report's heading")

    def run(self, args: argparse.Namespace) -> int:
        from harness.report import find_runs, render_report
        from harness.storage import atomic_write_text

        text = render_report(find_runs(args.paths), title=args.title)
        if args.output:
            atomic_write_text(args.output, text)
            print(f"wrote {args.output}")
        else:
            print(text)
        return 0
