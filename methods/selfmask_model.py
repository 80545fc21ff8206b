"""SelfMask's network (Shin, Albanie & Xie, CVPRW 2022): a MaskFormer-style salient-object detector.

- **Encoder**: the backbone's network, fine-tuned: a copy from the backbone's public
  ``trainable_network()`` (the harness's frozen backbone is left as it is). A ViT of DINO's
  layout gives its last block's normalised patch tokens through SelfMask's own ViT forward;
  any other network gives the backbone's features through ``network_features()`` (e.g.
  EfficientNet-Lite0's stage output at its configured stride). BatchNorm statistics stay
  frozen (batches of 8 are too small to re-estimate them); ViTs have none. Inputs of any size
  are padded on the right and bottom to a multiple of the stride with the mean colour (zero
  after the normalisation, as SelfMask's ViT pads). A ViT's position embeddings are resized to
  the token grid as SelfMask's ViT resizes them (``F.interpolate(size=grid, mode="bicubic",
  align_corners=False)``, no antialiasing), whatever rule the backbone itself uses for its
  frozen features.
- **Decoder**: DETR's post-norm transformer decoder (self-attention, cross-attention to the
  encoder tokens, ReLU feed-forward of 4 x width, no dropout), 6 layers, 20 learned queries
  (drawn from N(0, 1)) added as positional embeddings to zero-initialised targets; every
  layer's output goes through the shared final LayerNorm (deep supervision).
- **Heads**: the pixel embeddings are the encoder features upsampled x2 (bilinear, no
  parameters); a query's mask is ``sigmoid(<query, pixel embedding>)``, its objectness
  ``sigmoid(MLP(query))`` (3 layers). Features wider or narrower than the decoder (anything but
  ViT-S's 384 by default) are first projected by a 1x1 convolution, as SelfMask did for ResNets.

This is the architecture of SelfMask's released ``MaskFormer`` (ViT-S, ``use_binary_classifier``,
bilinear pixel decoder, ``loss_every_decoder_layer``): :func:`convert_selfmask_state` maps a
state dict saved by SelfMask (e.g. the released ``selfmask_nq20_model.pt``) onto this module's
names, and ``tests/parity/test_selfmask.py`` checks the forward against the released code.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def is_plain_vit(net: nn.Module) -> bool:
    """Whether ``net`` is a ViT of DINO's layout (a class token and one position embedding per
    patch plus the class token, no register tokens) with timm's module names, so that
    SelfMask's own ViT forward (:meth:`Encoder.vit_tokens`) applies to it."""
    names = ("patch_embed", "cls_token", "pos_embed", "blocks", "norm", "norm_pre", "patch_drop", "pos_drop")
    return (all(getattr(net, name, None) is not None for name in names)
            and getattr(net, "reg_token", None) is None and not getattr(net, "no_embed_class", False)
            and net.pos_embed.dim() == 3 and round((net.pos_embed.shape[1] - 1) ** 0.5) ** 2 == net.pos_embed.shape[1] - 1)


