"""Typed, validated pipeline parameters read from ``params.yaml``.

Every stage calls :func:`load_params` first, so a bad value fails in about a second with a message
that names the key, the value and what is allowed, before any data or model is touched.

Run ``python -m pipeline.params`` to check a ``params.yaml`` without running anything.
"""

from __future__ import annotations

import argparse
import difflib
import math
import re
import sys
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from pipeline import paths
from pipeline.architectures import (
    ARCHITECTURES,
    DEFAULT_ARCHITECTURE,
    KERAS_HUB,
    KERAS_HUB_EXAMPLE,
    KERAS_HUB_LAYER_COUNTS,
    WEIGHTS_FILE_EXAMPLE,
    keras_hub_preset,
)

PARAMS_FILE = paths.PARAMS


class ParamsError(ValueError):
    """Raised when ``params.yaml`` is missing, malformed or holds an invalid value."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# Sides of data.image_size, pixels: keras.applications' MobileNets and EfficientNet refuse
# inputs below 32 px.
MIN_IMAGE_SIDE, MAX_IMAGE_SIDE = 32, 2048


# How each data.resize policy gets an image to data.image_size (model card).
RESIZE_TEXT = {
    "squash": "stretched to it without keeping the aspect ratio",
    "pad": "scaled to fit inside it, aspect ratio kept, centred on black (letterboxed)",
    "crop": "scaled to cover it, aspect ratio kept, its centre cut out",
}


ImageSize = int | tuple[int, int] | list[int]  # a data.image_size: a side or (height, width)


def image_hw(size: ImageSize) -> tuple[int, int]:
    """A ``data.image_size`` (a square side or ``(height, width)``) as ``(height, width)``."""
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


def format_hw(size: ImageSize) -> str:
    """``160×288`` for a ``data.image_size`` (``160×160`` for a side of 160)."""
    return "×".join(map(str, image_hw(size)))


class SampleDataParams(_Section):
    """The generated offline dataset (``data.source: sample``)."""

    images_per_class: int = Field(350, ge=10, le=20_000)
    min_side: int = Field(120, ge=32, le=2048, description="shortest short side, pixels")
    max_side: int = Field(320, ge=32, le=4096, description="longest short side, pixels")

    @model_validator(mode="after")
    def _sides(self) -> SampleDataParams:
        if self.min_side > self.max_side:
            raise ValueError(
                f"min_side ({self.min_side}) must not exceed max_side ({self.max_side})"
            )
        return self


class KaggleDataParams(_Section):
    """A Kaggle dataset pinned to a version (``data.source: kaggle``)."""

    handle: str = "balabaskar/tom-and-jerry-image-classification/versions/1"


class DataParams(_Section):
    source: Literal["sample", "local", "kaggle"] = "sample"
    path: str = Field("", description="local: folder that holds one sub-folder per class")
    image_size: int | tuple[int, int] = Field(
        96,
        description="model input, pixels: a square side, or [height, width] (e.g. [160, 288] "
        "keeps a 16:9 frame's shape)",
    )
    resize: Literal["squash", "pad", "crop"] = Field(
        "squash",
        description="how an image of another shape gets to image_size: squash (stretch to it), "
        "pad (keep the aspect ratio, scale to fit inside, centre on black) or crop (keep the "
        "aspect ratio, scale to cover it, cut the centre)",
    )
    min_image_side: int = Field(
        16, ge=1, le=4096, description="images with a shorter side are skipped, pixels"
    )
    max_image_pixels: int = Field(
        50_000_000,
        ge=1024,
        le=1_000_000_000,
        description="images with more pixels are refused (decompression bombs)",
    )
    sample: SampleDataParams = SampleDataParams()
    kaggle: KaggleDataParams = KaggleDataParams()

    @field_validator("image_size", mode="before")
    @classmethod
    def _side_or_pair(cls, value: object) -> object:
        """A whole number, or a list of two: ``[height, width]``; each side 32..2048."""
        sides = list(value) if isinstance(value, list | tuple) else [value]
        if len(sides) not in (1, 2) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in sides
        ):
            raise PydanticCustomError(
                "image_size",
                "expected a side in pixels (e.g. 160) or [height, width] (e.g. [160, 288])",
            )
        if not all(MIN_IMAGE_SIDE <= v <= MAX_IMAGE_SIDE for v in sides):
            raise PydanticCustomError(
                "image_size",
                "each side must be {low}..{high} pixels (the smallest input the architectures "
                "take is {low})",
                {"low": MIN_IMAGE_SIDE, "high": MAX_IMAGE_SIDE},
            )
        return sides[0] if len(sides) == 1 else tuple(sides)

    @property
    def hw(self) -> tuple[int, int]:
        """``image_size`` as ``(height, width)``, pixels."""
        return image_hw(self.image_size)

    @model_validator(mode="after")
    def _path_for_local(self) -> DataParams:
        if self.source == "local" and not self.path.strip():
            raise ValueError(
                "data.source is 'local' but data.path is empty: set data.path to a folder that "
                "holds one sub-folder of images per class"
            )
        return self


class SplitParams(_Section):
    train: float = Field(0.5, gt=0, lt=1)
    val: float = Field(0.15, gt=0, lt=1)
    test: float = Field(0.35, gt=0, lt=1)
    group_near_duplicates: bool = Field(
        True, description="keep near-duplicate images (e.g. nearby video frames) in one split"
    )
    near_duplicate_distance: int = Field(
        4, ge=0, le=32, description="max differing bits of two 64-bit perceptual hashes"
    )
    label_conflicts: Literal["keep", "drop"] = Field(
        "keep",
        description="near-duplicate groups holding images of more than one class (reported in "
        "reports/leakage.json): keep them, each group in one split, with a warning; or drop "
        "every image of such a group from all splits",
    )

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitParams:
        total = self.train + self.val + self.test
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(
                f"split.train + split.val + split.test must be 1, got "
                f"{self.train} + {self.val} + {self.test} = {total:g}"
            )
        return self


class ModelParams(_Section):
    architecture: str = DEFAULT_ARCHITECTURE
    alpha: float = Field(0.35, gt=0, description="width multiplier (MobileNet only)")
    weights: Literal["sample", "file", "imagenet", "kaggle"] = "sample"
    weights_path: str = Field("", description="file: path of a Keras weights file")
    kaggle_handle: str = Field(
        "", description="kaggle: a pinned Kaggle model or dataset handle holding the weights"
    )
    kaggle_file: str = Field(
        "",
        description="kaggle: path of the weights file inside the handle's files (empty: the "
        "single .h5 file there, or the one keras.applications names for the architecture)",
    )
    dense_units: int = Field(
        0, ge=0, le=8192, description="hidden layer of the head; 0: a linear head"
    )
    dropout: float = Field(0.2, ge=0, lt=1)

    @field_validator("architecture", mode="before")
    @classmethod
    def _known_architecture(cls, value: object) -> object:
        """One of the registry's architectures (:data:`pipeline.architectures.ARCHITECTURES`)."""
        if isinstance(value, str) and value in ARCHITECTURES:
            return value
        names = [repr(name) for name in ARCHITECTURES]
        raise PydanticCustomError(
            "literal_error",
            "Input should be {expected}",
            {"expected": ", ".join(names[:-1]) + f" or {names[-1]}"},
        )

    @model_validator(mode="after")
    def _consistent(self) -> ModelParams:
        allowed = ARCHITECTURES[self.architecture].alphas
        if not any(math.isclose(self.alpha, a) for a in allowed):
            fixed = ""
            if self.architecture == KERAS_HUB:
                fixed = " (a KerasHub preset fixes its own width)"
            raise ValueError(
                f"model.alpha = {self.alpha} is not available for {self.architecture}; "
                f"choose one of {list(allowed)}{fixed}"
            )
        if self.weights == "file" and not self.weights_path.strip():
            raise ValueError(
                "model.weights is 'file' but model.weights_path is empty: set it to a Keras "
                f"weights file, e.g. {WEIGHTS_FILE_EXAMPLE}"
            )
        if self.architecture == KERAS_HUB:
            return self._keras_hub_consistent()
        if self.weights == "kaggle" and not self.kaggle_handle.strip():
            raise ValueError(
                "model.weights is 'kaggle' but model.kaggle_handle is empty: set it to a pinned "
                "Kaggle handle (see docs/kaggle.md)"
            )
        preset = keras_hub_preset(self.kaggle_handle) if self.weights == "kaggle" else None
        if preset is not None and preset[0] == "keras":
            raise ValueError(
                f"model.kaggle_handle = {self.kaggle_handle!r} is a KerasHub preset (Kaggle owner "
                f"'keras'), not a keras.applications weights file of {self.architecture}: set "
                f"model.architecture to '{KERAS_HUB}' and model.alpha to 1.0 to use it"
            )
        return self

    def _keras_hub_consistent(self) -> ModelParams:
        example = f"e.g. {KERAS_HUB_EXAMPLE}"
        if self.weights != "kaggle":
            raise ValueError(
                f"model.architecture is '{KERAS_HUB}' (the base is a KerasHub preset's backbone) "
                f"but model.weights is {self.weights!r}: set model.weights to 'kaggle' and "
                f"model.kaggle_handle to the preset's pinned Kaggle handle, {example}"
            )
        handle = self.kaggle_handle.strip()
        if not handle:
            raise ValueError(
                f"model.architecture is '{KERAS_HUB}' but model.kaggle_handle is empty: set it to "
                f"the pinned Kaggle handle of a KerasHub image preset, {example}"
            )
        preset = keras_hub_preset(handle)
        if preset is None:
            raise ValueError(
                f"model.kaggle_handle = {self.kaggle_handle!r} is not a KerasHub preset handle: "
                f"expected owner/model/keras/preset/N (a Kaggle model of the Keras framework, "
                f"pinned to version N), {example}; the official presets are listed in keras-hub's "
                "keras_hub/src/models/*/*_presets.py and on https://www.kaggle.com/organizations/"
                "keras/models"
            )
        if preset[2] is None:
            raise ValueError(
                f"model.kaggle_handle = {self.kaggle_handle!r} is not pinned to a version: "
                "kagglehub would then ask Kaggle for the latest version on every run, so the same "
                "params could silently give other weights (it breaks reproducibility). Pin it as "
                f"'{handle.strip('/')}/N' with N the version to use (see "
                f"https://www.kaggle.com/models/{handle.strip('/')})"
            )
        if self.kaggle_file.strip():
            raise ValueError(
                f"model.kaggle_file = {self.kaggle_file!r} must be empty with model.architecture "
                f"'{KERAS_HUB}': a KerasHub preset's files (config.json, image_converter.json, "
                "model.weights.h5) are found by name"
            )
        return self


