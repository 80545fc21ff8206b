"""DINO and iBOT Vision Transformers through timm, returning last-block attention features.

``features(images)`` returns the patch grid of the last block's attention **keys** by default
(the features TokenCut, LOST and Deep Spectral Methods use), or its queries, values, or the
final output tokens (after the last LayerNorm), chosen with the ``features`` option. Keys,
queries and values are read by a forward hook on the last block's ``attn.qkv`` projection;
the heads are concatenated in head order, as in the DINO code (C = embedding width).

Any input whose sides are multiples of the patch size works. At a grid other than the
checkpoint's (14 x 14 for 224 px) the position embeddings are resampled by DINO's rule, the
one DINO, iBOT, TokenCut, LOST, Deep Spectral Methods and SelfMask ran with: plain bicubic
(no antialiasing) with the *scale factor* ``(grid + 0.1) / 14`` per axis, not the output
size; sampling positions then follow the slightly larger factor, so the field differs from
timm's size-based, antialiased ``dynamic_img_size`` resampling (12% RMS on random-valued
embeddings, about 5% on trained ones; see :func:`dino_position_embeddings`). At the checkpoint's own grid nothing is resampled.

Two DINO ViT-S/8 checkpoints exist: ``dino-vits8`` loads the 800-epoch
``dino_deitsmall8_pretrain.pth`` of DINO's README (the one segmentation-tricks used);
``dino-vits8-300ep`` loads ``dino_deitsmall8_300ep_pretrain.pth``, which TokenCut S/8, LOST
S/8 and SelfMask load in their code.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from harness.api import Backbone, Option
from harness.backbones.weights import (
    WeightsSource,
    file_digest,
    load_strict,
    read_state_dict,
    resolve_weights,
    unwrap_state_dict,
)
from harness.errors import HarnessError

FEATURE_CHOICES = ("keys", "queries", "values", "tokens")
_QKV_ORDER = ("queries", "keys", "values")
_DINO_URL = "https://dl.fbaipublicfiles.com/dino/{0}/{0}.pth"


class TimmBackboneMixin:
    """Weights resolution, digest and device bookkeeping shared by the timm backbones."""

    source: ClassVar[WeightsSource]

    def _init_state(self) -> None:
        self._model = None
        self._path: Path | None = None
        self._digest: str | None = None
        self.device = "cpu"

    def weights_path(self) -> Path:
        """The resolved weights file (see :mod:`harness.backbones.weights`)."""
        if self._path is None:
            self._path = resolve_weights(self.name, self.source, self.weights)
        return self._path

    @property
    def weights_digest(self) -> str:
        if self._digest is None:
            self._digest = file_digest(self.weights_path())
        return self._digest

    def _normalise(self, images, loaded: bool = True):
        """``(images - mean) / std`` after checking the shape, the stride and (``loaded``) that
        :meth:`load` was called."""
        import torch

        if images.ndim != 4 or images.shape[1] != 3:
            raise HarnessError(f"backbone {self.name!r}: expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        height, width = images.shape[-2:]
        if height % self.stride or width % self.stride:
            raise HarnessError(
                f"backbone {self.name!r}: input size {height}x{width} is not a multiple of its stride "
                f"{self.stride}; resize or pad the images first"
            )
        if loaded and self._model is None:
            raise HarnessError(f"backbone {self.name!r}: call load(device) before features()")
        mean = torch.tensor(self.mean, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
        return (images - mean) / std


def dino_position_embeddings(pos_embed, grid: tuple[int, int], trained_grid: tuple[int, int], prefix: int = 1):
    """Position embeddings for a ``grid = (h, w)`` patch grid, by DINO's rule.

    Parameters
    ----------
    pos_embed : torch.Tensor
        ``(1, prefix + gh * gw, C)``: the class token's embedding, then the trained grid's.
    grid : tuple of int
        The input's patch grid ``(h, w)``.
    trained_grid : tuple of int
        ``(gh, gw)`` of the checkpoint (``(14, 14)`` for 224 px).
    prefix : int
        Number of prefix tokens (the class token).

    Returns
    -------
    torch.Tensor
        ``pos_embed`` itself at the trained grid; otherwise the patch part resampled with
        ``F.interpolate(mode="bicubic", scale_factor=((h + 0.1) / gh, (w + 0.1) / gw))``, which
        gives exactly ``(h, w)`` outputs whose sampling positions follow the given factor
        (DINO's ``interpolate_pos_encoding``; no antialiasing).
    """
    import torch
    import torch.nn.functional as F

    h, w = grid
    gh, gw = trained_grid
    if (h, w) == (gh, gw):
        return pos_embed
    dim = pos_embed.shape[-1]
    field = pos_embed[:, prefix:].reshape(1, gh, gw, dim).permute(0, 3, 1, 2)
    # the +0.1 keeps floor(side * factor) at h and w despite float round-off (DINO issue #8);
    # passing the factor (not the size) is what fixes the sampling positions
    field = F.interpolate(field, scale_factor=((h + 0.1) / gh, (w + 0.1) / gw),
                          mode="bicubic", align_corners=False)
    if field.shape[-2:] != (h, w):  # pragma: no cover - the +0.1 rules this out
        raise HarnessError(f"position embeddings resampled to {tuple(field.shape[-2:])}, expected {(h, w)}")
    field = field.permute(0, 2, 3, 1).reshape(1, h * w, dim)
    return torch.cat([pos_embed[:, :prefix], field], dim=1)


def _dino_pos_embed(model, x):
    """A replacement for timm's ``VisionTransformer._pos_embed`` (NHWC patch tokens in,
    prefix + patch tokens out) that resamples the position embeddings by DINO's rule."""
    import torch

    batch, h, w, dim = x.shape
    pos = dino_position_embeddings(model.pos_embed, (h, w), tuple(model.patch_embed.grid_size),
                                   model.num_prefix_tokens)
    tokens = torch.cat([model.cls_token.expand(batch, -1, -1), x.reshape(batch, h * w, dim)], dim=1)
    return model.pos_drop(tokens + pos)


