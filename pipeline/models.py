"""Model building, in one place: the pretrained base, preprocessing and the head.

The classifier takes ``(batch, size, size, 3)`` float32 pixels in ``[0, 255]`` and returns
``(batch, n_classes)`` softmax probabilities::

    inputs -> preprocessing (model-specific, serialisable)
           -> base(x, training=False) -> GlobalAveragePooling2D -> Dropout
           [-> Dense relu -> Dropout, unless model.dense_units is 0] -> Dense softmax

Augmentation is not part of the model: the training input pipeline applies it
(:func:`pipeline.data.augment_batch`), so a saved model computes at inference exactly what it
computed in training, minus dropout.

The base is always called with ``training=False`` so its BatchNorm layers stay in inference mode,
also after some of its layers are unfrozen for fine-tuning (Keras guide "Transfer learning &
fine-tuning"). Every layer is a built-in Keras layer (no ``Lambda``), or one of KerasHub's
serialisable layers inside a KerasHub base, so saved models load in safe mode. Layers compute
in the global Keras dtype policy (``train.mixed_precision``), except the softmax output layer,
which always computes (and returns) float32.

Bases: a keras.applications network (:data:`pipeline.architectures.ARCHITECTURES`), or, with
``model.architecture: keras_hub``, the backbone of a KerasHub preset
(:func:`keras_hub_base_from_preset`). A KerasHub backbone is a Keras functional model whose blocks
are KerasHub layers; a saved model names them with their module (``keras_hub.src.models...``), which
Keras itself imports when it loads the model, also in safe mode, so nothing needs registering
(keras-hub must be installed). Its preprocessing is a built-in ``Rescaling`` layer with the scale
and offset of the preset's image converter. ``models/base.weights.h5`` of such a base also holds the
backbone's config and that scale and offset (:func:`save_base`), so every later stage rebuilds the
same base from that one file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from pipeline.architectures import KERAS_HUB, backbone
from pipeline.params import ImageSize, Params, image_hw

BASE_NAME = "base"
# The dataset of models/base.weights.h5 that holds a KerasHub base's config (JSON, UTF-8 bytes).
KERAS_HUB_SPEC = "pipeline_keras_hub_base"


@dataclass(frozen=True)
class KerasHubBase:
    """What rebuilds a KerasHub base: the backbone's Keras config and the preset's preprocessing.

    ``scale`` and ``offset`` are each ``None``, one number or one number per RGB channel; the
    preset's image converter maps ``[0, 255]`` pixels ``x`` to ``x * scale + offset``.
    """

    config: dict[str, Any]  # keras.saving.serialize_keras_object(backbone), without its dtype
    scale: float | list[float] | None
    offset: float | list[float] | None

    @property
    def class_name(self) -> str:
        """The backbone's registered class, e.g. ``keras_hub>MobileNetBackbone``."""
        return str(self.config.get("registered_name") or self.config.get("class_name"))


def _rgb_values(value: object, what: str) -> float | list[float] | None:
    """``None``, a number or 3 numbers (one per RGB channel) as JSON-able floats."""
    if value is None:
        return None
    values = np.asarray(value, dtype=np.float64).reshape(-1)
    if values.size not in (1, 3) or not np.all(np.isfinite(values)):
        raise ValueError(
            f"the preset's image converter has {what} = {value!r}: expected one number or one "
            "per RGB channel"
        )
    return float(values[0]) if np.ndim(value) == 0 else [float(v) for v in values]


def keras_hub_backbone_class(config: dict[str, Any]) -> type:
    """The KerasHub backbone class named by a preset's ``config.json``, checked to be an image one.

    Raises ``ValueError`` saying what is wrong: not a KerasHub Keras-format preset, a class this
    keras-hub does not know, not a backbone, or a backbone without an image converter (a text or
    audio model).
    """
    import keras_hub  # registers its classes with Keras' serialisation

    name = config.get("registered_name") if isinstance(config, dict) else None
    if not isinstance(name, str) or ">" not in name:
        raise ValueError(
            "its config.json is not a KerasHub preset's (no 'registered_name' of a KerasHub "
            "backbone, e.g. 'keras_hub>MobileNetBackbone')"
        )
    cls = keras.saving.get_registered_object(name)
    if cls is None:
        raise ValueError(
            f"its config.json names {name}, which keras-hub {keras_hub.__version__} does not know "
            "(a preset saved by a newer keras-hub, or not a KerasHub class)"
        )
    if not (isinstance(cls, type) and issubclass(cls, keras_hub.models.Backbone)):
        raise ValueError(f"its config.json names {name}, which is not a KerasHub backbone")
    converters = [
        c
        for c in set(keras.saving.get_custom_objects().values())
        if isinstance(c, type)
        and issubclass(c, keras_hub.layers.ImageConverter)
        and getattr(c, "backbone_cls", None) is cls
    ]
    if not converters:
        raise ValueError(
            f"it is a preset of {cls.__name__}, which is not an image model (KerasHub has no "
            "image converter for it)"
        )
    return cls


