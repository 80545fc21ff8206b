"""SelfMask against NoelShin/selfmask (goldens from ``regenerate_selfmask.py``).

- the losses: ``training_losses`` on fixed tensors against ``criterion.Loss``, with
  ``preset=selfmask`` (the released ranking sign) and the default (the paper's sign, which the
  released criterion computes when given ``1 - objectness``): totals, per-image Dice and
  ranking sums within 1e-5, gradients within 1e-6;
- inference at native resolution: a state dict in the reference's layout (``network_keys.json``,
  values from ``regenerate_selfmask.decoder_state``, the random-weight DINO ViT-S/8 encoder)
  loaded through the converter (``checkpoint=<SelfMask state dict>``) and run by ``predict`` on
  ECSSD images of odd sizes, against ``Evaluator.__call__`` (pad to a multiple of 8, masks at
  1/4 resolution, x4, crop, the top-objectness query): objectness within 1e-5 and the same
  query, mask values within 5e-5, thresholded masks identical but for pixels within 1e-4 of 0.5
  (the two ViTs round differently: fused against explicit attention, over 12 blocks; measured:
  2.4e-7 and 5.0e-6, no pixel differs); and the
  post-processing alone on the reference's own 1/4-resolution mask: identical to 1e-6;
- the learning rate: the factor of every step of 12 epochs against ``Poly`` stepped as the
  released trainer steps it (``lr_schedule=released``) and alone (``lr_schedule=epoch``);
- the training view's geometry under ``preset=selfmask`` against ``_geometric_augmentations``
  (fixed rescale, no flip): the mask identical, the view at the top-left corner, the pad
  colour exact and the image within 1/255 (PIL's bilinear against torchvision's antialiased
  resize of the same pixels; measured: at most 1, on 5 % of the samples).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import regenerate_selfmask as G  # noqa: E402  (only its seeded input rules)
from parity_common import GOLDENS, parity_checkpoint  # noqa: E402

from harness.api import RunContext  # noqa: E402
from harness.methods.selfmask import selfmask_augment  # noqa: E402
from harness.methods.selfmask_losses import dice_loss, ranking_loss  # noqa: E402
from harness.registry import get_registry  # noqa: E402

GOLD = GOLDENS / "selfmask"
TOL = 1e-5


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---- losses ----------------------------------------------------------------------------
@pytest.mark.parametrize("convention", ["released", "paper"])
def test_losses_match_the_released_criterion(convention):
    golden = json.loads((GOLD / "losses.json").read_text())[convention]
    grads = np.load(GOLD / "loss_grads.npz")
    x = G.loss_inputs()
    preset = "selfmask" if convention == "released" else "harness"
    method = get_registry().create("method", "selfmask", {"preset": preset})
    masks = torch.tensor(x["masks"], requires_grad=True)
    objectness = torch.tensor(x["objectness"], requires_grad=True)
    batch = {"image": torch.zeros(len(masks), 3, 8, 8), "mask": torch.from_numpy(x["gt"][:, None].astype(np.float32))}
    terms = method.training_losses(lambda images: {"masks": masks, "objectness": objectness}, None, batch, None)
    total = sum(w * terms[k] for k, w in method.loss_weights().items())
    assert total.item() == pytest.approx(golden["total"], abs=TOL)
    total.backward()
    np.testing.assert_allclose(masks.grad.numpy(), grads[f"{convention}_masks"], rtol=1e-4, atol=1e-6)
    # the paper's value is the released criterion's on 1 - objectness: its gradient changes sign
    sign = 1.0 if convention == "released" else -1.0
    np.testing.assert_allclose(objectness.grad.numpy(), sign * grads[f"{convention}_objectness"], rtol=1e-4, atol=1e-6)

    order = "released" if convention == "released" else "paper"
    up = torch.nn.functional.interpolate(masks.detach().flatten(0, 1), size=x["gt"].shape[-2:], mode="bilinear",
                                         align_corners=False).reshape(*masks.shape[:3], -1)
    dice = dice_loss(up, torch.from_numpy(x["gt"].reshape(len(up), 1, -1).astype(np.float32)))
    rank = ranking_loss(objectness.detach(), dice, order)
    for i, expected in enumerate(golden["per_image"]):
        assert dice[i].sum().item() == pytest.approx(expected["dice"], abs=TOL)
        assert rank[i].sum().item() == pytest.approx(expected["rank"], abs=TOL)


def test_the_two_ranking_signs_differ_on_these_tensors():
    """The fixed tensors tell the conventions apart (otherwise the test above could not fail)."""
    golden = json.loads((GOLD / "losses.json").read_text())
    released = [g["rank"] for g in golden["released"]["per_image"]]
    paper = [g["rank"] for g in golden["paper"]["per_image"]]
    assert min(abs(a - b) for a, b in zip(released, paper)) > 0.1


# ---- inference -------------------------------------------------------------------------
def _reference_state(tmp_path) -> tuple[Path, Path]:
    """The reference-layout state dict (seeded decoder, parity encoder) and the DINO file."""
    dino = parity_checkpoint("vits8", tmp_path)
    keys = json.loads((GOLD / "network_keys.json").read_text())
    state = {f"encoder.{k}": v for k, v in torch.load(dino, map_location="cpu").items()}
    state.update({k: torch.from_numpy(v) for k, v in G.decoder_state(keys).items()})
    path = tmp_path / "selfmask_parity_model.pt"
    torch.save(state, path)
    return path, dino


def _golden_mask(golden) -> np.ndarray:
    height, width = (int(v) for v in golden["shape"])
    return np.unpackbits(golden["bits"])[: height * width].reshape(height, width).astype(bool)


@pytest.fixture(scope="module")
def reference_network(tmp_path_factory):
    """The harness's SelfMask, set up from the reference-layout state dict."""
    tmp = tmp_path_factory.mktemp("selfmask_parity")
    path, dino = _reference_state(tmp)
    registry = get_registry()
    method = registry.create("method", "selfmask", {"checkpoint": str(path)})
    assert method.preferred_backbone() == "dino-vits8-300ep"  # what SelfMask's ViT-S/8 starts from
    backbone = registry.create("backbone", "dino-vits8", weights=dino)  # the same architecture is enough
    method.setup(RunContext(device="cpu", backbone=backbone))
    return method