class ViTBackbone(TimmBackboneMixin, Backbone):
    """A timm Vision Transformer; keys, queries and values are read by a forward hook on the
    last block's qkv projection, placed for the duration of one forward pass.

    ``trainable_network`` gives a new copy of the network (the whole ViT: SelfMask fine-tunes
    every block and reads the final normalised tokens) and ``network_features`` the configured
    feature through such a copy, with gradients.

    ``version`` 2: position embeddings resampled by DINO's rule (was timm's).
    """

    family = "vit"
    version = "2"
    arch: ClassVar[str] = ""
    embed_dim: ClassVar[int] = 384
    options = (
        Option("features", "keys", "last-block feature: keys (TokenCut/LOST/DSM), queries, values, or "
               "tokens (final normalised output)", choices=FEATURE_CHOICES),
    )

    def __init__(self, weights: str | Path | None = None, **config: Any) -> None:
        super().__init__(weights=weights, **config)
        self._init_state()

    @property
    def feature_dim(self) -> int:
        return self.embed_dim

    def build(self):
        """The timm network with random weights (no download: ``pretrained=False``), taking any
        input size, with DINO's position-embedding rule (:func:`dino_position_embeddings`)."""
        import types

        import timm

        model = timm.create_model(self.arch, pretrained=False, num_classes=0, dynamic_img_size=True)
        if model.cls_token is None or model.reg_token is not None or model.no_embed_class:
            raise HarnessError(f"backbone {self.name!r}: timm's {self.arch} is not a DINO-layout ViT")
        model._pos_embed = types.MethodType(_dino_pos_embed, model)
        return model

    def load(self, device: str = "cpu") -> None:
        """Build the network, load the weights strictly, freeze it and move it to ``device``.

        Calling it again only moves the network if ``device`` changed.
        """
        if self._model is None:
            path = self.weights_path()
            model = self.build()
            load_strict(model, unwrap_state_dict(read_state_dict(path), path), path, self.name)
            self._attach(model)
            self.device = "cpu"
        if device != self.device:
            self._model.to(device)
            self.device = device

    def _attach(self, model) -> None:
        """Freeze ``model`` and keep it as the backbone's network."""
        self._model = model.eval().requires_grad_(False)

    @property
    def model(self):
        """The loaded timm network (after :meth:`load`)."""
        return self._model

    def features(self, images):
        """Last-block features as a patch grid.

        Parameters
        ----------
        images : torch.Tensor
            ``(B, 3, H, W)`` RGB in [0, 1] on the backbone's device; H, W multiples of ``stride``.

        Returns
        -------
        torch.Tensor
            ``(B, C, H / stride, W / stride)``, C = :attr:`feature_dim`, in the input's dtype
            family (float32 unless under autocast).
        """
        import torch

        x = self._normalise(images)
        with torch.no_grad():
            return self._grid(self._model, x)

    def trainable_network(self, pretrained: bool = True):
        """A new timm ViT of this architecture (DINO's position-embedding rule), trainable, on the
        CPU; with ``pretrained`` it holds this backbone's weights (loaded first if needed)."""
        if pretrained and self._model is None:
            self.load(self.device)
        network = self.build()  # a new module: nothing is shared with the frozen network
        if pretrained:
            network.load_state_dict(self._model.state_dict())
        return network.train().requires_grad_(True)

    def network_features(self, network, images):
        """:meth:`features` through ``network`` (a :meth:`trainable_network` copy), with gradients."""
        return self._grid(network, self._normalise(images, loaded=False))

    def _grid(self, network, x):
        """The configured last-block feature of normalised ``x`` through ``network``, as a grid."""
        batch, _, height, width = x.shape
        grid = (height // self.stride, width // self.stride)
        prefix = network.num_prefix_tokens
        choice = self.config["features"]
        if choice == "tokens":
            out = network.forward_features(x)[:, prefix:]
        else:
            seen: dict[str, Any] = {}
            hook = network.blocks[-1].attn.qkv.register_forward_hook(lambda module, args, output: seen.update(out=output))
            try:
                network.forward_features(x)
            finally:
                hook.remove()
            part = _QKV_ORDER.index(choice)  # qkv output is laid out (q|k|v, heads, head_dim)
            dim = self.embed_dim
            out = seen["out"][:, prefix:, part * dim:(part + 1) * dim]
        return out.transpose(1, 2).reshape(batch, -1, *grid)


def _dino_source(arch: str, file_stem: str) -> WeightsSource:
    return WeightsSource(f"{file_stem}.pth", _DINO_URL.format(file_stem), f"timm/{arch}.dino")


class DinoVitS8(ViTBackbone):
    name = "dino-vits8"
    description = "DINO ViT-S/8, 800-epoch checkpoint (DINO's release), last-block attention keys, stride 8"
    arch, stride, embed_dim = "vit_small_patch8_224", 8, 384
    source = _dino_source(arch, "dino_deitsmall8_pretrain")


class DinoVitS8Ep300(ViTBackbone):
    name = "dino-vits8-300ep"
    description = ("DINO ViT-S/8, 300-epoch checkpoint (TokenCut/LOST/SelfMask's S/8), last-block attention "
                   "keys, stride 8")
    arch, stride, embed_dim = "vit_small_patch8_224", 8, 384
    source = WeightsSource("dino_deitsmall8_300ep_pretrain.pth", _DINO_URL.format("dino_deitsmall8_300ep_pretrain"))


class DinoVitS16(ViTBackbone):
    name = "dino-vits16"
    description = "DINO ViT-S/16 (timm), last-block attention keys, stride 16"
    arch, stride, embed_dim = "vit_small_patch16_224", 16, 384
    source = _dino_source(arch, "dino_deitsmall16_pretrain")


class DinoVitB8(ViTBackbone):
    name = "dino-vitb8"
    description = "DINO ViT-B/8 (timm), last-block attention keys, stride 8"
    arch, stride, embed_dim = "vit_base_patch8_224", 8, 768
    source = _dino_source(arch, "dino_vitbase8_pretrain")


class DinoVitB16(ViTBackbone):
    name = "dino-vitb16"
    description = "DINO ViT-B/16 (timm), last-block attention keys, stride 16"
    arch, stride, embed_dim = "vit_base_patch16_224", 16, 768
    source = _dino_source(arch, "dino_vitbase16_pretrain")


class IbotVitS16(ViTBackbone):
    """iBOT ViT-S/16 (Zhou et al., ICLR 2022) from a local teacher checkpoint.

    iBOT's release names the file ``checkpoint_teacher.pth`` (under ``vits_16/``); the
    harness never downloads it. Pass it with ``--weights``, or save it in the torch hub
    cache as ``ibot_vits16_checkpoint_teacher.pth``. The checkpoint's ``state_dict``
    wrapper, ``module.``/``backbone.`` prefixes, projection head and ``masked_embed`` are
    stripped before the strict load.
    """

    name = "ibot-vits16"
    description = "iBOT ViT-S/16 from a local checkpoint (--weights), last-block attention keys, stride 16"
    arch = "vit_small_patch16_224"
    stride = 16
    embed_dim = 384
    source = WeightsSource("ibot_vits16_checkpoint_teacher.pth")


def random_official_state(arch_dim: int, depth: int, patch: int, grid: int = 14, seed: int = 0) -> dict:
    """A state dict with random values in the official DINO key layout (tests, benchmarks).

    Parameters
    ----------
    arch_dim : int
        Embedding width (384 for ViT-S, 768 for ViT-B); heads have 64 channels.
    depth : int
        Number of blocks (12 for the DINO models).
    patch : int
        Patch size.
    grid : int
        Side of the position-embedding grid (224 / patch in the official files).
    """
    import torch

    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=gen) * 0.02

    d = arch_dim
    state = {
        "cls_token": rand(1, 1, d),
        "pos_embed": rand(1, 1 + grid * grid, d),
        "patch_embed.proj.weight": rand(d, 3, patch, patch),
        "patch_embed.proj.bias": rand(d),
    }
    for i in range(depth):
        p = f"blocks.{i}."
        state.update({
            p + "norm1.weight": 1 + rand(d), p + "norm1.bias": rand(d),
            p + "attn.qkv.weight": rand(3 * d, d), p + "attn.qkv.bias": rand(3 * d),
            p + "attn.proj.weight": rand(d, d), p + "attn.proj.bias": rand(d),
            p + "norm2.weight": 1 + rand(d), p + "norm2.bias": rand(d),
            p + "mlp.fc1.weight": rand(4 * d, d), p + "mlp.fc1.bias": rand(4 * d),
            p + "mlp.fc2.weight": rand(d, 4 * d), p + "mlp.fc2.bias": rand(d),
        })
    state["norm.weight"] = 1 + rand(d)
    state["norm.bias"] = rand(d)
    return state