def _input_shape_keys(cls: type) -> list[str]:
    """The constructor argument that sets a KerasHub backbone's input shape, if it has one.

    Most image backbones take ``image_shape``; EfficientNet's takes ``input_shape``.
    """
    import inspect

    params = inspect.signature(cls.__init__).parameters
    return [key for key in ("image_shape", "input_shape") if key in params][:1]


def keras_hub_base_from_preset(preset_dir: str | Path) -> tuple[keras.Model, KerasHubBase]:
    """Build the size-agnostic backbone of the KerasHub image preset in ``preset_dir``.

    ``preset_dir`` holds the preset's ``config.json``, ``image_converter.json`` and
    ``model.weights.h5``. Returns the backbone, named ``"base"``, with the preset's weights
    (input ``(batch, h, w, 3)`` as the converter leaves it, output a ``(batch, h', w', c)``
    feature map), and its :class:`KerasHubBase`. Raises ``ValueError`` for a preset that is not
    of an image model or whose backbone does not end in a feature map.
    """
    import keras_hub

    preset_dir = Path(preset_dir)
    cls = keras_hub_backbone_class(
        json.loads((preset_dir / "config.json").read_text(encoding="utf-8"))
    )
    converter = keras_hub.layers.ImageConverter.from_preset(str(preset_dir))
    scale = _rgb_values(converter.scale, "scale")
    offset = _rgb_values(converter.offset, "offset")
    shape = {key: (None, None, 3) for key in _input_shape_keys(cls)}
    backbone = keras_hub.models.Backbone.from_preset(str(preset_dir), **shape)
    if len(backbone.output.shape) != 4:
        raise ValueError(
            f"its {type(backbone).__name__} returns {tuple(backbone.output.shape)}, not a "
            "(batch, height, width, channels) feature map that GlobalAveragePooling2D can pool"
        )
    backbone.name = BASE_NAME
    config = keras.saving.serialize_keras_object(backbone)
    config["config"] = {k: v for k, v in config["config"].items() if k != "dtype"}
    return backbone, KerasHubBase(config, scale, offset)


def save_base(base: keras.Model, path: str | Path, preprocessing: dict | None = None) -> None:
    """Write the base's weights to ``path`` (a ``.weights.h5`` file), loadable at any size.

    ``preprocessing``, for a KerasHub base only: the preset's ``{"scale": ..., "offset": ...}``.
    The file then also holds the backbone's config and that preprocessing (dataset
    :data:`KERAS_HUB_SPEC`), which :func:`build_base` and :func:`preprocessing` read back.
    """
    base.save_weights(path)
    if preprocessing is None:
        return
    import h5py

    config = keras.saving.serialize_keras_object(base)
    config["config"] = {k: v for k, v in config["config"].items() if k != "dtype"}
    spec = {"config": config, "scale": preprocessing["scale"], "offset": preprocessing["offset"]}
    data = np.frombuffer(json.dumps(spec).encode("utf-8"), dtype=np.uint8)
    with h5py.File(path, "a") as f:
        f.create_dataset(KERAS_HUB_SPEC, data=data)


def read_keras_hub_base(weights: str | Path) -> KerasHubBase:
    """The :class:`KerasHubBase` that :func:`save_base` wrote into the weights file ``weights``."""
    import h5py

    try:
        with h5py.File(weights, "r") as f:
            raw = bytes(f[KERAS_HUB_SPEC][()]) if KERAS_HUB_SPEC in f else None
    except OSError as exc:
        raise ValueError(f"{weights} is not a readable weights file ({exc})") from None
    if raw is None:
        raise ValueError(
            f"{weights} holds no KerasHub backbone config: it was not written for "
            f"model.architecture '{KERAS_HUB}'; run the download_weights stage again "
            "(dvc repro -f download_weights)"
        )
    spec = json.loads(raw.decode("utf-8"))
    return KerasHubBase(spec["config"], spec["scale"], spec["offset"])