@pytest.mark.parametrize("sample_id", G.EVAL_IDS)
def test_native_resolution_inference_matches_the_evaluator(reference_network, ecssd_root, sample_id):
    golden = np.load(GOLD / f"eval_{sample_id}.npz")
    method = reference_network
    sample = get_registry().create("dataset", "ecssd", root=ecssd_root).load(sample_id)
    seen = {}
    hook = method.model.register_forward_hook(lambda module, args, out: seen.update(out))
    try:
        mask = method.predict(sample).mask
    finally:
        hook.remove()
    assert mask.shape == tuple(golden["shape"]) == sample.image.shape[:2]
    objectness = seen["objectness"][0].numpy()
    np.testing.assert_allclose(objectness, golden["objectness"], atol=1e-5)
    assert int(objectness[-1].argmax()) == int(golden["objectness"][-1].argmax())
    positions = G.sample_positions(*mask.shape, G.N_SAMPLES, sample_id)
    np.testing.assert_allclose(mask.reshape(-1)[positions], golden["samples"], atol=5e-5)
    assert mask.astype(np.float64).sum() == pytest.approx(float(golden["sum"]), rel=2e-5)
    differ = (mask > 0.5) != _golden_mask(golden)
    assert np.all(np.abs(mask[differ] - 0.5) < 1e-4), int(differ.sum())


