"""A method's own box is what CorLoc scores, until a post-processor changes the mask: then the
box comes from the post-processed mask (DESIGN.md, CorLoc: "a method may supply its own box").

Worked by hand on 40 x 40 images whose one ground-truth box is (10, 10, 30, 30):
- the method's mask is the square [10:30, 10:30] (its box would hit with IoU 1), but its own box
  is (0, 0, 5, 5): IoU 0, a miss;
- the post-processor keeps columns 10..24 of the mask: the box of that mask is (10, 10, 25, 30),
  IoU 15 x 20 / (20 x 20) = 0.75, a hit.
"""
from __future__ import annotations

import types

import numpy as np
import pandas as pd
import pytest

from harness import Dataset, Method, PostProcessor, hookimpl
from harness.api import Prediction, Sample
from harness.registry import Registry
from harness.runner import RunSpec, run


class Squares(Dataset):
    name = "squares"
    description = "test dataset: two 40 x 40 images, one box (10, 10, 30, 30) each"
    needs_root = False
    labels = ("boxes",)
    default_evaluators = ("corloc",)

    def ids(self):
        return ["sq0", "sq1"]

    def load(self, sample_id):
        image = np.full((40, 40, 3), 60 + 100 * int(sample_id[-1]), np.uint8)  # two different images
        return Sample(sample_id, image, None, np.array([[10.0, 10.0, 30.0, 30.0]]))


class OwnBox(Method):
    name = "own-box"
    description = "test method: the square [10:30, 10:30] as its mask, (0, 0, 5, 5) as its box"

    def predict(self, sample):
        mask = np.zeros((40, 40), np.float32)
        mask[10:30, 10:30] = 1.0
        return Prediction(mask, box=(0.0, 0.0, 5.0, 5.0))


class KeepLeft(PostProcessor):
    name = "keep-left"
    description = "test post-processor: zero from column 25 on"

    def __call__(self, image, mask):
        out = mask.copy()
        out[:, 25:] = 0.0
        return out


@pytest.fixture
def registry():
    module = types.ModuleType("box_plugins")
    module.harness_datasets = hookimpl(lambda: [Squares])
    module.harness_methods = hookimpl(lambda: [OwnBox])
    module.harness_postprocessors = hookimpl(lambda: [KeepLeft])
    return Registry(autoload=False, extra=[(module, "tests")])


def _boxes(result) -> list[list[float]]:
    frame = pd.read_csv(result.run_dir / "per_image.csv")
    return frame[["corloc_hit", "box_iou", "box_x0", "box_y0", "box_x1", "box_y1"]].to_numpy().tolist()


@pytest.mark.parametrize("posts, corloc, row", [
    ([], 0.0, [0, 0.0, 0, 0, 5, 5]),  # the method's own box
    (["keep-left"], 100.0, [1, 0.75, 10, 10, 25, 30]),  # the box of the post-processed mask
], ids=["method-box", "post-processed"])
def test_corloc_uses_the_methods_box_unless_a_post_processor_ran(registry, tmp_path, posts, corloc, row):
    result = run(RunSpec(method="own-box", posts=posts, dataset="squares", out=tmp_path / "runs",
                         cache_dir=tmp_path / "cache", progress=False), registry)
    assert result.metrics["corloc"] == corloc
    assert _boxes(result) == [row, row]


def test_the_methods_box_comes_back_from_the_cache(registry, tmp_path):
    spec = dict(method="own-box", dataset="squares", out=tmp_path / "runs", cache_dir=tmp_path / "cache",
                progress=False)
    run(RunSpec(**spec), registry)
    again = run(RunSpec(**spec, posts=["keep-left"]), registry)  # masks from the cache, then post-processed
    plain = run(RunSpec(**spec), registry)
    assert again.results["counts"]["n_cached"] == 2 and plain.results["counts"]["n_cached"] == 2
    assert _boxes(again) == [[1, 0.75, 10, 10, 25, 30]] * 2
    assert _boxes(plain) == [[0, 0.0, 0, 0, 5, 5]] * 2 and plain.metrics["corloc"] == 0.0
