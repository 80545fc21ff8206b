"""Helpers for the command-line tests of bad and hostile input: a small valid ``folder``
dataset, the ``harness run`` arguments that score it, and the one-line-error assertion."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from harness.cli import main


def folder_dataset(root: Path, n: int = 3, size=(40, 30)) -> Path:
    """A valid ``folder`` dataset, ``root/images/im<i>.png`` and ``root/masks/im<i>.png``, with a
    foreground rectangle in every mask."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(root / "images" / f"im{i}.png")
        mask = np.zeros((size[1], size[0]), np.uint8)
        mask[5:20, 10:30] = 255
        Image.fromarray(mask).save(root / "masks" / f"im{i}.png")
    return root


def run_args(tmp_path: Path, root: Path, *extra: str, method: str = "center-prior") -> list[str]:
    """``harness run`` of ``method`` on the ``folder`` dataset at ``root``, into ``tmp_path/runs``."""
    return ["run", "--method", method, "--dataset", "folder", "--data-root", str(root),
            "--out", str(tmp_path / "runs"), "--no-progress", *extra]


def fails(capsys, argv: list[str], *fragments: str) -> str:
    """Run the CLI; assert exit status 2 and one stderr line holding every fragment."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err
    return err