class PretrainParams(_Section):
    """Pretraining of the base on a generated source task (``model.weights: sample``)."""

    image_size: int = Field(96, ge=32, le=512)
    images: int = Field(4800, ge=64, le=200_000)
    epochs: int = Field(3, ge=1, le=500)
    batch_size: int = Field(32, ge=1, le=4096)
    learning_rate: float = Field(0.002, gt=0, le=1)
    seed: int = Field(
        42,
        ge=0,
        description="seeds the source task and the pretraining, apart from `seed`: the base is a "
        "fixed input of an experiment, as downloaded weights are",
    )


class AugmentationParams(_Section):
    """Random augmentation applied in training only. Factors are fractions (0 disables)."""

    flip: bool = True
    rotation: float = Field(0.05, ge=0, le=0.5, description="fraction of a full turn")
    zoom: float = Field(0.1, ge=0, lt=1)
    translation: float = Field(0.05, ge=0, lt=1)
    contrast: float = Field(0.1, ge=0, lt=1)
    brightness: float = Field(0.1, ge=0, lt=1)
    interpolation: Literal["nearest", "bilinear"] = Field(
        "nearest",
        description="resampling of rotation, zoom and translation: nearest (about half the cost "
        "of bilinear on CPU) or bilinear (smoother, Keras' default)",
    )

    @property
    def flip_only(self) -> bool:
        """Whether the horizontal flip is the only augmentation switched on."""
        return self.flip and not (
            self.rotation or self.zoom or self.translation or self.contrast or self.brightness
        )

    @property
    def enabled(self) -> bool:
        """Whether any augmentation is switched on."""
        return bool(
            self.flip
            or self.rotation
            or self.zoom
            or self.translation
            or self.contrast
            or self.brightness
        )


