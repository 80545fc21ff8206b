"""seg-harness: benchmark unsupervised image segmentation methods under one protocol.

Plugin authors import what they need from here::

    from harness import hookimpl, Method, Option
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
    Method,
    Option,
    PostProcessor,
    Prediction,
    Sample,
)
from harness.errors import HarnessError  # noqa: E402
from harness.hookspecs import hookimpl  # noqa: E402

__all__ = [
    "Backbone",
    "Dataset",
    "Evaluator",
    "HarnessError",
    "Method",
    "Option",
    "PostProcessor",
    "Prediction",
    "Sample",
    "hookimpl",
    "__version__",
]
