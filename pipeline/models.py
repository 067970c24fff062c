"""Model building, in one place: the pretrained base, preprocessing, augmentation and the head.

The classifier takes ``(batch, size, size, 3)`` float32 pixels in ``[0, 255]`` and returns
``(batch, n_classes)`` softmax probabilities::

    inputs -> augmentation (training only) -> preprocessing (model-specific, serialisable)
           -> base(x, training=False) -> GlobalAveragePooling2D -> Dropout
           [-> Dense relu -> Dropout, unless model.dense_units is 0] -> Dense softmax

The base is always called with ``training=False`` so its BatchNorm layers stay in inference mode,
also after some of its layers are unfrozen for fine-tuning (Keras guide "Transfer learning &
fine-tuning"). Every layer is a built-in Keras layer, so saved models load in safe mode. Layers
compute in the global Keras dtype policy (``train.mixed_precision``), except the softmax output
layer, which always computes (and returns) float32.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import tensorflow as tf
from keras import layers

from pipeline.params import AugmentationParams, Params

BASE_NAME = "base"


@dataclass(frozen=True)
class Architecture:
    """A keras.applications base and the preprocessing its weights expect."""

    factory: Callable[..., keras.Model]
    rescale: tuple[float, float] | None  # (scale, offset) applied to [0, 255] pixels, or None
    kwargs: dict
    uses_alpha: bool = True


ARCHITECTURES: dict[str, Architecture] = {
    # MobileNetV2/V3 expect pixels in [-1, 1].
    "mobilenet_v2": Architecture(keras.applications.MobileNetV2, (1 / 127.5, -1.0), {}),
    "mobilenet_v3_small": Architecture(
        keras.applications.MobileNetV3Small, (1 / 127.5, -1.0), {"include_preprocessing": False}
    ),
    "mobilenet_v3_large": Architecture(
        keras.applications.MobileNetV3Large, (1 / 127.5, -1.0), {"include_preprocessing": False}
    ),
    # EfficientNet normalises [0, 255] pixels inside the network itself.
    "efficientnet_b0": Architecture(keras.applications.EfficientNetB0, None, {}, uses_alpha=False),
}


def build_base(
    architecture: str,
    alpha: float,
    image_size: int | None,
    weights: str | Path | None = None,
) -> keras.Model:
    """Build the headless keras.applications base, named ``"base"``.

    ``image_size=None`` builds a size-agnostic base (its weights load at any input size).
    ``weights`` is ``None`` (random), ``"imagenet"`` (downloaded by Keras) or a weights file.
    """
    arch = ARCHITECTURES[architecture]
    kwargs = dict(arch.kwargs)
    if arch.uses_alpha:
        kwargs["alpha"] = alpha
    side = image_size
    base = arch.factory(
        input_shape=(side, side, 3),
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
    norms = [layer for layer in base.layers if isinstance(layer, layers.BatchNormalization)]
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0  # the moving statistics become this batch's
    try:
        # traced: eagerly, the forward pass holds several GB at 224 px
        tf.function(lambda x: base(x, training=True))(images)
    finally:
        for layer, momentum in zip(norms, momenta, strict=True):
            layer.momentum = momentum


def preprocessing(architecture: str) -> keras.Layer:
    """The serialisable layer that maps ``[0, 255]`` pixels to what the base expects."""
    arch = ARCHITECTURES[architecture]
    if arch.rescale is None:
        return layers.Identity(name="preprocessing")
    scale, offset = arch.rescale
    return layers.Rescaling(scale=scale, offset=offset, name="preprocessing")


def augmentation(cfg: AugmentationParams, seed: int) -> keras.Layer:
    """Random augmentation on ``[0, 255]`` pixels; active only when ``training=True``.

    A ``Sequential`` of the enabled layers, or an ``Identity`` layer when all are disabled.
    """
    aug: list[keras.Layer] = []
    if cfg.flip:
        aug.append(layers.RandomFlip("horizontal", seed=seed))
    if cfg.rotation:
        aug.append(layers.RandomRotation(cfg.rotation, fill_mode="reflect", seed=seed + 1))
    if cfg.zoom:
        aug.append(layers.RandomZoom(cfg.zoom, fill_mode="reflect", seed=seed + 2))
    if cfg.translation:
        aug.append(
            layers.RandomTranslation(
                cfg.translation, cfg.translation, fill_mode="reflect", seed=seed + 3
            )
        )
    if cfg.contrast:
        aug.append(layers.RandomContrast(cfg.contrast, seed=seed + 4))
    if cfg.brightness:
        aug.append(layers.RandomBrightness(cfg.brightness, value_range=(0, 255), seed=seed + 5))
    if not aug:
        return layers.Identity(name="augmentation")
    return keras.Sequential(aug, name="augmentation")


def build_classifier(
    base: keras.Model,
    architecture: str,
    image_size: int,
    n_classes: int,
    *,
    aug: AugmentationParams,
    seed: int,
    dense_units: int = 128,
    dropout: float = 0.5,
) -> keras.Model:
    """Freeze ``base`` and put augmentation, preprocessing and a new head around it.

    ``dense_units=0`` makes the head linear (dropout, then the softmax layer) instead of
    dropout, a hidden ``relu`` layer of ``dense_units``, dropout and the softmax layer.
    """
    base.trainable = False
    inputs = keras.Input(shape=(image_size, image_size, 3), name="image")
    x = augmentation(aug, seed)(inputs)
    x = preprocessing(architecture)(x)
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
        aug=params.augmentation,
        seed=params.seed,
        dense_units=m.dense_units,
        dropout=m.dropout,
    )


def get_base(model: keras.Model) -> keras.Model:
    """The base network inside a classifier built by :func:`build_classifier`."""
    return model.get_layer(BASE_NAME)


def unfreeze_last(model: keras.Model, n_layers: int) -> int:
    """Make the last ``n_layers`` layers of the base trainable, BatchNorm layers excepted.

    The rest of the base stays frozen, and BatchNorm layers stay frozen (and, since the base is
    called with ``training=False``, in inference mode). Returns the number of layers that hold
    trainable weights afterwards. Recompile the model after calling this.
    """
    base = get_base(model)
    if not 1 <= n_layers <= len(base.layers):
        raise ValueError(f"n_layers must be in 1..{len(base.layers)}, got {n_layers}")
    base.trainable = True
    cut = len(base.layers) - n_layers
    for i, layer in enumerate(base.layers):
        layer.trainable = i >= cut and not isinstance(layer, layers.BatchNormalization)
    return sum(1 for layer in base.layers if layer.trainable and layer.trainable_weights)


def compile_model(model: keras.Model, learning_rate: float) -> None:
    """Compile with Adam, sparse categorical cross-entropy and accuracy."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )


def load_model(path: str | Path) -> keras.Model:
    """Load a saved classifier in Keras safe mode."""
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
    in inference mode (no augmentation); ``head`` maps ``(batch, d)`` features to
    ``(batch, n_classes)`` probabilities. ``head(features(x))`` is ``model(x)`` without
    augmentation, and training ``head`` trains ``model``'s head.
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


def inference_model(model: keras.Model) -> keras.Model:
    """The classifier without its augmentation layer, sharing ``model``'s layers and weights.

    Augmentation is inactive at inference, but its random ops stay in a traced graph (and TFLite
    has no built-in kernels for them). The returned model maps the same ``(batch, size, size, 3)``
    ``[0, 255]`` pixels to the same ``(batch, n_classes)`` probabilities.
    """
    inputs = keras.Input(shape=model.input_shape[1:], name="image")
    x = inputs
    for layer in model.layers:
        if isinstance(layer, layers.InputLayer) or layer.name == "augmentation":
            continue
        x = layer(x, training=False) if layer.name == BASE_NAME else layer(x)
    return keras.Model(inputs, x, name=f"{model.name}_inference")
