"""The plugin registry: built-ins, a real third-party distribution, duplicates, broken plugins."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness import Evaluator, Method, hookimpl
from harness.cli import main
from harness.errors import PluginError
from harness.registry import Registry
from example_dists import install_example



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
    """The example distribution, built and installed into a private site folder."""
    return install_example("third_party_plugin", "harness_center_box-0.4.0-*.whl", tmp_path_factory.mktemp("third_party"))


def test_third_party_distribution_is_listed_and_runnable(installed_example, tmp_path):
    env = {"PYTHONPATH": str(installed_example), "HARNESS_CACHE": str(tmp_path / "cache")}
    listed = harness_cli("list", "methods", env_extra=env)
    assert listed.returncode == 0, listed.stderr
    line = next(line for line in listed.stdout.splitlines() if line.startswith("center-box"))
    assert "harness-center-box 0.4.0" in line and line.rstrip().endswith("ok")

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
    assert "method center-box: harness-center-box 0.4.0" in results["versions"]["plugins"]

    # the distribution's other plugins: a method on a backbone (features through the run's
    # feature cache), a post-processor and an evaluator, all through the public API alone
    listed = harness_cli("list", env_extra=env).stdout.splitlines()
    for name in ("border-contrast", "binarize", "dice"):
        line = next(line for line in listed if line.startswith(name))
        assert "harness-center-box 0.4.0" in line and line.rstrip().endswith("ok"), line
    common = ["--method", "border-contrast", "--backbone", "effnet-lite0", "--eval", "saliency", "--eval", "dice",
              "--dataset", "synthetic", "--dataset-args", "count=3,height=64,width=96", "--no-progress"]
    ran = harness_cli("run", *common, "--post", "binarize", "--out", str(tmp_path / "third"), env_extra=env)
    assert ran.returncode == 0, ran.stderr
    run_dir = next((tmp_path / "third").glob("*/results.json")).parent
    results = json.loads((run_dir / "results.json").read_text())
    rows = pd.read_csv(run_dir / "per_image.csv")
    assert list(rows.columns) == ["id", "acc", "iou", "mae", "max_fbeta_per_image", "fg_ratio", "dice"]
    # on a binary mask Dice = 2 IoU / (1 + IoU), image by image; the metric is their mean
    np.testing.assert_allclose(rows["dice"], 2 * rows["iou"] / (1 + rows["iou"]), atol=2e-6)
    assert results["metrics"]["dice"] == pytest.approx(rows["dice"].mean(), abs=2e-6)
    assert 0 < results["metrics"]["dice"] < 1
    features = sorted((tmp_path / "cache" / "features").rglob("*.entry"))
    assert len(features) == 3  # one cached grid per image, through the run's feature stage
    # another post chain re-uses the method's cached masks, hence its features
    again = harness_cli("run", *common, "--out", str(tmp_path / "third"), env_extra=env)
    assert again.returncode == 0, again.stderr
    assert "3 images (3 masks from the cache)" in again.stdout
    assert sorted((tmp_path / "cache" / "features").rglob("*.entry")) == features

    # uninstalling (removing its site folder) removes it from the listing
    shutil.rmtree(installed_example)
    after = harness_cli("list", "methods", env_extra=env)
    assert "center-box" not in after.stdout


def _bare_dist(site: Path, name: str, version: str, entry_point: str, module_source: str) -> None:
    """A distribution with one plugin module, as a bare .dist-info on sys.path (no build, no pip)."""
    module = name.replace("-", "_") + "_module"
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[harness]\n{entry_point} = {module}\n")
    (site / f"{module}.py").write_text(module_source)


def _broken_dist(site: Path) -> None:
    """A distribution whose plugin module raises on import."""
    _bare_dist(site, "broken-plugin", "1.2", "broken", "raise ImportError('needs libfoo.so')\n")


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


def test_list_imports_no_heavy_library():
    """`harness list` stays fast by importing none of torch, timm or OpenCV (its speed itself
    is not asserted: wall-clock bounds flake on a shared machine)."""
    code = textwrap.dedent(
        """
        import sys, contextlib, io
        from harness.cli import main
        with contextlib.redirect_stdout(io.StringIO()):
            main(["list"])
        print("torch" in sys.modules, "timm" in sys.modules, "cv2" in sys.modules)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "False"]


def test_a_plugin_that_calls_sys_exit_at_import_is_recorded_as_broken(tmp_path):
    site = tmp_path / "site"
    _bare_dist(site, "exiting-plugin", "0.1", "exiting", "import sys\nsys.exit(3)\n")
    env = {"PYTHONPATH": str(site)}
    listed = harness_cli("list", env_extra=env)
    assert listed.returncode == 0, listed.stderr
    assert "exiting-plugin 0.1" in listed.stdout and "broken: SystemExit: it called sys.exit(3)" in listed.stdout
    assert "center-prior" in listed.stdout
    asked = harness_cli("run", "--method", "exiting", "--dataset", "synthetic", env_extra=env)
    assert asked.returncode == 2
    assert asked.stderr.strip() == (
        "harness run: error: method 'exiting' comes from exiting-plugin 0.1, which failed to load: "
        "SystemExit: it called sys.exit(3). Fix or uninstall that distribution."
    )


class NotAMethod:
    name = "not-a-method"


class AnEvaluator(Evaluator):
    name = "an-evaluator"


class GoodMethod(Method):
    name = "good-method"
    description = "returned beside the bad ones"


@pytest.mark.parametrize(
    "returned, reason",
    [
        (DuplicateCenterPrior, f"returned {DuplicateCenterPrior!r}, not a list of Method subclasses"),
        (42, "returned 42, not a list of Method subclasses"),
        ("center-prior", "returned 'center-prior', not a list of Method subclasses"),
        ([GoodMethod, NotAMethod], f"returned a list holding {NotAMethod!r}, which is not a Method subclass"),
        ([GoodMethod, GoodMethod()], f"returned a list holding <{__name__}.GoodMethod object at"),
        ([AnEvaluator, GoodMethod], f"returned a list holding {AnEvaluator!r}, which is not a Method subclass"),
    ],
    ids=["a-class", "a-number", "a-string", "not-a-plugin-class", "an-instance", "another-kind"],
)
def test_a_hook_returning_anything_but_a_list_of_its_kind_is_broken(returned, reason):
    registry = Registry(autoload=False, extra=[(_plugin_module("wrong", returned), "wrong-dist 1.0")])
    assert [(b.entry_point, b.source) for b in registry.broken] == [("wrong", "wrong-dist 1.0")]
    assert registry.broken[0].reason.startswith(f"hook harness_methods {reason}")
    assert "center-prior" in registry.names("method") and "synthetic" in registry.names("dataset")
    assert ("good-method" in registry.names("method")) == isinstance(returned, list)
    assert "an-evaluator" not in registry.names("evaluator")


def test_a_wrongly_returned_plugin_is_listed_as_broken_and_its_name_is_a_clear_error(capsys, monkeypatch):
    import harness.registry as registry_module

    module = _plugin_module("wrong", GoodMethod)  # the class itself, not [GoodMethod]
    monkeypatch.setattr(registry_module, "_REGISTRY", Registry(autoload=False, extra=[(module, "wrong-dist 1.0")]))
    reason = f"hook harness_methods returned {GoodMethod!r}, not a list of Method subclasses"
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "broken plugins" in out and f"broken: {reason}" in out and "center-prior" in out
    assert main(["run", "--method", "good-method", "--dataset", "synthetic"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"harness run: error: method 'good-method' comes from wrong-dist 1.0, which failed to load: {reason}. "
        f"Fix or uninstall that distribution."
    )