@pytest.mark.parametrize("sample_id", G.EVAL_IDS)
def test_post_processing_of_the_reference_outputs_is_identical(sample_id):
    """The evaluator's steps alone: the reference network's own 1/4-resolution mask of the
    selected query among two distractors, x4 to the padded size, cropped."""
    golden = np.load(GOLD / f"eval_{sample_id}.npz")
    method = get_registry().create("method", "selfmask")
    method.stride = 8
    quarter = torch.from_numpy(golden["quarter"])
    masks = torch.stack([1 - quarter, quarter, quarter.flip(-1)])[None, None]  # (1, 1, 3, h, w)
    objectness = torch.tensor([[[0.3, 0.9, 0.6]]])
    (mask,) = method.masks_from_outputs(masks, objectness, [tuple(int(v) for v in golden["shape"])])
    positions = G.sample_positions(*mask.shape, G.N_SAMPLES, sample_id)
    np.testing.assert_allclose(mask.reshape(-1)[positions], golden["samples"], atol=1e-6)
    assert np.array_equal(mask > 0.5, _golden_mask(golden))
    assert mask.astype(np.float64).sum() == pytest.approx(float(golden["sum"]), rel=1e-6)


def test_the_reference_layout_maps_onto_every_weight():
    """Every decoder, query and objectness weight of the reference network has its place, of
    the same shape, in the harness's network (the encoder keys are DINO's on both sides)."""
    from harness.methods.selfmask import build_encoder
    from harness.methods.selfmask_model import SelfMaskNet, convert_selfmask_state

    keys = json.loads((GOLD / "network_keys.json").read_text())
    converted = convert_selfmask_state({k: torch.zeros(v) for k, v in keys.items()})
    net = SelfMaskNet(build_encoder(get_registry().create("backbone", "dino-vits8")), 384)
    own = {k: tuple(v.shape) for k, v in net.state_dict().items() if not k.startswith("encoder.")}
    assert {k: tuple(v.shape) for k, v in converted.items()} == own


# ---- learning rate ---------------------------------------------------------------------
@pytest.mark.parametrize("schedule", ["released", "epoch"])
def test_learning_rate_follows_the_released_poly(schedule):
    for case in json.loads((GOLD / "lr.json").read_text()):
        steps = case["steps_per_epoch"]
        assert case["samples"] % case["batch"] == 0  # so that the harness's epochs have the same steps
        method = get_registry().create("method", "selfmask", {"lr_schedule": schedule})
        opt = method.make_optimizer([torch.nn.Parameter(torch.zeros(1))], 1.0)
        sched = method.make_scheduler(opt, steps * case["epochs"], steps_per_epoch=steps)
        factors = []
        for _ in range(steps * case["epochs"]):
            factors.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        np.testing.assert_allclose(factors, case[schedule], rtol=1e-12, atol=0)


# ---- training view -------------------------------------------------------------------------
class _FixedDraws:
    """A generator stand-in: the rescale factor given, no flip."""

    def __init__(self, scale: float):
        self.scale = scale

    def uniform(self, low, high):
        return self.scale

    def random(self):
        return 0.99  # >= 0.5: no flip

    def integers(self, low, high):
        raise AssertionError("preset=selfmask draws no position")


def test_training_view_geometry_matches_the_released_augmentation(ecssd_root):
    golden = np.load(GOLD / "augment.npz")
    sample = get_registry().create("dataset", "ecssd", root=ecssd_root).load(G.AUG_ID)
    k = 0
    while f"scale{k}" in golden:
        scale, side = float(golden[f"scale{k}"]), int(golden[f"side{k}"])
        x, m = selfmask_augment(sample.image, sample.mask > 0.5, _FixedDraws(scale), G.AUG_SIZE, (scale, scale),
                                photometric=False, released=True)
        expected = np.unpackbits(golden[f"mask_bits{k}"]).reshape(G.AUG_SIZE, G.AUG_SIZE).astype(bool)
        assert np.array_equal(m[0].numpy() > 0.5, expected)
        assert not expected[side:].any() and not expected[:, side:].any()  # the view sits at the top-left corner
        view = np.rint(x.numpy().transpose(1, 2, 0) * 255)
        assert view[-1, -1].tolist() == golden[f"fill{k}"].tolist()  # the uint8-truncated mean colour
        positions = G.sample_positions(G.AUG_SIZE, G.AUG_SIZE, G.AUG_SAMPLES, f"augment-{scale}")
        diff = np.abs(view.reshape(-1, 3)[positions] - golden[f"samples{k}"])
        assert diff.max() <= 1 and diff.mean() < 0.1, (diff.max(), diff.mean())
        k += 1
    assert k == len(G.AUG_SCALES)
