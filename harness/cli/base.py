"""The shape every subcommand has."""
from __future__ import annotations

import argparse


class Command:
    name: str = ""
    help: str = ""
    examples: str = ""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        raise NotImplementedError

    def run(self, args: argparse.Namespace) -> int:
        raise NotImplementedError
