"""SelfMask: losses, pseudo-masks from the three sources, training on ECSSD, evaluation, report rows.

Small scale on purpose: 64 px inputs, the offline EfficientNet-Lite0 at stride 8 (an 8 x 8
grid), a narrow decoder where the architecture does not matter, 16 images at most, one
thread (the machine's two cores are shared).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from harness.api import Backbone
from harness.cli import main
from harness.errors import DataError, HarnessError
from harness.methods.center_prior import center_prior
from harness.methods.selfmask import selfmask_augment
from harness.methods.selfmask_losses import dice_loss, ranking_loss
from harness.methods.selfmask_pseudo_masks import (
    FolderPseudoMasks,
    RleJsonPseudoMasks,
    RunPseudoMasks,
    open_pseudo_masks,
    rle_counts_from_string,
    rle_decode,
)
from harness.registry import get_registry
from harness.runner import RunSpec, run
from harness.training.checkpoint import load_checkpoint
from harness.training.trainer import TrainSpec, train
from coco_rle import rle_encode  # tests/ is on sys.path (conftest)

SMALL = {"image_size": "64", "decoder_dim": "128", "heads": "4", "scale_min": "0.6"}
BACKBONE = dict(backbone="effnet-lite0", backbone_args={"stride": "8"})
N_IMAGES = 16


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def ecssd_masks(shared_data) -> Path:
    return shared_data / "ECSSD" / "ground_truth_mask"


@pytest.fixture(scope="module")
def trained_on_gt(shared_data, ecssd_masks, tmp_path_factory) -> Path:
    """SelfMask trained on the first 16 ECSSD images with their ground truth as pseudo-masks."""
    spec = TrainSpec(method="selfmask", dataset="ecssd", data_root=str(shared_data / "ECSSD"), limit=N_IMAGES,
                     method_args=dict(SMALL), epochs=20, batch_size=8, lr=1e-3, pseudo_masks=str(ecssd_masks),
                     out=tmp_path_factory.mktemp("selfmask") / "gt", progress=False, device="cpu", **BACKBONE)
    return train(spec)


# ---- losses ----------------------------------------------------------------------------
def test_dice_loss_on_hand_checked_masks():
    target = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    masks = torch.tensor([[[1.0, 0.5, 0.0, 0.0],  # 1 - (2 * 1.5 + 1) / (1.5 + 2 + 1) = 1/9
                           [1.0, 1.0, 0.0, 0.0],  # perfect: 0
                           [0.0, 0.0, 1.0, 1.0]]])  # disjoint: 1 - 1 / (2 + 2 + 1) = 0.8
    np.testing.assert_allclose(dice_loss(masks, target).numpy(), [[1 / 9, 0.0, 0.8]], rtol=1e-6)
    # an empty target and an empty mask agree perfectly
    assert dice_loss(torch.zeros(1, 1, 4), torch.zeros(1, 4)).item() == 0.0


def test_ranking_loss_on_hand_checked_scores():
    dice = torch.tensor([0.1, 0.5, 0.3])  # best to worst: q0, q2, q1
    scores = torch.tensor([0.2, 0.9, 0.4])
    # (q0 over q2) 0.4 - 0.2 + (q0 over q1) 0.9 - 0.2 + (q2 over q1) 0.9 - 0.4 = 1.4
    assert ranking_loss(scores, dice).item() == pytest.approx(1.4)
    assert ranking_loss(torch.tensor([0.9, 0.1, 0.5]), dice).item() == 0.0  # scores follow the masks
    assert ranking_loss(scores, torch.full((3,), 0.3)).item() == 0.0  # ties rank nothing
    batched = ranking_loss(torch.stack([scores, scores.flip(0)]), torch.stack([dice, dice]))
    assert batched.shape == (2,) and batched[0].item() == pytest.approx(1.4)
    # the gradient lifts the better query's score and lowers the worse one's
    scores = scores.clone().requires_grad_(True)
    ranking_loss(scores, dice).backward()
    np.testing.assert_allclose(scores.grad.numpy(), [-2.0, 2.0, 0.0])


# ---- COCO RLE --------------------------------------------------------------------------
def test_rle_codec_on_a_hand_encoded_mask():
    mask = np.zeros((3, 4), bool)
    mask[1:3, 1:3] = True
    # column-major runs: 4 background, 2 object, 1 background, 2 object, 3 background; the string
    # holds 4, 2, 1 as they are, then 2 - 2 = 0 and 3 - 1 = 2, each + 48
    assert rle_encode(mask) == {"size": [3, 4], "counts": "42102"}
    assert rle_counts_from_string("42102") == [4, 2, 1, 2, 3]
    np.testing.assert_array_equal(rle_decode({"size": [3, 4], "counts": "42102"}), mask)
    np.testing.assert_array_equal(rle_decode({"size": [3, 4], "counts": [4, 2, 1, 2, 3]}), mask)
    np.testing.assert_array_equal(rle_decode({"size": [3, 4], "counts": b"42102"}), mask)
    with pytest.raises(ValueError, match="cover 11 pixels"):
        rle_decode({"size": [3, 4], "counts": [4, 2, 1, 2, 2]})


def test_rle_codec_round_trips_large_and_negative_differences():
    rng = np.random.default_rng(0)
    for _ in range(50):
        h, w = rng.integers(1, 60, 2)
        mask = rng.random((h, w)) < rng.random()
        mask[: rng.integers(0, h)] = rng.random() < 0.5  # long runs: multi-group numbers
        np.testing.assert_array_equal(rle_decode(rle_encode(mask)), mask)


def test_rle_matches_pycocotools_when_installed():
    coco = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(1)
    for _ in range(50):
        mask = rng.random(tuple(rng.integers(1, 50, 2))) < 0.3
        theirs = coco.encode(np.asfortranarray(mask.astype(np.uint8)))
        assert rle_encode(mask)["counts"] == theirs["counts"].decode()
        np.testing.assert_array_equal(rle_decode({"size": theirs["size"], "counts": theirs["counts"]}), mask)


# ---- pseudo-mask sources -----------------------------------------------------------------
def _ecssd(root):
    dataset = get_registry().create("dataset", "ecssd", root=root)
    return dataset, dataset.ids()[:4]


def test_selfmask_json_of_rle_masks(ecssd_root, tmp_path):
    dataset, ids = _ecssd(ecssd_root)
    sample = dataset.load(ids[0])
    h, w = sample.image.shape[:2]
    known = np.zeros((h, w), bool)
    known[h // 4 : h // 2, w // 3 : w - 5] = True
    small = np.zeros((224, 224), bool)  # SelfMask's own masks are 224 x 224
    small[56:168, 0:112] = True
    h3, w3 = dataset.load(ids[2]).image.shape[:2]
    parts = [np.zeros((h3, w3), bool), np.zeros((h3, w3), bool)]
    parts[0][:10, :10], parts[1][-10:, -10:] = True, True
    table = {f"{ids[0]}.jpg": rle_encode(known), f"{ids[1]}.jpg": rle_encode(small),
             f"{ids[2]}.jpg": [rle_encode(p) for p in parts]}
    path = tmp_path / "pseudo.json"
    path.write_text(json.dumps(table))
    source = open_pseudo_masks(path)
    assert isinstance(source, RleJsonPseudoMasks)
    source.check(dataset, ids[:3])
    np.testing.assert_array_equal(source.mask(sample), known)
    second = dataset.load(ids[1])
    resized = source.mask(second)
    h2, w2 = second.image.shape[:2]
    assert resized.shape == (h2, w2)
    assert resized[h2 // 2, w2 // 4] and not resized[h2 // 2, 3 * w2 // 4] and not resized[2, 2]
    np.testing.assert_array_equal(source.mask(dataset.load(ids[2])), parts[0] | parts[1])
    assert source.describe()["label"] == "pseudo.json" and len(source.describe()["digest"]) == 64
    # preset=selfmask resizes the stored 224 x 224 mask once, straight to the training view
    np.testing.assert_array_equal(source.stored_mask(second), small)
    np.testing.assert_array_equal(source.stored_mask(sample), known)
    method = get_registry().create("method", "selfmask", {"pseudo_masks": str(path), "preset": "selfmask"})
    rng = np.random.default_rng(0)
    released = method.train_item(second, rng)["mask"]
    x, m = selfmask_augment(second.image, small, np.random.default_rng(0), 224, (0.1, 1.0), True, released=True)
    assert torch.equal(released, m)
    with pytest.raises(DataError, match=r"1 of 4 training images have no pseudo-mask .*" + ids[3]):
        source.check(dataset, ids)


def test_folder_of_masks_matched_by_stem(ecssd_root, ecssd_masks, tmp_path):
    dataset, ids = _ecssd(ecssd_root)
    source = open_pseudo_masks(ecssd_masks)
    assert isinstance(source, FolderPseudoMasks)
    source.check(dataset, ids)
    sample = dataset.load(ids[0])
    np.testing.assert_array_equal(source.mask(sample), sample.mask > 127)
    partial = tmp_path / "partial"
    partial.mkdir()
    for sample_id in ids[:2]:
        (partial / f"{sample_id}.png").write_bytes((ecssd_masks / f"{sample_id}.png").read_bytes())
    with pytest.raises(DataError, match=rf"--pseudo-masks {partial}: .*2 of 4 images have no prediction"):
        open_pseudo_masks(partial).check(dataset, ids)


def test_run_directory_gives_its_cached_final_masks(ecssd_root, tmp_path):
    dataset, ids = _ecssd(ecssd_root)
    result = run(RunSpec(method="center-prior", dataset="ecssd", data_root=str(ecssd_root), limit=3,
                         out=tmp_path / "runs", cache_dir=tmp_path / "cache", progress=False, device="cpu"))
    source = open_pseudo_masks(result.run_dir)
    assert isinstance(source, RunPseudoMasks)
    assert source.describe() | {"path": None} == {
        "kind": "run", "path": None, "run": result.run_dir.name, "method": "center-prior", "posts": [],
        "backbone": None, "dataset": "ecssd", "label": "center-prior"}
    source.check(dataset, ids[:3])
    sample = dataset.load(ids[1])
    h, w = sample.image.shape[:2]
    expected = np.rint(center_prior(h, w, 0.25) * 255) / 255 > 0.5
    np.testing.assert_array_equal(source.mask(sample), expected)
    with pytest.raises(DataError, match=r"1 of 4 training images have no pseudo-mask in that run \(it covered 3"):
        source.check(dataset, ids)
    other = get_registry().create("dataset", "synthetic", {"count": "2"})
    with pytest.raises(DataError, match="that run predicted dataset 'ecssd', not 'synthetic'"):
        source.check(other, other.ids())


def test_unknown_source_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="give a run directory .*; that path does not exist"):
        open_pseudo_masks(tmp_path / "nothing")
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(DataError, match="expected an object mapping file names"):
        open_pseudo_masks(bad)


# ---- augmentation --------------------------------------------------------------------------
def test_augmented_view_keeps_image_and_mask_aligned():
    image = np.zeros((60, 90, 3), np.uint8)
    image[10:40, 20:70, 0] = 255  # the object is the red rectangle
    mask = image[..., 0] > 0
    for seed in range(5):
        x, m = selfmask_augment(image, mask, np.random.default_rng(seed), 32, (0.4, 1.0), photometric=False)
        assert x.shape == (3, 32, 32) and m.shape == (1, 32, 32)
        agree = ((x[0] > 0.5) == (m[0] > 0.5)).float().mean().item()
        assert agree > 0.95, (seed, agree)
    x2, m2 = selfmask_augment(image, mask, np.random.default_rng(3), 32, (0.4, 1.0), photometric=True)
    assert torch.equal(m2, selfmask_augment(image, mask, np.random.default_rng(3), 32, (0.4, 1.0), True)[1])
    assert 0 <= x2.min() and x2.max() <= 1


# ---- training and evaluation -------------------------------------------------------------
def test_training_on_ground_truth_reduces_the_loss_and_beats_the_center_prior(trained_on_gt, ecssd_root, tmp_path):
    log = pd.read_csv(trained_on_gt / "losses.csv")
    assert list(log.columns) == ["epoch", "dice", "rank", "total", "seconds"]
    assert log["total"].iloc[-3:].mean() < 0.8 * log["total"].iloc[:3].mean()
    common = dict(dataset="ecssd", data_root=str(ecssd_root), limit=N_IMAGES, out=tmp_path / "runs",
                  progress=False, device="cpu")
    # evaluated at the training scale: a 64 px model at native resolution (6x larger) sees other features
    ours = run(RunSpec(method="selfmask", method_args={"checkpoint": str(trained_on_gt / "checkpoint_last.pt"),
                                                       "inference_size": "64"},
                       backbone_args={"stride": "8"}, batch_size=8, **common))
    prior = run(RunSpec(method="center-prior", **common))
    assert ours.metrics["iou"] > prior.metrics["iou"] + 0.05, (ours.metrics["iou"], prior.metrics["iou"])
    assert ours.results["config"]["method_token"]["display_name"] == "SelfMask w/ ground_truth_mask"


def test_resume_gives_the_same_losses_as_an_uninterrupted_run(ecssd_root, ecssd_masks, tmp_path):
    def tiny(out, epochs, resume=False):
        return train(TrainSpec(method="selfmask", dataset="ecssd", data_root=str(ecssd_root), limit=4,
                               method_args={"image_size": "32", "decoder_dim": "32", "heads": "2", "decoder_layers": "2"},
                               epochs=epochs, batch_size=2, lr=1e-4, pseudo_masks=str(ecssd_masks), out=out,
                               resume=resume, progress=False, device="cpu", **BACKBONE))

    straight = tiny(tmp_path / "straight", 2)
    # an interruption after epoch 1 (the poly schedule spans --epochs, so the same --epochs resumes)
    (tmp_path / "resumed").mkdir()
    (tmp_path / "resumed" / "checkpoint_last.pt").write_bytes((straight / "checkpoint_epoch001.pt").read_bytes())
    resumed = pd.read_csv(tiny(tmp_path / "resumed", 2, resume=True) / "losses.csv").drop(columns="seconds")
    straight = pd.read_csv(straight / "losses.csv").drop(columns="seconds")
    pd.testing.assert_frame_equal(straight, resumed, check_exact=True)


def test_checkpoint_records_the_source_and_the_whole_network(trained_on_gt, ecssd_masks):
    ckpt = load_checkpoint(trained_on_gt / "checkpoint_last.pt", ("selfmask",))
    assert ckpt["pseudo_masks"]["kind"] == "folder" and ckpt["pseudo_masks"]["path"] == str(ecssd_masks)
    assert ckpt["pseudo_masks"]["images"] == N_IMAGES and ckpt["pseudo_mask_source"] == "ground_truth_mask"
    assert any(k.startswith("encoder.net.blocks.2.") for k in ckpt["model"])  # the fine-tuned encoder
    assert not any(k.startswith("encoder.net.blocks.3.") for k in ckpt["model"])  # stages past stride 8: dropped
    assert sum(k.startswith("layers.") and k.endswith("linear1.weight") for k in ckpt["model"]) == 6
    assert ckpt["model"]["query_embed"].shape == (20, 128)
    # the encoder moved away from the backbone's weights
    backbone = get_registry().create("backbone", "effnet-lite0", {"stride": "8"})
    backbone.load("cpu")
    start = backbone.model.state_dict()["blocks.2.0.conv_pw.weight"]
    assert not torch.allclose(ckpt["model"]["encoder.net.blocks.2.0.conv_pw.weight"], start)
    config = json.loads((trained_on_gt / "train_config.json").read_text())
    assert config["config"]["method"]["pseudo_masks"]["kind"] == "folder"


def test_vit_encoder_is_fine_tuned_inside_the_network(tmp_path):
    """DINO ViT-S/16 (random weights in the official layout): tokens in, every parameter trained."""
    from harness.backbones.vit import random_official_state

    weights = tmp_path / "dino_deitsmall16_pretrain.pth"
    torch.save(random_official_state(384, 12, 16), weights)
    registry = get_registry()
    backbone = registry.create("backbone", "dino-vits16", weights=weights)
    backbone.load("cpu")
    method = registry.create("method", "selfmask", {"image_size": "32"})
    model = method.build_model(backbone)
    assert isinstance(model.project, torch.nn.Identity)  # ViT-S's width is the decoder's: no projection
    for name, value in backbone.model.state_dict().items():
        assert torch.equal(model.encoder.net.state_dict()[name], value), name
    assert not any(p.requires_grad for p in backbone.model.parameters())  # the harness's backbone stays frozen
    out = model(torch.rand(2, 3, 32, 48))
    assert out["masks"].shape == (2, 6, 20, 4, 6) and out["objectness"].shape == (2, 6, 20)
    terms = method.training_losses(model, backbone, {"image": torch.rand(2, 3, 32, 32),
                                                     "mask": torch.ones(2, 1, 32, 32)}, None)
    (terms["dice"] + terms["rank"]).backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert unused == []


class _TwoConvs(Backbone):
    """A backbone plugin that is neither a ViT nor EfficientNet: two strided convolutions, through
    the public interface alone (SelfMask must not need more)."""

    name, family, stride, feature_dim = "two-convs", "cnn", 4, 8
    mean, std = (0.25, 0.5, 0.75), (0.5, 0.5, 0.5)

    def _build(self):
        return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 2, 1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, 2, 1))

    def load(self, device="cpu"):
        torch.manual_seed(5)
        self.net = self._build().eval().requires_grad_(False)

    @property
    def weights_digest(self):
        return "two-convs-seed-5"

    def features(self, images):
        with torch.no_grad():
            return self.network_features(self.net, images)

    def trainable_network(self, pretrained=True):
        net = self._build()
        if pretrained:
            net.load_state_dict(self.net.state_dict())
        return net.train().requires_grad_(True)

    def network_features(self, network, images):
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return network((images - mean) / std)


def test_any_backbone_with_a_trainable_network_serves_and_one_without_is_a_clear_error():
    backbone = _TwoConvs()
    backbone.load()
    method = get_registry().create("method", "selfmask", {"image_size": "32", "decoder_dim": "16", "heads": "2",
                                                          "decoder_layers": "2", "queries": "3"})
    model = method.build_model(backbone)
    assert model.encoder.kind == "backbone" and model.project.in_channels == 8  # 8 channels projected to 16
    for name, value in backbone.net.state_dict().items():
        assert torch.equal(model.encoder.net.state_dict()[name], value), name
    images = torch.rand(2, 3, 30, 42, generator=torch.Generator().manual_seed(0))
    padded = model.encoder.pad_with_mean(images)  # 30 x 42 -> 32 x 44, with the mean colour
    assert padded.shape == (2, 3, 32, 44) and torch.equal(padded[..., :30, :42], images)
    normalised = (padded - torch.tensor(backbone.mean).view(1, 3, 1, 1)) / 0.5
    assert normalised[..., 30:, :].abs().max().item() == 0 and normalised[..., :, 42:].abs().max().item() == 0
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model.encoder(images), backbone.features(padded), rtol=0, atol=0)
    model.train()
    out = model(images)
    assert out["masks"].shape == (2, 2, 3, 16, 22)  # 2 ceil(30 / 4) x 2 ceil(42 / 4)
    terms = method.training_losses(model, backbone, {"image": torch.rand(2, 3, 32, 32),
                                                     "mask": torch.ones(2, 1, 32, 32)}, None)
    (terms["dice"] + terms["rank"]).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    assert not any(p.requires_grad for p in backbone.net.parameters())

    class FrozenOnly(Backbone):
        name, family, stride, feature_dim = "frozen-only", "cnn", 4, 8

    with pytest.raises(HarnessError, match="backbone 'frozen-only' offers no trainable copy of its network"):
        method.build_model(FrozenOnly())


def test_defaults_follow_the_recipe():
    method = get_registry().create("method", "selfmask")
    assert (method.default_epochs, method.default_lr, method.default_batch_size) == (12, 6e-6, 8)
    c = method.config
    assert (c["image_size"], c["queries"], c["decoder_layers"], c["decoder_dim"], c["heads"]) == (224, 20, 6, 384, 6)
    assert method.default_backbone == "dino-vits8" and method.loss_weights() == {"dice": 1.0, "rank": 1.0}
    assert (c["preset"], c["lr_schedule"]) == ("harness", "released")

    def rates(**options):
        m = get_registry().create("method", "selfmask", options)
        opt = m.make_optimizer([torch.nn.Parameter(torch.zeros(1))], 6e-6)
        sched = m.make_scheduler(opt, 10, steps_per_epoch=5)
        lrs = []
        for _ in range(10):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        assert opt.param_groups[0]["weight_decay"] == 0.01
        return lrs

    # SelfMask's Poly as its trainer steps it: counter T = 0, 1, 3, 5, 2, 4, 1, 3, 5, 2 (two counts a step,
    # wrapping after 5 = the steps of an epoch), factor (1 - T / 10) ** 0.9
    np.testing.assert_allclose(rates(), [6e-6 * (1 - t / 10) ** 0.9 for t in (0, 1, 3, 5, 2, 4, 1, 3, 5, 2)], rtol=1e-9)
    np.testing.assert_allclose(rates(lr_schedule="epoch"),
                               [6e-6 * (1 - t / 10) ** 0.9 for t in (0, 1, 2, 3, 4, 5, 1, 2, 3, 4)], rtol=1e-9)
    np.testing.assert_allclose(rates(lr_schedule="poly"), [6e-6 * (1 - s / 10) ** 0.9 for s in range(10)], rtol=1e-9)


def test_inference_takes_the_mask_of_the_most_object_like_query(trained_on_gt, ecssd_root):
    registry = get_registry()
    method = registry.create("method", "selfmask", {"checkpoint": str(trained_on_gt / "checkpoint_last.pt")})
    backbone = registry.create("backbone", "effnet-lite0", {"stride": "8"})
    from harness.api import RunContext

    method.setup(RunContext(device="cpu", backbone=backbone))
    sample = registry.create("dataset", "ecssd", root=ecssd_root).load("0005")  # 267 x 400: padded to 272
    prediction = method.predict(sample)
    from harness.training.augment import to_tensor

    with torch.no_grad():  # at native resolution: the masks at 1/4 of the padded 400 x 272
        out = method.model(to_tensor(sample.image)[None])
    assert out["masks"].shape[-2:] == (100, 68)
    height, width = sample.image.shape[:2]
    up = torch.nn.functional.interpolate(out["masks"][0, -1][None], scale_factor=4, mode="bilinear",
                                         align_corners=False)[0, :, :height, :width]
    errors = [float((torch.from_numpy(prediction.mask) - q).abs().max()) for q in up]
    assert int(np.argmin(errors)) == int(out["objectness"][0, -1].argmax()) and min(errors) < 1e-6
    assert prediction.mask.shape == sample.image.shape[:2]


def test_distilled_run_is_named_by_its_source_in_the_report(ecssd_root, tmp_path, capsys):
    teacher = run(RunSpec(method="center-prior", dataset="ecssd", data_root=str(ecssd_root), limit=8,
                          out=tmp_path / "runs", progress=False, device="cpu"))
    code = main(["train", "--method", "selfmask", "--pseudo-masks", str(teacher.run_dir), "--dataset", "ecssd",
                 "--data-root", str(ecssd_root), "--limit", "8", "--method-args", "image_size=64,decoder_dim=64,"
                 "heads=2,decoder_layers=2", "--backbone", "effnet-lite0", "--backbone-args", "stride=8",
                 "--epochs", "1", "--lr", "1e-4", "--out", str(tmp_path / "train"), "--no-progress", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    ckpt = load_checkpoint(tmp_path / "train" / "checkpoint_last.pt")
    assert {k: ckpt["pseudo_masks"][k] for k in ("kind", "method", "posts", "run")} == {
        "kind": "run", "method": "center-prior", "posts": [], "run": teacher.run_dir.name}
    assert main(["run", "--method", "selfmask", "--method-args", f"checkpoint={tmp_path / 'train' / 'checkpoint_last.pt'}",
                 "--backbone-args", "stride=8", "--dataset", "ecssd", "--data-root", str(ecssd_root), "--limit", "8",
                 "--out", str(tmp_path / "runs"), "--no-progress", "--device", "cpu"]) == 0
    assert main(["report", str(tmp_path / "runs"), "-o", str(tmp_path / "report.md"), "--no-intervals"]) == 0
    text = (tmp_path / "report.md").read_text()
    rows = [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ") and "ECSSD" not in line]
    assert rows == ["center-prior", "SelfMask w/ center-prior (effnet-lite0)"]


def test_selfmask_state_dicts_load_converted_and_other_variants_are_clear_errors(tmp_path, capsys):
    """A state dict saved by SelfMask's code (bare, in {"model": ...}, or with DataParallel's
    prefix) is converted on load; the ResNet or two-class variants are refused in one line."""
    from harness.methods.selfmask_model import SelfMaskNet, unwrap_selfmask_state

    backbone = get_registry().create("backbone", "effnet-lite0", {"stride": "8"})
    from harness.methods.selfmask import build_encoder

    net = SelfMaskNet(build_encoder(backbone), backbone.feature_dim, 3, 2, 32, 2)
    ref = {"query_embed": net.query_embed.detach(), "decoder.layers.0.linear1.weight": torch.zeros(4, 32),
           "encoder.patch_embed.proj.weight": torch.zeros(384, 3, 8, 8)}
    assert unwrap_selfmask_state(ref) is ref
    assert unwrap_selfmask_state({"model": ref, "optimizer": {}}) is ref
    assert unwrap_selfmask_state({f"module.{k}": v for k, v in ref.items()}).keys() == ref.keys()
    assert unwrap_selfmask_state({"format": "harness-checkpoint", "model": ref}) is None
    bad = tmp_path / "resnet_selfmask.pt"
    torch.save({**ref, "linear_layer.weight": torch.zeros(384, 2048, 1, 1)}, bad)
    args = ["run", "--method", "selfmask", "--method-args", f"checkpoint={bad}", "--dataset", "synthetic",
            "--dataset-args", "count=1", "--out", str(tmp_path / "r"), "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "is not a usable SelfMask state dict: 'linear_layer.weight' belongs to a SelfMask variant" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_missing_pseudo_masks_and_misuse_are_clear_errors(ecssd_root, ecssd_masks, tmp_path, capsys):
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "0005.png").write_bytes((ecssd_masks / "0005.png").read_bytes())
    base = ["train", "--method", "selfmask", "--dataset", "ecssd", "--data-root", str(ecssd_root), "--limit", "3",
            "--method-args", "image_size=64", "--backbone", "effnet-lite0", "--epochs", "1", "--batch-size", "2",
            "--out", str(tmp_path / "out"), "--no-progress", "--device", "cpu"]
    assert main(base + ["--pseudo-masks", str(partial)]) == 2
    err = capsys.readouterr().err
    assert f"--pseudo-masks {partial}" in err and "2 of 3 images have no prediction" in err and "0010" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()
    assert main(base) == 2
    assert "selfmask trains on pseudo-masks: pass --pseudo-masks" in capsys.readouterr().err
    sempart = ["train", "--method", "sempart", "--dataset", "ecssd", "--data-root", str(ecssd_root),
               "--pseudo-masks", str(ecssd_masks), "--out", str(tmp_path / "s"), "--device", "cpu"]
    assert main(sempart) == 2
    assert "method 'sempart' does not train on pseudo-masks; drop --pseudo-masks (methods that do: selfmask)" in \
        capsys.readouterr().err
    run_args = ["run", "--method", "selfmask", "--dataset", "synthetic", "--dataset-args", "count=2",
                "--out", str(tmp_path / "r"), "--no-progress"]
    assert main(run_args) == 2
    assert "needs a trained checkpoint: train one with `harness train --method selfmask" in capsys.readouterr().err
    assert main(run_args + ["--method-args", "inference_size=-1"]) == 2
    assert "inference_size must be 0 (native) or a positive side" in capsys.readouterr().err


def test_backbone_options_come_from_the_checkpoint_and_others_are_refused(trained_on_gt, tmp_path, capsys):
    args = ["run", "--method", "selfmask", "--method-args", f"checkpoint={trained_on_gt / 'checkpoint_last.pt'}",
            "--dataset", "synthetic", "--dataset-args", "count=2", "--out", str(tmp_path), "--no-progress"]
    assert main(args) == 0  # trained at stride 8 (the backbone's default is 16): taken from the checkpoint
    capsys.readouterr()
    assert main(args + ["--backbone-args", "stride=16"]) == 2
    assert "pass --backbone-args stride=8" in capsys.readouterr().err


def test_two_cpu_processes_fine_tune_the_encoder_in_sync(ecssd_root, ecssd_masks, tmp_path):
    """Under torchrun every parameter must take part (the encoder's unused stages are dropped)."""
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "harness",
           "train", "--method", "selfmask", "--pseudo-masks", str(ecssd_masks), "--dataset", "ecssd", "--data-root",
           str(ecssd_root), "--limit", "4", "--backbone", "effnet-lite0", "--backbone-args", "stride=8",
           "--method-args", "image_size=32,decoder_dim=32,heads=2,decoder_layers=2", "--epochs", "1",
           "--batch-size", "4", "--out", str(out), "--no-progress", "--device", "cpu"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "HARNESS_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr[-3000:]
    info = json.loads((out / "train_config.json").read_text())
    assert info["world_size"] == 2 and len(set(info["rank_weight_digests"])) == 1