class PhaseParams(_Section):
    """One training phase (Adam, EarlyStopping on val loss)."""

    epochs: int = Field(20, ge=1, le=10_000)
    batch_size: int = Field(16, ge=1, le=4096)
    learning_rate: float = Field(0.01, gt=0, le=1)
    patience: int = Field(5, ge=1, le=10_000, description="EarlyStopping patience, epochs")


class TransferParams(PhaseParams):
    """The transfer phase; ``base_features`` says how the frozen base is run.

    ``once``: the base's pooled features of every train and val image are computed once and
    the head trains on them, ~``epochs`` times fewer base forward passes; the trained weights are
    those of a whole-model run up to float round-off when augmentation is off. With augmentation
    on, the head trains on ``augmented_views`` augmented copies of each train image's features,
    computed once (``augmented_views`` forward passes over the train images), one of them drawn
    at random per image and epoch; with ``augmented_views: 0`` it trains on un-augmented
    features (augmentation still applies in fine-tuning).
    ``every_epoch``: the whole model runs on every batch, on freshly augmented images.
    ``auto``: ``once`` when augmentation is off or ``augmented_views`` > 0, else ``every_epoch``.
    """

    learning_rate: float = Field(1e-4, gt=0, le=1)  # the head starts as the probe
    base_features: Literal["auto", "once", "every_epoch"] = "once"
    augmented_views: int = Field(
        0,
        ge=0,
        le=64,
        description="with base features once and augmentation on: augmented copies of each "
        "train image's base features the head trains on (0: un-augmented features only)",
    )
    head_init: Literal["random", "probe"] = Field(
        "probe",
        description="random: a new head; probe: the linear head starts as the baseline stage's "
        "logistic regression (linear probing, then fine-tuning; needs model.dense_units: 0)",
    )

    def features_once(self, augmentation: AugmentationParams) -> bool:
        """Whether this phase computes the base features once (see the class docstring)."""
        if self.base_features == "auto":
            return not augmentation.enabled or self.augmented_views > 0
        return self.base_features == "once"

    def views(self, augmentation: AugmentationParams) -> int:
        """Augmented views of the base features the head trains on (0: none)."""
        on = augmentation.enabled and self.features_once(augmentation)
        return self.augmented_views if on else 0


