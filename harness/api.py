"""The plugin interfaces: datasets, backbones, methods, post-processors, evaluators.

Every plugin is a small class with a ``name``, a one-line ``description`` and its
``options``; it is instantiated with the resolved options (``self.config``). Modules that
define plugins import torch, timm or OpenCV inside functions, so that ``harness list``
stays fast.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterator, Sequence

from harness.errors import DataError
from harness.options import Option, resolve_options

if TYPE_CHECKING:  # heavy imports only for type checkers
    import numpy as np

__all__ = [
    "Backbone",
    "Dataset",
    "Evaluator",
    "Method",
    "Option",
    "Plugin",
    "PostProcessor",
    "Prediction",
    "RunContext",
    "Sample",
]


@dataclass
class Sample:
    """One image of a dataset.

    Attributes
    ----------
    id : str
        Stable identifier (usually the file stem).
    image : np.ndarray
        ``(H, W, 3)`` uint8 RGB.
    mask : np.ndarray or None
        ``(H, W)`` uint8 ground truth, 0..255 (foreground is ``mask / 255 > 0.5``).
    boxes : np.ndarray or None
        ``(K, 4)`` float64 ground-truth boxes ``(x0, y0, x1, y1)`` in pixel-edge
        coordinates (``x1``, ``y1`` exclusive).
    """

    id: str
    image: "np.ndarray"
    mask: "np.ndarray | None" = None
    boxes: "np.ndarray | None" = None
    meta: dict = field(default_factory=dict)

    def without_labels(self) -> "Sample":
        """The same sample with ground truth removed: what a method may see."""
        return replace(self, mask=None, boxes=None)


@dataclass
class Prediction:
    """A method's output for one image.

    Attributes
    ----------
    mask : np.ndarray
        ``(H, W)`` float32 soft foreground in [0, 1], at the image's size.
    box : tuple of 4 floats, optional
        The method's own box ``(x0, y0, x1, y1)`` (x1/y1 exclusive), used by CorLoc
        instead of the box derived from the mask.
    """

    mask: "np.ndarray"
    box: "tuple[float, float, float, float] | None" = None


@dataclass
class RunContext:
    """What the runner hands to methods and post-processors in ``setup``."""

    device: str = "cpu"
    seed: int = 0
    batch_size: int = 1
    cache_dir: Path | None = None
    backbone: "Backbone | None" = None
    progress: bool = True


class Plugin:
    """Base of every plugin kind.

    Subclasses set the class attributes ``name``, ``description`` and ``options``; bump
    ``version`` whenever a change alters the plugin's outputs (it keys the caches).
    """

    kind: ClassVar[str] = "plugin"
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    options: ClassVar[tuple[Option, ...]] = ()
    version: ClassVar[str] = "1"

    def __init__(self, **config: Any) -> None:
        self.config: dict[str, Any] = resolve_options(self.options, config, self.label())

    @classmethod
    def label(cls) -> str:
        return f"{cls.kind} {cls.name!r}"

    @classmethod
    def tags(cls) -> list[str]:
        """Short markers shown by ``harness list`` (e.g. ``supervised``)."""
        return []

    def identity(self) -> dict[str, Any]:
        """Everything about this plugin instance that determines its outputs."""
        return {
            "name": self.name,
            "version": self.version,
            "config": {k: str(v) if isinstance(v, Path) else v for k, v in self.config.items()},
        }


class Dataset(Plugin):
    """Yields :class:`Sample` objects from an on-disk layout (or a generator).

    Subclasses implement :meth:`ids` (which checks the layout up front and raises a
    :class:`~harness.errors.DataError` naming what is missing) and :meth:`load`.
    """

    kind: ClassVar[str] = "dataset"
    #: Evaluators used when ``--eval`` is not given.
    default_evaluators: ClassVar[tuple[str, ...]] = ("saliency",)
    #: One line describing the expected files, used in error messages.
    layout: ClassVar[str] = ""
    #: Whether the dataset reads files (and so needs a root folder).
    needs_root: ClassVar[bool] = True
    split: ClassVar[str] = "test"
    #: The ground truth a sample carries: "mask", "boxes" or both.
    labels: ClassVar[tuple[str, ...]] = ("mask",)

    def __init__(self, root: str | Path | None = None, **config: Any) -> None:
        super().__init__(**config)
        self.root = self.resolve_root(root) if self.needs_root else None

    @classmethod
    def env_var(cls) -> str:
        """The environment variable that can hold this dataset's root folder."""
        return "HARNESS_DATA_" + cls.name.upper().replace("-", "_")

    @classmethod
    def resolve_root(cls, root: str | Path | None) -> Path:
        """``--data-root``, else ``$HARNESS_DATA_<NAME>``, else ``$HARNESS_DATA/<name>``."""
        if root is None:
            root = os.environ.get(cls.env_var())
        if root is None and os.environ.get("HARNESS_DATA"):
            root = Path(os.environ["HARNESS_DATA"]) / cls.name
        if root is None:
            raise DataError(
                f"dataset {cls.name!r} needs its folder: pass --data-root DIR or set "
                f"{cls.env_var()} (expected layout: {cls.layout})"
            )
        root = Path(os.path.abspath(Path(root).expanduser()))  # the run's identity must not depend on the cwd
        if not root.is_dir():
            raise DataError(
                f"dataset {cls.name!r}: {root} is not a folder (expected layout: {cls.layout})"
            )
        return root

    def scan(self) -> dict[str, Any]:
        """Check the layout and map each sample id to what :meth:`load` needs (read once).

        Datasets that read an index from disk implement this and get :meth:`ids` and
        :meth:`entry` for free; generated datasets override :meth:`ids` instead.
        """
        raise NotImplementedError

    def _scanned(self) -> dict[str, Any]:
        if getattr(self, "_index", None) is None:
            self._index = self.scan()
        return self._index

    def ids(self) -> list[str]:
        """All sample ids, in a fixed order. Checks the layout before any work is done."""
        return list(self._scanned())

    def entry(self, sample_id: str, where: str) -> Any:
        """What :meth:`scan` recorded for ``sample_id``; an unknown id names ``where`` it was looked for."""
        index = self._scanned()
        if sample_id not in index:
            raise DataError(f"dataset {self.name!r} has no image {sample_id!r} in {where}")
        return index[sample_id]

    def load(self, sample_id: str) -> Sample:
        """Read one sample."""
        raise NotImplementedError

    def files(self, sample_id: str) -> list[Path]:
        """The files :meth:`load` reads for ``sample_id``, the image first (none for generated data).

        The runner reads them up front: it checks their structure before any work is done and
        records a digest of their bytes in the run's identity (``data_digest``).
        """
        return []

    def index_files(self) -> list[Path]:
        """Files read once for the whole dataset (an image list, an annotation file)."""
        return []

    def __iter__(self) -> Iterator[Sample]:
        for sample_id in self.ids():
            yield self.load(sample_id)

    def identity(self) -> dict[str, Any]:
        ident = super().identity()
        ident["root"] = str(self.root) if self.root is not None else None
        return ident


