"""An example third-party method: foreground is a centred box."""
import numpy as np

from harness import Method, Option, hookimpl


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


@hookimpl
def harness_methods():
    return [CenterBox]
