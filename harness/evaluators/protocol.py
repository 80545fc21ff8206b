"""The name and version of the evaluation protocol every result records (see README)."""

PROTOCOL_NAME = "harness-saliency-corloc"
#: Bump when any metric's definition changes; results from other versions are not comparable.
PROTOCOL_VERSION = "1.0"
BETA2 = 0.3
#: Thresholds t = k / 255 for k = 0 .. 254 (prediction > t).
N_THRESHOLDS = 255
#: Size-binned IoU: images binned by ground-truth foreground ratio into this many equal bins.
N_SIZE_BINS = 20
