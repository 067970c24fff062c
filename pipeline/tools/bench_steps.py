"""The step benchmark of ``python -m pipeline.tools.bench steps``: where an epoch's time goes.

:func:`bench_steps` measures, on the model and image size of the params and on freshly drawn
frames (:func:`draw_frames`), the forward pass, the input pipeline, the transfer phase (whole
model, base features once, head epochs) and the fine-tune phase, each as images/s;
:func:`format_steps` prints them as the rows of :data:`STEP_ROWS` with their ratios. See
:mod:`pipeline.tools.bench` for what each measure means.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.params import Params, parse_params
from pipeline.utils import log


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident set size of this process (or its largest waited-for child), MiB."""
    return round(resource.getrusage(who).ru_maxrss / 1024, 1)


def draw_frames(out: Path, n: int, side: int, seed: int) -> list[tuple[str, int]]:
    """``n`` generated frames (JPEG, short side ``side``) in ``out/<class>/``; (path, label)."""
    from pipeline.sources.sample import SampleSource

    params = parse_params(
        {
            "seed": seed,
            "data": {
                "sample": {
                    "images_per_class": max(10, -(-n // 4)),
                    "min_side": side,
                    "max_side": side,
                }
            },
        }
    )
    SampleSource(params).fetch(out)
    classes = sorted(p.name for p in out.iterdir())
    files = [(str(f), k) for k, c in enumerate(classes) for f in sorted((out / c).glob("*.jpg"))]
    return files[:n]


class _EpochTimes:
    """Wall time of each epoch of a ``Model.fit`` call, s."""

    def __new__(cls) -> Any:
        import keras

        class Callback(keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.times: list[float] = []

            def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
                self._start = time.perf_counter()

            def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
                self._end = time.perf_counter()

            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                self.times.append(self._end - self._start)

        return Callback()


def fit_rates(runs: list[tuple[Any, Any, int]], rounds: int = 3, epochs: int = 3) -> list[float]:
    """Training images/s of ``model.fit`` for each ``(model, dataset, images per epoch)``.

    The runs take turns, ``rounds`` times, so that drift in the machine's speed affects
    them alike; each fit's first epoch (graph tracing, pipeline start) is dropped and the
    median epoch time of all rounds is used.
    """
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(rounds):
        for (model, ds, _), acc in zip(runs, times, strict=True):
            timer = _EpochTimes()
            model.fit(ds, epochs=epochs, verbose=0, callbacks=[timer], shuffle=False)
            acc.extend(timer.times[1:])
    return [n / float(np.median(t)) for (_, _, n), t in zip(runs, times, strict=True)]


def repeated_batch(x: np.ndarray, y: np.ndarray, steps: int) -> Any:
    """One in-memory batch, ``steps`` times: a dataset that costs nothing to read."""
    import tensorflow as tf

    return tf.data.Dataset.from_tensors((x, y)).repeat(steps)


def timed(fn: Callable[[], Any], repeats: int = 3) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls after one warm-up call, s."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _consume(ds: Any) -> None:
    for _ in ds:
        pass


def _input_rates(raw: Any, work: Path, size: int, results: dict[str, Any]) -> Any:
    """Decoding every epoch (naive) vs decoding once, then reading arrays; returns the split
    of the prepared frames."""
    from pipeline.data import Split, make_dataset, prepare_images, prepared_path

    n = len(raw)
    results["decode"] = n / timed(lambda: _consume(make_dataset(raw, size, 32)), 1)
    start = time.perf_counter()
    prepare_images(raw.paths, raw.names, work / "prepared", size)
    results["prepare"] = n / (time.perf_counter() - start)
    ready = Split(
        [str(prepared_path(work / "prepared", x)) for x in raw.names],
        raw.labels,
        raw.classes,
        raw.names,
        True,
    )
    results["read_prepared"] = n / timed(
        lambda: _consume(make_dataset(ready, size, 32, shuffle=True, seed=1)), 2
    )
    return ready


@dataclass
class _Steps:
    """The model and the prepared frames the step measurements share, and their results."""

    model: Any
    ready: Any  # pipeline.data.Split of the prepared frames
    size: int
    rounds: int
    aug: Any  # the augmentation params, or None when augmentation is off
    results: dict[str, Any]

    @property
    def n(self) -> int:
        return len(self.ready)

    def batch(self, b: int) -> tuple[np.ndarray, np.ndarray]:
        """The first ``b`` frames, in memory."""
        x = np.stack([np.load(p) for p in self.ready.paths[:b]]).astype(np.float32)
        return x, np.asarray(self.ready.labels[:b], np.int32)

    def forward(self, b: int) -> None:
        """Forward ceiling: inference on an in-memory batch, each result fetched as it would be."""
        from pipeline.training import inference_fn

        xb, _ = self.batch(b)
        forward = inference_fn(self.model)
        steps = max(1, self.n // b)
        self.results["forward"] = (
            steps * b / timed(lambda: [forward(xb).numpy() for _ in range(steps)])
        )

    def phase(self, phase: str, b: int, learning_rate: float) -> None:
        """The step on an in-memory batch, and epochs over the prepared images without and
        (when configured) with augmentation, measured in turns."""
        from pipeline.data import make_dataset
        from pipeline.models import compile_model

        model, ready, size, n, aug = self.model, self.ready, self.size, self.n, self.aug
        compile_model(model, learning_rate)
        x, y = self.batch(b)
        steps = max(1, n // b)
        runs = [
            (model, repeated_batch(x, y, steps), steps * b),
            (model, make_dataset(ready, size, b, shuffle=True, seed=1), n),
        ]
        if aug:
            runs.append((model, make_dataset(ready, size, b, shuffle=True, seed=1, augment=aug), n))
        rates = fit_rates(runs, self.rounds)
        self.results[f"{phase}_step"], self.results[f"{phase}_epoch"] = rates[:2]
        self.results[f"{phase}_epoch_aug"] = rates[2] if aug else None

    def features(self, features: Any, b: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Transfer, base features once: the one pass over the images (and, with augmentation,
        one pass over augmented images per view); returns the features and the view."""
        from pipeline.data import Split
        from pipeline.training import extract_features, inference_fn

        ready, size, aug = self.ready, self.size, self.aug
        warm = Split(
            ready.paths[: b + 1], ready.labels[: b + 1], ready.classes, ready.names[: b + 1], True
        )
        forward_features = inference_fn(features)
        extract_features(forward_features, warm, size, b)  # traces a full and a partial batch
        passes: dict[str, list[float]] = {"features_once": [], "features_aug": []}
        feats = views = None
        for _ in range(self.rounds if aug else 1):  # in turns, like the epochs
            start = time.perf_counter()
            feats = extract_features(forward_features, ready, size, b)
            passes["features_once"].append(time.perf_counter() - start)
            if aug:
                start = time.perf_counter()
                views = extract_features(forward_features, ready, size, b, augment=aug, seed=1)
                passes["features_aug"].append(time.perf_counter() - start)
        for key, seconds in passes.items():
            self.results[key] = self.n / float(np.median(seconds)) if seconds else None
        return feats, views

    def head(
        self, head: Any, feats: np.ndarray, views: np.ndarray | None, b: int, lr: float
    ) -> None:
        """Head epochs on the features, and on augmented views."""
        from pipeline.models import compile_model
        from pipeline.training import feature_dataset, view_dataset

        n = self.n
        compile_model(head, lr)
        # head epochs take milliseconds: repeat the images to at least 2,048 rows an epoch
        reps = -(-2048 // n)
        y_all = np.tile(np.asarray(self.ready.labels, np.int32), reps)
        runs = [(head, feature_dataset(np.tile(feats, (reps, 1)), y_all, b, seed=1), n * reps)]
        if views is not None:  # the one view, twice: what matters is the cost of drawing views
            two = np.tile(np.concatenate([views] * 2), (1, reps, 1))
            runs.append((head, view_dataset(two, y_all, b, seed=1), n * reps))
        rates = fit_rates(runs, rounds=self.rounds, epochs=3)
        self.results["head_epoch"] = rates[0]
        self.results["head_epoch_views"] = rates[1] if self.aug else None

    def frozen(self, bottom: Any, top: Any, b: int, lr: float) -> None:
        """Fine-tuning on the frozen activations computed once: the pass of the frozen bottom
        over the images (per view), then top epochs on the activations (with the flip on,
        each image's own and its mirror's, one drawn per epoch), against the same step."""
        from pipeline.models import compile_model
        from pipeline.training import (
            extract_features,
            feature_dataset,
            inference_fn,
            mirror_inference_fn,
            view_dataset,
        )

        ready, size, n = self.ready, self.size, self.n
        mirror = bool(self.aug is not None and self.aug.flip)
        forward = inference_fn(bottom)
        extract_features(forward, ready, size, b)  # traces
        start = time.perf_counter()
        plain = extract_features(forward, ready, size, b)
        self.results["activations_once"] = n / (time.perf_counter() - start)
        labels = np.asarray(ready.labels, np.int32)
        if mirror:
            flipped = mirror_inference_fn(bottom)
            ds = view_dataset(
                np.stack([plain, extract_features(flipped, ready, size, b)]), labels, b, seed=1
            )
        else:
            ds = feature_dataset(plain, labels, b, seed=1)
        compile_model(top, lr)
        self.results["finetune_epoch_once"] = fit_rates([(top, ds, n)], self.rounds)[0]


def _frames(work: Path, images: int, frame_side: int, seed: int) -> Any:
    """``images`` freshly drawn frames in ``work/raw``, as a split."""
    from pipeline.data import Split

    log.info("drawing %d frames (short side %d px)", images, frame_side)
    files = draw_frames(work / "raw", images, frame_side, seed)
    frames, labels = [p for p, _ in files], [y for _, y in files]
    names = [Path(p).relative_to(work / "raw").as_posix() for p in frames]
    classes = sorted({Path(n).parts[0] for n in names})
    return Split(frames, labels, classes, names)


def bench_steps(
    params: Params, images: int, frame_side: int, work: Path, rounds: int = 3
) -> dict[str, Any]:
    """Run the step benchmarks of the module docstring; return rates in images/s."""
    import keras

    from pipeline.models import (
        calibrate_batchnorm,
        classifier_from_params,
        get_base,
        preprocessing,
        split_at_features,
        split_at_frozen,
        unfreeze_last,
    )
    from pipeline.utils import seed_everything

    m, size = params.model, params.data.image_size
    seed_everything(params.seed)
    raw = _frames(work, images, frame_side, params.seed)
    results: dict[str, Any] = {"images": len(raw), "frame_side": frame_side, "rounds": rounds}
    ready = _input_rates(raw, work, size, results)

    model = classifier_from_params(params, len(raw.classes))
    aug = params.augmentation if params.augmentation.enabled else None
    first = np.stack([np.load(p) for p in ready.paths[:32]]).astype(np.float32)
    calibrate_batchnorm(get_base(model), preprocessing(m.architecture)(first))
    bench = _Steps(model, ready, size, rounds, aug, results)
    bt = params.transfer.batch_size
    bench.forward(bt)
    bench.phase("transfer", bt, params.transfer.learning_rate)  # whole model every step
    features, head = split_at_features(model)
    feats, views = bench.features(features, bt)
    bench.head(head, feats, views, bt, params.transfer.learning_rate)
    # Fine-tuning: the last layers of the base unfrozen.
    unfreeze_last(model, params.finetune.unfreeze_layers)
    bench.phase("finetune", params.finetune.batch_size, params.finetune.learning_rate)
    split = split_at_frozen(model)
    if split is not None:  # measured whatever finetune.frozen_activations says
        bench.frozen(split[0], split[1], params.finetune.batch_size, params.finetune.learning_rate)
    else:
        results["activations_once"] = results["finetune_epoch_once"] = None
    results["peak_rss_mb"] = peak_rss_mb()
    keras.backend.clear_session()
    return results


# (result key, label, reference key of the ratio, the ratio's target if it has one)
STEP_ROWS: tuple[tuple[str, str, str | None, float | None], ...] = (
    ("forward", "forward pass, in-memory batch (ceiling)", None, None),
    ("decode", "decode + resize the frames (naive: every epoch)", None, None),
    ("prepare", "prepare stage: decode + resize + write, once", None, None),
    ("read_prepared", "read prepared arrays (tf.data, shuffled)", None, None),
    ("transfer_step", "transfer step, whole model, in-memory batch", None, None),
    ("transfer_epoch", "transfer epoch, prepared images", "transfer_step", 0.9),
    ("transfer_epoch_aug", "transfer epoch, prepared images, augmented", "transfer_step", 0.8),
    ("features_once", "transfer: base features once, prepared images", "forward", 0.9),
    ("features_aug", "transfer: base features of augmented images", "features_once", None),
    ("head_epoch", "transfer: head epoch on the features", None, None),
    ("head_epoch_views", "transfer: head epoch on augmented views", "head_epoch", 0.8),
    ("finetune_step", "fine-tune step, in-memory batch", None, None),
    ("finetune_epoch", "fine-tune epoch, prepared images", "finetune_step", 0.9),
    ("finetune_epoch_aug", "fine-tune epoch, prepared images, augmented", "finetune_step", 0.8),
    ("activations_once", "fine-tune: frozen activations once, per view", "forward", None),
    ("finetune_epoch_once", "fine-tune epoch on them (flip: 2 views)", "finetune_step", 0.8),
)


def format_steps(r: dict[str, Any], setup: str) -> str:
    """The rows of :data:`STEP_ROWS` as a table; ratios with their targets."""
    lines = [
        f"{setup}; {r['images']} frames, short side {r['frame_side']} px",
        f"{'measure':<50} {'images/s':>10} {'x forward':>10}  vs. own step",
    ]
    for key, label, ref, target in STEP_ROWS:
        rate = r[key]
        if rate is None:
            why = "nothing frozen" if key.endswith("_once") else "augmentation off"
            lines.append(f"{label:<50} {'-':>10} {'':>10}  ({why})")
            continue
        vs = ""
        if ref:
            ratio = rate / r[ref]
            vs = f"{ratio:.2f} x {ref}"
            if target is not None:
                vs += f" ({'ok' if ratio >= target else 'below'} {target:g})"
        lines.append(f"{label:<50} {rate:>10.0f} {rate / r['forward']:>10.2f}  {vs}")
    lines.append(f"peak RSS: {r['peak_rss_mb']:.0f} MiB")
    return "\n".join(lines)
