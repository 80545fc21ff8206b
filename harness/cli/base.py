"""The shape every subcommand has, and the argument types they share."""
from __future__ import annotations

import argparse

from harness.options import SEED_LIMIT


def seed_type(text: str) -> int:
    """``--seed``: a whole number with ``0 <= seed < 2**63``.

    Parameters
    ----------
    text : str
        The command-line text.

    Returns
    -------
    int
        The seed.

    Raises
    ------
    argparse.ArgumentTypeError
        If the text is not a whole number in range (argparse turns it into its usual error).
    """
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number with 0 <= seed < 2**63")
    return value


class Command:
    name: str = ""
    help: str = ""
    examples: str = ""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        raise NotImplementedError

    def run(self, args: argparse.Namespace) -> int:
        raise NotImplementedError
