"""Sempart against segmentation-tricks (goldens from ``regenerate_sempart.py``).

- the head: a state dict in the reference's layout (``head_keys.json``, values from
  ``regenerate_sempart.head_state``) converted by the harness, forward with BatchNorm in
  training and eval mode, fine and coarse logits within 1e-5;
- the losses: ``sempart-crop`` with ``preset=segtricks`` against ``segment_from_feature`` on
  fixed tensors (stand-in features and logits) and end to end at 224 px (random-weight DINO
  ViT-S/8 keys), every term within 1e-5, crop positions drawn as the reference draws them;
- the evaluation path of ``preset=segtricks`` (BatchNorm batch statistics, per-batch polarity)
  on ECSSD crops in batches of two: values within 1e-5 and thresholded masks identical (but
  for pixels within 1e-5 of 0.5), at 320 px with stand-in features and at 224 px with the DINO
  keys.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import regenerate_sempart as G  # noqa: E402  (only its seeded input rules)
from parity_common import GOLDENS, parity_checkpoint  # noqa: E402

from harness.api import RunContext  # noqa: E402
from harness.evaluators.protocol import Protocol, get_protocol  # noqa: E402
from harness.methods import sempart_losses as L  # noqa: E402
from harness.methods.sempart_model import SempartHead, convert_segtricks_state, load_head_state  # noqa: E402
from harness.registry import get_registry  # noqa: E402
from harness.training.augment import to_tensor  # noqa: E402

GOLD = GOLDENS / "sempart"
TOL = 1e-5
#: reference loss names -> the harness's
TERMS = {"mask_loss": "ncut", "loss_entropy": "consistency", "mask_loss_img": "fine_tv",
         "mask_loss_feat": "coarse_tv", "loss_consistency": "crop_mse", "mask_loss_s": "crop_ncut"}


def _reference_state(bias_offset: float = 0.0) -> dict[str, torch.Tensor]:
    keys = json.loads((GOLD / "head_keys.json").read_text())
    state = {k: torch.from_numpy(v) for k, v in G.head_state(keys).items()}
    state["conv_final.bias"] = state["conv_final.bias"] + bias_offset
    return state


def _head(bias_offset: float = 0.0) -> SempartHead:
    head = SempartHead(G.FEATURE_DIM, G.STRIDE)
    load_head_state(head, convert_segtricks_state({"segmenter_state_dict": _reference_state(bias_offset)}), "golden")
    return head


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_head_forward_with_a_converted_reference_state_dict(mode):
    golden = np.load(GOLD / "head_forward.npz")
    x = {k: torch.from_numpy(v) for k, v in G.head_inputs().items()}
    head = _head().train(mode == "train")
    with torch.no_grad():
        fine, coarse = head(x["features"], x["image"])
    np.testing.assert_allclose(fine.numpy(), golden[f"fine_{mode}"], rtol=0, atol=TOL)
    np.testing.assert_allclose(coarse.numpy(), golden[f"coarse_{mode}"], rtol=0, atol=TOL)


class _Sequence:
    """Prepared outputs, returned in call order (stand-in backbone features or head logits)."""

    def __init__(self, outputs):
        self.outputs = list(outputs)

    def __call__(self, *args):
        return self.outputs.pop(0)


class _FixedBackbone:
    name, stride, feature_dim = "fixed", G.STRIDE, G.FEATURE_DIM

    def __init__(self, outputs):
        self.features = _Sequence(outputs)


def _method(name="sempart-crop", **config):
    return get_registry().create("method", name, {"preset": "segtricks", **config})


def _assert_terms(terms: dict, golden: dict) -> None:
    for ref_name, name in TERMS.items():
        assert abs(terms[name].item() - golden[ref_name]) <= TOL, (name, terms[name].item(), golden[ref_name])


def test_losses_on_fixed_tensors():
    golden = json.loads((GOLD / "losses.json").read_text())["fixed_tensors"]
    x = {k: torch.from_numpy(v) for k, v in G.loss_inputs().items()}
    backbone = _FixedBackbone([x["features"], x["crop_features"]])
    model = _Sequence([(x["fine_logits"], x["coarse_logits"]), (x["crop_fine_logits"], x["crop_coarse_logits"])])
    method = _method()
    generator = torch.Generator().manual_seed(G.SEED)
    corners = L.segtricks_crops(G.LOSS_BATCH, G.LOSS_SIDE, G.LOSS_SIDE, G.STRIDE, torch.Generator().manual_seed(G.SEED))
    assert [c for _, c in corners] == golden["crop_feature_cols"]  # the reference's draws, in pixels
    assert all(r < G.LOSS_SIDE // 4 for r in golden["crop_feature_rows"])  # so the row is clamped to H/4
    terms = method.training_losses(model, backbone, {"image": x["image"]}, generator)
    _assert_terms(terms, golden["terms"])


@pytest.fixture(scope="module")
def dino_vits8(tmp_path_factory):
    backbone = get_registry().create("backbone", "dino-vits8", {},
                                     weights=str(parity_checkpoint("vits8", tmp_path_factory.mktemp("dino"))))
    backbone.load("cpu")
    return backbone


def _crops(ecssd_root, ids, protocol: Protocol) -> list:
    dataset = get_registry().create("dataset", "ecssd", {}, root=str(ecssd_root))
    return [protocol.view(dataset.load(i)) for i in ids]


def _protocol_224() -> Protocol:
    """segmentation-tricks' evaluation transform at img_size 224: Resize(239) + CenterCrop(224)."""
    return Protocol("segtricks-224", "segtricks-224crop", "test", "", resize_crop=(239, 224))