class FinetuneParams(PhaseParams):
    """The fine-tuning phase; ``frozen_activations`` says how the still-frozen bottom of the base
    is run.

    ``once``: the output of the frozen bottom (the base up to the last layer before the
    unfrozen ones that every path crosses, :func:`pipeline.models.frozen_cut`) is computed once
    per train and val image, and the unfrozen top and the head train on it, so every epoch runs
    only the top. Augmentation must then be off or flip only: the activations of each train
    image and of its mirror are both kept and every epoch draws one of them per image at random,
    the same distribution as flipping half of the images. The trained model is the same kind of
    model as with ``every_epoch`` (BatchNorm is frozen either way); only the random draws
    differ. ``every_epoch``: the whole model runs on every batch of freshly augmented images.
    ``auto``: ``once`` when augmentation is off or flip only and the activations fit in
    ``cache_mb``, else ``every_epoch``.
    """

    epochs: int = Field(30, ge=1, le=10_000)
    learning_rate: float = Field(1e-4, gt=0, le=1)
    unfreeze_layers: int = Field(80, ge=1, description="last layers of the base to unfreeze")
    schedule: Literal["constant", "cosine"] = Field(
        "constant",
        description="learning rate over the epochs: constant | cosine (from learning_rate down "
        "to 0 at the last epoch)",
    )
    frozen_activations: Literal["auto", "once", "every_epoch"] = "auto"
    cache_mb: float = Field(
        2048,
        gt=0,
        le=1_048_576,
        description="most memory the frozen activations computed once may take, MiB (auto: "
        "every_epoch above it; once: an error)",
    )

    def activations_once(self, augmentation: AugmentationParams) -> bool:
        """Whether this phase may compute the frozen activations once (see the class
        docstring); ``auto`` still falls back when they would not fit in ``cache_mb``."""
        if self.frozen_activations == "auto":
            return augmentation.flip_only or not augmentation.enabled
        return self.frozen_activations == "once"