def _keras_hub_base(spec: KerasHubBase, image_size: ImageSize | None, weights: Path) -> keras.Model:
    config = dict(spec.config)
    shape_keys = [k for k in ("image_shape", "input_shape") if k in config["config"]][:1]
    shape = (None, None, 3) if image_size is None else (*image_hw(image_size), 3)
    config["config"] = {
        **config["config"],
        "name": BASE_NAME,
        **{key: shape for key in shape_keys},
    }
    base = keras.saving.deserialize_keras_object(config, safe_mode=True)
    base.load_weights(weights)
    return base


def build_base(
    architecture: str,
    alpha: float,
    image_size: ImageSize | None,
    weights: str | Path | None = None,
) -> keras.Model:
    """Build the headless base, named ``"base"``.

    ``image_size``: a square side or ``(height, width)``, pixels; ``None`` builds a size-agnostic
    base (its weights load at any input size).
    ``weights`` is ``None`` (random), ``"imagenet"`` (downloaded by Keras) or a weights file.
    For ``architecture="keras_hub"`` it must be the weights file :func:`save_base` wrote, which
    also says what to build (``alpha`` is not used).
    """
    if architecture == KERAS_HUB:
        if weights is None or weights == "imagenet":
            raise ValueError(
                "a KerasHub base is rebuilt from the weights file that the download_weights "
                "stage writes (models/base.weights.h5): pass it as weights"
            )
        path = Path(weights)
        return _keras_hub_base(read_keras_hub_base(path), image_size, path)
    arch = backbone(architecture)
    kwargs = dict(arch.kwargs)
    if arch.uses_alpha:
        kwargs["alpha"] = alpha
    height, width = (None, None) if image_size is None else image_hw(image_size)
    base = getattr(keras.applications, arch.constructor)(
        input_shape=(height, width, 3),
        include_top=False,
        weights=str(weights) if isinstance(weights, Path) else weights,
        **kwargs,
    )
    base.name = BASE_NAME
    return base


def calibrate_batchnorm(base: keras.Model, images: object) -> None:
    """Set every BatchNorm layer's moving mean and variance to the statistics of ``images``.

    ``images``: ``(n, size, size, 3)`` inputs as the base expects them (after
    :func:`preprocessing`). A randomly initialised base's activations vanish (~1e-12) deep in
    the network; calibrated, they have realistic magnitudes, which benchmarks (no denormal
    arithmetic) and tests (a head that can learn) need.
    """
    norms = [norm for layer in base.layers for norm in _batchnorms(layer)]
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0  # the moving statistics become this batch's
    try:
        # traced: eagerly, the forward pass holds several GB at 224 px
        tf.function(lambda x: base(x, training=True))(images)
    finally:
        for layer, momentum in zip(norms, momenta, strict=True):
            layer.momentum = momentum


def preprocessing(architecture: str, weights: str | Path | None = None) -> keras.Layer:
    """The serialisable layer that maps ``[0, 255]`` pixels to what the base expects.

    For ``architecture="keras_hub"``, a ``Rescaling`` with the scale and offset of the preset's
    image converter, read from ``weights`` (the base's weights file, see :func:`save_base`).
    """
    if architecture == KERAS_HUB:
        if weights is None:
            raise ValueError(
                "a KerasHub base's preprocessing comes from its preset: pass the base's weights "
                "file (models/base.weights.h5)"
            )
        spec = read_keras_hub_base(weights)
        if spec.scale is None and spec.offset is None:
            return layers.Identity(name="preprocessing")
        return layers.Rescaling(
            scale=1.0 if spec.scale is None else spec.scale,
            offset=0.0 if spec.offset is None else spec.offset,
            name="preprocessing",
        )
    arch = backbone(architecture)
    if arch.rescale is None:
        return layers.Identity(name="preprocessing")
    scale, offset = arch.rescale
    return layers.Rescaling(scale=scale, offset=offset, name="preprocessing")


