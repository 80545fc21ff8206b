"""SelfMask's network (Shin, Albanie & Xie, CVPRW 2022): a MaskFormer-style salient-object detector.

- **Encoder**: the backbone's network, fine-tuned (a copy: the harness's frozen backbone is
  left as it is). ViTs give their last block's normalised patch tokens; EfficientNet-Lite0
  gives the stage output at its configured stride. BatchNorm statistics stay frozen (batches
  of 8 are too small to re-estimate them); ViTs have none.
- **Decoder**: DETR's post-norm transformer decoder (self-attention, cross-attention to the
  encoder tokens, ReLU feed-forward of 4 x width, no dropout), 6 layers, 20 learned queries
  (drawn from N(0, 1)) added as positional embeddings to zero-initialised targets; every
  layer's output goes through the shared final LayerNorm (deep supervision).
- **Heads**: the pixel embeddings are the encoder features upsampled x2 (bilinear, no
  parameters); a query's mask is ``sigmoid(<query, pixel embedding>)``, its objectness
  ``sigmoid(MLP(query))`` (3 layers). Features wider or narrower than the decoder (anything but
  ViT-S's 384 by default) are first projected by a 1x1 convolution, as SelfMask did for ResNets.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Encoder(nn.Module):
    """A trainable copy of a backbone network mapping ``(B, 3, H, W)`` RGB in [0, 1] to ``(B, C, H/s, W/s)``.

    Parameters
    ----------
    net : nn.Module
        A timm network (VisionTransformer, or ``tf_efficientnet_lite0``).
    kind : str
        ``"vit"`` (patch tokens of ``forward_features``) or ``"stages"`` (stem, then the blocks
        up to ``last_stage``).
    stride : int
        The feature stride; inputs must be multiples of it.
    mean, std : tuple of 3 floats
        The network's input normalisation (RGB in [0, 1] units).
    last_stage : int, optional
        For ``"stages"``: the index of the last block group used.
    """

    def __init__(self, net: nn.Module, kind: str, stride: int, mean, std, last_stage: int | None = None):
        super().__init__()
        if kind not in ("vit", "stages"):
            raise ValueError(f"unknown encoder kind {kind!r}")
        if kind == "stages":  # drop what the features never reach (DDP needs every parameter used)
            net.blocks = net.blocks[: last_stage + 1]
            for name in ("conv_head", "bn2", "global_pool", "classifier"):
                if hasattr(net, name):
                    setattr(net, name, nn.Identity())
        self.net, self.kind, self.stride, self.last_stage = net, kind, stride, last_stage
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def load_backbone_state(self, state: dict[str, torch.Tensor]) -> None:
        """Load the backbone's weights (those of the parts dropped here are ignored).

        Raises
        ------
        RuntimeError
            When a weight of the network is missing or of another shape.
        """
        own = self.net.state_dict()
        missing = sorted(set(own) - set(state))
        if missing:
            raise RuntimeError(f"the backbone's weights lack {', '.join(missing[:5])}")
        self.net.load_state_dict({k: state[k] for k in own})

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - self.mean) / self.std
        height, width = x.shape[-2:]
        if self.kind == "vit":
            tokens = self.net.forward_features(x)[:, self.net.num_prefix_tokens:]
            return tokens.transpose(1, 2).reshape(x.shape[0], -1, height // self.stride, width // self.stride)
        x = self.net.bn1(self.net.conv_stem(x))
        for stage in self.net.blocks[: self.last_stage + 1]:
            x = stage(x)
        return x


class DecoderLayer(nn.Module):
    """One post-norm DETR decoder layer."""

    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.linear1, self.linear2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, target: torch.Tensor, memory: torch.Tensor, query_pos: torch.Tensor) -> torch.Tensor:
        q = target + query_pos
        target = self.norm1(target + self.self_attn(q, q, target, need_weights=False)[0])
        target = self.norm2(target + self.cross_attn(target + query_pos, memory, memory, need_weights=False)[0])
        return self.norm3(target + self.linear2(F.relu(self.linear1(target))))


class SelfMaskNet(nn.Module):
    """Encoder + transformer decoder + per-query masks and objectness.

    Parameters
    ----------
    encoder : Encoder
        The (trainable) encoder.
    feature_dim : int
        C, the encoder's channels.
    queries, layers, dim, heads : int
        Number of queries (20), decoder layers (6), decoder width (384) and heads (6).
    """

    def __init__(self, encoder: Encoder, feature_dim: int, queries: int = 20, layers: int = 6, dim: int = 384,
                 heads: int = 6):
        super().__init__()
        if dim % heads:
            raise ValueError(f"the decoder width {dim} is not divisible by {heads} heads")
        self.encoder = encoder
        self.project = nn.Conv2d(feature_dim, dim, 1) if feature_dim != dim else nn.Identity()
        self.layers = nn.ModuleList(DecoderLayer(dim, heads, 4 * dim) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        for p in self.layers.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)  # DETR's initialisation of the transformer
        self.query_embed = nn.Parameter(torch.randn(queries, dim))
        self.objectness = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, 1))

    def train(self, mode: bool = True):
        super().train(mode)
        for module in self.encoder.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()  # frozen statistics (see the module docstring)
        return self

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Masks and objectness of every query after every decoder layer.

        Shape
        -----
        images: (B, 3, H, W) RGB in [0, 1], H and W multiples of the encoder's stride s.
        Returns ``masks`` (B, L, Q, 2H/s, 2W/s) and ``objectness`` (B, L, Q), both in [0, 1].
        """
        features = self.project(self.encoder(images))
        memory = features.flatten(2).transpose(1, 2)
        batch = images.shape[0]
        query_pos = self.query_embed.unsqueeze(0).expand(batch, -1, -1)
        target = torch.zeros_like(query_pos)
        outputs = []
        for layer in self.layers:
            target = layer(target, memory, query_pos)
            outputs.append(self.norm(target))
        queries = torch.stack(outputs, dim=1)
        pixels = F.interpolate(features, scale_factor=2.0, mode="bilinear", align_corners=False)
        masks = torch.sigmoid(torch.einsum("blqc,bchw->blqhw", queries, pixels))
        return {"masks": masks, "objectness": torch.sigmoid(self.objectness(queries)).squeeze(-1)}
