"""The plugin registry: built-ins, a real third-party distribution, duplicates, broken plugins."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import numpy as np
import pytest

from harness import Method, hookimpl
from harness.errors import PluginError
from harness.registry import Registry

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "third_party_plugin"


def harness_cli(*args: str, env_extra: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "harness", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


def _plugin_module(name: str, classes: list[type], hook: str = "harness_methods") -> types.ModuleType:
    module = types.ModuleType(name)
    setattr(module, hook, hookimpl(lambda: classes))
    return module


class DuplicateCenterPrior(Method):
    name = "center-prior"
    description = "a second plugin claiming the same name"


def test_builtins_are_found_with_autoload_off():
    registry = Registry(autoload=False)
    assert "center-prior" in registry.names("method")
    assert "synthetic" in registry.names("dataset")
    assert {"saliency", "corloc"} <= set(registry.names("evaluator"))
    assert all(entry.source == "built-in" for entry in registry.entries("method"))


def test_unknown_name_suggests_near_matches():
    registry = Registry(autoload=False)
    with pytest.raises(PluginError, match=r"unknown method 'center-prio'\. Did you mean 'center-prior'\?"):
        registry.get("method", "center-prio")


def test_duplicate_name_fails_naming_both_sources_and_leaves_others_working():
    registry = Registry(autoload=False, extra=[(_plugin_module("dup", [DuplicateCenterPrior]), "dup-dist 1.0")])
    with pytest.raises(PluginError) as err:
        registry.get("method", "center-prior")
    assert "built-in" in str(err.value) and "dup-dist 1.0" in str(err.value)
    assert registry.get("dataset", "synthetic").name == "synthetic"


def test_a_hook_that_raises_is_recorded_as_broken():
    def exploding():
        raise RuntimeError("no GPU driver")

    module = types.ModuleType("exploding")
    module.harness_methods = hookimpl(exploding)
    registry = Registry(autoload=False, extra=[(module, "exploding-dist 2.0")])
    assert [(b.source, b.reason) for b in registry.broken] == [("exploding-dist 2.0", "RuntimeError: no GPU driver")]
    assert "center-prior" in registry.names("method")


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory) -> Path:
    """Build the example distribution's wheel and install it into a private site folder."""
    work = tmp_path_factory.mktemp("third_party")
    src = work / "src"
    shutil.copytree(EXAMPLE, src)
    wheels, site = work / "wheels", work / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-build-isolation", "--no-deps", "-w", str(wheels), str(src)], check=True)
    wheel = next(wheels.glob("harness_center_box-0.3.0-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)], check=True)
    return site


def test_third_party_distribution_is_listed_and_runnable(installed_example, tmp_path):
    env = {"PYTHONPATH": str(installed_example), "HARNESS_CACHE": str(tmp_path / "cache")}
    listed = harness_cli("list", "methods", env_extra=env)
    assert listed.returncode == 0, listed.stderr
    line = next(line for line in listed.stdout.splitlines() if line.startswith("center-box"))
    assert "harness-center-box 0.3.0" in line and line.rstrip().endswith("ok")

    ran = harness_cli("run", "--method", "center-box", "--dataset", "synthetic", "--dataset-args", "count=4",
                      "--method-args", "frac=0.5", "--out", str(tmp_path / "runs"), "--no-progress", env_extra=env)
    assert ran.returncode == 0, ran.stderr
    results = json.loads(next((tmp_path / "runs").glob("*/results.json")).read_text())

    # the same IoU, computed here from the dataset and the box rule
    from harness.datasets.synthetic import SyntheticDataset

    ious = []
    for sample in SyntheticDataset(count=4):
        h, w = sample.image.shape[:2]
        box = np.zeros((h, w), bool)
        box[round(h / 4) : h - round(h / 4), round(w / 4) : w - round(w / 4)] = True
        gt = sample.mask > 127
        ious.append((box & gt).sum() / (box | gt).sum())
    assert results["metrics"]["iou"] == pytest.approx(np.mean(ious), abs=1e-12)
    assert "method center-box: harness-center-box 0.3.0" in results["versions"]["plugins"]

    # uninstalling (removing its site folder) removes it from the listing
    shutil.rmtree(installed_example)
    after = harness_cli("list", "methods", env_extra=env)
    assert "center-box" not in after.stdout


def _broken_dist(site: Path) -> None:
    """A distribution whose plugin module raises on import, as a bare .dist-info on sys.path."""
    info = site / "broken_plugin-1.2.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.2\n")
    (info / "entry_points.txt").write_text("[harness]\nbroken = broken_plugin_module\n")
    (site / "broken_plugin_module.py").write_text("raise ImportError('needs libfoo.so')\n")


def test_broken_plugin_is_listed_while_every_command_works(tmp_path):
    site = tmp_path / "site"
    _broken_dist(site)
    env = {"PYTHONPATH": str(site)}
    listed = harness_cli("list", env_extra=env)
    assert listed.returncode == 0, listed.stderr
    assert "broken-plugin 1.2" in listed.stdout and "broken: ImportError: needs libfoo.so" in listed.stdout
    ran = harness_cli("run", "--method", "center-prior", "--dataset", "synthetic", "--dataset-args", "count=2",
                      "--out", str(tmp_path / "runs"), "--no-progress", env_extra=env)
    assert ran.returncode == 0, ran.stderr
    asked = harness_cli("run", "--method", "broken", "--dataset", "synthetic", env_extra=env)
    assert asked.returncode == 2
    assert "broken-plugin 1.2, which failed to load: ImportError: needs libfoo.so" in asked.stderr
    assert "Traceback" not in asked.stderr
    version = harness_cli("--version", env_extra=env)
    assert "BROKEN broken from broken-plugin 1.2" in version.stdout


def test_autoload_switch_skips_entry_points(tmp_path):
    site = tmp_path / "site"
    _broken_dist(site)
    listed = harness_cli("list", env_extra={"PYTHONPATH": str(site), "HARNESS_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert listed.returncode == 0 and "broken-plugin" not in listed.stdout


def test_list_does_not_import_torch_and_answers_fast():
    code = textwrap.dedent(
        """
        import sys, time, contextlib, io
        start = time.perf_counter()
        from harness.cli import main
        with contextlib.redirect_stdout(io.StringIO()):
            main(["list"])
        print(time.perf_counter() - start, "torch" in sys.modules, "timm" in sys.modules, "cv2" in sys.modules)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    seconds, torch_loaded, timm_loaded, cv2_loaded = out.stdout.split()
    assert (torch_loaded, timm_loaded, cv2_loaded) == ("False", "False", "False")
    assert float(seconds) < 3.0  # typically ~0.3 s; torch alone would take longer than this