class Encoder(nn.Module):
    """A trainable copy of a backbone's network mapping ``(B, 3, H, W)`` RGB in [0, 1], any size,
    to ``(B, C, ceil(H / s), ceil(W / s))``.

    Parameters
    ----------
    net : nn.Module
        The copy (:meth:`harness.api.Backbone.trainable_network`); stored as ``net``, so its
        weights are ``encoder.net.*`` in the detector's state dict.
    stride : int
        The backbone's stride s.
    mean, std : tuple of 3 floats
        The backbone's input normalisation (RGB in [0, 1] units).
    features : callable, optional
        ``features(net, images)`` -> feature grid, for inputs whose sides are multiples of the
        stride (:meth:`harness.api.Backbone.network_features`). ``None``: SelfMask's ViT
        forward (``net`` must satisfy :func:`is_plain_vit`): the last block's normalised patch
        tokens, position embeddings resized as SelfMask's ViT resizes them.
    channels : int
        C, the channels of what :meth:`forward` returns.

    Inputs are padded on the right and bottom to multiples of the stride with the mean colour
    (zero after the normalisation, as SelfMask's ViT pads).
    """

    def __init__(self, net: nn.Module, stride: int, mean, std, features=None, channels: int | None = None):
        super().__init__()
        if features is None and not is_plain_vit(net):
            raise ValueError("SelfMask's ViT forward needs a ViT of DINO's layout; pass the backbone's network_features")
        self.net, self.stride, self.features = net, stride, features
        self.kind = "vit" if features is None else "backbone"
        self.channels = int(channels if channels is not None else net.pos_embed.shape[-1])
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """Zero-pad ``(B, C, H, W)`` on the right and bottom to multiples of the stride."""
        height, width = x.shape[-2:]
        return F.pad(x, (0, -width % self.stride, 0, -height % self.stride))

    def pad_with_mean(self, images: torch.Tensor) -> torch.Tensor:
        """Pad RGB ``images`` on the right and bottom to multiples of the stride with the mean
        colour, which the backbone's normalisation maps to exactly zero."""
        batch, _, height, width = images.shape
        padded = (height - height % -self.stride, width - width % -self.stride)
        if padded == (height, width):
            return images
        canvas = self.mean.to(images.dtype).expand(batch, 3, *padded).clone()
        canvas[..., :height, :width] = images
        return canvas

    def position_embedding(self, grid: tuple[int, int]) -> torch.Tensor:
        """``(1, 1 + h * w, C)``: the class token's embedding and the patches' resized to ``grid``
        (bicubic by output size, ``align_corners=False``, no antialiasing: SelfMask's ViT)."""
        pos = self.net.pos_embed
        side = round((pos.shape[1] - 1) ** 0.5)
        if tuple(grid) == (side, side):
            return pos
        patches = pos[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
        patches = F.interpolate(patches, size=tuple(grid), mode="bicubic", align_corners=False)
        return torch.cat([pos[:, :1], patches.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], -1)], dim=1)

    def vit_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """SelfMask's ViT forward of normalised, padded ``x``: ``(B, h * w, C)`` patch tokens
        after the last block and the final LayerNorm."""
        net = self.net
        grid = (x.shape[-2] // self.stride, x.shape[-1] // self.stride)
        tokens = net.patch_embed(x)
        tokens = tokens.reshape(x.shape[0], grid[0] * grid[1], -1)  # NHWC (dynamic size) or NLC
        tokens = torch.cat([net.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1) + self.position_embedding(grid)
        tokens = net.norm_pre(net.patch_drop(net.pos_drop(tokens)))
        return net.norm(net.blocks(tokens))[:, 1:]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` RGB in [0, 1], any size -> ``(B, C, ceil(H / s), ceil(W / s))``."""
        if self.kind == "backbone":
            return self.features(self.net, self.pad_with_mean(images))
        x = self.pad((images - self.mean) / self.std)
        height, width = x.shape[-2:]
        tokens = self.vit_tokens(x)
        return tokens.transpose(1, 2).reshape(x.shape[0], -1, height // self.stride, width // self.stride)


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
        images: (B, 3, H, W) RGB in [0, 1], any size (zero-padded after normalisation to
        multiples of the encoder's stride s). Returns ``masks`` (B, L, Q, 2 ceil(H/s),
        2 ceil(W/s)) and ``objectness`` (B, L, Q), both in [0, 1].
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


# ---- SelfMask's own state dicts ---------------------------------------------------------
#: prefixes of a state dict saved by SelfMask's ``MaskFormer`` -> this module's names
_RENAMES = (("encoder.", "encoder.net."), ("decoder.norm.", "norm."), ("decoder.layers.", "layers."))
#: the released objectness MLP ``ffn.layers.<k>`` -> ``objectness.<2k>`` (ReLUs between)
_FFN_LAYERS = 3


def is_selfmask_state(state) -> bool:
    """Whether ``state`` looks like a state dict saved by SelfMask's code (a plain mapping of
    tensors with its ``query_embed`` and ``decoder.layers.*`` names)."""
    return (isinstance(state, dict) and "query_embed" in state and "format" not in state
            and any(isinstance(k, str) and k.startswith("decoder.layers.") for k in state))


def unwrap_selfmask_state(payload) -> dict | None:
    """The state dict inside what SelfMask saves: the bare dict (``selfmask_nq20_model.pt``), or
    ``{"model": ..., "optimizer": ...}`` (its ``latest_model.pt``), DataParallel's ``module.``
    prefix removed; ``None`` for anything else."""
    if isinstance(payload, dict) and "format" not in payload and isinstance(payload.get("model"), dict):
        payload = payload["model"]
    if isinstance(payload, dict) and payload and all(isinstance(k, str) and k.startswith("module.") for k in payload):
        payload = {k[len("module."):]: v for k, v in payload.items()}
    return payload if is_selfmask_state(payload) else None


def convert_selfmask_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a SelfMask ``MaskFormer`` state dict (ViT encoder, ``use_binary_classifier``) onto
    :class:`SelfMaskNet`'s names: ``encoder.*`` -> ``encoder.net.*``, ``decoder.layers.<i>.
    multihead_attn`` -> ``layers.<i>.cross_attn``, ``decoder.norm`` -> ``norm``, ``ffn.layers.<k>``
    -> ``objectness.<2k>``; ``query_embed`` is kept.

    Raises
    ------
    ValueError
        For a key of another variant (a ResNet encoder's ``linear_layer``, the two-class
        ``linear_classifier``), naming it.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = key
        if key == "query_embed":
            pass
        elif key.startswith("ffn.layers."):
            index, rest = key[len("ffn.layers."):].split(".", 1)
            if not index.isdigit() or int(index) >= _FFN_LAYERS:
                raise ValueError(f"unexpected objectness layer {key!r}")
            new = f"objectness.{2 * int(index)}.{rest}"
        else:
            for old, replacement in _RENAMES:
                if key.startswith(old):
                    new = replacement + key[len(old):]
                    break
            else:
                raise ValueError(f"{key!r} belongs to a SelfMask variant this network does not build "
                                 f"(a ViT encoder with the binary objectness head is supported)")
            new = new.replace(".multihead_attn.", ".cross_attn.")
        if new == "query_embed" and value.dim() != 2:
            raise ValueError(f"query_embed has shape {tuple(value.shape)}, expected (queries, width)")
        out[new] = value
    return out


def selfmask_geometry(state: dict[str, torch.Tensor]) -> dict[str, int]:
    """What a SelfMask state dict implies: queries, decoder layers and width, heads (the
    encoder's: width / 64, as ViT-S and ViT-B), the encoder's patch size and width.

    Raises
    ------
    ValueError
        When a defining weight is missing.
    """
    try:
        queries, dim = state["query_embed"].shape
        patch = int(state["encoder.patch_embed.proj.weight"].shape[-1])
        width = int(state["encoder.patch_embed.proj.weight"].shape[0])
    except KeyError as exc:
        raise ValueError(f"it lacks {exc.args[0]!r} (a ViT encoder is supported)") from None
    layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("decoder.layers."))
    return {"queries": int(queries), "decoder_layers": layers, "decoder_dim": int(dim), "heads": int(dim) // 64,
            "patch": patch, "width": width}
