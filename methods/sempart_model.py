"""The Sempart head (Ravindran & Basu, ICCV 2023) on frozen backbone features.

Coarse branch: 1x1 conv C -> 64, two pre-norm transformer layers over the tokens, 1x1 conv ->
one logit per token. The transformer layers have the form of vit-pytorch's ``Transformer``,
which segmentation-tricks uses: LayerNorm -> multi-head self-attention (2 heads of 64
channels, inner width 128, qkv projection without bias, output projection 128 -> 64 with
bias) -> residual; LayerNorm -> 64 -> 64 (GELU) -> 64 -> residual; no final LayerNorm, no
position encoding, no dropout.

Fine branch: log2(stride) blocks, each upsampling x2 (bilinear) and concatenating the image at
that scale (3x3 conv + BN + LeakyReLU(0.01); the last block has two convs), then a 1x1 conv on
[features, image] -> one logit per pixel. For stride 8 the channels are 67 -> 192, 195 -> 128,
131 -> 128 -> 128, then 131 -> 1.

:func:`convert_segtricks_state` maps a state dict saved by segmentation-tricks'
``sempart_main.py`` (``{'segmenter_state_dict': ...}``, module ``segmenterNetRGB``) onto this
module's parameter names; the values are used unchanged.
"""
from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

HIDDEN = 64
HEADS = 2
HEAD_DIM = 64
LAYERS = 2


class SelfAttention(nn.Module):
    """Multi-head self-attention: a bias-free qkv projection to ``3 * heads * head_dim``, the
    scaled dot product per head (scale ``head_dim ** -0.5``), heads concatenated in order, then
    a linear projection back to ``dim``."""

    def __init__(self, dim: int, heads: int = HEADS, head_dim: int = HEAD_DIM):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.qkv = nn.Linear(dim, 3 * heads * head_dim, bias=False)
        self.proj = nn.Linear(heads * head_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(head_dim)) v
        return self.proj(out.transpose(1, 2).reshape(b, n, self.heads * self.head_dim))


class EncoderLayer(nn.Module):
    """Pre-norm transformer layer: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``."""

    def __init__(self, dim: int, mlp_dim: int):
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim)
        self.mlp_norm = nn.LayerNorm(dim)
        self.mlp_in = nn.Linear(dim, mlp_dim)
        self.mlp_out = nn.Linear(mlp_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x))
        return x + self.mlp_out(F.gelu(self.mlp_in(self.mlp_norm(x))))


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
        Width of the coarse branch and of the transformer's MLP (64 in Sempart).
    """

    def __init__(self, in_channels: int, stride: int, hidden: int = HIDDEN):
        super().__init__()
        n_blocks = int(round(math.log2(stride)))
        if 2**n_blocks != stride or n_blocks < 2:
            raise ValueError(f"stride must be a power of two >= 4, got {stride}")
        self.project = nn.Conv2d(in_channels, hidden, 1)
        self.encoder = nn.ModuleList([EncoderLayer(hidden, hidden) for _ in range(LAYERS)])
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
        tokens = x.flatten(2).transpose(1, 2)
        for layer in self.encoder:
            tokens = layer(tokens)
        x = tokens.transpose(1, 2).reshape(b, c, h, w)
        coarse = self.coarse_out(x)
        for i, block in enumerate(self.blocks):
            scale = 2 ** (len(self.blocks) - 1 - i)
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
            img = image if scale == 1 else F.interpolate(image, size=x.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, img], dim=1))
        fine = self.fine_out(torch.cat([x, image], dim=1))
        return fine, coarse


#: segmentation-tricks' parameter names (``segmenterNetRGB``) -> this module's
_SEGTRICKS_NAMES = (
    (r"conv_input\.", "project."),
    (r"inp_transformer\.layers\.(\d+)\.0\.norm\.", r"encoder.\1.attn_norm."),
    (r"inp_transformer\.layers\.(\d+)\.0\.fn\.to_qkv\.", r"encoder.\1.attn.qkv."),
    (r"inp_transformer\.layers\.(\d+)\.0\.fn\.to_out\.0\.", r"encoder.\1.attn.proj."),
    (r"inp_transformer\.layers\.(\d+)\.1\.norm\.", r"encoder.\1.mlp_norm."),
    (r"inp_transformer\.layers\.(\d+)\.1\.fn\.net\.0\.", r"encoder.\1.mlp_in."),
    (r"inp_transformer\.layers\.(\d+)\.1\.fn\.net\.3\.", r"encoder.\1.mlp_out."),
    (r"conv_coarse\.", "coarse_out."),
    (r"layers\.(\d+)\.", r"blocks.\1."),
    (r"conv_final\.", "fine_out."),
)


def is_segtricks_state(state) -> bool:
    """Whether ``state`` looks like a segmentation-tricks head: ``{'segmenter_state_dict': ...}``
    or the bare state dict with its ``conv_input`` / ``inp_transformer`` names."""
    if not isinstance(state, dict):
        return False
    if "segmenter_state_dict" in state:
        return True
    return any(isinstance(k, str) and k.startswith(("conv_input.", "inp_transformer.")) for k in state)


def convert_segtricks_state(state: dict) -> dict[str, torch.Tensor]:
    """A segmentation-tricks head state dict renamed for :class:`SempartHead`.

    Raises
    ------
    ValueError
        A key none of the known names match (one line naming it).
    """
    state = state.get("segmenter_state_dict", state)
    out = {}
    for key, value in state.items():
        for pattern, repl in _SEGTRICKS_NAMES:
            new, n = re.subn(f"^{pattern}", repl, key)
            if n:
                out[new] = value
                break
        else:
            raise ValueError(f"unknown segmentation-tricks head parameter {key!r}")
    return out


def segtricks_geometry(state: dict) -> tuple[int, int]:
    """``(in_channels, stride)`` of a segmentation-tricks head state dict (from its first 1x1
    conv and its number of upsampling blocks)."""
    state = state.get("segmenter_state_dict", state)
    try:
        in_channels = int(state["conv_input.weight"].shape[1])
    except (KeyError, AttributeError, IndexError):
        raise ValueError("no 'conv_input.weight' of shape (64, C, 1, 1)") from None
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"layers\.(\d+)\.", k))}
    return in_channels, 2 ** len(blocks)


def load_head_state(head: SempartHead, state: dict, source: str) -> None:
    """``head.load_state_dict(state)`` with one line naming what does not fit."""
    own = head.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(own[k].shape)})"
             for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        parts = [f"missing {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}" if missing else "",
                 f"unexpected {', '.join(unexpected[:4])}{' ...' if len(unexpected) > 4 else ''}" if unexpected else "",
                 f"wrong shapes {', '.join(wrong[:3])}{' ...' if len(wrong) > 3 else ''}" if wrong else ""]
        raise ValueError(f"{source} does not fit the Sempart head: " + "; ".join(p for p in parts if p))
    head.load_state_dict(state)