class TrainParams(_Section):
    """How both training phases run: distribution strategy, precision, determinism, class weights.

    ``transfer.batch_size`` and ``finetune.batch_size`` are per replica: the global batch of
    one optimizer step is ``batch_size`` x the number of replicas (devices x workers).
    """

    distribution: Literal["auto", "none", "mirrored", "multi_worker"] = Field(
        "auto",
        description="auto: mirrored when more than one GPU is visible, else none; none: one "
        "device; mirrored: MirroredStrategy over the local GPUs (the CPU when there is none); "
        "multi_worker: MultiWorkerMirroredStrategy over the machines TF_CONFIG lists",
    )
    mixed_precision: Literal["float32", "mixed_float16", "mixed_bfloat16"] = Field(
        "float32",
        description="Keras dtype policy; mixed policies keep variables and the softmax output "
        "in float32 (mixed_float16 needs a GPU to pay off, mixed_bfloat16 a GPU or TPU with "
        "bfloat16 units)",
    )
    deterministic_ops: bool = Field(
        True,
        description="TensorFlow op determinism: the same run gives the same numbers (on GPU "
        "some ops get slower, and ops without a deterministic kernel raise an error)",
    )
    learning_rate_scaling: Literal["none", "linear"] = Field(
        "none",
        description="none: the phases' learning rates are used as written whatever the number "
        "of replicas; linear: multiplied by the number of replicas (the global batch grows "
        "with them)",
    )
    class_weight: Literal["none", "balanced"] = Field(
        "none",
        description="weights of the classes in the training loss of both phases; none: every "
        "image counts the same; balanced: n_train / (n_classes * n_train_of_class), from the "
        "train split (scikit-learn's 'balanced')",
    )


class DiagnosisParams(_Section):
    """Thresholds of the fit diagnosis (``evaluate``) read from each phase's learning curves.

    Gaps and skill are accuracy fractions; rises, changes and drops are fractions of a loss.
    """

    min_epochs: int = Field(
        4, ge=2, le=10_000, description="a phase with fewer epochs is inconclusive"
    )
    window: int = Field(
        3, ge=1, le=100, description="last epochs averaged for the end-of-phase values"
    )
    max_gap: float = Field(
        0.15, gt=0, le=1, description="train - val accuracy above this: overfitting"
    )
    max_val_loss_rise: float = Field(
        0.15,
        gt=0,
        le=10,
        description="val loss rise after its best epoch (fraction of the best) above this, "
        "while train loss falls: overfitting",
    )
    min_skill: float = Field(
        0.5,
        ge=0,
        le=1,
        description="(accuracy - majority baseline) / (1 - baseline) of the better of train and "
        "val accuracy below this: underfitting",
    )
    min_improvement: float = Field(
        0.02,
        gt=0,
        le=1,
        description="val loss drop over the last `window` epochs (fraction) above this, without "
        "early stopping: still improving, underfitting",
    )

    @model_validator(mode="after")
    def _window_fits(self) -> DiagnosisParams:
        if self.window >= self.min_epochs:
            raise ValueError(
                f"diagnosis.window ({self.window}) must be smaller than diagnosis.min_epochs "
                f"({self.min_epochs})"
            )
        return self


class EvaluateParams(_Section):
    """How the trained model predicts: in ``evaluate``, ``predict`` and the exports."""

    tta: Literal["none", "flip"] = Field(
        "none",
        description="test-time augmentation: none, or flip (the mean of the probabilities of "
        "the image and of its mirror image); the evaluate stage reports the metrics both ways",
    )


class ExportParams(_Section):
    """The ``export`` stage: SavedModel and TFLite copies of the fine-tuned model."""

    tolerance: float = Field(
        1e-4,
        gt=0,
        le=0.5,
        description="largest allowed |probability difference| of an exported model from the "
        "Keras model on any test image",
    )


