"""An example third-party distribution of seg-harness plugins, written against the public API
(``from harness import ...``) alone:

- ``center-box`` (method): foreground is a centred box;
- ``border-contrast`` (method on a backbone): each patch's feature distance from the mean
  feature of the image's border patches, read through the run's feature cache
  (``context.features`` and ``FeatureRequest``);
- ``binarize`` (post-processor): the mask thresholded;
- ``dice`` (evaluator): the Dice coefficient at 0.5, stateless, with its keys declared.
"""
import numpy as np

from harness import Evaluator, FeatureRequest, Method, Option, PostProcessor, hookimpl


class CenterBox(Method):
    name = "center-box"
    description = "foreground = a centred box covering `frac` of each side"
    options = (Option("frac", 0.5, "box side as a fraction of the image side"),)

    def predict(self, sample):
        h, w = sample.image.shape[:2]
        top, left = round(h * (1 - self.config["frac"]) / 2), round(w * (1 - self.config["frac"]) / 2)
        mask = np.zeros((h, w), np.float32)
        mask[top : h - top, left : w - left] = 1.0
        return mask


class BorderContrast(Method):
    name = "border-contrast"
    description = "foreground = patches whose backbone features differ most from the image border's"
    uses_backbone = True
    default_backbone = "effnet-lite0"

    def setup(self, context):
        self.features = context.features  # the run's feature stage: cached, shared with other methods
        self.backbone = context.backbone

    def _request(self, sample):
        stride = int(self.backbone.stride)
        h, w = sample.image.shape[:2]
        size = (-(-h // stride) * stride, -(-w // stride) * stride)

        def make_input():  # the image in [0, 1], padded right and bottom with the backbone's mean colour
            out = np.empty((*size, 3), np.float32)
            out[:] = np.asarray(self.backbone.mean, np.float32)
            out[:h, :w] = sample.image / np.float32(255)
            return out

        # the preparation text names the input exactly: it keys the feature cache
        return FeatureRequest.of(sample, f"border-contrast-pad-mean:{size[0]}x{size[1]}", make_input)

    def predict_batch(self, samples):
        grids = self.features.grids([self._request(sample) for sample in samples])
        stride = int(self.backbone.stride)
        masks = []
        for sample, grid in zip(samples, grids):
            c, gh, gw = grid.shape
            feats = grid.reshape(c, -1).T
            border = np.zeros((gh, gw), bool)
            border[[0, -1], :] = True
            border[:, [0, -1]] = True
            distance = np.linalg.norm(feats - feats[border.ravel()].mean(axis=0), axis=1)
            span = distance.max() - distance.min()
            soft = (distance - distance.min()) / span if span > 0 else np.zeros_like(distance)
            h, w = sample.image.shape[:2]
            full = np.repeat(np.repeat(soft.reshape(gh, gw), stride, axis=0), stride, axis=1)[:h, :w]
            masks.append(full.astype(np.float32))
        return masks


class Binarize(PostProcessor):
    name = "binarize"
    description = "mask > threshold, as 0 or 1"
    options = (Option("threshold", 0.5, "values above it become 1, the others 0"),)

    def __call__(self, image, mask):
        return (mask > self.config["threshold"]).astype(np.float32)


class Dice(Evaluator):
    name = "dice"
    description = "Dice coefficient 2|P & G| / (|P| + |G|) at prediction > 0.5, averaged over images"
    requires = "mask"
    metric_keys = ("dice",)
    row_keys = ("dice",)

    def process(self, sample, prediction):
        if prediction.mask.shape != sample.mask.shape:
            raise ValueError(f"prediction {prediction.mask.shape} and ground truth {sample.mask.shape} differ in size")
        predicted, truth = prediction.mask > 0.5, sample.mask > 127
        total = int(predicted.sum()) + int(truth.sum())
        dice = 2.0 * int((predicted & truth).sum()) / total if total else 1.0
        return dice, {"dice": dice}  # (record kept by the harness, per-image row)

    def aggregate(self, records):
        return {"dice": float(np.mean(records))} if records else {}


@hookimpl
def harness_methods():
    return [CenterBox, BorderContrast]


@hookimpl
def harness_postprocessors():
    return [Binarize]


@hookimpl
def harness_evaluators():
    return [Dice]
