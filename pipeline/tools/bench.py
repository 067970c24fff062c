"""Benchmarks: where an epoch's time goes, and how long the whole pipeline takes.

``python -m pipeline.tools.bench steps`` measures, in one process, on the model and image size of
``params.yaml`` (with ``--profile`` and ``--set``, below) and on freshly drawn frames:

* the **forward** pass on an in-memory batch: the model's ceiling, images/s;
* the **input pipeline**: decoding and resizing the frames (what a naive pipeline pays every
  epoch), and reading the prepared arrays (what an epoch pays here);
* the **transfer** phase: a training step of the whole model without augmentation on an
  in-memory batch (the model's own step throughput) against an epoch over the prepared images,
  without augmentation and with the configured augmentation; the base features computed once,
  and (with augmentation) those of augmented images, one view of ``transfer.augmented_views``;
  then a head epoch on the features and one on augmented views;
* the **fine-tune** phase: its step throughput against epochs over the prepared images, without
  and with augmentation;
* the peak resident memory of the process.

Each rate is printed with its ratio to the forward ceiling; each epoch also as a ratio to its
own step throughput (``>= 0.9`` without augmentation means the input pipeline is not the
bottleneck; ``>= 0.8`` is the target with augmentation). Weights are
random, with the BatchNorm statistics of the frames: speed does not depend on the weights'
values, but a purely random network's vanishing activations would compute on slow denormal
floats.

``python -m pipeline.tools.bench repro`` times a whole ``dvc repro`` in a throw-away copy of the
project on a generated dataset of a given size (``--preset tom-and-jerry``: 5,480 frames with a
720 px short side and the CPU profile ``profiles/tom-and-jerry.yaml``), the peak memory of any
stage, and then the no-op ``dvc repro``.

``python -m pipeline.tools.bench quality --profile tom-and-jerry --data DIR --weights FILE`` is the
real-data check: the whole pipeline with a profile on a local folder of class sub-folders, in a
throw-away copy, printing the val/test accuracy and macro F1 of the linear-probe baseline, the
transfer-only and the fine-tuned model with each phase's wall time and peak memory, and the same
for the plain Keras guide recipe (:mod:`pipeline.tools.reference`) on the same split and weights.

``--profile NAME`` applies ``profiles/NAME.yaml`` and ``--set key=value`` any param, validated
as ``make experiment`` validates them.

Results go to stdout and, with ``--out``, to a JSON file. ``docs/benchmarks.md`` has the numbers
of this machine and how to reproduce them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from pipeline import paths
from pipeline.architectures import backbone
from pipeline.params import Params, parse_params, read_yaml
from pipeline.tools import experiment
from pipeline.utils import PipelineError, log, setup_logging, subprocess_env, write_json

# The Kaggle "Tom and Jerry image classification" set: 5,478 frames, mostly 1280x720, with the
# params of the CPU profile (profiles/tom-and-jerry.yaml).
PRESETS: dict[str, dict[str, Any]] = {
    "tom-and-jerry": {"images_per_class": 1370, "frame_side": 720, "profile": "tom-and-jerry"},
}
PROJECT_FILES = (
    "pipeline",
    "profiles",
    "dvc.yaml",
    "pyproject.toml",
    ".gitignore",
    ".dvcignore",
)


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident set size of this process (or its largest waited-for child), MiB."""
    return round(resource.getrusage(who).ru_maxrss / 1024, 1)


def machine() -> dict[str, Any]:
    import tensorflow as tf

    return {
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "gpus": len(tf.config.list_physical_devices("GPU")),
    }


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


