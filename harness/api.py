"""The plugin interfaces: datasets, backbones, methods, post-processors, evaluators.

Every plugin is a small class with a ``name``, a one-line ``description`` and its
``options``; it is instantiated with the resolved options (``self.config``). Modules that
define plugins import torch, timm or OpenCV inside functions, so that ``harness list``
stays fast.

The runner builds each plugin with its resolved options as keywords, plus one keyword of its
own for two kinds: a :class:`Dataset` gets ``root=`` (``--data-root``, or ``None`` to look up
``$HARNESS_DATA_<NAME>``) and a :class:`Backbone` gets ``weights=`` (``--weights``, or ``None``).
A plugin that overrides ``__init__`` must accept them and pass them on to ``super().__init__``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator, Protocol, Sequence

from harness import options as _options
from harness.errors import DataError, PluginError
from harness.options import resolve_options

if TYPE_CHECKING:  # heavy imports only for type checkers
    import numpy as np
    import torch

__all__ = [
    "Backbone",
    "Dataset",
    "Evaluator",
    "FeatureRequest",
    "FeatureSource",
    "Method",
    "Option",
    "PatchFeatureMethod",
    "Plugin",
    "PostProcessor",
    "Prediction",
    "RunContext",
    "Sample",
    "TrainableMethod",
]


def __getattr__(name: str):
    # bases defined in modules that import this one (or numpy): loaded on first use
    if name == "TrainableMethod":
        from harness.training.trainable import TrainableMethod

        return TrainableMethod
    if name == "PatchFeatureMethod":
        from harness.patch_methods import PatchFeatureMethod

        return PatchFeatureMethod
    raise AttributeError(f"module 'harness.api' has no attribute {name!r}")


#: The command-line flag that sets each kind's options (named in errors).
OPTIONS_FLAG = {"dataset": "--dataset-args", "backbone": "--backbone-args", "method": "--method-args",
                "post": "--post-args"}


@dataclass(frozen=True)
class Option(_options.Option):
    """One option of a plugin (see :class:`harness.options.Option` for ``name``, ``default``,
    ``help``, ``type`` and ``choices``).

    Parameters
    ----------
    required : bool
        The option has no usable default: building the plugin without it is a
        :class:`~harness.errors.PluginError` that names the option, before any work is done.
        Its ``help`` completes "needs ...", e.g. ``"the predictions' folder"``.
    metavar : str, optional
        What the value is, in that error (``FOLDER``, ``FILE``); default ``VALUE``.
    """

    required: bool = False
    metavar: str | None = None

    def describe(self) -> str:
        if self.required:
            return f"{self.name} ({self.type_name}, required): {self.help}"
        return super().describe()


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
class FeatureRequest:
    """One image's backbone features, as a method asks :meth:`FeatureSource.grids` for them.

    Attributes
    ----------
    image_id : str
        The sample id.
    image_digest : str
        :func:`harness.cache.array_digest` of the original image (the pixels key the cache).
    preparation : str
        How the input was made from the image, including its size (e.g.
        ``"resize-lanczos:224x336"``, ``"pad-mean:480x640"``); two methods that prepare an
        image the same way must give the same text, so that they share cache entries.
    make_input : callable
        Returns the prepared input, ``(H, W, 3)`` float32 RGB in [0, 1] (H and W multiples of
        the backbone's stride; the backbone normalises it); only called on a cache miss.
    """

    image_id: str
    image_digest: str
    preparation: str
    make_input: Callable[[], "np.ndarray"]

    @classmethod
    def of(cls, sample: "Sample", preparation: str, make_input: Callable[[], "np.ndarray"]) -> "FeatureRequest":
        """The request for ``sample``'s image, digested as the built-in methods digest it (so
        that entries of the same preparation are shared with them)."""
        from harness.cache import array_digest

        return cls(sample.id, array_digest(sample.image), preparation, make_input)


class FeatureSource(Protocol):
    """The run's backbone features, cached (``context.features``;
    :class:`harness.backbones.features.FeatureExtractor` implements it)."""

    backbone: "Backbone"

    def grids(self, requests: Sequence[FeatureRequest]) -> "list[np.ndarray]":
        """``(C, h, w)`` float32 feature grids, one per request (``h = H / stride``), read from the
        feature cache or computed by the backbone in batches (grouped by input size) and stored."""
        ...


@dataclass
class RunContext:
    """What the runner hands to methods and post-processors in ``setup``.

    Attributes
    ----------
    device : str
        Where to compute (``cpu``, ``cuda``, ``cuda:N``).
    seed : int
        The run's ``--seed``. A method whose outputs depend on it says so with
        :meth:`Method.uses_seed` (the seed then keys its cached masks) and derives every random
        choice from it, the same for an image whatever else the run holds.
    batch_size : int
        ``--batch-size``: the most images given to ``predict_batch`` (and the backbone) at once.
    cache_dir : Path, optional
        The harness cache folder.
    backbone : Backbone, optional
        The run's backbone (for a method with ``uses_backbone``), not yet loaded.
    progress : bool
        Whether progress bars may be shown.
    features : FeatureSource, optional
        The run's backbone features through the feature cache: ``context.features.grids(
        [FeatureRequest(...), ...])``. The runner builds it for every method that uses a
        backbone, so that all methods on one backbone share cached features; a method built
        outside a run gets one from :func:`harness.backbones.features.features_for`.
    """

    device: str = "cpu"
    seed: int = 0
    batch_size: int = 1
    cache_dir: Path | None = None
    backbone: "Backbone | None" = None
    progress: bool = True
    features: "FeatureSource | None" = None


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
        for option in self.options:
            if getattr(option, "required", False) and self.config.get(option.name) is None:
                flag = OPTIONS_FLAG.get(self.kind, f"the {self.kind}'s options:")
                metavar = getattr(option, "metavar", None) or "VALUE"
                raise PluginError(f"{self.label()} needs {option.help}: {flag} {option.name}={metavar} "
                                  f"(a required option)")

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

    The runner builds a dataset as ``cls(root=DATA_ROOT, **options)``: ``root`` is
    ``--data-root`` (``None`` when not given: :meth:`resolve_root` then reads
    ``$HARNESS_DATA_<NAME>`` or ``$HARNESS_DATA/<name>``); ``self.root`` is the resolved,
    absolute folder (``None`` when ``needs_root`` is false).
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
    #: The dataset's name in report tables ("" = :attr:`name`).
    title: ClassVar[str] = ""
    #: Where report tables put the dataset's columns (lower first); ``None``: after those, by name.
    report_order: ClassVar[int | None] = None

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

    def _fail(self, message: str) -> DataError:
        """The error for a missing or malformed file: the dataset, ``message`` and the layout."""
        return DataError(f"dataset {self.name!r}: {message} (expected layout: {self.layout})")

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

    What methods may use: ``load``, ``features``, ``weights_digest``, ``feature_dim`` and the
    geometry below (``stride``, ``mean``, ``std``, ``family``, ``supervised``). A backbone that
    can be fine-tuned also implements ``trainable_network`` (a trainable copy of its network)
    and ``network_features`` (``features`` through such a copy, with gradients); trainable
    methods that fine-tune the encoder (SelfMask) need these two, methods on frozen features
    (Sempart, TokenCut, ...) do not.
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

    # ---- for methods that fine-tune the network (SelfMask) -------------------------------
    def trainable_network(self, pretrained: bool = True) -> "torch.nn.Module":
        """A new, trainable copy of the network that :meth:`features` runs.

        Parameters
        ----------
        pretrained : bool
            ``True``: with this backbone's weights (loaded first if :meth:`load` has not been
            called). ``False``: the architecture only, initialised as its constructor does,
            without reading any weights file (for a method whose checkpoint holds the
            fine-tuned weights).

        Returns
        -------
        torch.nn.Module
            On the CPU, in training mode, every parameter requiring gradients, sharing nothing
            with the frozen network; its ``state_dict`` keys are stable (checkpoints store
            them). Leave out the modules :meth:`network_features` never reaches where whole
            modules can go, since DistributedDataParallel needs every parameter to take part
            (EfficientNet-Lite0 is cut after its feature stage; a ViT keeps every block: its
            attention keys do not reach the last MLP, but SelfMask reads its final tokens).

        Raises
        ------
        HarnessError
            When the backbone offers no trainable network (the default): methods that fine-tune
            the encoder cannot use it; methods on frozen features can.
        """
        from harness.errors import HarnessError

        raise HarnessError(f"backbone {self.name!r} offers no trainable copy of its network "
                           f"(Backbone.trainable_network), which methods that fine-tune it need")

    def network_features(self, network, images):
        """:meth:`features` computed through ``network`` (a :meth:`trainable_network` copy),
        with gradients.

        ``images``: ``(B, 3, H, W)`` RGB in [0, 1] on the network's device, H and W multiples of
        :attr:`stride`; normalised here with :attr:`mean` / :attr:`std` as in :meth:`features`.
        Returns ``(B, feature_dim, H / stride, W / stride)``. Given a copy with this backbone's
        weights, the values equal those of :meth:`features`. Needs no :meth:`load`.
        """
        from harness.errors import HarnessError

        raise HarnessError(f"backbone {self.name!r} offers no trainable copy of its network "
                           f"(Backbone.network_features), which methods that fine-tune it need")

    def identity(self) -> dict[str, Any]:
        ident = super().identity()
        ident["weights_digest"] = self.weights_digest
        return ident


class Method(Plugin):
    """Maps images to soft foreground masks in [0, 1] at the image's size.

    The runner builds a method as ``cls(**options)``, calls :meth:`configure_for_run`, then
    (at the first image the mask cache does not hold) :meth:`setup` with the
    :class:`RunContext`, then :meth:`device_stage` on batches of labels-free samples in its
    main process and :meth:`cpu_stage` on each result in a worker process (by default the
    first is :meth:`predict_batch` and the second passes its predictions on, so a method that
    implements only :meth:`predict` works as it is). A method
    that uses a backbone (``uses_backbone``) reads its features through ``context.features``
    (:class:`FeatureSource`), so they are cached and shared with the other methods on that
    backbone; :class:`harness.patch_methods.PatchFeatureMethod` does this for methods that
    segment one image from its patch features.

    What keys the cached masks: the method's name, ``version`` and resolved options, its
    :meth:`cache_token`, the backbone's identity (with its ``weights_digest``), the run's seed
    when :meth:`uses_seed`, the image id and its pixels. A cacheable method whose options
    hold a file path must put what identifies the file's content (e.g.
    :func:`harness.training.checkpoint.file_token`) in :meth:`cache_token`; the runner refuses
    one that returns nothing.
    """

    kind: ClassVar[str] = "method"
    #: Whether ``--backbone`` applies; the runner builds the backbone for the method.
    uses_backbone: ClassVar[bool] = False
    default_backbone: ClassVar[str | None] = None
    #: Whether predictions go to the prediction cache (off for methods that only read files).
    cacheable: ClassVar[bool] = True
    #: Whether ``harness train`` applies.
    trainable: ClassVar[bool] = False
    #: The method's rows in the report's ablation table (backbone x crop consistency x
    #: post-processing), or ``None``: ``{"family": str, "crop_consistency": bool}`` and
    #: optionally ``"post"``, the post-processor the table toggles (default ``"gf"``).
    ablation: ClassVar[dict[str, Any] | None] = None

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

    # ---- the two stages of a pipelined run (``harness run --workers N``) ----------------
    def device_stage(self, samples: Sequence[Sample]) -> list[Any]:
        """The part of predicting that runs in the run's main process, on a batch of images:
        the network on the device. Returns one value per sample, handed (pickled) to
        :meth:`cpu_stage` in a worker process.

        Default: :meth:`predict_batch`, so a method that implements only :meth:`predict`
        runs whole here and :meth:`cpu_stage` passes its predictions on.
        """
        return list(self.predict_batch(samples))

    def cpu_stage(self, sample: Sample, staged: Any) -> "Prediction | np.ndarray":
        """The rest of predicting one image, in a worker process, from what :meth:`device_stage`
        returned for it (default: that value, a prediction).

        A method that overrides it is set up (:meth:`setup`) before the workers start, and the
        workers inherit the method as setup left it; they run on the CPU with one thread each,
        so the method must not use the device here. ``predict_batch`` of such a method should
        equal ``[cpu_stage(s, x) for s, x in zip(samples, device_stage(samples))]``
        (:class:`~harness.patch_methods.PatchFeatureMethod` does this).
        """
        return staged

    def splits_stages(self) -> bool:
        """Whether this method overrides :meth:`cpu_stage` (its per-image work can run in workers)."""
        return type(self).cpu_stage is not Method.cpu_stage

    def cache_token(self) -> dict[str, Any]:
        """Extra values that determine the outputs (e.g. a checkpoint's digest)."""
        return {}

    def uses_seed(self) -> bool:
        """Whether the run's ``--seed`` (``RunContext.seed``) changes this method's masks; if so,
        the seed keys its cached masks. Default: no."""
        return False


class PostProcessor(Plugin):
    """``(image, soft mask) -> soft mask``, e.g. a guided filter."""

    kind: ClassVar[str] = "post"
    #: The post-processor's name in report tables ("" = :attr:`name`).
    title: ClassVar[str] = ""
    #: Where report tables put its columns (lower first); ``None``: after those, by name.
    report_order: ClassVar[int | None] = None

    def setup(self, context: RunContext) -> None:
        """Prepare (pick a device); called once before the first image."""

    def __call__(self, image: "np.ndarray", mask: "np.ndarray") -> "np.ndarray":
        """Refine ``mask`` ((H, W) float32 in [0, 1]) using ``image`` ((H, W, 3) uint8)."""
        raise NotImplementedError


class Evaluator(Plugin):
    """Scores predictions image by image, without state.

    - :meth:`process` ``(sample, prediction) -> (record, row)``: ``record`` is a plain,
      picklable, fixed-size value (never a mask) that the harness keeps for each image, in
      dataset order; ``row`` is this image's line of ``per_image.csv`` (a dict);
    - :meth:`aggregate` ``(records) -> metrics``: the flat metrics of ``results.json`` from the
      records of every image;
    - :meth:`artifacts` ``(records, run_dir) -> paths``: extra files (plots, arrays).

    The evaluator keeps nothing between calls, so a run sharded over several processes just
    concatenates the records in dataset order: the metrics equal a one-process run's.

    Every key an evaluator emits is declared: ``metric_keys`` (what :meth:`aggregate` may
    return) and ``row_keys`` (what a row may hold). Metrics and per-image columns of all the
    evaluators of a run share one flat namespace, so two evaluators of one run may not declare
    the same key (the run is refused up front, naming both), and an evaluator that emits a key
    it did not declare stops the run. The common metric ``n_images`` (the number of images
    scored) may be returned by any evaluator without being declared; the row key ``id`` is the
    harness's.
    """

    kind: ClassVar[str] = "evaluator"
    #: The ground-truth field a sample needs: "mask" or "boxes".
    requires: ClassVar[str] = "mask"
    #: The metric keys :meth:`aggregate` may return.
    metric_keys: ClassVar[tuple[str, ...]] = ()
    #: The per-image column keys :meth:`process`'s row may hold.
    row_keys: ClassVar[tuple[str, ...]] = ()

    def process(self, sample: Sample, prediction: Prediction) -> "tuple[Any, dict[str, Any]]":
        """``(record, row)`` for one image (``sample`` carries the ground truth)."""
        raise NotImplementedError

    def aggregate(self, records: "Sequence[Any]") -> dict[str, Any]:
        """The metrics of these records (one per image, in dataset order)."""
        raise NotImplementedError

    def artifacts(self, records: "Sequence[Any]", run_dir: Path) -> list[Path]:
        """Write extra files (plots) into the run directory; return their paths."""
        return []
