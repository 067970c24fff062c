"""The reference: the plain recipe of the Keras guide "Transfer learning & fine-tuning".

A short, self-contained Keras script, deliberately outside the pipeline (none of its model,
data or training code), that ``python -m pipeline.tools.bench quality`` runs on the same split and
weights as the pipeline, so that the pipeline's recipe is measured against what a plain script
reaches: random horizontal flip, MobileNetV2 with ``base(x, training=False)``, a linear head with
light dropout trained at 1e-3, then the last third of the base fine-tuned at 1e-4, keeping the
best val epoch of each phase.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

from pipeline.params import ImageSize, image_hw
from pipeline.paths import RAW, SPLIT

HEAD_EPOCHS, FINETUNE_EPOCHS, BATCH = 5, 8, 32


def _dataset(
    project: Path, split: str, classes: list[str], image_size: ImageSize, seed: int, shuffle: bool
) -> Any:
    """``project``'s split ``split``, decoded, resized, cached and batched."""
    import tensorflow as tf

    with open(project / SPLIT / f"{split}.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    paths = [str(project / RAW / r["path"]) for r in rows]
    labels = [classes.index(r["label"]) for r in rows]

    def load(path: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        img = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        return tf.image.resize(img, image_hw(image_size)), label

    ds = tf.data.Dataset.from_tensor_slices((paths, labels)).map(load).cache()
    if shuffle:
        ds = ds.shuffle(len(paths), seed=seed)
    return ds.batch(BATCH).prefetch(tf.data.AUTOTUNE)


def _model(image_size: ImageSize, alpha: float, weights: str, seed: int, n_classes: int) -> tuple:
    """The guide's classifier around a frozen MobileNetV2, and the base."""
    import keras

    shape = (*image_hw(image_size), 3)
    base = keras.applications.MobileNetV2(
        input_shape=shape, include_top=False, weights=weights, alpha=alpha
    )
    base.trainable = False
    inputs = keras.Input(shape)
    x = keras.layers.RandomFlip("horizontal", seed=seed)(inputs)
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(x)
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2, seed=seed)(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs), base


def _fit(
    model: Any, train: Any, val: Any, learning_rate: float, epochs: int, initial_epoch: int
) -> None:
    """Compile with Adam at ``learning_rate`` and train, keeping the best val epoch."""
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    best = keras.callbacks.EarlyStopping(
        monitor="val_accuracy", mode="max", patience=epochs, restore_best_weights=True
    )
    model.fit(train, validation_data=val, epochs=initial_epoch + epochs,
              initial_epoch=initial_epoch, callbacks=[best], verbose=2)  # fmt: skip


def reference_run(
    project: Path, image_size: ImageSize, alpha: float, weights: str, seed: int
) -> dict[str, Any]:
    """Train and test the plain recipe on ``project``'s split (``data/split``, ``data/raw``).

    ``weights``: a keras.applications MobileNetV2 weights file (no top) or ``"imagenet"``.
    Returns val and test accuracy (fractions) and the training wall time (s, both ``fit``
    calls, the images already decoded and cached in memory).
    """
    import keras

    keras.utils.set_random_seed(seed)
    classes = sorted(p.name for p in (project / RAW).iterdir() if p.is_dir())
    train, val, test = (
        _dataset(project, split, classes, image_size, seed, shuffle=split == "train")
        for split in ("train", "val", "test")
    )
    for ds in (train, val, test):  # decode once, outside the timed training
        for _ in ds:
            pass
    model, base = _model(image_size, alpha, weights, seed, len(classes))
    start = time.perf_counter()
    _fit(model, train, val, 1e-3, HEAD_EPOCHS, 0)
    base.trainable = True
    for layer in base.layers[: len(base.layers) - len(base.layers) // 3]:
        layer.trainable = False
    _fit(model, train, val, 1e-4, FINETUNE_EPOCHS, HEAD_EPOCHS)
    seconds = time.perf_counter() - start
    return {
        "val_accuracy": round(float(model.evaluate(val, verbose=0)[1]), 4),
        "test_accuracy": round(float(model.evaluate(test, verbose=0)[1]), 4),
        "train_s": round(seconds, 1),
        "recipe": f"flip, linear head + dropout 0.2, {HEAD_EPOCHS} epochs at 1e-3, last third "
        f"of the base {FINETUNE_EPOCHS} epochs at 1e-4, best val epoch of each phase, batch "
        f"{BATCH}",
    }