class Params(_Section):
    """All pipeline parameters; one section per ``params.yaml`` top-level key."""

    profile: str = Field(
        "",
        description="the profile (profiles/<name>.yaml) that `make experiment PROFILE=<name>` "
        "applied; recorded for reports and reviews, it changes nothing by itself",
    )
    seed: int = Field(42, ge=0, le=2**31 - 1)
    data: DataParams = DataParams()
    split: SplitParams = SplitParams()
    model: ModelParams = ModelParams()
    pretrain: PretrainParams = PretrainParams()
    augmentation: AugmentationParams = AugmentationParams()
    transfer: TransferParams = TransferParams()
    finetune: FinetuneParams = FinetuneParams()
    train: TrainParams = TrainParams()
    diagnosis: DiagnosisParams = DiagnosisParams()
    evaluate: EvaluateParams = EvaluateParams()
    export: ExportParams = ExportParams()

    @model_validator(mode="after")
    def _real_data_real_weights(self) -> Params:
        if self.data.source == "kaggle" and self.model.weights == "sample":
            raise ValueError(
                "data.source is 'kaggle' but model.weights is 'sample': sample weights are "
                "pretrained on generated shapes for the offline demo. Use model.weights "
                "imagenet, file or kaggle with real data (e.g. make experiment "
                "PROFILE=tom-and-jerry)"
            )
        return self

    @model_validator(mode="after")
    def _activations_once_needs_flip_only(self) -> Params:
        aug = self.augmentation
        if self.finetune.frozen_activations == "once" and aug.enabled and not aug.flip_only:
            on = [
                k
                for k in ("rotation", "zoom", "translation", "contrast", "brightness")
                if getattr(aug, k)
            ]
            raise ValueError(
                "finetune.frozen_activations is 'once', which covers no augmentation but the "
                f"flip, and augmentation.{', augmentation.'.join(on)} is on: set "
                f"{' and '.join(on)} to 0, or finetune.frozen_activations to auto or every_epoch"
            )
        return self

    @model_validator(mode="after")
    def _probe_needs_a_linear_head(self) -> Params:
        if self.transfer.head_init == "probe" and self.model.dense_units:
            raise ValueError(
                "transfer.head_init is 'probe' but model.dense_units is "
                f"{self.model.dense_units}: the probe is a linear head; set model.dense_units: 0 "
                "or transfer.head_init: random"
            )
        return self

    @model_validator(mode="after")
    def _unfreeze_fits(self) -> Params:
        n = base_layer_count(self.model)
        if n is not None and self.finetune.unfreeze_layers > n:
            what, note = self.model.architecture, ""
            preset = keras_hub_preset(self.model.kaggle_handle)
            if what == KERAS_HUB and preset is not None:
                what, note = f"KerasHub preset {preset[1]}", " (a KerasHub block counts as one)"
            raise ValueError(
                f"finetune.unfreeze_layers = {self.finetune.unfreeze_layers} but {what} has only "
                f"{n} layers{note}: choose 1..{n}"
            )
        return self


def base_layer_count(model: ModelParams) -> int | None:
    """Layers of the configured base as ``finetune.unfreeze_layers`` counts them.

    ``None`` for a KerasHub preset outside :data:`KERAS_HUB_LAYER_COUNTS`: only its downloaded
    backbone can tell (the finetune stage checks it then).
    """
    if model.architecture != KERAS_HUB:
        return ARCHITECTURES[model.architecture].layers
    preset = keras_hub_preset(model.kaggle_handle)
    if preset is None or preset[0] != "keras":
        return None
    return KERAS_HUB_LAYER_COUNTS.get(preset[1])


def _known_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        full = f"{prefix}{name}"
        keys.append(full)
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys.extend(_known_keys(ann, f"{full}."))
    return keys


def _format_error(err: dict[str, Any]) -> str:
    key = ".".join(str(p) for p in err["loc"]) or "params"
    kind = err["type"]
    if kind == "extra_forbidden":
        close = difflib.get_close_matches(key, _known_keys(Params), n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return f"{key}: unknown key{hint} (a misspelt key would be silently ignored)"
    msg = err["msg"].removeprefix("Value error, ")
    if kind == "value_error":
        return msg if "." in msg.split(" ")[0] else f"{key}: {msg}"
    value = err.get("input")
    shown = "missing" if kind == "missing" else repr(value)
    return f"{key} = {shown}: {msg}"


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    """Validate a params mapping (as read from YAML) into :class:`Params`.

    Raises :class:`ParamsError` listing every problem, one per line.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        lines = [_format_error(e) for e in exc.errors()]
        raise ParamsError(
            f"{source} has {len(lines)} invalid value(s):\n" + "\n".join(f"  - {x}" for x in lines)
        ) from None


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads YAML 1.2 floats such as ``1e-5`` (which DVC writes) as floats."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def parse_yaml(text: str) -> Any:
    """Parse YAML text the way DVC reads it (YAML 1.2 numbers: ``1e-5`` is a float)."""
    return yaml.load(text, Loader=_Loader)


def read_yaml(path: str | Path) -> Any:
    """Read a YAML file the way DVC writes it (YAML 1.2 numbers)."""
    return parse_yaml(Path(path).read_text(encoding="utf-8"))


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    """Read and validate ``params.yaml``; raise :class:`ParamsError` with a clear message."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path} not found: run from the project root (where dvc.yaml is)")
    try:
        raw = read_yaml(path)
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path} is not valid YAML: {exc}") from None
    return parse_params(raw, str(path))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", default=str(PARAMS_FILE))
    args = parser.parse_args(argv)
    try:
        params = load_params(args.path)
    except ParamsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
