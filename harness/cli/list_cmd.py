"""``harness list``: every plugin with its description, source and status (no torch import)."""
from __future__ import annotations

import argparse

from harness.cli.base import Command
from harness.registry import KINDS, PLURALS, get_registry


class ListCommand(Command):
    name = "list"
    help = "list the available plugins: datasets, backbones, methods, posts, evaluators"
    examples = """examples:
  harness list                 # everything
  harness list methods         # one kind
  harness list posts --options # with each plugin's options
"""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("kind", nargs="?", choices=sorted(PLURALS), help="only this kind of plugin")
        parser.add_argument("--options", action="store_true", help="show each plugin's options")

    def run(self, args: argparse.Namespace) -> int:
        from tabulate import tabulate

        registry = get_registry()
        kinds = [PLURALS[args.kind]] if args.kind else list(KINDS)
        for kind in kinds:
            rows = []
            for entry in registry.entries(kind):
                tags = entry.cls.tags() if entry.cls is not None else []
                description = entry.description + (f" [{', '.join(tags)}]" if tags else "")
                rows.append([entry.name, description, entry.source, entry.status])
                if args.options and entry.cls is not None:
                    for option in entry.cls.options:
                        rows.append(["", f"  {option.describe()}", "", ""])
            print(f"{KINDS[kind][0]}:")
            print(tabulate(rows, headers=["name", "description", "source", "status"], tablefmt="simple")
                  if rows else "  (none)")
            print()
        if registry.broken:
            print("broken plugins (every other plugin still works):")
            rows = [[b.entry_point, b.source, f"broken: {b.reason}"] for b in registry.broken]
            print(tabulate(rows, headers=["entry point", "source", "status"], tablefmt="simple"))
        return 0