class Backbone(Plugin):
    """A frozen feature extractor.

    ``features(images)`` maps a ``(B, 3, H, W)`` float tensor in [0, 1] (RGB), on the
    backbone's device, to a ``(B, C, H / stride, W / stride)`` feature grid; H and W must
    be multiples of ``stride``. The backbone normalises its input itself (``mean``/``std``).
    """

    kind: ClassVar[str] = "backbone"
    #: Whether the weights come from supervised (labelled) training.
    supervised: ClassVar[bool] = False
    stride: ClassVar[int] = 16
    #: Per-channel input normalisation applied inside ``features`` (RGB in [0, 1] units);
    #: padding an input with ``mean`` is padding with zeros in the normalised space.
    mean: ClassVar[tuple[float, float, float]] = (0.485, 0.456, 0.406)
    std: ClassVar[tuple[float, float, float]] = (0.229, 0.224, 0.225)
    #: "vit" (patch tokens) or "cnn" (a convolutional feature map); methods such as LOST
    #: treat the two differently, as their papers did.
    family: ClassVar[str] = "vit"

    @classmethod
    def tags(cls) -> list[str]:
        return ["supervised"] if cls.supervised else ["self-supervised"]

    def __init__(self, weights: str | Path | None = None, **config: Any) -> None:
        super().__init__(**config)
        self.weights = Path(weights) if weights else None

    def load(self, device: str = "cpu") -> None:
        """Build the network and load its weights (no network access unless asked)."""
        raise NotImplementedError

    @property
    def weights_digest(self) -> str | None:
        """sha256 of the weights file; computable before :meth:`load` (it keys the caches)."""
        return None

    @property
    def feature_dim(self) -> int:
        """C, the number of feature channels ``features`` returns (known before loading)."""
        raise NotImplementedError

    def features(self, images):  # pragma: no cover - interface
        raise NotImplementedError

    def identity(self) -> dict[str, Any]:
        ident = super().identity()
        ident["weights_digest"] = self.weights_digest
        return ident


