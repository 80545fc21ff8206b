"""Backbones: weights resolution (offline, fast errors), strict loads of the official layouts,
digests, the features (keys checked against a manual recomputation) and the feature cache."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.api import Backbone, Option
from harness.backbones.effnet import EffNetLite0, packaged_weights
from harness.backbones.features import FeatureCache, FeatureExtractor, FeatureRequest
from harness.backbones.vit import DinoVitS8, DinoVitS16, IbotVitS16, random_official_state
from harness.backbones.weights import file_digest
from harness.cli import main
from harness.errors import HarnessError
from harness.runner import RunSpec, run


@pytest.fixture(scope="module")
def dino_s16_file(tmp_path_factory) -> Path:
    """Random values in the official DINO ViT-S/16 key layout, saved under the official name."""
    path = tmp_path_factory.mktemp("weights") / "dino_deitsmall16_pretrain.pth"
    torch.save(random_official_state(384, 12, 16), path)
    return path


@pytest.fixture()
def empty_caches(tmp_path, monkeypatch) -> Path:
    """No torch hub or Hugging Face cache: only what a test puts there is found."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    return tmp_path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- weights: resolution, errors, digests ----------------------------------------------------

def test_missing_weights_offline_is_one_clear_error(empty_caches, capsys):
    # that offline resolution opens no socket (so never waits for a time-out) is test_offline.py's
    with pytest.raises(HarnessError) as info:
        DinoVitS8().weights_digest
    message = str(info.value)
    assert "dino_deitsmall8_pretrain.pth" in message
    assert str(empty_caches / "torch" / "hub" / "checkpoints" / "dino_deitsmall8_pretrain.pth") in message
    assert "--weights" in message and "https://dl.fbaipublicfiles.com/dino/" in message
    # through the CLI: exit status 2, one line, no traceback
    assert main(["run", "--method", "tokencut", "--dataset", "synthetic", "--out", str(empty_caches / "runs")]) == 2
    err = capsys.readouterr().err
    assert "dino_deitsmall16_pretrain.pth" in err and "Traceback" not in err


def test_ibot_needs_a_local_checkpoint(empty_caches):
    with pytest.raises(HarnessError, match="ibot_vits16_checkpoint_teacher.pth.*--weights"):
        IbotVitS16().weights_path()
    with pytest.raises(HarnessError, match="no such file"):
        IbotVitS16(weights=empty_caches / "nope.pth").weights_path()


def test_official_dino_file_loads_strictly_through_weights_and_its_digest_is_recorded(dino_s16_file, tmp_path):
    spec = RunSpec(method="tokencut", dataset="synthetic", dataset_args={"count": 2, "height": 64, "width": 96},
                   backbone="dino-vits16", weights=str(dino_s16_file), out=tmp_path / "runs", progress=False)
    result = run(spec)
    digest = _sha256(dino_s16_file)
    assert result.results["weights_digest"] == digest
    assert result.results["config"]["backbone"]["weights_digest"] == digest
    saved = json.loads((result.run_dir / "results.json").read_text())
    assert saved["weights_digest"] == digest
    # every tensor of the file is in the network, unchanged (a strict load, no renaming)
    backbone = DinoVitS16(weights=dino_s16_file)
    backbone.load("cpu")
    state = torch.load(dino_s16_file)
    model_state = backbone.model.state_dict()
    assert set(model_state) == set(state)
    assert all(torch.equal(model_state[k], state[k]) for k in state)


def test_training_checkpoint_layouts_are_unwrapped(dino_s16_file, tmp_path):
    """DINO full checkpoints ('teacher', 'backbone.' + 'head.' keys) and iBOT ones
    ('state_dict', 'module.backbone.', 'masked_embed') load into the same network."""
    state = torch.load(dino_s16_file)
    dino_full = {"teacher": {f"backbone.{k}": v for k, v in state.items()}
                 | {"head.mlp.0.weight": torch.zeros(8, 384), "head.last_layer.weight_g": torch.ones(1, 1)}}
    ibot = {"state_dict": {f"module.backbone.{k}": v for k, v in state.items()}
            | {"module.backbone.masked_embed": torch.zeros(1, 384), "module.head.mlp.0.bias": torch.zeros(8)}}
    for name, obj in (("dino_full.pth", dino_full), ("ibot.pth", ibot)):
        torch.save(obj, tmp_path / name)
        backbone = IbotVitS16(weights=tmp_path / name)
        backbone.load("cpu")
        assert torch.equal(backbone.model.state_dict()["blocks.11.attn.qkv.weight"], state["blocks.11.attn.qkv.weight"])


