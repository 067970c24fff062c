"""What both training phases share: data, callbacks, fitting and what is saved afterwards.

A phase trains a compiled classifier, keeps the weights of its best epoch (lowest ``val_loss``,
EarlyStopping with ``restore_best_weights``), checkpoints the best weights as it goes, logs to
TensorBoard and to DVCLive, and records one history row per epoch. Epochs are numbered on one
axis across phases: fine-tuning continues where transfer learning stopped.

DVCLive (:func:`open_live`): one ``Live`` run spans both phases, although they are separate
DVC stages. The transfer stage starts it in ``reports/live/transfer``; the finetune stage copies
that folder to ``reports/live/training`` and resumes it there, so its steps (Keras's 0-based
epoch index) continue those of transfer learning. Each epoch rewrites the folder's
``metrics.json`` (the latest epoch: ``dvc metrics show reports/live/training/metrics.json``
follows a run) and appends to ``plots/metrics/{train,eval}/*.tsv`` (``dvc plots``).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import keras
import numpy as np
import tensorflow as tf

from pipeline import paths
from pipeline.data import PREPARED_DIR, Split, load_prepared, make_dataset
from pipeline.params import AugmentationParams
from pipeline.utils import PipelineError, log, write_csv

if TYPE_CHECKING:
    from dvclive import Live

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
    split_dir: str | Path = paths.SPLIT,
    prepared_dir: str | Path = PREPARED_DIR,
    augment: AugmentationParams | None = None,
) -> tuple[Split, tf.data.Dataset, tf.data.Dataset]:
    """The train split and the shuffled-train / ordered-val datasets of prepared images.

    ``augment``: the augmentation of the train batches (:func:`pipeline.data.augment_batch`);
    val batches are never augmented.
    """
    train, val = (load_prepared(n, prepared_dir, split_dir, image_size) for n in ("train", "val"))
    train_ds = make_dataset(train, image_size, batch_size, shuffle=True, seed=seed, augment=augment)
    val_ds = make_dataset(val, image_size, batch_size)
    return train, train_ds, val_ds


def inference_fn(model: keras.Model) -> Callable[[tf.Tensor], tf.Tensor]:
    """``model(x, training=False)`` as a traced function (no ``Model.predict`` overhead)."""
    return tf.function(lambda x: model(x, training=False), reduce_retracing=True)


def mirror_inference_fn(model: keras.Model) -> Callable[[tf.Tensor], tf.Tensor]:
    """:func:`inference_fn` of the mirror images: ``model`` on each image flipped left-right."""
    return tf.function(
        lambda x: model(tf.reverse(x, axis=[2]), training=False), reduce_retracing=True
    )


def extract_features(
    forward: Callable[[tf.Tensor], tf.Tensor],
    split: Split,
    image_size: int,
    batch_size: int,
    *,
    augment: AugmentationParams | None = None,
    views: int = 1,
    seed: int = 0,
) -> np.ndarray:
    """``forward`` applied once to every image of ``split``, in order: ``(n, *feature_shape)``.

    ``forward`` is e.g. :func:`inference_fn` of a features model; a plain loop over the
    streamed batches (``Model.predict`` costs ~20% more on CPU). With ``augment``, the images are
    augmented (:func:`pipeline.data.augment_batch`, seeded by ``seed``) and the result is
    ``(views, n, *feature_shape)``: ``views`` passes, each with new random augmentations.
    """
    ds = make_dataset(split, image_size, batch_size, seed=seed, augment=augment)
    if augment is None:
        return np.concatenate([forward(x).numpy() for x, _ in ds])
    # every pass over ``ds`` draws new augmentations (deterministically, from ``seed``)
    return np.stack([np.concatenate([forward(x).numpy() for x, _ in ds]) for _ in range(views)])


def feature_datasets(
    features: keras.Model,
    image_size: int,
    batch_size: int,
    seed: int,
    split_dir: str | Path = paths.SPLIT,
    prepared_dir: str | Path = PREPARED_DIR,
    stored: dict[str, np.ndarray] | None = None,
    augment: AugmentationParams | None = None,
    views: int = 0,
) -> tuple[Split, tf.data.Dataset, tf.data.Dataset]:
    """Like :func:`load_train_val`, with ``features`` computed once instead of images.

    ``stored``: the ``train`` and ``val`` features already computed by the same features model
    (:func:`pipeline.features.load`), used instead of running it again. The train features are
    shuffled the way :func:`load_train_val` shuffles the images (same seed, same order), so a
    head trained on them sees the batches a whole model would.

    ``views`` > 0 with ``augment`` (enabled): the train features are those of ``views``
    augmented copies of each train image, computed once (``views`` forward passes); every epoch
    each image contributes one of its copies, drawn at random (seeded, new draws every epoch).
    Val features are never augmented.
    """
    train, val = (load_prepared(n, prepared_dir, split_dir, image_size) for n in ("train", "val"))
    forward = inference_fn(features)
    use_views = bool(views and augment is not None and augment.enabled)
    if stored is not None:
        f_train, f_val = _stored_features(stored, train, val)
    else:
        f_train, f_val = _features_once(forward, train, val, image_size, batch_size, use_views)
    labels = np.asarray(train.labels, np.int32)
    if use_views:
        f_views = _view_features(forward, train, image_size, batch_size, augment, views, seed)
        train_ds = view_dataset(f_views, labels, batch_size, seed)
    else:
        train_ds = feature_dataset(f_train, labels, batch_size, seed)
    return train, train_ds, feature_dataset(f_val, np.asarray(val.labels, np.int32), batch_size)


def activation_datasets(
    bottom: keras.Model,
    image_size: int,
    batch_size: int,
    seed: int,
    *,
    mirror: bool,
    cache_mb: float,
    split_dir: str | Path = paths.SPLIT,
    prepared_dir: str | Path = PREPARED_DIR,
) -> tuple[Split, tf.data.Dataset, tf.data.Dataset] | None:
    """Like :func:`load_train_val`, with ``bottom``'s activations computed once instead of images.

    ``bottom``: the frozen bottom of a classifier (:func:`pipeline.models.split_at_frozen`),
    mapping ``(batch, size, size, 3)`` pixels to ``(batch, h, w, c)`` activations. ``mirror``:
    the activations of each train image's mirror image are computed too, and every epoch each
    image contributes one of its two, drawn at random (seeded; new draws every epoch), the
    distribution of :func:`pipeline.data.augment_batch`'s flip. The train activations are
    shuffled as :func:`load_train_val` shuffles the images; val activations are never mirrored.
    Returns ``None``, computing nothing, when the activations would take more than ``cache_mb``
    MiB (the input pipeline briefly holds a second copy of the train activations).
    """
    train, val = (load_prepared(n, prepared_dir, split_dir, image_size) for n in ("train", "val"))
    shape = tuple(int(d) for d in bottom.output.shape[1:])
    copies = 2 if mirror else 1
    mb = float(np.prod(shape)) * 4 * (copies * len(train) + len(val)) / 2**20
    if mb > cache_mb:
        log.info(
            "frozen activations of %d + %d images would take %.0f MiB, over the %.0f MiB cap",
            copies * len(train),
            len(val),
            mb,
            cache_mb,
        )
        return None
    start = time.perf_counter()
    forward = inference_fn(bottom)
    f_val = extract_features(forward, val, image_size, batch_size)
    labels = np.asarray(train.labels, np.int32)
    if mirror:
        views = _mirror_views(bottom, forward, train, image_size, batch_size)
        train_ds = view_dataset(views, labels, batch_size, seed)
    else:
        f_train = extract_features(forward, train, image_size, batch_size)
        train_ds = feature_dataset(f_train, labels, batch_size, seed)
    seconds = time.perf_counter() - start
    n = copies * len(train) + len(val)
    log.info(
        "frozen activations of %d images%s computed once in %.1f s (%.0f images/s), %s each, "
        "%.0f MiB",
        n,
        " (train images and their mirrors, val images)" if mirror else "",
        seconds,
        n / max(seconds, 1e-9),
        "x".join(map(str, shape)),
        mb,
    )
    val_ds = feature_dataset(f_val, np.asarray(val.labels, np.int32), batch_size)
    return train, train_ds, val_ds


def _mirror_views(
    bottom: keras.Model, forward: Callable, train: Split, image_size: int, batch_size: int
) -> np.ndarray:
    """``(2, n, h, w, c)``: ``bottom``'s activations of the ``n`` train images and of their
    mirror images (``forward``: :func:`inference_fn` of ``bottom``)."""
    mirrored = mirror_inference_fn(bottom)
    shape = tuple(int(d) for d in bottom.output.shape[1:])
    views = np.empty((len(train), 2, *shape), np.float32)  # image-major: one copy, no more
    views[:, 0] = extract_features(forward, train, image_size, batch_size)
    views[:, 1] = extract_features(mirrored, train, image_size, batch_size)
    return np.swapaxes(views, 0, 1)


def _stored_features(
    stored: dict[str, np.ndarray], train: Split, val: Split
) -> tuple[np.ndarray, np.ndarray]:
    """The ``train`` and ``val`` features of the baseline stage, checked against the splits."""
    f_train, f_val = stored["train"], stored["val"]
    if (len(f_train), len(f_val)) != (len(train), len(val)):
        raise PipelineError(
            f"stored base features hold {len(f_train)} + {len(f_val)} images, the splits "
            f"{len(train)} + {len(val)}: run the baseline stage again (dvc repro baseline)"
        )
    log.info("base features of %d images reused from the baseline stage", len(train) + len(val))
    return f_train, f_val


def _features_once(
    forward: Callable,
    train: Split,
    val: Split,
    image_size: int,
    batch_size: int,
    use_views: bool,
) -> tuple[np.ndarray | None, np.ndarray]:
    """The train (``None`` with views: the head never sees the un-augmented train features)
    and val features, one forward pass each."""
    start = time.perf_counter()
    f_train = None if use_views else extract_features(forward, train, image_size, batch_size)
    f_val = extract_features(forward, val, image_size, batch_size)
    seconds = time.perf_counter() - start
    n = len(val) if use_views else len(train) + len(val)
    log.info(
        "base features of %d images computed once in %.1f s (%.0f images/s), %s each",
        n,
        seconds,
        n / max(seconds, 1e-9),
        "x".join(map(str, f_val.shape[1:])),
    )
    return f_train, f_val


def _view_features(
    forward: Callable,
    train: Split,
    image_size: int,
    batch_size: int,
    augment: AugmentationParams | None,
    views: int,
    seed: int,
) -> np.ndarray:
    """The features of ``views`` augmented copies of each train image."""
    start = time.perf_counter()
    f_views = extract_features(
        forward, train, image_size, batch_size, augment=augment, views=views, seed=seed
    )
    seconds = time.perf_counter() - start
    log.info(
        "%d augmented views of the base features of %d train images computed in %.1f s "
        "(%.0f images/s)",
        views,
        len(train),
        seconds,
        views * len(train) / max(seconds, 1e-9),
    )
    return f_views


def feature_dataset(
    x: np.ndarray, labels: np.ndarray, batch_size: int, seed: int | None = None
) -> tf.data.Dataset:
    """Batches of ``(features, labels)``; reshuffled every epoch when ``seed`` is given."""
    ds = tf.data.Dataset.from_tensor_slices((x, labels))
    if seed is not None:
        ds = ds.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def view_dataset(
    views: np.ndarray, labels: np.ndarray, batch_size: int, seed: int
) -> tf.data.Dataset:
    """Shuffled batches of ``(features, labels)``, each image's features one of its views.

    ``views``: ``(k, n, *feature_shape)`` features of ``k`` augmented copies of ``n`` images.
    Every epoch the images are reshuffled and each draws one of its ``k`` copies at random
    (seeded by ``seed``; new draws every epoch, the same ones run to run).
    """
    k = views.shape[0]
    ds = tf.data.Dataset.from_tensor_slices((np.swapaxes(views, 0, 1), labels))
    ds = ds.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    draws = tf.data.Dataset.random(seed=seed + 2, rerandomize_each_iteration=True)

    def view_index(r: tf.Tensor) -> tf.Tensor:
        return tf.math.floormod(r, k)

    pick = draws.map(view_index).batch(batch_size)

    def select(batch: tuple[tf.Tensor, tf.Tensor], which: tf.Tensor) -> tuple:
        x, y = batch  # x: (b, k, d); which: (batch_size,), of which the first b are used
        return tf.gather(x, which[: tf.shape(x)[0]], axis=1, batch_dims=1), y

    ds = tf.data.Dataset.zip(ds, pick)
    ds = ds.map(select, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


LIVE_TRANSFER = paths.LIVE_TRANSFER
LIVE_TRAINING = paths.LIVE_TRAINING


def open_live(path: str | Path, *, first_step: int, resume_from: str | Path | None = None) -> Live:
    """A DVCLive ``Live`` in ``path`` whose next logged step is ``first_step`` (0-based epoch).

    ``resume_from``: an earlier phase's DVCLive folder, copied to ``path`` and continued, so
    both phases are one run on one step axis (its TSV rows first, then this phase's). Without
    it, ``path`` starts empty. The ``dvc.yaml`` is hand-written (``dvcyaml=None``), and
    DVCLive makes no experiment and no commit of its own (``save_dvc_exp=False``): a DVC
    stage's outputs are DVC's to record.
    """
    from dvclive import Live

    path = Path(path)
    if path.exists():
        shutil.rmtree(path)
    if resume_from is not None:
        if not (Path(resume_from) / "metrics.json").is_file():
            raise PipelineError(
                f"{resume_from} holds no DVCLive run: run the transfer stage first (dvc repro)"
            )
        shutil.copytree(resume_from, path)
    live = Live(
        str(path),
        resume=resume_from is not None,
        dvcyaml=None,
        save_dvc_exp=False,
        report=None,
        monitor_system=False,
    )
    live.step = first_step  # Keras's epoch index: continues across phases (initial_epoch)
    return live


def live_callback(live: Live) -> keras.callbacks.Callback:
    """DVCLive's Keras callback: every epoch's metrics (``train/…``, ``eval/…``) to ``live``."""
    from dvclive.keras import DVCLiveCallback

    return DVCLiveCallback(live=live)


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
    strategy: object | None = None,
    class_weight: dict[int, float] | None = None,
    live: Live | None = None,
    schedule: Callable[[int], float] | None = None,
) -> tuple[list[list], PhaseResult]:
    """Train ``model`` for up to ``epochs`` epochs after ``initial_epoch``; return history rows.

    ``work_dir`` receives ``best.weights.h5``, the weights of ``checkpoint`` (default: ``model``;
    give the classifier when ``model`` is a head sharing its layers) at the best epoch so far;
    ``log_dir`` the TensorBoard logs, whose optimizer-step axis starts after ``step_offset``
    earlier steps. On return the model holds the weights of the best epoch.

    ``strategy`` is the ``tf.distribute`` strategy ``model`` was built and compiled under
    (:func:`pipeline.distribute.setup`; ``None``: the default one). Under
    ``MultiWorkerMirroredStrategy``, where ``Model.fit`` fails with Keras 3
    (keras-team/keras#20585), :func:`fit_distributed` trains with the same callbacks and
    returns the same history; otherwise ``Model.fit`` does. ``live`` (:func:`open_live`; the
    chief's only) receives every epoch's metrics.

    ``class_weight``: ``{class index: weight}`` (:func:`pipeline.balance.class_weights`) scaling
    each train image's loss, as ``Model.fit(class_weight=...)`` does; ``None``: unweighted. The
    history's train loss is then the weighted loss (as Keras reports it); accuracy and the val
    figures are never weighted. ``schedule``: epoch (0-based) -> learning rate, set at each
    epoch's start (``keras.callbacks.LearningRateScheduler``); ``None``: the compiled rate.
    """
    callbacks = _phase_callbacks(
        checkpoint or model, patience, work_dir, log_dir, step_offset, live
    )
    if schedule is not None:
        callbacks.insert(0, keras.callbacks.LearningRateScheduler(lambda e, _: schedule(e)))
    tensorboard = callbacks[-1]
    total = initial_epoch + epochs
    log.info("%s: epochs %d..%d", phase, initial_epoch + 1, total)
    try:
        hist = _fit(
            model, train_ds, val_ds, total, initial_epoch, callbacks, strategy, class_weight
        )
    except BaseException:
        # Interrupted (SIGINT/SIGTERM) or failed: close the event writers now, or they flush
        # at exit and recreate the temporary log folder the stage has just removed.
        tensorboard._close_writers()
        raise
    return _phase_history(model, hist.history, phase, epochs, initial_epoch, step_offset)


def _phase_callbacks(
    checkpoint: keras.Model,
    patience: int,
    work_dir: Path,
    log_dir: Path,
    step_offset: int,
    live: Live | None,
) -> list[keras.callbacks.Callback]:
    """Early stopping, DVCLive (with ``live``), the best-epoch checkpoint of ``checkpoint`` and
    TensorBoard, last."""
    early = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=patience, restore_best_weights=True, verbose=1
    )
    return [
        early,
        *([live_callback(live)] if live is not None else []),
        _Checkpoint(
            checkpoint,
            work_dir / "best.weights.h5",
            monitor="val_loss",
            save_best_only=True,
            save_weights_only=True,
        ),
        PhaseTensorBoard(
            str(log_dir), step_offset=step_offset, histogram_freq=0, write_graph=False
        ),
    ]


def _fit(
    model: keras.Model,
    train_ds: object,
    val_ds: object,
    total: int,
    initial_epoch: int,
    callbacks: list[keras.callbacks.Callback],
    strategy: object | None,
    class_weight: dict[int, float] | None,
) -> keras.callbacks.History:
    """``Model.fit``, or :func:`fit_distributed` under ``MultiWorkerMirroredStrategy``."""
    from pipeline import distribute

    if strategy is not None and distribute.is_multi_worker(strategy):
        return fit_distributed(
            model,
            strategy,
            train_ds,
            val_ds,
            epochs=total,
            initial_epoch=initial_epoch,
            callbacks=callbacks,
            verbose=2 if distribute.is_chief(strategy) else 0,
            class_weight=class_weight,
        )
    return model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=total,
        initial_epoch=initial_epoch,
        callbacks=callbacks,
        verbose=2,
        class_weight=class_weight,
    )


def _phase_history(
    model: keras.Model,
    h: dict[str, list],
    phase: str,
    epochs: int,
    initial_epoch: int,
    step_offset: int,
) -> tuple[list[list], PhaseResult]:
    """The history rows (:data:`HISTORY_COLUMNS`) of a fitted phase and its summary, logged."""
    lr = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    n = len(h["loss"])
    rates = h.get("learning_rate", [lr] * n)  # logged by LearningRateScheduler
    rows = [
        [
            initial_epoch + i + 1,
            phase,
            round(float(h["loss"][i]), 6),
            round(float(h["accuracy"][i]), 6),
            round(float(h["val_loss"][i]), 6),
            round(float(h["val_accuracy"][i]), 6),
            float(rates[i]),
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


def _shardable(ds: tf.data.Dataset) -> tf.data.Dataset:
    """``ds`` sharded by element across workers (it is not read from files it could split)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def fit_distributed(
    model: keras.Model,
    strategy: tf.distribute.Strategy,
    train_ds: tf.data.Dataset,
    val_ds: tf.data.Dataset,
    *,
    epochs: int,
    initial_epoch: int = 0,
    callbacks: list[keras.callbacks.Callback] | None = None,
    verbose: int = 2,
    class_weight: dict[int, float] | None = None,
) -> keras.callbacks.History:
    """``model.fit(train_ds, validation_data=val_ds, ...)`` as a ``strategy.run`` loop.

    For strategies under which ``Model.fit`` fails (``MultiWorkerMirroredStrategy`` with
    Keras 3, keras-team/keras#20585); it works under any strategy. ``model`` must be built and
    compiled (a loss on probabilities, e.g. sparse categorical cross-entropy) in
    ``strategy.scope()``. The datasets yield global batches of ``(images, int labels)``; each
    replica gets its share. Every replica's loss is its sum of per-image losses divided by the
    global batch (``tf.nn.compute_average_loss``), so the summed gradients are those of the
    global batch's mean loss, as in a one-device run with the same global batch. ``callbacks``
    are called as ``Model.fit`` calls them (epochs from ``initial_epoch``, validation
    between the last train batch and ``on_epoch_end``, ``model.stop_training``), with the
    epoch logs ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``: the global mean loss
    and the fraction of images whose most probable class is the label. Returns the
    ``History``, as ``Model.fit`` does.

    ``class_weight`` (``{class index: weight}``, as ``Model.fit`` takes it) multiplies each train
    image's loss by its class's weight before the division by the global batch, so the train
    ``loss`` is the weighted one, as ``Model.fit`` reports it; accuracy and validation are
    unweighted, as there.
    """
    history = keras.callbacks.History()
    cbs = keras.callbacks.CallbackList(
        [*(callbacks or []), history],
        add_progbar=verbose != 0,
        verbose=verbose,
        epochs=epochs,
        steps=None,
        model=model,
    )
    train_dist = strategy.experimental_distribute_dataset(_shardable(train_ds))
    val_dist = strategy.experimental_distribute_dataset(_shardable(val_ds))
    train_step, val_step = _replica_steps(model, strategy, class_weight)
    model.stop_training = False
    cbs.on_train_begin()
    logs: dict | None = None
    for epoch in range(initial_epoch, epochs):
        cbs.on_epoch_begin(epoch)
        logs = _run_epoch(train_dist, train_step, cbs.on_train_batch_begin, cbs.on_train_batch_end)
        cbs.on_test_begin()
        val_logs = _run_epoch(val_dist, val_step, cbs.on_test_batch_begin, cbs.on_test_batch_end)
        cbs.on_test_end(val_logs)
        logs.update({f"val_{k}": v for k, v in val_logs.items()})
        cbs.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    cbs.on_train_end(logs)
    return history


def _run_epoch(dist: object, step_fn: object, on_begin: object, on_end: object) -> dict:
    """One pass of ``step_fn`` over the distributed dataset ``dist``: mean loss and accuracy."""
    total = tf.zeros(3)
    for i, batch in enumerate(dist):
        on_begin(i)
        total += step_fn(batch)
        on_end(i)
    loss_sum, correct, n = (float(v) for v in total.numpy())
    return {"loss": loss_sum / n, "accuracy": correct / n}


def _replica_steps(
    model: keras.Model, strategy: tf.distribute.Strategy, class_weight: dict[int, float] | None
) -> tuple[Callable, Callable]:
    """The train and val steps of :func:`fit_distributed`: ``strategy.run`` of a replica's step
    on a distributed batch, returning the summed per-image loss, correct images and images.

    """
    loss_fn, optimizer = keras.losses.get(model.loss), model.optimizer
    table = None
    if class_weight is not None:
        # class index -> weight; a class missing from the dict weighs 1, as in Model.fit
        table = tf.constant(
            [float(class_weight.get(c, 1.0)) for c in range(max(class_weight) + 1)], tf.float32
        )

    def sums(x: tf.Tensor, y: tf.Tensor, training: bool) -> tuple[tf.Tensor, ...]:
        """Per replica: loss to minimise, summed per-image loss (times its class weight in
        training), correct images, images."""
        y = tf.cast(y, tf.int32)
        n = tf.shape(y)[0]
        # Images in the global batch: the last batch of an epoch may be short on some replicas.
        n_global = tf.distribute.get_replica_context().all_reduce("sum", n)
        probs = tf.cast(model(x, training=training), tf.float32)
        # per-image losses: a Loss object's unreduced ``call``, or a loss function given by name
        per_image = (
            loss_fn.call(y, probs) if isinstance(loss_fn, keras.losses.Loss) else loss_fn(y, probs)
        )
        if training and table is not None:
            per_image = per_image * tf.gather(table, y)
        loss = tf.nn.compute_average_loss(per_image, global_batch_size=n_global)
        if training and model.losses:
            loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
        correct = tf.reduce_sum(tf.cast(tf.argmax(probs, -1, output_type=tf.int32) == y, "float32"))
        return loss, tf.reduce_sum(per_image), correct, tf.cast(n, tf.float32)

    def train_replica(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, ...]:
        weights = model.trainable_weights
        with tf.GradientTape() as tape:
            loss, *out = sums(x, y, training=True)
            scaled = optimizer.scale_loss(loss)  # loss scaling under mixed_float16
        optimizer.apply_gradients(zip(tape.gradient(scaled, weights), weights, strict=True))
        return tuple(out)

    def val_replica(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, ...]:
        return sums(x, y, training=False)[1:]

    def reduced(fn: object) -> object:
        @tf.function
        def step(batch: tuple) -> tf.Tensor:
            out = strategy.run(fn, args=batch)
            return tf.stack([strategy.reduce("sum", v, axis=None) for v in out])

        return step

    return reduced(train_replica), reduced(val_replica)


def write_history(path: str | Path, rows: list[list]) -> None:
    """Per-epoch history as CSV (columns :data:`HISTORY_COLUMNS`), for ``dvc plots``."""
    write_csv(path, HISTORY_COLUMNS, rows)