def build_classifier(
    base: keras.Model,
    architecture: str,
    image_size: ImageSize,
    n_classes: int,
    *,
    seed: int,
    dense_units: int = 128,
    dropout: float = 0.5,
    preprocess: keras.Layer | None = None,
) -> keras.Model:
    """Freeze ``base`` and put preprocessing and a new head around it.

    ``preprocess``: the preprocessing layer; by default :func:`preprocessing` of
    ``architecture`` (a KerasHub base needs it passed: its preprocessing comes from its preset).
    ``dense_units=0`` makes the head linear (dropout, then the softmax layer) instead of
    dropout, a hidden ``relu`` layer of ``dense_units``, dropout and the softmax layer.
    ``seed`` seeds the dropout masks.
    """
    base.trainable = False
    inputs = keras.Input(shape=(*image_hw(image_size), 3), name="image")
    x = (preprocess if preprocess is not None else preprocessing(architecture))(inputs)
    x = base(x, training=False)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(dropout, seed=seed + 10, name="dropout_1")(x)
    if dense_units:  # else a linear head: pooled features -> dropout -> softmax
        x = layers.Dense(dense_units, activation="relu", name="dense")(x)
        x = layers.Dropout(dropout, seed=seed + 11, name="dropout_2")(x)
    # float32 whatever the dtype policy: a float16 softmax loses small probabilities.
    outputs = layers.Dense(n_classes, activation="softmax", dtype="float32", name="predictions")(x)
    return keras.Model(inputs, outputs, name="classifier")


def classifier_from_params(
    params: Params, n_classes: int, weights: str | Path | None = None
) -> keras.Model:
    """:func:`build_classifier` around :func:`build_base` as ``params`` configure them."""
    m, size = params.model, params.data.image_size
    return build_classifier(
        build_base(m.architecture, m.alpha, size, weights=weights),
        m.architecture,
        size,
        n_classes,
        seed=params.seed,
        dense_units=m.dense_units,
        dropout=m.dropout,
        preprocess=preprocessing(m.architecture, weights) if m.architecture == KERAS_HUB else None,
    )


def input_hw(model: keras.Model) -> tuple[int, int]:
    """The ``(height, width)`` of a classifier's input images, pixels."""
    height, width = model.input_shape[1:3]
    return int(height), int(width)


def with_tta(model: keras.Model, tta: str) -> keras.Model:
    """``model`` itself for ``tta="none"``; for ``"flip"``, a model whose output is the mean of
    ``model``'s probabilities for each image and for its mirror image (``evaluate.tta``).

    Stock layers and ops only (no ``Lambda``), so the flip averaging is part of the exported
    graph: ``(batch, height, width, 3)`` pixels in, ``(batch, n_classes)`` probabilities out.
    """
    if tta == "none":
        return model
    if tta != "flip":
        raise ValueError(f"tta must be 'none' or 'flip', got {tta!r}")
    inputs = keras.Input(shape=model.input_shape[1:], name="image")
    mirrored = keras.ops.flip(inputs, axis=2)  # (batch, height, width, 3): width is axis 2
    outputs = layers.Average(name="flip_average", dtype="float32")([model(inputs), model(mirrored)])
    return keras.Model(inputs, outputs, name=f"{model.name}_flip")


def get_base(model: keras.Model) -> keras.Model:
    """The base network inside a classifier built by :func:`build_classifier`."""
    return model.get_layer(BASE_NAME)


def _batchnorms(layer: keras.Layer) -> list[keras.Layer]:
    """``layer`` if it is a BatchNormalization layer, else the BatchNormalization layers in it.

    keras.applications bases are flat; a KerasHub block (one layer of its backbone) holds several.
    """
    return [
        sub
        for sub in layer._flatten_layers(include_self=True, recursive=True)
        if isinstance(sub, layers.BatchNormalization)
    ]


def unfreeze_last(model: keras.Model, n_layers: int) -> int:
    """Make the last ``n_layers`` layers of the base trainable, BatchNorm layers excepted.

    Layers are the base's own (``base.layers``): a keras.applications base's are single Keras
    layers, a KerasHub backbone's are mostly blocks, each unfrozen whole. The rest of the base
    stays frozen, and every BatchNorm layer, also inside a block, stays frozen (and, since the
    base is called with ``training=False``, in inference mode). Returns the number of layers that
    hold trainable weights afterwards. Recompile the model after calling this.
    """
    base = get_base(model)
    if not 1 <= n_layers <= len(base.layers):
        raise ValueError(f"n_layers must be in 1..{len(base.layers)}, got {n_layers}")
    base.trainable = True
    cut = len(base.layers) - n_layers
    for i, layer in enumerate(base.layers):
        layer.trainable = i >= cut
        for norm in _batchnorms(layer):
            norm.trainable = False
    return sum(1 for layer in base.layers if layer.trainable and layer.trainable_weights)