def bench_steps(
    params: Params, images: int, frame_side: int, work: Path, rounds: int = 3
) -> dict[str, Any]:
    """Run the step benchmarks of the module docstring; return rates in images/s."""
    import keras
    import tensorflow as tf

    from pipeline.data import Split, make_dataset, prepare_images, prepared_path
    from pipeline.models import (
        calibrate_batchnorm,
        classifier_from_params,
        compile_model,
        get_base,
        preprocessing,
        split_at_features,
        unfreeze_last,
    )
    from pipeline.training import extract_features, feature_dataset, inference_fn, view_dataset
    from pipeline.utils import seed_everything

    m, size = params.model, params.data.image_size
    seed_everything(params.seed)
    log.info("drawing %d frames (short side %d px)", images, frame_side)
    files = draw_frames(work / "raw", images, frame_side, params.seed)
    frames, labels = [p for p, _ in files], [y for _, y in files]
    names = [Path(p).relative_to(work / "raw").as_posix() for p in frames]
    classes = sorted({Path(n).parts[0] for n in names})
    raw = Split(frames, labels, classes, names)
    n = len(raw)
    results: dict[str, Any] = {"images": n, "frame_side": frame_side, "rounds": rounds}

    def consume(ds: tf.data.Dataset) -> None:
        for _ in ds:
            pass

    # Input pipeline: decoding every epoch (naive) vs decoding once, then reading arrays.
    results["decode"] = n / timed(lambda: consume(make_dataset(raw, size, 32)), 1)
    start = time.perf_counter()
    prepare_images(frames, names, work / "prepared", size)
    results["prepare"] = n / (time.perf_counter() - start)
    ready = Split(
        [str(prepared_path(work / "prepared", x)) for x in names], labels, classes, names, True
    )
    results["read_prepared"] = n / timed(
        lambda: consume(make_dataset(ready, size, 32, shuffle=True, seed=1)), 2
    )

    model = classifier_from_params(params, len(classes))
    aug = params.augmentation if params.augmentation.enabled else None
    first = np.stack([np.load(p) for p in ready.paths[:32]]).astype(np.float32)
    calibrate_batchnorm(get_base(model), preprocessing(m.architecture)(first))

    def batch(b: int) -> tuple[np.ndarray, np.ndarray]:
        """The first ``b`` frames, in memory."""
        x = np.stack([np.load(p) for p in ready.paths[:b]]).astype(np.float32)
        return x, np.asarray(labels[:b], np.int32)

    def phase_rates(phase: str, b: int, learning_rate: float) -> None:
        """The step on an in-memory batch, and epochs over the prepared images without and
        (when configured) with augmentation, measured in turns."""
        compile_model(model, learning_rate)
        x, y = batch(b)
        steps = max(1, n // b)
        runs = [
            (model, repeated_batch(x, y, steps), steps * b),
            (model, make_dataset(ready, size, b, shuffle=True, seed=1), n),
        ]
        if aug:
            runs.append((model, make_dataset(ready, size, b, shuffle=True, seed=1, augment=aug), n))
        rates = fit_rates(runs, rounds)
        results[f"{phase}_step"], results[f"{phase}_epoch"] = rates[:2]
        results[f"{phase}_epoch_aug"] = rates[2] if aug else None

    # Forward ceiling: inference on an in-memory batch, each result fetched as it would be.
    bt = params.transfer.batch_size
    xb, _ = batch(bt)
    forward = inference_fn(model)
    steps = max(1, n // bt)
    results["forward"] = steps * bt / timed(lambda: [forward(xb).numpy() for _ in range(steps)])

    # Transfer, whole model every step.
    phase_rates("transfer", bt, params.transfer.learning_rate)
    # Transfer, base features once: the one pass over the images (and, with augmentation, one
    # pass over augmented images per view), then head epochs on them.
    features, head = split_at_features(model)
    warm = Split(ready.paths[: bt + 1], labels[: bt + 1], classes, names[: bt + 1], True)
    forward_features = inference_fn(features)
    extract_features(forward_features, warm, size, bt)  # traces a full and a partial batch
    passes: dict[str, list[float]] = {"features_once": [], "features_aug": []}
    feats = views = None
    for _ in range(rounds if aug else 1):  # in turns, like the epochs
        start = time.perf_counter()
        feats = extract_features(forward_features, ready, size, bt)
        passes["features_once"].append(time.perf_counter() - start)
        if aug:
            start = time.perf_counter()
            views = extract_features(forward_features, ready, size, bt, augment=aug, seed=1)
            passes["features_aug"].append(time.perf_counter() - start)
    for key, seconds in passes.items():
        results[key] = n / float(np.median(seconds)) if seconds else None
    compile_model(head, params.transfer.learning_rate)
    # head epochs take milliseconds: repeat the images to at least 2,048 rows an epoch
    reps = -(-2048 // n)
    y_all = np.tile(np.asarray(labels, np.int32), reps)
    head_runs = [(head, feature_dataset(np.tile(feats, (reps, 1)), y_all, bt, seed=1), n * reps)]
    if views is not None:  # the one view, twice: what matters is the cost of drawing views
        two = np.tile(np.concatenate([views] * 2), (1, reps, 1))
        head_runs.append((head, view_dataset(two, y_all, bt, seed=1), n * reps))
    rates = fit_rates(head_runs, rounds=rounds, epochs=3)
    results["head_epoch"], results["head_epoch_views"] = rates[0], rates[1] if aug else None

    # Fine-tuning: the last layers of the base unfrozen.
    unfreeze_last(model, params.finetune.unfreeze_layers)
    phase_rates("finetune", params.finetune.batch_size, params.finetune.learning_rate)
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
            lines.append(f"{label:<50} {'-':>10} {'':>10}  (augmentation off)")
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


def make_project(dest: Path, params: dict, root: Path) -> Path:
    """Copy the project at ``root`` (code, dvc.yaml, ignore files) into a new git + DVC repo at
    ``dest``, with ``params`` as its params.yaml; the end-to-end tests use it too."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = root / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.is_file():
            shutil.copy2(src, dest / name)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (
        ["git", "init", "-q"],
        ["git", "config", "user.email", "pipeline@localhost"],
        ["git", "config", "user.name", "pipeline"],
        ["dvc", "init", "-q"],
        ["dvc", "config", "core.analytics", "false"],
        ["dvc", "config", "core.check_update", "false"],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "init"],
    ):
        proc = subprocess.run(cmd, cwd=dest, capture_output=True, text=True, env=subprocess_env())
        if proc.returncode != 0:
            raise PipelineError(f"{' '.join(cmd)} failed in {dest}:\n{proc.stderr[-2000:]}")
    return dest


def dataset_for(work: Path, images_per_class: int, side: int, seed: int) -> Path:
    """The generated dataset for a repro benchmark, drawn once and reused from ``work``."""
    spec = {"images_per_class": images_per_class, "side": side, "seed": seed}
    data = work / "dataset"
    stamp = work / "dataset.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == spec and data.is_dir():
        log.info("reusing the generated dataset in %s", data)
        return data
    shutil.rmtree(data, ignore_errors=True)
    start = time.perf_counter()
    log.info("drawing %d frames per class (short side %d px)", images_per_class, side)
    draw_frames(data, images_per_class * 4, side, seed)
    log.info("drew the dataset in %.0f s", time.perf_counter() - start)
    stamp.write_text(json.dumps(spec))
    return data


def save_random_base(params: Params, data: Path, path: Path) -> None:
    """Random base weights with BatchNorm statistics of 32 of the frames in ``data``.

    Speed does not depend on the weights' values, but a purely random base computes with
    vanishing, denormal activations, which CPUs handle slowly.
    """
    import tensorflow as tf

    from pipeline.data import decode_image
    from pipeline.models import build_base, calibrate_batchnorm, preprocessing

    m, size = params.model, params.data.image_size
    files = sorted(str(f) for f in data.rglob("*.jpg"))[::50][:32]
    images = tf.stack([decode_image(tf.constant(f), size) for f in files])
    base = build_base(m.architecture, m.alpha, None)
    calibrate_batchnorm(base, preprocessing(m.architecture)(images))
    base.save_weights(path)


STAGE_LOG = re.compile(r"pipeline: (\w+) finished in ([\d.]+) s, peak RSS ([\d.]+) MiB")


def run_repro(project: Path, raw: dict, root: Path) -> tuple[float, dict[str, dict[str, float]]]:
    """``dvc repro`` of a fresh copy of the project at ``root`` in ``project`` with ``raw`` params.

    Returns the wall time (s) and, per stage, ``{"s": wall time, "rss_mb": peak memory}`` as
    the stage logged them.
    """
    parse_params(raw, "the benchmark's params")
    shutil.rmtree(project, ignore_errors=True)
    make_project(project, raw, root)
    log.info("dvc repro in %s", project)
    start = time.perf_counter()
    proc = subprocess.run(
        ["dvc", "repro"], cwd=project, env=subprocess_env(), capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise PipelineError(f"dvc repro failed in {project}:\n{proc.stderr[-3000:]}")
    stages = {
        name: {"s": float(sec), "rss_mb": float(rss)}
        for name, sec, rss in STAGE_LOG.findall(proc.stdout + proc.stderr)
    }
    return wall, stages


def bench_repro(
    raw: dict, images_per_class: int, frame_side: int, work: Path, root: Path
) -> dict[str, Any]:
    """Time ``dvc repro`` (then a no-op one) of the project at ``root`` on generated frames."""
    params = parse_params(raw)
    data = dataset_for(work, images_per_class, frame_side, params.seed)
    m = params.model
    weights = work / f"base-{m.architecture}-{m.alpha}-random.weights.h5"
    if not weights.is_file():
        save_random_base(params, data, weights)
    raw = experiment.apply(
        raw,
        {
            "data.source": "local",
            "data.path": str(data),
            "model.weights": "file",
            "model.weights_path": str(weights),
        },
    )
    project = work / "project"
    wall, stages = run_repro(project, raw, root)
    rss = peak_rss_mb(resource.RUSAGE_CHILDREN)
    noop = []
    for _ in range(3):
        start = time.perf_counter()
        again = subprocess.run(
            ["dvc", "repro"],
            cwd=project,
            env=subprocess_env(),
            capture_output=True,
            text=True,
            check=True,
        )
        noop.append(time.perf_counter() - start)
        if "Running stage" in again.stdout:
            raise PipelineError(f"the second dvc repro ran stages:\n{again.stdout[-2000:]}")
    metrics = json.loads((project / paths.METRICS).read_text())
    return {
        "images": sum(1 for _ in (project / paths.PREPARED).rglob("*.npy")),
        "frame_side": frame_side,
        "repro_s": round(wall, 1),
        "stages": stages,
        "peak_rss_mb": rss,
        "noop_repro_s": round(float(np.median(noop)), 2),
        "test_accuracy": metrics["finetune"]["accuracy"],
    }


def format_repro(r: dict[str, Any], setup: str) -> str:
    lines = [f"{setup}; {r['images']} frames, short side {r['frame_side']} px"]
    lines.append(f"dvc repro: {r['repro_s']:.0f} s ({r['repro_s'] / 60:.1f} min)")
    for name, stage in r["stages"].items():
        lines.append(f"  {name:<18} {stage['s']:>7.1f} s {stage['rss_mb']:>7.0f} MiB")
    lines.append(f"peak RSS of any stage: {r['peak_rss_mb']:.0f} MiB")
    lines.append(f"no-op dvc repro: {r['noop_repro_s']:.2f} s")
    return "\n".join(lines)


QUALITY_PHASES = ("baseline", "transfer", "finetune")


def bench_quality(raw: dict, work: Path, root: Path, reference: bool = True) -> dict[str, Any]:
    """Run the whole pipeline with ``raw`` params in a throw-away copy; collect what it reached.

    Returns val/test accuracy and macro F1 of the linear-probe baseline, the transfer-only and
    the fine-tuned model, each phase's stage wall time (s) and peak memory (MiB), the data
    stages' time and the whole ``dvc repro``'s; with ``reference``, also what the plain Keras
    guide recipe (:mod:`pipeline.tools.reference`) reaches on the same split and base weights, and
    its training time.
    """
    project = work / "project"
    wall, stages = run_repro(project, raw, root)
    metrics = json.loads((project / paths.METRICS).read_text())
    train = (project / paths.SPLIT / "train.csv").read_text().count("\n") - 1
    phases = {
        phase: {
            "val_accuracy": metrics[phase]["val_accuracy"],
            "test_accuracy": metrics[phase]["accuracy"],
            "val_macro_f1": metrics[phase]["val_macro_f1"],
            "test_macro_f1": metrics[phase]["macro_f1"],
            **stages.get(phase, {}),
        }
        for phase in QUALITY_PHASES
    }
    params = parse_params(raw)
    if reference and backbone(params.model.architecture).reference_recipe:
        from pipeline.tools.reference import reference_run

        ref = reference_run(
            project,
            params.data.image_size,
            params.model.alpha,
            str(project / paths.BASE_WEIGHTS),
            params.seed,
        )
        phases["reference"] = {**ref, "s": ref["train_s"]}
    return {
        "images": {"train": train, "val": metrics["val_images"], "test": metrics["test_images"]},
        "classes": len(json.loads((project / paths.CLASSES).read_text())),
        "phases": phases,
        "verdicts": {p: metrics["diagnosis"][p]["verdict"] for p in ("transfer", "finetune")},
        "below_baseline": [
            p for p in ("transfer", "finetune") if metrics["diagnosis"][p]["below_baseline"]
        ],
        "stages": stages,
        "repro_s": round(wall, 1),
        "project": str(project),
    }


def format_quality(r: dict[str, Any], setup: str) -> str:
    n = r["images"]
    lines = [
        f"{setup}; {n['train']} / {n['val']} / {n['test']} train / val / test images, "
        f"{r['classes']} classes",
        f"{'phase':<10} {'val acc':>8} {'test acc':>8} {'val F1':>8} {'test F1':>8} "
        f"{'wall s':>8} {'peak MiB':>9}",
    ]

    def cell(m: dict, key: str, width: int, fmt: str) -> str:
        return f"{m[key]:>{width}{fmt}}" if key in m else f"{'-':>{width}}"

    for phase, m in r["phases"].items():
        lines.append(
            f"{phase:<10} "
            + " ".join(
                cell(m, k, 8, ".4f")
                for k in ("val_accuracy", "test_accuracy", "val_macro_f1", "test_macro_f1")
            )
            + f" {cell(m, 's', 8, '.1f')} {cell(m, 'rss_mb', 9, '.0f')}"
        )
    if "reference" in r["phases"]:
        ours = r["phases"]["transfer"]["s"] + r["phases"]["finetune"]["s"]
        lines.append(
            f"transfer + finetune stages: {ours:.0f} s; reference training: "
            f"{r['phases']['reference']['s']:.0f} s ({r['phases']['reference']['recipe']})"
        )
    other = {k: v["s"] for k, v in r["stages"].items() if k not in r["phases"]}
    lines.append("other stages: " + ", ".join(f"{k} {v:.0f} s" for k, v in other.items()))
    lines.append(f"dvc repro: {r['repro_s']:.0f} s ({r['repro_s'] / 60:.1f} min)")
    below = r["below_baseline"]
    lines.append("below the baseline on test accuracy: " + (", ".join(below) if below else "none"))
    return "\n".join(lines)


def describe(params: Params) -> str:
    m = params.model
    alpha = f" {m.alpha}" if backbone(m.architecture).is_mobilenet else ""
    return (
        f"{m.architecture}{alpha} at {params.data.image_size} px, batch "
        f"{params.transfer.batch_size}/{params.finetune.batch_size}, last "
        f"{params.finetune.unfreeze_layers} layers fine-tuned"
    )


def _absolute(values: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """``values`` with the paths under ``keys`` made absolute (the copy runs elsewhere)."""
    return {
        k: str(Path(v).resolve()) if k in keys and isinstance(v, str) and v else v
        for k, v in values.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("steps", "repro", "quality"))
    parser.add_argument("--params", default=paths.PARAMS)
    parser.add_argument("--preset", choices=sorted(PRESETS))
    parser.add_argument("--profile", help="apply profiles/<name>.yaml (after the preset's)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a param"
    )
    parser.add_argument("--data", type=Path, help="quality: a folder of class sub-folders")
    parser.add_argument("--weights", type=Path, help="quality: a Keras weights file of the base")
    parser.add_argument(
        "--no-reference", action="store_true", help="quality: skip the plain Keras reference"
    )
    parser.add_argument("--images", type=int, help="steps: frames to draw (default 256)")
    parser.add_argument("--images-per-class", type=int, help="repro: frames per class (4 classes)")
    parser.add_argument("--frame-side", type=int, help="short side of the frames, px")
    parser.add_argument(
        "--rounds", type=int, default=3, help="steps: turns of step and epoch measurements"
    )
    parser.add_argument(
        "--work", type=Path, help="working folder (repro: reused for the dataset; default: temp)"
    )
    parser.add_argument("--out", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    setup_logging()

    preset = PRESETS.get(args.preset or "", {})
    sets = list(args.set)
    if args.data:
        sets += ["data.source=local", f"data.path={args.data.resolve()}"]
    if args.weights:
        sets += ["model.weights=file", f"model.weights_path={args.weights.resolve()}"]
    try:
        values, params = experiment.resolve(
            args.profile or preset.get("profile"), sets, args.params
        )
        values = _absolute(values, ("data.path", "model.weights_path"))
        raw = experiment.apply(read_yaml(args.params) or {}, values)
    except (experiment.ExperimentError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    side = args.frame_side or preset.get("frame_side", 720)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-"))
    work.mkdir(parents=True, exist_ok=True)
    setup = describe(params)
    try:
        if args.what == "steps":
            with tempfile.TemporaryDirectory(dir=work) as tmp:
                result = bench_steps(params, args.images or 256, side, Path(tmp), args.rounds)
            text = format_steps(result, setup)
        elif args.what == "repro":
            per_class = args.images_per_class or preset.get("images_per_class", 250)
            result = bench_repro(raw, per_class, side, work, Path.cwd())
            text = format_repro(result, setup)
        else:
            result = bench_quality(raw, work, Path.cwd(), reference=not args.no_reference)
            text = format_quality(result, setup)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.work is None and args.what == "steps":
            shutil.rmtree(work, ignore_errors=True)
    result = {"benchmark": args.what, "setup": setup, "machine": machine(), **result}
    print(text)
    if args.out:
        write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
