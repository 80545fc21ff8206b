"""seg-harness: benchmark unsupervised image segmentation methods under one protocol.

Plugin authors import what they need from here::

    from harness import hookimpl, Method, Option

The plugin bases (``Dataset``, ``Backbone``, ``Method``, ``PostProcessor``, ``Evaluator``,
``TrainableMethod``, ``PatchFeatureMethod``), what the runner hands them (``RunContext``,
``Sample``, ``Prediction``; backbone features through ``RunContext.features`` with
``FeatureRequest``), ``Option`` and the errors are the public API; see :mod:`harness.api`.
"""
from importlib.metadata import PackageNotFoundError, version as _dist_version

try:
    __version__ = _dist_version("seg-harness")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

from harness.api import (  # noqa: E402  (re-exported public API)
    Backbone,
    Dataset,
    Evaluator,
    FeatureRequest,
    FeatureSource,
    Method,
    Option,
    PostProcessor,
    Prediction,
    RunContext,
    Sample,
)
from harness.errors import HarnessError, PluginError  # noqa: E402
from harness.hookspecs import hookimpl  # noqa: E402
from harness.training.trainable import TrainableMethod  # noqa: E402

__all__ = [
    "Backbone",
    "Dataset",
    "Evaluator",
    "FeatureRequest",
    "FeatureSource",
    "HarnessError",
    "Method",
    "Option",
    "PatchFeatureMethod",
    "PluginError",
    "PostProcessor",
    "Prediction",
    "RunContext",
    "Sample",
    "TrainableMethod",
    "hookimpl",
    "__version__",
]


def __getattr__(name: str):
    # numpy-backed base classes load on first use, so that `import harness` (and `harness list`) stay light
    if name == "PatchFeatureMethod":
        from harness.patch_methods import PatchFeatureMethod

        return PatchFeatureMethod
    raise AttributeError(f"module 'harness' has no attribute {name!r}")