def compile_model(model: keras.Model, learning_rate: float) -> None:
    """Compile with Adam, sparse categorical cross-entropy and accuracy, every state variable
    created now.

    Keras (without a distribution strategy) otherwise creates the optimizer's slots inside the
    first trace of the train step, and TensorFlow then traces the step a second time: building
    them here halves a phase's tracing (MobileNetV2 fit start 23 s -> 11.5 s on 2 cores, the
    same numbers). The accuracy is a metric object, not ``"accuracy"``, for the same reason.
    Call it in the strategy's scope when there is one.
    """
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    model.optimizer.build(model.trainable_variables)


def load_model(path: str | Path) -> keras.Model:
    """Load a saved classifier in Keras safe mode.

    A KerasHub base needs no registration: Keras imports the ``keras_hub`` modules the saved
    config names (it allows that package, like ``keras`` itself, in safe mode).
    """
    return keras.saving.load_model(path, safe_mode=True)


# What a reproducible archive records instead of the save time (the zip format's earliest date).
FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
FIXED_DATE_SAVED = "1980-01-01@00:00:00"


def _renumber_shared_objects(config: object, ids: dict | None = None) -> object:
    """``config`` with every ``shared_object_id`` replaced by 1, 2, … in order of appearance."""
    ids = {} if ids is None else ids
    if isinstance(config, list):
        return [_renumber_shared_objects(c, ids) for c in config]
    if not isinstance(config, dict):
        return config
    out = {}
    for key, value in config.items():
        if key == "shared_object_id":
            out[key] = ids.setdefault(value, len(ids) + 1)
        else:
            out[key] = _renumber_shared_objects(value, ids)
    return out


def save_model(model: keras.Model, path: str | Path) -> None:
    """``model.save(path)`` (a ``.keras`` file), byte for byte the same for the same model.

    Keras stamps the save time into the archive (each zip entry's date and ``metadata.json``'s
    ``date_saved``) and numbers objects that layers share (a seed generator) by their memory
    address (``shared_object_id`` in ``config.json``), so every run would change the file's hash
    in ``dvc.lock`` although the model is the same. The times become fixed values and the ids
    1, 2, … in order of appearance (the same sharing); everything else stays as Keras wrote it.
    """
    import json
    import zipfile

    path = Path(path)
    model.save(path)
    with zipfile.ZipFile(path) as src:
        entries = [(info, src.read(info)) for info in src.infolist()]
    tmp = path.with_name(f".{path.name}.tmp-zip")
    with zipfile.ZipFile(tmp, "w") as dst:
        for info, data in entries:
            if info.filename == "metadata.json":
                meta = json.loads(data)
                if "date_saved" in meta:
                    meta["date_saved"] = FIXED_DATE_SAVED
                data = json.dumps(meta).encode()
            elif info.filename == "config.json":
                data = json.dumps(_renumber_shared_objects(json.loads(data))).encode()
            fixed = zipfile.ZipInfo(info.filename, date_time=FIXED_ZIP_TIME)
            fixed.compress_type = info.compress_type
            fixed.external_attr = info.external_attr
            dst.writestr(fixed, data)
    tmp.replace(path)


def _float32_policies(config: object) -> object:
    """``config`` (a serialised model) with every dtype policy replaced by float32."""
    if isinstance(config, list):
        return [_float32_policies(c) for c in config]
    if not isinstance(config, dict):
        return config
    if config.get("class_name") in ("DTypePolicy", "FloatDTypePolicy"):
        return {**config, "config": {**config.get("config", {}), "name": "float32"}}
    return {k: _float32_policies(v) for k, v in config.items()}


def float32_copy(model: keras.Model) -> keras.Model:
    """``model`` rebuilt with every layer computing in float32, holding the same weights.

    For a model trained under a mixed-precision policy (``train.mixed_precision``), whose
    float16/bfloat16 ops TFLite's built-in kernels cannot run. Returns ``model`` itself when all
    its layers already compute in float32. Variables are float32 under every policy, so the
    weights carry over unchanged.
    """
    config = keras.saving.serialize_keras_object(model)
    converted = _float32_policies(config)
    if converted == config:
        return model
    copy = keras.saving.deserialize_keras_object(converted, safe_mode=True)
    copy.set_weights(model.get_weights())
    return copy


HEAD_LAYERS = ("dropout_1", "dense", "dropout_2", "predictions")


