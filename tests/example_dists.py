"""Build one of the ``examples/`` distributions into a wheel and install it into a private site
folder, as a user's ``pip install`` would (no network, no dependencies)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def install_example(name: str, wheel_glob: str, work: Path) -> Path:
    """The site folder holding ``examples/<name>`` installed from its wheel ``wheel_glob``."""
    src = work / "src"
    shutil.copytree(EXAMPLES / name, src)
    wheels, site = work / "wheels", work / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-build-isolation", "--no-deps", "-w", str(wheels), str(src)], check=True)
    wheel = next(wheels.glob(wheel_glob))
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)], check=True)
    return site
