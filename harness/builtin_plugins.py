"""The built-in plugins, registered by the core exactly as a third party would be.

Each hook imports its plugin modules when called; those modules import torch, timm and
OpenCV lazily, so ``harness list`` stays fast.
"""
from harness.hookspecs import hookimpl


@hookimpl
def harness_datasets():
    from harness.datasets.coco import COCO20K
    from harness.datasets.saliency import DUTOMRON, ECSSD, PASCALS, DUTSTest, DUTSTrain, FolderDataset
    from harness.datasets.synthetic import SyntheticDataset
    from harness.datasets.voc import VOC07, VOC12

    return [SyntheticDataset, ECSSD, DUTSTest, DUTSTrain, DUTOMRON, PASCALS, FolderDataset, VOC07, VOC12, COCO20K]


@hookimpl
def harness_backbones():
    from harness.backbones.effnet import EffNetLite0
    from harness.backbones.vit import DinoVitB8, DinoVitB16, DinoVitS8, DinoVitS8Ep300, DinoVitS16, IbotVitS16

    return [DinoVitS8, DinoVitS8Ep300, DinoVitS16, DinoVitB8, DinoVitB16, IbotVitS16, EffNetLite0]


@hookimpl
def harness_methods():
    from harness.methods.center_prior import CenterPrior
    from harness.methods.deep_spectral import DeepSpectral
    from harness.methods.lost import LOST
    from harness.methods.masks import MaskFolder, MOVEMasks
    from harness.methods.selfmask import SelfMask
    from harness.methods.sempart import Sempart, SempartCrop
    from harness.methods.tokencut import TokenCut

    return [CenterPrior, Sempart, SempartCrop, MaskFolder, MOVEMasks, TokenCut, LOST, DeepSpectral, SelfMask]


@hookimpl
def harness_postprocessors():
    from harness.methods.bilateral_solver import BilateralSolver, BilateralSolverBF
    from harness.methods.guided_filter import GuidedFilter

    return [GuidedFilter, BilateralSolver, BilateralSolverBF]


@hookimpl
def harness_evaluators():
    from harness.evaluators.corloc import CorLocEvaluator
    from harness.evaluators.saliency import SaliencyEvaluator
    from harness.evaluators.size_iou import SizeBinnedIoU

    return [SaliencyEvaluator, CorLocEvaluator, SizeBinnedIoU]
