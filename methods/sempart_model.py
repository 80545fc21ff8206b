"""The Sempart head (Ravindran & Basu, ICCV 2023) on frozen backbone features.

Coarse branch: 1x1 conv C -> 64, a 2-layer 2-head transformer encoder over the tokens, 1x1 conv
-> one logit per token. Fine branch: log2(stride) blocks, each upsampling x2 (bilinear) and
concatenating the image at that scale (3x3 conv + BN + LeakyReLU(0.01); the last block has
two convs), then a 1x1 conv on [features, image] -> one logit per pixel. For stride 8 the
channels are 67 -> 192, 195 -> 128, 131 -> 128 -> 128, then 131 -> 1.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

HIDDEN = 64


def _conv_bn_act(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.01, inplace=True)]


class SempartHead(nn.Module):
    """Coarse and fine foreground logits from backbone features and the image.

    Parameters
    ----------
    in_channels : int
        Channels of the backbone features (384 for DINO ViT-S keys).
    stride : int
        The backbone's stride (a power of two, >= 4); sets the number of upsampling blocks.
    hidden : int
        Width of the coarse branch (64 in Sempart).
    """

    def __init__(self, in_channels: int, stride: int, hidden: int = HIDDEN):
        super().__init__()
        n_blocks = int(round(math.log2(stride)))
        if 2**n_blocks != stride or n_blocks < 2:
            raise ValueError(f"stride must be a power of two >= 4, got {stride}")
        self.project = nn.Conv2d(in_channels, hidden, 1)
        layer = nn.TransformerEncoderLayer(
            d_model=hidden, nhead=2, dim_feedforward=hidden, dropout=0.0, activation="gelu",
            batch_first=True, norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, norm=nn.LayerNorm(hidden), enable_nested_tensor=False)
        self.coarse_out = nn.Conv2d(hidden, 1, 1)
        c_in = [hidden + 3, 192 + 3] + [2 * hidden + 3] * (n_blocks - 2)
        c_out = [192] + [2 * hidden] * (n_blocks - 1)
        blocks = []
        for i, (a, b) in enumerate(zip(c_in, c_out)):
            layers = _conv_bn_act(a, b)
            if i == n_blocks - 1:
                layers += _conv_bn_act(b, b)  # the last block refines at full resolution
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.ModuleList(blocks)
        self.fine_out = nn.Conv2d(c_out[-1] + 3, 1, 1)
        self.stride = stride

    def forward(self, features: torch.Tensor, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits of the fine and the coarse mask.

        Shape
        -----
        features: (B, C, h, w); image: (B, 3, h * stride, w * stride), normalised.
        Returns fine (B, 1, H, W) and coarse (B, 1, h, w) logits.
        """
        x = self.project(features)
        b, c, h, w = x.shape
        tokens = self.encoder(x.flatten(2).transpose(1, 2))
        x = tokens.transpose(1, 2).reshape(b, c, h, w)
        coarse = self.coarse_out(x)
        for i, block in enumerate(self.blocks):
            scale = 2 ** (len(self.blocks) - 1 - i)
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
            img = image if scale == 1 else F.interpolate(image, size=x.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, img], dim=1))
        fine = self.fine_out(torch.cat([x, image], dim=1))
        return fine, coarse