def test_a_file_of_another_architecture_is_a_clear_error(dino_s16_file):
    with pytest.raises(HarnessError, match="dino_deitsmall16_pretrain.pth does not fit backbone 'dino-vits8'"):
        DinoVitS8(weights=dino_s16_file).load("cpu")


def test_torch_hub_cache_then_hugging_face_cache(empty_caches, dino_s16_file):
    from safetensors.torch import save_file

    # Hugging Face cache layout: models--<org>--<name>/{refs/main, snapshots/<rev>/model.safetensors}
    repo = empty_caches / "hf" / "hub" / "models--timm--vit_small_patch16_224.dino"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    save_file(torch.load(dino_s16_file), str(snapshot / "model.safetensors"))
    backbone = DinoVitS16()
    assert backbone.weights_path() == snapshot / "model.safetensors"
    backbone.load("cpu")  # timm's converted file loads strictly too
    # the torch hub cache under the official name comes first
    hub = empty_caches / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    os.symlink(dino_s16_file, hub / "dino_deitsmall16_pretrain.pth")
    assert DinoVitS16().weights_path() == hub / "dino_deitsmall16_pretrain.pth"


def test_digest_is_cached_by_path_size_and_mtime(tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(b"a" * 1000)
    first = file_digest(path)
    assert first == hashlib.sha256(b"a" * 1000).hexdigest()
    stat = path.stat()
    # same size and mtime: the recorded digest is trusted, the file is not read again
    path.write_bytes(b"b" * 1000)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert file_digest(path) == first
    # a new mtime: hashed again
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert file_digest(path) == hashlib.sha256(b"b" * 1000).hexdigest()


# ---- features ------------------------------------------------------------------------------------

def _manual_last_block(model, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """qkv output of the last block and final tokens, recomputed step by step."""
    x = model.patch_embed(images)
    x = model._pos_embed(x)
    x = model.norm_pre(x)
    for block in model.blocks[:-1]:
        x = block(x)
    last = model.blocks[-1]
    qkv = torch.nn.functional.linear(last.norm1(x), last.attn.qkv.weight, last.attn.qkv.bias)
    tokens = model.norm(last(x))
    return qkv, tokens


@pytest.mark.parametrize("choice", ["keys", "queries", "values", "tokens"])
def test_vit_features_match_a_manual_recomputation(dino_s16_file, choice):
    backbone = DinoVitS16(weights=dino_s16_file, features=choice)
    backbone.load("cpu")
    images = torch.rand(2, 3, 224, 160, generator=torch.Generator().manual_seed(0))  # 14 x 10 grid
    feats = backbone.features(images)
    assert feats.shape == (2, 384, 14, 10)
    mean = torch.tensor(backbone.mean).view(1, 3, 1, 1)
    std = torch.tensor(backbone.std).view(1, 3, 1, 1)
    with torch.no_grad():
        qkv, tokens = _manual_last_block(backbone.model, (images - mean) / std)
    heads = 6
    per_head = qkv.reshape(2, 141, 3, heads, 64).permute(2, 0, 3, 1, 4)  # (3, B, heads, N, 64)
    index = ["queries", "keys", "values"].index(choice) if choice != "tokens" else None
    if index is None:
        expected = tokens[:, 1:]
    else:  # heads concatenated in order, class token dropped
        expected = per_head[index].transpose(1, 2).reshape(2, 141, 384)[:, 1:]
    expected = expected.transpose(1, 2).reshape(2, 384, 14, 10)
    torch.testing.assert_close(feats, expected, rtol=1e-4, atol=1e-5)


# ---- trainable copies of the network (Backbone.trainable_network / network_features) ------------

def _fine_tunable(kind: str, weights: Path):
    if kind.startswith("effnet"):
        return EffNetLite0(stride=kind.split("-s")[1])
    return DinoVitS16(weights=weights, features=kind.split("-")[1])


#: what a ViT's attention keys never reach: the last block after its qkv projection, the final norm
_AFTER_KEYS = ("blocks.11.attn.proj.", "blocks.11.norm2.", "blocks.11.mlp.", "norm.")


@pytest.mark.parametrize("kind", ["effnet-s8", "effnet-s16", "vit-keys", "vit-tokens"])
def test_a_trainable_copy_gives_the_features_with_gradients_and_leaves_the_backbone_frozen(dino_s16_file, kind):
    backbone = _fine_tunable(kind, dino_s16_file)
    backbone.load("cpu")
    images = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    frozen = backbone.features(images)
    network = backbone.trainable_network()
    assert network.training and all(p.requires_grad for p in network.parameters())
    assert not {p.data_ptr() for p in network.parameters()} & {p.data_ptr() for p in backbone.model.parameters()}
    with torch.no_grad():
        same = backbone.network_features(network.eval(), images)
    torch.testing.assert_close(same, frozen, rtol=1e-6, atol=1e-6)  # the loaded weights, the same function
    out = backbone.network_features(network.train(), images)
    assert out.shape == (2, backbone.feature_dim, 64 // backbone.stride, 96 // backbone.stride) and out.requires_grad
    out.square().mean().backward()
    unused = sorted(name for name, p in network.named_parameters() if p.grad is None)
    if kind == "vit-keys":  # a ViT keeps its whole network (SelfMask reads its final tokens)
        assert unused and all(name.startswith(_AFTER_KEYS) for name in unused)
        assert {name.split(".")[0] for name in unused} == {"blocks", "norm"}
    else:  # every parameter left takes part (DistributedDataParallel needs it): EfficientNet is cut after its stage
        assert unused == []
    with torch.no_grad():
        for p in network.parameters():
            p.add_(0.1)
    assert torch.equal(backbone.features(images), frozen)  # the frozen backbone did not move
    assert not any(p.requires_grad for p in backbone.model.parameters())


def test_an_untrained_copy_reads_no_weights_and_a_backbone_without_one_says_so(tmp_path, dino_s16_file):
    missing = tmp_path / "no_such_weights.pth"
    effnet = EffNetLite0(weights=missing, stride="8")
    bare = effnet.trainable_network(pretrained=False)  # the architecture alone: the missing file is not read
    pretrained = EffNetLite0(stride="8").trainable_network()
    assert list(bare.state_dict()) == list(pretrained.state_dict())
    assert not any(k.startswith(("blocks.3.", "conv_head", "bn2", "classifier")) for k in bare.state_dict())
    assert not torch.equal(bare.conv_stem.weight, pretrained.conv_stem.weight)
    assert _grid_shape(effnet, bare) == (1, 40, 4, 6)
    with pytest.raises(HarnessError, match="no_such_weights.pth: no such file"):
        effnet.trainable_network()  # with weights, the file is needed

    vit = DinoVitS16(weights=dino_s16_file)
    copy = vit.trainable_network()  # loads the backbone first
    assert vit.model is not None
    assert torch.equal(copy.state_dict()["blocks.3.attn.qkv.weight"], vit.model.state_dict()["blocks.3.attn.qkv.weight"])

    class Frozen(Backbone):
        name = "frozen-only"

    with pytest.raises(HarnessError, match=r"backbone 'frozen-only' offers no trainable copy of its network "
                                           r"\(Backbone.trainable_network\)"):
        Frozen().trainable_network()
    with pytest.raises(HarnessError, match=r"\(Backbone.network_features\)"):
        Frozen().network_features(None, torch.zeros(1, 3, 8, 8))


def _grid_shape(backbone, network) -> tuple[int, ...]:
    with torch.no_grad():
        return tuple(backbone.network_features(network.eval(), torch.rand(1, 3, 32, 48)).shape)


def test_vit_rejects_sizes_that_are_not_patch_multiples(dino_s16_file):
    backbone = DinoVitS16(weights=dino_s16_file)
    backbone.load("cpu")
    with pytest.raises(HarnessError, match="not a multiple of its stride 16"):
        backbone.features(torch.rand(1, 3, 224, 100))


def test_effnet_weights_load_strictly_and_classify_imagenet_photos():
    """The key rename is right: a cat photo gets a cat class (281-285) and the coffee photo an
    espresso/cup class (967/968); the backbone normalises its inputs exactly as (x - 0.5) / 0.5.
    (The confidence tells no convention apart: raw [0, 1] inputs also give these classes at
    over 0.5, so the convention is checked by equality instead.)"""
    import skimage.data
    from PIL import Image

    assert packaged_weights() is not None
    backbone = EffNetLite0()
    backbone.load("cpu")
    assert backbone.weights_digest == _sha256(packaged_weights())
    for photo, classes in ((skimage.data.chelsea(), range(281, 286)), (skimage.data.coffee(), (967, 968))):
        x = np.asarray(Image.fromarray(photo).resize((224, 224), Image.BICUBIC), np.float32) / 255
        x = torch.from_numpy(x).permute(2, 0, 1)[None]
        assert torch.equal(backbone._normalise(x), (x - 0.5) / 0.5)
        with torch.no_grad():
            probs = backbone.model(backbone._normalise(x)).softmax(-1)[0]
        assert int(probs.argmax()) in classes


def test_effnet_feature_strides_and_list_marks_it_supervised(capsys):
    images = torch.rand(1, 3, 192, 256)
    for stride, channels in ((16, 112), (8, 40)):
        backbone = EffNetLite0(stride=str(stride))
        backbone.load("cpu")
        assert backbone.feature_dim == channels
        assert backbone.features(images).shape == (1, channels, 192 // stride, 256 // stride)
    assert main(["list", "backbones"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert "[supervised]" in lines["effnet-lite0"]
    assert "[self-supervised]" in lines["dino-vits16"]


# ---- feature cache -------------------------------------------------------------------------------

class MeanColour(Backbone):
    """A stand-in backbone: the mean colour of each 4x4 cell; counts its calls."""

    name = "mean-colour"
    description = "test backbone"
    stride = 4
    options = (Option("gain", 1.0, "multiplies the features"),)
    calls: list = []

    @property
    def weights_digest(self):
        return "0" * 64

    @property
    def feature_dim(self):
        return 3

    def load(self, device="cpu"):
        pass

    def features(self, images):
        MeanColour.calls.append(tuple(images.shape))
        return torch.nn.functional.avg_pool2d(images, 4) * self.config["gain"]


def _request(image_id: str, size: tuple[int, int], value: float) -> FeatureRequest:
    return FeatureRequest(image_id, f"digest-{image_id}", f"pad:{size[0]}x{size[1]}",
                          lambda: np.full((*size, 3), value, np.float32))


def test_feature_cache_batches_by_size_stores_float32_and_is_shared(tmp_path):
    MeanColour.calls = []
    extractor = FeatureExtractor(MeanColour(), "cpu", tmp_path, batch_size=8)
    requests = [_request("a", (8, 8), 0.1), _request("b", (8, 12), 0.2), _request("c", (8, 8), 0.3)]
    grids = extractor.grids(requests)
    assert sorted(MeanColour.calls) == [(1, 3, 8, 12), (2, 3, 8, 8)]  # one batch per input size
    assert [g.shape for g in grids] == [(3, 2, 2), (3, 2, 3), (3, 2, 2)]
    assert grids[2][0, 0, 0] == np.float32(0.3)  # stored as float32: exactly the backbone's output
    stored = list((tmp_path / "features").rglob("*.entry"))
    assert len(stored) == 3 and all(b'"dtype": "<f4"' in p.read_bytes().split(b"\n")[1] for p in stored)
    # another method on the same backbone reads the same entries: no backbone call
    MeanColour.calls = []
    again = FeatureExtractor(MeanColour(), "cpu", tmp_path).grids(requests)
    assert MeanColour.calls == [] and all(np.array_equal(x, y) for x, y in zip(grids, again))
    # other options (a different identity) or another preparation miss the cache
    FeatureExtractor(MeanColour(gain=2.0), "cpu", tmp_path).grids(requests[:1])
    FeatureExtractor(MeanColour(), "cpu", tmp_path).grids(
        [FeatureRequest("a", "digest-a", "resize-lanczos:8x8", requests[0].make_input)])
    assert len(MeanColour.calls) == 2
    # a truncated entry is recomputed, not read
    stored[0].write_bytes(stored[0].read_bytes()[:20])
    MeanColour.calls = []
    FeatureExtractor(MeanColour(), "cpu", tmp_path).grids(requests)
    assert len(MeanColour.calls) == 1


def test_feature_cache_round_trip(tmp_path):
    cache = FeatureCache(tmp_path)
    array = np.linspace(-3, 3, 24, dtype=np.float32).reshape(2, 3, 4) + np.float32(1e-4)  # not float16-exact
    cache.put("ab" * 20, array)
    np.testing.assert_array_equal(cache.get("ab" * 20), array)
    assert cache.get("ab" * 20).dtype == np.float32
    assert cache.get("cd" * 20) is None


def test_float16_entries_of_the_old_format_are_never_read(tmp_path):
    """Keys hash the storage format: an entry stored (as float16) under the key the old
    format gave the same request is not read back; the features are recomputed."""
    from harness.backbones import features
    from harness.cache import stable_hash

    MeanColour.calls = []
    extractor = FeatureExtractor(MeanColour(), "cpu", tmp_path)
    request = _request("a", (8, 8), 0.1)
    old_key = stable_hash([extractor.backbone_key, request.preparation, request.image_id, request.image_digest])
    assert extractor.key(request) != old_key and features.CACHE_FORMAT == "float32"
    FeatureCache(tmp_path).path(old_key).parent.mkdir(parents=True, exist_ok=True)
    np.save(FeatureCache(tmp_path).path(old_key), np.full((3, 2, 2), 7, np.float16))
    grid = extractor.grids([request])[0]
    assert MeanColour.calls == [(1, 3, 8, 8)] and grid[0, 0, 0] == pytest.approx(0.1, rel=1e-6)


def test_tokencut_and_lost_share_cached_features(tmp_path):
    """TokenCut (detection input) and LOST pad the image the same way: LOST's run after
    TokenCut's adds no feature entries."""
    common = dict(dataset="synthetic", dataset_args={"count": 2, "height": 64, "width": 96},
                  backbone="effnet-lite0", out=tmp_path / "runs", progress=False, cache_dir=tmp_path / "cache")
    run(RunSpec(method="tokencut", method_args={"mode": "detection"}, **common))
    entries = set((tmp_path / "cache" / "features").rglob("*.entry"))
    assert len(entries) == 2
    run(RunSpec(method="lost", **common))
    assert set((tmp_path / "cache" / "features").rglob("*.entry")) == entries
    run(RunSpec(method="tokencut", **common))  # saliency input (resized): its own entries
    assert len(set((tmp_path / "cache" / "features").rglob("*.entry"))) == 4


def test_backbone_args_reach_the_backbone(tmp_path):
    spec = RunSpec(method="tokencut", dataset="synthetic", dataset_args={"count": 1, "height": 64, "width": 64},
                   backbone="effnet-lite0", backbone_args={"stride": "8"}, out=tmp_path / "runs", progress=False)
    result = run(spec)
    assert result.results["config"]["backbone"]["config"] == {"stride": 8}


# ---- DINO's position-embedding rule and the two ViT-S/8 checkpoints -----------------------------

def _keys_cubic(values: np.ndarray, out_len: int, step: float) -> np.ndarray:
    """1-D cubic convolution (Keys, a = -0.75; edge samples repeated) of ``values`` at the
    positions ``(j + 0.5) * step - 0.5``, j = 0..out_len-1: an independent statement of
    what a bicubic resampling samples where."""
    a = -0.75

    def kernel(x):
        x = np.abs(x)
        return np.where(x <= 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                        np.where(x < 2, ((a * x - 5 * a) * x + 8 * a) * x - 4 * a, 0.0))

    src = (np.arange(out_len) + 0.5) * step - 0.5
    base = np.floor(src).astype(int)
    out = np.zeros(out_len)
    for k in range(-1, 3):
        out += kernel(src - (base + k)) * values[np.clip(base + k, 0, len(values) - 1)]
    return out


def test_position_embeddings_follow_dinos_scale_factor_rule():
    """A field that varies along one axis at a time is resampled, along that axis, exactly as
    1-D cubic convolution at DINO's positions (j + 0.5) * 14 / (h + 0.1) - 0.5 (the +0.1
    scale factor), not at the output-size rule's (j + 0.5) * 14 / h - 0.5. At the trained
    grid nothing changes."""
    from harness.backbones.vit import dino_position_embeddings

    g = 14
    profile = np.random.default_rng(0).normal(size=g)
    rows = np.repeat(profile[:, None], g, 1)  # varies along rows only
    field = torch.from_numpy(np.stack([rows, rows.T], -1).reshape(1, g * g, 2).astype(np.float32))
    pos = torch.cat([torch.full((1, 1, 2), -5.0), field], dim=1)
    assert dino_position_embeddings(pos, (g, g), (g, g)) is pos
    h, w = 19, 25
    out = dino_position_embeddings(pos, (h, w), (g, g))
    assert out.shape == (1, 1 + h * w, 2) and torch.equal(out[:, 0], pos[:, 0])
    grid = out[0, 1:].reshape(h, w, 2).double().numpy()
    np.testing.assert_allclose(grid[:, 3, 0], _keys_cubic(profile, h, g / (h + 0.1)), atol=1e-5)
    np.testing.assert_allclose(grid[5, :, 1], _keys_cubic(profile, w, g / (w + 0.1)), atol=1e-5)
    assert np.abs(grid[:, 3, 0] - _keys_cubic(profile, h, g / h)).max() > 1e-2  # the two rules differ


def test_the_backbone_uses_dinos_rule_at_other_sizes(dino_s16_file):
    """The forward pass adds exactly dino_position_embeddings(...) to the patch tokens."""
    from harness.backbones.vit import dino_position_embeddings

    backbone = DinoVitS16(weights=dino_s16_file, features="tokens")
    backbone.load("cpu")
    model = backbone.model
    x = torch.rand(1, 3, 160, 288, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        patches = model.patch_embed(x)  # (1, 10, 18, 384), NHWC
        expected = torch.cat([model.cls_token, patches.reshape(1, 180, 384)], 1) + dino_position_embeddings(
            model.pos_embed, (10, 18), (14, 14))
        torch.testing.assert_close(model._pos_embed(patches), expected, rtol=0, atol=0)


def test_two_vit_s8_checkpoints_under_clear_names(empty_caches, capsys):
    from harness.backbones.vit import DinoVitS8Ep300

    assert DinoVitS8.source.file_name == "dino_deitsmall8_pretrain.pth"
    assert DinoVitS8Ep300.source.file_name == "dino_deitsmall8_300ep_pretrain.pth"
    assert DinoVitS8Ep300.source.url == (
        "https://dl.fbaipublicfiles.com/dino/dino_deitsmall8_300ep_pretrain/dino_deitsmall8_300ep_pretrain.pth")
    assert DinoVitS8Ep300.source.hf_hub_id is None  # timm's vit_small_patch8_224.dino is the 800-epoch file
    assert main(["list", "backbones"]) == 0
    out = capsys.readouterr().out
    assert "dino-vits8-300ep" in out and "300-epoch" in out and "800-epoch" in out
    with pytest.raises(HarnessError, match="dino_deitsmall8_300ep_pretrain.pth"):
        DinoVitS8Ep300().weights_path()
