"""Where the pretrained base comes from (``model.weights``): one function per source.

Each source returns a headless, size-agnostic base (see :func:`pipeline.models.build_base`) with
its weights loaded, and a JSON-serialisable provenance record (never credentials):

* ``sample`` – pretrain the base on a generated *source* task (which of eight other cartoon
  animals is in a cluttered scene, :func:`pipeline.synthetic.animal_batch`), so the offline
  default is genuine transfer learning: none of the source classes is a target class;
* ``file`` – a Keras weights file (``model.weights_path``), e.g. the headless ImageNet weights
  file keras.applications names for the architecture (:func:`pipeline.architectures.weights_file`);
* ``imagenet`` – keras.applications' own download (needs network access);
* ``kaggle`` – a pinned Kaggle handle through kagglehub (:mod:`pipeline.sources.kaggle`): a
  keras.applications weights file, or, with ``model.architecture: keras_hub``, a KerasHub
  preset whose backbone is the base (its provenance then also holds the preset's
  ``preprocessing``: the image converter's ``scale`` and ``offset``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from pipeline.architectures import KERAS_HUB, KERAS_HUB_EXAMPLE
from pipeline.models import (
    build_base,
    compile_model,
    keras_hub_backbone_class,
    keras_hub_base_from_preset,
    preprocessing,
)
from pipeline.params import Params
from pipeline.synthetic import ANIMALS, animal_batch
from pipeline.utils import PipelineError, log

Provenance = dict[str, Any]


def _sample(params: Params) -> tuple[keras.Model, Provenance]:
    """Pretrain the base from scratch on a generated source task: which animal is in the scene.

    A classifier (base, GlobalAveragePooling2D, softmax over :data:`ANIMALS`) is trained
    on ``pretrain.images`` generated images; only the base's weights are kept.
    """
    cfg, m = params.pretrain, params.model
    rng = np.random.default_rng([cfg.seed, 1000])
    log.info("generating %d source-task images (%d px)", cfg.images, cfg.image_size)
    images, labels = animal_batch(rng, cfg.images, cfg.image_size)
    n_val = max(len(ANIMALS), cfg.images // 10)

    def dataset(sl: slice, shuffle: bool) -> tf.data.Dataset:
        ds = tf.data.Dataset.from_tensor_slices((images[sl], labels[sl]))
        if shuffle:
            ds = ds.shuffle(len(labels[sl]), seed=cfg.seed)
        ds = ds.batch(cfg.batch_size).map(lambda x, y: (tf.cast(x, tf.float32), y))
        return ds.prefetch(2)

    base = build_base(m.architecture, m.alpha, cfg.image_size, weights=None)
    for layer in base.layers:
        # keras.applications uses momentum 0.999: far too slow for the moving statistics to
        # settle in a short pretraining run, and validation would then see stale statistics.
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    inputs = keras.Input((cfg.image_size, cfg.image_size, 3))
    x = preprocessing(m.architecture)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(base(x))
    outputs = keras.layers.Dense(len(ANIMALS), activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    compile_model(model, cfg.learning_rate)
    hist = model.fit(
        dataset(slice(n_val, None), shuffle=True),
        validation_data=dataset(slice(0, n_val), False),
        epochs=cfg.epochs,
        verbose=2,
    ).history
    acc = round(float(hist["val_accuracy"][-1]), 4)
    log.info("source task: val accuracy %.4f (chance %.4f)", acc, 1 / len(ANIMALS))
    size_free = build_base(m.architecture, m.alpha, None, weights=None)
    size_free.set_weights(base.get_weights())
    return size_free, {
        "source": "sample",
        "task": list(ANIMALS),
        "images": cfg.images,
        "image_size": cfg.image_size,
        "epochs": cfg.epochs,
        "source_task_val_accuracy": acc,
    }


def base_from_file(params: Params, path: str | Path) -> keras.Model:
    """Load a Keras weights file into the configured architecture, with a clear error."""
    m = params.model
    path = Path(path).expanduser()
    if not path.is_file():
        raise PipelineError(
            f"weights file {path} not found: set model.weights_path to a Keras weights file "
            f"of {m.architecture} (alpha {m.alpha}) without its top"
        )
    try:
        return build_base(m.architecture, m.alpha, None, weights=path)
    except Exception as exc:  # Keras raises ValueError/OSError/KeyError for mismatched files
        raise PipelineError(
            f"{path} does not hold weights of a headless {m.architecture} with alpha {m.alpha} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:300]}); check model.architecture, "
            "model.alpha and that the file is the '_no_top' variant"
        ) from None


def _file(params: Params) -> tuple[keras.Model, Provenance]:
    base = base_from_file(params, params.model.weights_path)
    return base, {"source": "file", "path": Path(params.model.weights_path).name}


def _imagenet(params: Params) -> tuple[keras.Model, Provenance]:
    m = params.model
    try:
        # ImageNet weights exist for square sizes only; they are size-independent once loaded.
        base = build_base(m.architecture, m.alpha, 224, weights="imagenet")
    except Exception as exc:
        raise PipelineError(
            f"could not download ImageNet weights for {m.architecture} (alpha {m.alpha}): {exc}. "
            "Without network access use model.weights=file with a downloaded weights file, "
            "or model.weights=sample"
        ) from None
    size_free = build_base(m.architecture, m.alpha, None, weights=None)
    size_free.set_weights(base.get_weights())
    return size_free, {"source": "imagenet", "architecture": m.architecture, "alpha": m.alpha}


def _kaggle(params: Params) -> tuple[keras.Model, Provenance]:
    if params.model.architecture == KERAS_HUB:
        return _keras_hub(params)
    from pipeline.sources.kaggle import download_weights_file

    path, info = download_weights_file(params)
    return base_from_file(params, path), info


def _keras_hub(params: Params) -> tuple[keras.Model, Provenance]:
    from pipeline.sources.kaggle import download_keras_hub_preset

    folder, info = download_keras_hub_preset(params, keras_hub_backbone_class)
    try:
        base, spec = keras_hub_base_from_preset(folder)
    except Exception as exc:  # a preset whose files keras-hub cannot build an image backbone from
        raise PipelineError(
            f"could not build the backbone of KerasHub preset {info['handle']}: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}. Set model.kaggle_handle to "
            f"a KerasHub image preset, e.g. {KERAS_HUB_EXAMPLE}"
        ) from None
    log.info(
        "KerasHub preset %s: %s, %d layers, %d parameters",
        info["preset"],
        type(base).__name__,
        len(base.layers),
        base.count_params(),
    )
    info["layers"] = len(base.layers)
    info["preprocessing"] = {"scale": spec.scale, "offset": spec.offset}
    return base, info


WEIGHT_SOURCES: dict[str, Callable[[Params], tuple[keras.Model, Provenance]]] = {
    "sample": _sample,
    "file": _file,
    "imagenet": _imagenet,
    "kaggle": _kaggle,
}


def pretrained_base(params: Params) -> tuple[keras.Model, Provenance]:
    """The size-agnostic base with the weights named by ``model.weights``, and its provenance."""
    return WEIGHT_SOURCES[params.model.weights](params)
