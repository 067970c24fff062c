"""What both training phases share: data, callbacks, fitting and what is saved afterwards.

A phase trains a compiled classifier, keeps the weights of its best epoch (lowest ``val_loss``,
EarlyStopping with ``restore_best_weights``), checkpoints the best weights as it goes, logs to
TensorBoard, and records one history row per epoch. Epochs are numbered on one axis across
phases: fine-tuning continues where transfer learning stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from pipeline.data import PREPARED_DIR, Split, load_prepared, make_dataset
from pipeline.live import LIVE_DIR, LiveMetrics
from pipeline.utils import log, write_csv

HISTORY_COLUMNS = (
    "epoch",
    "phase",
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "learning_rate",
)


@dataclass(frozen=True)
class PhaseResult:
    """Summary of one phase: epochs are 1-based and global (counted across phases)."""

    phase: str
    first_epoch: int
    last_epoch: int
    best_epoch: int
    best_val_loss: float
    stopped_early: bool
    optimizer_steps: int = 0  # optimizer steps of this and all earlier phases (TensorBoard axis)

    def to_dict(self) -> dict:
        return asdict(self)


def load_train_val(
    image_size: int,
    batch_size: int,
    seed: int,
    split_dir: str | Path = "data/split",
    prepared_dir: str | Path = PREPARED_DIR,
) -> tuple[Split, tf.data.Dataset, tf.data.Dataset]:
    """The train split and the shuffled-train / ordered-val datasets of prepared images."""
    train = load_prepared("train", prepared_dir, split_dir, image_size)
    val = load_prepared("val", prepared_dir, split_dir, image_size)
    train_ds = make_dataset(train, image_size, batch_size, shuffle=True, seed=seed)
    val_ds = make_dataset(val, image_size, batch_size)
    return train, train_ds, val_ds


def inference_fn(model: keras.Model) -> Callable[[tf.Tensor], tf.Tensor]:
    """``model(x, training=False)`` as a traced function (no ``Model.predict`` overhead)."""
    return tf.function(lambda x: model(x, training=False), reduce_retracing=True)


def extract_features(
    forward: Callable[[tf.Tensor], tf.Tensor], split: Split, image_size: int, batch_size: int
) -> np.ndarray:
    """``forward`` applied once to every image of ``split``, in order: ``(n, *feature_shape)``.

    ``forward`` is e.g. :func:`inference_fn` of a features model; a plain loop over the
    streamed batches (``Model.predict`` costs ~20% more on CPU).
    """
    ds = make_dataset(split, image_size, batch_size)
    return np.concatenate([forward(x).numpy() for x, _ in ds])


def feature_datasets(
    features: keras.Model,
    image_size: int,
    batch_size: int,
    seed: int,
    split_dir: str | Path = "data/split",
    prepared_dir: str | Path = PREPARED_DIR,
) -> tuple[Split, tf.data.Dataset, tf.data.Dataset]:
    """Like :func:`load_train_val`, with ``features`` computed once instead of images.

    The train features are shuffled the way :func:`load_train_val` shuffles the images (same
    seed, same order), so a head trained on them sees the batches a whole model would.
    """
    train = load_prepared("train", prepared_dir, split_dir, image_size)
    val = load_prepared("val", prepared_dir, split_dir, image_size)
    start = time.perf_counter()
    forward = inference_fn(features)
    f_train = extract_features(forward, train, image_size, batch_size)
    f_val = extract_features(forward, val, image_size, batch_size)
    seconds = time.perf_counter() - start
    n = len(train) + len(val)
    log.info(
        "base features of %d images computed once in %.1f s (%.0f images/s), %s each",
        n,
        seconds,
        n / max(seconds, 1e-9),
        "x".join(map(str, f_train.shape[1:])),
    )

    def dataset(x: np.ndarray, split: Split, shuffle: bool) -> tf.data.Dataset:
        ds = tf.data.Dataset.from_tensor_slices((x, np.asarray(split.labels, np.int32)))
        if shuffle:
            ds = ds.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    return train, dataset(f_train, train, True), dataset(f_val, val, False)


def _steps(model: keras.Model) -> int:
    """Optimizer steps taken by ``model``'s current optimizer."""
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


