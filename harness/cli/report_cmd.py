"""``harness report``: markdown tables (with bootstrap intervals) and figures from run directories."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from harness.cli.base import Command, seed_type


class ReportCommand(Command):
    name = "report"
    help = "write the comparison tables (markdown, 95% intervals) and figures of one or more runs"
    examples = """examples:
  harness report runs/                                  # print every table of every run under runs/
  harness report runs/ -o reports/table1.md             # write them, with figures in reports/table1_figures/
  harness report runs/ --layout post -o reports/post.md # one table: method x none / GF / BF
  harness report runs/ --reference published.csv        # published numbers beside the measured ones
  harness report runs/ --reference two-tricks           # the Two Tricks paper's Tables 1-5 (shipped), with footnotes
  harness report runs/ -o r.md --figure-run ecssd-tokencut-effnet-lite0-1a2b3c4d   # rank grid images by this run

published.csv columns: method,dataset,metric,value[,backbone,post,preset,protocol], e.g.
  tokencut,ecssd,iou,0.712,dino-vits16,
  tokencut,ecssd,iou,0.772,dino-vits16,bs
"""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("paths", nargs="+", metavar="RUN_DIR_OR_PARENT")
        parser.add_argument("-o", "--output", type=Path, help="markdown file to write (default: print)")
        parser.add_argument("--title", default="Results", help="the report's heading")
        parser.add_argument("--layout", default="all", choices=["all", "saliency", "corloc", "ablation", "post"])
        parser.add_argument("--reference", metavar="NAME_OR_CSV",
                            help="published numbers to show beside the measured ones: a shipped paper's "
                                 "(two-tricks) or a CSV file")
        parser.add_argument("--no-intervals", action="store_true", help="omit the bootstrap intervals")
        parser.add_argument("--resamples", type=int, default=4000, help="bootstrap resamples (default 4000)")
        parser.add_argument("--seed", type=seed_type, default=0, help="bootstrap seed, 0 <= seed < 2**63 (default 0)")
        parser.add_argument("--figures", type=Path, help="folder for figures (default <output>_figures/ with -o)")
        parser.add_argument("--no-figures", action="store_true", help="no figures")
        parser.add_argument("--figure-run", help="run (directory name or row label) that ranks the grid's images")
        parser.add_argument("--figure-ids", help="comma-separated image ids for the grid instead of best/median/worst")
        parser.add_argument("--grid-datasets", help="comma-separated datasets that get a qualitative grid (default all; "
                            "leave out datasets whose images you may not redistribute)")

    def run(self, args: argparse.Namespace) -> int:
        from harness.errors import HarnessError
        from harness.published import resolve_reference
        from harness.report import find_runs, render_report
        from harness.storage import atomic_write_text

        if args.resamples < 100:
            raise HarnessError(f"--resamples {args.resamples}: use at least 100 (a few thousand is usual)")
        reference = resolve_reference(args.reference) if args.reference else None  # a bad name fails first
        runs = find_runs(args.paths, resamples=args.resamples, seed=args.seed)
        figure_dir = args.figures
        if figure_dir is None and args.output is not None:
            figure_dir = args.output.with_name(args.output.stem + "_figures")
        figures = []
        if figure_dir is not None and not args.no_figures:
            from harness.figures import qualitative_figures, size_curves

            ids = [i.strip() for i in args.figure_ids.split(",")] if args.figure_ids else None
            grid_datasets = {d.strip() for d in args.grid_datasets.split(",")} if args.grid_datasets else None
            grid_runs = [r for r in runs if grid_datasets is None or r.dataset in grid_datasets]
            made, skipped = qualitative_figures(grid_runs, figure_dir, args.figure_run, ids)
            made += size_curves(runs, figure_dir)
            base = args.output.parent if args.output else Path.cwd()
            figures = [(caption, os.path.relpath(path, base)) for caption, path in made]
            for note in skipped:
                print(f"note: {note}")
        text = render_report(runs, title=args.title, layout=args.layout, reference=reference,
                             intervals=not args.no_intervals, figures=figures)
        if args.output:
            atomic_write_text(args.output, text)
            print(f"wrote {args.output}" + (f" and {len(figures)} figures in {figure_dir}" if figures else ""))
        else:
            print(text)
        return 0
