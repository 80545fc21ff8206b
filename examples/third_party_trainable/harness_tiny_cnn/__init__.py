"""An example third-party backbone for seg-harness that trainable methods can use, written
against the public API (``from harness import ...``) alone.

``tiny-cnn`` is three 3 x 3 convolutions of stride 2 (3 -> 16 -> 16 -> 16 channels, ReLU
between them): features at stride 8 with 16 channels. Its weights are random (seeded, see
``make_weights.py``) and ship in this package as ``tiny_cnn.pt``; ``--weights FILE`` takes
another file of the same layout. The weights digest is the sha256 of the file, so the harness's
caches and checkpoints follow the weights.

What makes it usable by every trainable method:

- ``features`` (frozen, no gradients): what Sempart trains its head on;
- ``trainable_network`` (a new trainable copy of the network, with the loaded weights or, for a
  checkpoint that holds fine-tuned ones, the architecture alone) and ``network_features``
  (``features`` through such a copy, with gradients): what SelfMask fine-tunes.
"""
from __future__ import annotations

from pathlib import Path

from harness import Backbone, HarnessError, hookimpl

WEIGHTS = Path(__file__).with_name("tiny_cnn.pt")
CHANNELS = 16


def build_network():
    """The architecture, initialised as torch initialises it (no weights read)."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(3, CHANNELS, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(CHANNELS, CHANNELS, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(CHANNELS, CHANNELS, 3, stride=2, padding=1),
    )


class TinyCNN(Backbone):
    name = "tiny-cnn"
    description = "three stride-2 convolutions with random weights (example of a fine-tunable backbone), stride 8"
    family = "cnn"
    stride = 8
    mean = (0.5, 0.5, 0.5)
    std = (0.25, 0.25, 0.25)

    def __init__(self, weights=None, **config):
        super().__init__(weights=weights, **config)
        self._network = None
        self._digest = None
        self.device = "cpu"

    @property
    def feature_dim(self) -> int:
        return CHANNELS

    def weights_path(self) -> Path:
        path = Path(self.weights) if self.weights is not None else WEIGHTS
        if not path.is_file():
            raise HarnessError(f"backbone {self.name!r}: weights file {path} not found")
        return path

    @property
    def weights_digest(self) -> str:
        if self._digest is None:
            from harness.backbones.weights import file_digest

            self._digest = file_digest(self.weights_path())
        return self._digest

    def load(self, device: str = "cpu") -> None:
        import torch

        if self._network is None:
            path = self.weights_path()
            state = torch.load(path, map_location="cpu", weights_only=True)
            network = build_network()
            try:
                network.load_state_dict(state, strict=True)
            except RuntimeError as exc:
                raise HarnessError(f"weights file {path} does not fit backbone {self.name!r}: {exc}") from None
            self._network = network.eval().requires_grad_(False)
        self._network.to(device)
        self.device = device

    def _normalise(self, images):
        import torch

        height, width = images.shape[-2:]
        if height % self.stride or width % self.stride:
            raise HarnessError(f"backbone {self.name!r}: input size {height}x{width} is not a multiple of {self.stride}")
        mean = torch.tensor(self.mean, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
        return (images - mean) / std

    def features(self, images):
        import torch

        if self._network is None:
            raise HarnessError(f"backbone {self.name!r}: call load(device) before features()")
        with torch.no_grad():
            return self._network(self._normalise(images))

    def trainable_network(self, pretrained: bool = True):
        network = build_network()
        if pretrained:
            if self._network is None:
                self.load(self.device)
            network.load_state_dict(self._network.state_dict())
        return network.train().requires_grad_(True)

    def network_features(self, network, images):
        return network(self._normalise(images))


@hookimpl
def harness_backbones():
    return [TinyCNN]
