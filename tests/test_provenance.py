"""What a run records about where it came from: the project's git commit, library versions."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

import harness
from harness.results import environment_versions, git_sha

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(cwd: Path, *args: str) -> str:
    identity = ["-c", "user.name=test", "-c", "user.email=test@example.invalid", "-c", "commit.gpgsign=false"]
    return subprocess.run(["git", *identity, *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def _repository(root: Path, project: str, package: str) -> str:
    """A git repository whose pyproject.toml names ``project``, holding a ``harness`` package at
    ``package`` (relative to the top); returns its commit."""
    (root / package).mkdir(parents=True)
    (root / package / "__init__.py").write_text("")
    (root / "pyproject.toml").write_text(f'[build-system]\nrequires = []\n\n[project]\nname = "{project}"\n')
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "initial")
    return _git(root, "rev-parse", "HEAD")


def test_the_projects_own_checkout_records_its_commit(tmp_path):
    sha = _repository(tmp_path / "seg-harness", "seg-harness", "harness")
    assert len(sha) == 40
    assert git_sha(tmp_path / "seg-harness" / "harness") == sha


def test_a_venv_inside_another_repository_records_no_commit(tmp_path):
    """The user's repository holds the virtual environment: its commit says nothing about the harness."""
    site = ".venv/lib/python3/site-packages/harness"
    _repository(tmp_path / "user-project", "user-project", site)
    assert git_sha(tmp_path / "user-project" / site) is None
    # a copy of the package at the top of some other project is not this project either
    other = tmp_path / "other"
    _repository(other, "other-project", "harness")
    assert git_sha(other / "harness") is None
    # and a seg-harness checkout whose harness folder is not the one running (an installed copy
    # inside the checkout's own venv may differ from the commit)
    nested = tmp_path / "nested"
    _repository(nested, "seg-harness", "build/lib/harness")
    assert git_sha(nested / "build/lib/harness") is None


def test_no_repository_records_no_commit(tmp_path):
    (tmp_path / "harness").mkdir()
    assert git_sha(tmp_path / "harness") is None


def test_this_checkout(tmp_path):
    """Run from this project's checkout (as in CI), the commit is HEAD's."""
    package = Path(harness.__file__).resolve().parent
    top = package.parent
    if not (top / ".git").exists():
        pytest.skip("the harness package is not running from a git checkout")
    assert git_sha() == _git(top, "rev-parse", "HEAD")


def test_opencv_is_recorded_under_the_wheel_that_provides_it():
    from importlib.metadata import PackageNotFoundError, version

    versions = environment_versions(["built-in"])
    installed = {}
    for dist in ("opencv-python-headless", "opencv-contrib-python-headless", "opencv-python", "opencv-contrib-python"):
        try:
            installed[dist] = version(dist)
        except PackageNotFoundError:
            pass
    assert installed, "no OpenCV wheel installed"
    assert {k: v for k, v in versions.items() if k.startswith("opencv")} == installed
    assert versions["plugins"] == ["built-in"]