class Method(Plugin):
    """Maps images to soft foreground masks in [0, 1] at the image's size."""

    kind: ClassVar[str] = "method"
    #: Whether ``--backbone`` applies; the runner builds the backbone for the method.
    uses_backbone: ClassVar[bool] = False
    default_backbone: ClassVar[str | None] = None
    #: Whether predictions go to the prediction cache (off for methods that only read files).
    cacheable: ClassVar[bool] = True
    #: Whether ``harness train`` applies.
    trainable: ClassVar[bool] = False

    def preferred_backbone(self) -> str | None:
        """The backbone used when ``--backbone`` is not given (a checkpoint may decide)."""
        return self.default_backbone

    def preferred_backbone_args(self) -> dict[str, Any]:
        """Backbone options used when ``--backbone-args`` is not given (a checkpoint may decide)."""
        return {}

    def configure_for_run(self, evaluators: "Sequence[Evaluator]") -> None:
        """Resolve options that depend on how the run is scored (e.g. TokenCut's ``mode=auto``).

        The runner calls it once, before the method's identity keys the caches and is written
        to ``results.json``; resolved values belong in ``self.config``. Default: nothing.
        """

    def setup(self, context: RunContext) -> None:
        """Load models; called once before the first prediction."""

    def check_inputs(self, ids: list[str]) -> None:
        """Check what the method reads for these images (e.g. prediction files) before the
        run starts; raise a :class:`~harness.errors.DataError` naming what is missing."""

    def check_image_sizes(self, sizes: "dict[str, tuple[int, int]]", backbone: "Backbone | None" = None) -> None:
        """Refuse, before the run starts, images this method cannot handle (``id -> (H, W)`` as
        the method will see them, and the run's backbone); raise a
        :class:`~harness.errors.HarnessError` naming them. Default: every size is fine."""

    def predict(self, sample: Sample) -> "Prediction | np.ndarray":
        """The soft mask (and optionally a box) for one image; labels are not given."""
        raise NotImplementedError

    def predict_batch(self, samples: Sequence[Sample]) -> "list[Prediction | np.ndarray]":
        """Predict several images; override to batch on a GPU."""
        return [self.predict(sample) for sample in samples]

    def cache_token(self) -> dict[str, Any]:
        """Extra values that determine the outputs (e.g. a checkpoint's digest)."""
        return {}


class PostProcessor(Plugin):
    """``(image, soft mask) -> soft mask``, e.g. a guided filter."""

    kind: ClassVar[str] = "post"

    def setup(self, context: RunContext) -> None:
        """Prepare (pick a device); called once before the first image."""

    def __call__(self, image: "np.ndarray", mask: "np.ndarray") -> "np.ndarray":
        """Refine ``mask`` ((H, W) float32 in [0, 1]) using ``image`` ((H, W, 3) uint8)."""
        raise NotImplementedError


class Evaluator(Plugin):
    """Scores predictions image by image, keeping fixed-size per-image records.

    ``process`` appends one record to ``self.records`` and returns the per-image row
    written to ``per_image.csv``; ``summarize`` turns the records into flat metrics.
    Records are plain picklable values, so shards can be gathered and concatenated.
    """

    kind: ClassVar[str] = "evaluator"
    #: The ground-truth field a sample needs: "mask" or "boxes".
    requires: ClassVar[str] = "mask"

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        self.reset()

    def reset(self) -> None:
        self.records: list[Any] = []

    def process(self, sample: Sample, prediction: Prediction) -> dict[str, Any]:
        raise NotImplementedError

    def summarize(self) -> dict[str, float]:
        raise NotImplementedError

    def extend(self, records: list[Any]) -> None:
        """Add records computed elsewhere (another process's shard)."""
        self.records.extend(records)

    def artifacts(self, run_dir: Path) -> list[Path]:
        """Write extra files (plots) into the run directory; return their paths."""
        return []