class PhaseTensorBoard(keras.callbacks.TensorBoard):
    """TensorBoard callback whose optimizer-step axis continues after ``step_offset`` steps.

    Epoch charts (``epoch_*``) are already on the global epoch axis through ``initial_epoch``;
    the ``evaluation_*_vs_iterations`` charts count optimizer steps, which restart at 0 when a
    phase compiles a new optimizer, so they are shifted by the earlier phases' steps.
    """

    def __init__(self, log_dir: str, *, step_offset: int = 0, **kwargs: object) -> None:
        super().__init__(log_dir=log_dir, **kwargs)
        self.step_offset = step_offset

    def on_test_end(self, logs: dict | None = None) -> None:
        with self._val_writer.as_default():
            step = self.step_offset + _steps(self.model)
            for name, value in (logs or {}).items():
                self.summary.scalar(f"evaluation_{name}_vs_iterations", value, step=step)
        self._pop_writer()


class _Checkpoint(keras.callbacks.ModelCheckpoint):
    """ModelCheckpoint that saves ``target`` (a model sharing the fitted model's layers)."""

    def __init__(self, target: keras.Model, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.target = target

    def set_model(self, model: keras.Model) -> None:
        super().set_model(self.target)


def fit_phase(
    model: keras.Model,
    train_ds: object,
    val_ds: object,
    *,
    phase: str,
    epochs: int,
    initial_epoch: int,
    patience: int,
    work_dir: Path,
    log_dir: Path,
    step_offset: int = 0,
    checkpoint: keras.Model | None = None,
) -> tuple[list[list], PhaseResult]:
    """Train ``model`` for up to ``epochs`` epochs after ``initial_epoch``; return history rows.

    ``work_dir`` receives ``best.weights.h5``, the weights of ``checkpoint`` (default: ``model``;
    give the classifier when ``model`` is a head sharing its layers) at the best epoch so far;
    ``log_dir`` the TensorBoard logs, whose optimizer-step axis starts after ``step_offset``
    earlier steps. On return the model holds the weights of the best epoch.
    """
    early = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=patience, restore_best_weights=True, verbose=1
    )
    callbacks = [
        early,
        LiveMetrics(LIVE_DIR / f"{phase}.json", max_epoch=initial_epoch + epochs),
        _Checkpoint(
            checkpoint or model,
            work_dir / "best.weights.h5",
            monitor="val_loss",
            save_best_only=True,
            save_weights_only=True,
        ),
        tensorboard := PhaseTensorBoard(
            str(log_dir), step_offset=step_offset, histogram_freq=0, write_graph=False
        ),
    ]
    total = initial_epoch + epochs
    log.info("%s: epochs %d..%d", phase, initial_epoch + 1, total)
    try:
        hist = model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=total,
            initial_epoch=initial_epoch,
            callbacks=callbacks,
            verbose=2,
        )
    except BaseException:
        # Interrupted (SIGINT/SIGTERM) or failed: close the event writers now, or they flush
        # at exit and recreate the temporary log folder the stage has just removed.
        tensorboard._close_writers()
        raise
    lr = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    h = hist.history
    n = len(h["loss"])
    rows = [
        [
            initial_epoch + i + 1,
            phase,
            round(float(h["loss"][i]), 6),
            round(float(h["accuracy"][i]), 6),
            round(float(h["val_loss"][i]), 6),
            round(float(h["val_accuracy"][i]), 6),
            lr,
        ]
        for i in range(n)
    ]
    best_i = min(range(n), key=lambda i: h["val_loss"][i])
    result = PhaseResult(
        phase=phase,
        first_epoch=initial_epoch + 1,
        last_epoch=initial_epoch + n,
        best_epoch=initial_epoch + best_i + 1,
        best_val_loss=round(float(h["val_loss"][best_i]), 6),
        stopped_early=n < epochs,
        optimizer_steps=step_offset + _steps(model),
    )
    log.info(
        "%s: ran epochs %d..%d, best epoch %d (val_loss %.4f)%s",
        phase,
        result.first_epoch,
        result.last_epoch,
        result.best_epoch,
        result.best_val_loss,
        ", stopped early" if result.stopped_early else "",
    )
    return rows, result


def write_history(path: str | Path, rows: list[list]) -> None:
    """Per-epoch history as CSV (columns :data:`HISTORY_COLUMNS`), for ``dvc plots``."""
    write_csv(path, HISTORY_COLUMNS, rows)
