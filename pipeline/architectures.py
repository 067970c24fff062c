"""The registry of base architectures: the one table of what the pipeline knows about each base.

``model.architecture`` is a key of :data:`ARCHITECTURES`: a keras.applications network
(:class:`Backbone`: its constructor and the preprocessing its weights expect, the widths it has
weights for, its layer count, how keras.applications names its weights file, its model-card name)
or :data:`KERAS_HUB`, the backbone of a KerasHub preset on Kaggle (``model.kaggle_handle``), whose
preset fixes the architecture, width and preprocessing (:data:`KERAS_HUB_LAYER_COUNTS`,
:data:`KERAS_HUB_EXAMPLE`, handles parsed by :func:`keras_hub_preset`). Params validation, model
building, the Kaggle weights download, the model card, the fit diagnosis and the benchmark
(:mod:`pipeline.tools.bench`) all read this module; it imports nothing heavy (no TensorFlow), so
params validation stays fast.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

KERAS_HUB = "keras_hub"


@dataclass(frozen=True)
class Backbone:
    """One supported base and everything the pipeline needs to know about it.

    ``constructor``: the ``keras.applications`` attribute that builds it (``None`` for a KerasHub
    preset, built from the preset); ``rescale``: ``(scale, offset)`` that maps ``[0, 255]`` pixels
    to what its weights expect, or ``None`` when the network normalises pixels itself;
    ``kwargs``: further constructor arguments; ``alphas``: the width multipliers keras.applications
    has ImageNet weights for (``uses_alpha``: whether the constructor takes one); ``layers``: its
    layer count with ``include_top=False`` as ``len(base.layers)`` counts them, the most
    ``finetune.unfreeze_layers`` can unfreeze (``None``: known only from the preset);
    ``weights_file``: the name keras.applications gives its headless ImageNet weights file, with
    ``{alpha}`` for the width (``weights_file_pattern``: the regular expression of the names it has
    used, ``{alpha}`` escaped); ``title``: its name in the model card and reports;
    ``reference_recipe``: whether the plain Keras reference recipe of ``tools.bench quality``
    (:mod:`pipeline.tools.reference`) runs on it.
    """

    title: str
    constructor: str | None
    rescale: tuple[float, float] | None
    alphas: tuple[float, ...]
    layers: int | None
    kwargs: dict = field(default_factory=dict)
    uses_alpha: bool = True
    weights_file: str = ""
    weights_file_pattern: str = ""
    reference_recipe: bool = False

    @property
    def is_mobilenet(self) -> bool:
        """A MobileNet: ``model.alpha`` (its width) is part of its description."""
        return self.title.startswith("MobileNet")


# MobileNetV2/V3 expect pixels in [-1, 1]; EfficientNet normalises [0, 255] pixels inside the
# network itself.
_MINUS_ONE_TO_ONE = (1 / 127.5, -1.0)
ARCHITECTURES: dict[str, Backbone] = {
    "mobilenet_v2": Backbone(
        title="MobileNetV2",
        constructor="MobileNetV2",
        rescale=_MINUS_ONE_TO_ONE,
        alphas=(0.35, 0.5, 0.75, 1.0, 1.3, 1.4),
        layers=154,
        weights_file="mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_224_no_top.h5",
        weights_file_pattern=r"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_[0-9]+_no_top\.h5",
        reference_recipe=True,
    ),
    "mobilenet_v3_small": Backbone(
        title="MobileNetV3Small",
        constructor="MobileNetV3Small",
        rescale=_MINUS_ONE_TO_ONE,
        alphas=(0.75, 1.0),
        layers=156,
        kwargs={"include_preprocessing": False},
        weights_file="weights_mobilenet_v3_small_224_{alpha}_float_no_top_v2.h5",
        weights_file_pattern=r"weights_mobilenet_v3_small_224_{alpha}_float_no_top(_v2)?\.h5",
    ),
    "mobilenet_v3_large": Backbone(
        title="MobileNetV3Large",
        constructor="MobileNetV3Large",
        rescale=_MINUS_ONE_TO_ONE,
        alphas=(0.75, 1.0),
        layers=186,
        kwargs={"include_preprocessing": False},
        weights_file="weights_mobilenet_v3_large_224_{alpha}_float_no_top_v2.h5",
        weights_file_pattern=r"weights_mobilenet_v3_large_224_{alpha}_float_no_top(_v2)?\.h5",
    ),
    "efficientnet_b0": Backbone(
        title="EfficientNetB0",
        constructor="EfficientNetB0",
        rescale=None,
        alphas=(1.0,),
        layers=237,
        uses_alpha=False,
        weights_file="efficientnetb0_notop.h5",
        weights_file_pattern=r"efficientnetb0_notop\.h5",
    ),
    # The backbone of a KerasHub preset: the preset fixes its width (model.alpha stays 1.0),
    # its preprocessing and its layers (KERAS_HUB_LAYER_COUNTS).
    KERAS_HUB: Backbone(
        title="KerasHub preset", constructor=None, rescale=None, alphas=(1.0,), layers=None
    ),
}
DEFAULT_ARCHITECTURE = "mobilenet_v2"
# keras.applications bases: every architecture but KerasHub's
KERAS_APPLICATIONS = tuple(name for name, b in ARCHITECTURES.items() if b.constructor)

# Layers of the official KerasHub image presets (Kaggle owner ``keras``), by preset name, counted
# like ``len(backbone.layers)``: a KerasHub block (an inverted residual block, say) is one layer.
# Other presets are counted when the finetune stage runs. A unit test checks the table against
# keras-hub's own configuration of these presets.
KERAS_HUB_LAYER_COUNTS: dict[str, int] = {
    "mobilenet_v3_small_050_imagenet": 17,
    "mobilenet_v3_small_100_imagenet": 17,
    "mobilenet_v3_large_100_imagenet": 21,
    "mobilenet_v3_large_100_imagenet_21k": 21,
}
# The pinned Kaggle handle of an official KerasHub image preset, for error messages
KERAS_HUB_EXAMPLE = "keras/mobilenetv3/keras/mobilenet_v3_large_100_imagenet/1"
# The keras.applications weights file that error messages give as an example of model.weights_path
WEIGHTS_FILE_EXAMPLE = ARCHITECTURES[DEFAULT_ARCHITECTURE].weights_file.format(alpha=1.0)

_SLUG = r"[A-Za-z0-9][A-Za-z0-9_.\-]*"
# A KerasHub preset on Kaggle: owner/model/keras/preset/version (a Kaggle model, Keras framework)
_KERAS_HUB_HANDLE = re.compile(
    rf"(?P<owner>{_SLUG})/(?P<model>{_SLUG})/(?i:keras)/(?P<preset>{_SLUG})"
    r"(?:/(?P<version>[1-9][0-9]*))?"
)


def keras_hub_preset(handle: str) -> tuple[str, str, int | None] | None:
    """``(owner, preset, version)`` of a KerasHub preset handle, or ``None`` for another form.

    ``version`` is ``None`` for an unpinned handle (``owner/model/keras/preset``).
    """
    m = _KERAS_HUB_HANDLE.fullmatch(handle.strip().strip("/"))
    if m is None or "/versions/" in handle:
        return None
    return m["owner"], m["preset"], int(m["version"]) if m["version"] else None


def backbone(architecture: str) -> Backbone:
    """The registry entry of ``architecture`` (a key of :data:`ARCHITECTURES`)."""
    return ARCHITECTURES[architecture]


def title(architecture: str) -> str:
    """The architecture's name for people (model card), or the key itself when unknown."""
    spec = ARCHITECTURES.get(architecture)
    return spec.title if spec else architecture


def weights_file(architecture: str, alpha: float) -> str:
    """The name keras.applications gives the headless ImageNet weights of a base today."""
    return ARCHITECTURES[architecture].weights_file.format(alpha=float(alpha))


def weights_file_pattern(architecture: str, alpha: float) -> re.Pattern[str]:
    """The names keras.applications gives (and gave) the headless ImageNet weights of a base."""
    a = re.escape(str(float(alpha)))
    return re.compile(ARCHITECTURES[architecture].weights_file_pattern.replace("{alpha}", a))