def test_losses_end_to_end_at_224(ecssd_root, dino_vits8):
    golden = json.loads((GOLD / "losses.json").read_text())["end_to_end_224"]
    samples = _crops(ecssd_root, golden["ids"], _protocol_224())
    assert [hashlib.sha256(s.image.tobytes()).hexdigest() for s in samples] == golden["crop_sha256"]
    images = torch.stack([to_tensor(s.image) for s in samples])
    terms = _method().training_losses(_head().train(), dino_vits8, {"image": images},
                                      torch.Generator().manual_seed(G.SEED))
    _assert_terms(terms, golden["terms"])


class _StubBackbone:
    """The stand-in for DINO keys the 320 golden was made with."""

    name, stride, feature_dim, weights_digest = "stub", G.STRIDE, G.FEATURE_DIM, None

    def __init__(self):
        from harness.methods.sempart import normalize_image

        self._normalize, self._weight = normalize_image, torch.from_numpy(G.stub_weight())

    def load(self, device):
        pass

    def identity(self):
        return {"name": self.name}

    def features(self, images):
        return G.stub_features(self._normalize(images), self._weight)


def _evaluate(tmp_path, backbone, samples, golden) -> np.ndarray:
    path = tmp_path / "segtricks_head.pth"
    torch.save({"segmenter_state_dict": _reference_state(float(golden["final_bias_offset"]))}, path)
    size = samples[0].image.shape[0]
    method = get_registry().create("method", "sempart", {"checkpoint": str(path), "preset": "segtricks",
                                                         "image_size": size})
    assert not method.cacheable
    batch = int(golden["batch_size"])
    method.setup(RunContext(device="cpu", backbone=backbone, batch_size=batch))
    masks = [p.mask for k in range(0, len(samples), batch) for p in method.predict_batch(samples[k : k + batch])]
    return np.stack(masks)


def _assert_masks(masks: np.ndarray, golden) -> None:
    """Values within 1e-5; thresholded at 0.5, identical except where the value itself lies
    within 1e-5 of 0.5 (float noise decides those: one pixel of 200704 at 224)."""
    ours = G.summarize_masks(masks)
    flips = np.unpackbits(ours["binary"], axis=-1) != np.unpackbits(golden["binary"], axis=-1)
    assert np.all(np.abs(masks[flips] - 0.5) < TOL), masks[flips]
    np.testing.assert_allclose(ours["samples"], golden["samples"], rtol=0, atol=TOL)
    np.testing.assert_allclose(ours["mean"], golden["mean"], rtol=0, atol=1e-6)


def test_segtricks_evaluation_at_320_with_stub_features(ecssd_root, tmp_path):
    golden = np.load(GOLD / "eval_320stub.npz")
    samples = _crops(ecssd_root, [str(i) for i in golden["ids"]], get_protocol("segtricks"))
    assert all(s.image.shape == (320, 320, 3) for s in samples)
    masks = _evaluate(tmp_path, _StubBackbone(), samples, golden)
    assert sorted(golden["inverted"].tolist()) == [False, True]  # one batch inverted, one not
    _assert_masks(masks, golden)


def test_segtricks_evaluation_at_224_with_dino_keys(ecssd_root, tmp_path, dino_vits8):
    golden = np.load(GOLD / "eval_224.npz")
    samples = _crops(ecssd_root, [str(i) for i in golden["ids"]], _protocol_224())
    masks = _evaluate(tmp_path, dino_vits8, samples, golden)
    _assert_masks(masks, golden)
