"""The built-in plugins, registered by the core exactly as a third party would be.

Each hook imports its plugin modules when called; those modules import torch, timm and
OpenCV lazily, so ``harness list`` stays fast.
"""
from harness.hookspecs import hookimpl


@hookimpl
def harness_datasets():
    from harness.datasets.synthetic import SyntheticDataset

    return [SyntheticDataset]


@hookimpl
def harness_backbones():
    return []


@hookimpl
def harness_methods():
    from harness.methods.center_prior import CenterPrior
    from harness.methods.sempart import Sempart, SempartCrop

    return [CenterPrior, Sempart, SempartCrop]


@hookimpl
def harness_postprocessors():
    return []


@hookimpl
def harness_evaluators():
    from harness.evaluators.corloc import CorLocEvaluator
    from harness.evaluators.saliency import SaliencyEvaluator

    return [SaliencyEvaluator, CorLocEvaluator]
