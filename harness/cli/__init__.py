"""The ``harness`` command line: one class per subcommand, argparse only.

Every :class:`~harness.errors.HarnessError` becomes one line on stderr and exit status 2
(with ``-v``, preceded by the traceback of the error that caused it, if any).
"""
from __future__ import annotations

import argparse
import logging
import sys
import traceback

from harness.cli.base import Command
from harness.cli.compare_cmd import CompareCommand
from harness.cli.list_cmd import ListCommand
from harness.cli.report_cmd import ReportCommand
from harness.cli.run_cmd import RunCommand
from harness.cli.suite_cmd import SuiteCommand
from harness.cli.train_cmd import TrainCommand
from harness.errors import HarnessError

COMMANDS: list[type[Command]] = [ListCommand, RunCommand, TrainCommand, ReportCommand, CompareCommand, SuiteCommand]


class _VersionAction(argparse.Action):
    """``--version``: the harness and every plugin distribution, with versions."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, help="show versions of the harness and its plugins")

    def __call__(self, parser, namespace, values, option_string=None):
        from harness import __version__
        from harness.registry import get_registry

        registry = get_registry()
        print(f"harness {__version__}")
        sources = sorted({entry.source for kind in ("dataset", "backbone", "method", "post", "evaluator")
                          for entry in registry.entries(kind)})
        for source in sources:
            print(f"  plugins from {source}")
        for broken in registry.broken:
            print(f"  BROKEN {broken.entry_point} from {broken.source}: {broken.reason}")
        parser.exit()


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help strings are plain text: a ``%`` (as in "95% intervals") is printed, never %-formatted."""

    def _get_help_string(self, action: argparse.Action) -> str:
        # argparse applies `help % params`; doubling every % makes any help string safe
        return super()._get_help_string(action).replace("%", "%%")


def build_parser() -> argparse.ArgumentParser:
    """The ``harness`` parser with one subparser per command.

    Returns
    -------
    argparse.ArgumentParser
        Help of every level prints any help string verbatim (``%`` included).
    """
    parser = argparse.ArgumentParser(
        prog="harness",
        description="Benchmark unsupervised image segmentation methods under one protocol.",
        epilog="Run `harness COMMAND --help` for a command's options and examples.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action=_VersionAction)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command_cls in COMMANDS:
        command = command_cls()
        child = sub.add_parser(
            command.name,
            help=command.help,
            description=command.help,
            epilog=command.examples,
            formatter_class=_HelpFormatter,
        )
        command.add_arguments(child)
        child.set_defaults(handler=command)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one ``harness`` command.

    Parameters
    ----------
    argv : list of str, optional
        The arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status: 0 done, 1 unexpected error, 2 bad input or no command, 130 interrupted.
        ``--help``, ``--version`` and argparse's usage errors exit through ``SystemExit``.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler.run(args) or 0)
    except HarnessError as exc:
        if args.verbose and exc.__cause__ is not None:  # e.g. a plugin's bug wrapped into a clear message
            traceback.print_exception(exc.__cause__, file=sys.stderr)
        print(f"harness {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"harness {args.command}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug in the harness or a plugin: one line, traceback only with -v
        if args.verbose:
            raise
        print(f"harness {args.command}: unexpected {type(exc).__name__}: {exc} "
              f"(run again with -v for the traceback)", file=sys.stderr)
        return 1