def split_at_features(model: keras.Model) -> tuple[keras.Model, keras.Model]:
    """Cut a classifier after its pooling layer into ``(features, head)`` sharing its layers.

    ``features`` maps ``(batch, size, size, 3)`` pixels to ``(batch, d)`` pooled base features
    in inference mode; ``head`` maps ``(batch, d)`` features to ``(batch, n_classes)``
    probabilities. ``head(features(x))`` is ``model(x)``, and training ``head`` trains
    ``model``'s head.
    """
    inputs = keras.Input(shape=model.input_shape[1:], name="image")
    x = model.get_layer("preprocessing")(inputs)
    x = get_base(model)(x, training=False)
    pooled = model.get_layer("pool")(x)
    features = keras.Model(inputs, pooled, name="base_features")
    head_in = keras.Input(shape=pooled.shape[1:], name="features")
    h = head_in
    present = {layer.name for layer in model.layers}
    for name in HEAD_LAYERS:
        if name in present:  # a linear head has no dense / dropout_2
            h = model.get_layer(name)(h)
    return features, keras.Model(head_in, h, name="head")


def _inbound(base: keras.Model) -> list[list[int]]:
    """For each operation of ``base`` (``base.operations``, in graph order), the positions of the
    operations whose outputs it takes, in the base's own graph (not in models built from it)."""
    from keras.src.ops.function import make_node_key

    ops = base.operations
    position = {id(op): i for i, op in enumerate(ops)}
    inbound: list[list[int]] = []
    for op in ops:
        sources = []
        for index, node in enumerate(op._inbound_nodes):
            if make_node_key(op, index) in base._nodes:  # else a node of another model
                sources += [position[id(t._keras_history.operation)] for t in node.input_tensors]
        inbound.append(sources)
    return inbound


def frozen_cut(base: keras.Model) -> keras.Operation | None:
    """The last operation of ``base`` before its first trainable layer through whose output
    alone every later operation depends on the input; ``None`` when there is none but the input.

    Everything up to it is frozen, so its output (the "frozen activations") is a fixed function
    of the image: computed once, it can stand in for the bottom of the base. A layer inside a
    residual block does not qualify (the skip connection passes around it); the output of the
    block before it does.
    """
    ops = base.operations
    trainable = [i for i, op in enumerate(ops) if getattr(op, "trainable_weights", None)]
    if not trainable:
        return None
    inbound = _inbound(base)
    # earliest[c]: the earliest operation whose output some operation after c takes
    earliest = [len(ops)] * len(ops)
    for i in range(len(ops) - 2, -1, -1):
        earliest[i] = min([earliest[i + 1], *inbound[i + 1]])
    for c in range(trainable[0] - 1, 0, -1):
        if earliest[c] >= c and len(keras.tree.flatten(ops[c].output)) == 1:
            return ops[c]
    return None


def split_at_frozen(model: keras.Model) -> tuple[keras.Model, keras.Model, str] | None:
    """Cut a classifier at its base's :func:`frozen_cut` into ``(bottom, top, layer name)``.

    ``bottom`` maps ``(batch, size, size, 3)`` pixels to the ``(batch, h, w, c)`` output of the
    cut layer (inference mode); ``top`` maps those activations to ``(batch, n_classes)``
    probabilities through the rest of the base (called with ``training=False``, so BatchNorm
    stays in inference mode) and the head. Both share ``model``'s layers: ``top(bottom(x))`` is
    ``model(x)``, and training ``top`` trains ``model``'s unfrozen layers and head. ``None`` when
    no layer qualifies (nothing is frozen, or nothing but the input).
    """
    base = get_base(model)
    cut = frozen_cut(base)
    if cut is None:
        return None
    name, activations = cut.name, cut.output
    inputs = keras.Input(shape=model.input_shape[1:], name="image")
    lower = keras.Model(base.input, activations, name="frozen_bottom")
    bottom = keras.Model(
        inputs, lower(model.get_layer("preprocessing")(inputs), training=False), name="bottom"
    )
    upper = keras.Model(activations, base.output, name="trainable_top")
    top_in = keras.Input(shape=activations.shape[1:], name="activations")
    h = model.get_layer("pool")(upper(top_in, training=False))
    present = {layer.name for layer in model.layers}
    for layer_name in HEAD_LAYERS:
        if layer_name in present:
            h = model.get_layer(layer_name)(h)
    return bottom, keras.Model(top_in, h, name="top"), name
