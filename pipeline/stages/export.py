"""Stage ``export``: the fine-tuned model as a TensorFlow SavedModel and a TFLite file, checked.

Reads ``export.tolerance``, ``evaluate.tta`` and ``data.resize``. Loads
``models/finetune/model.keras`` and exports its inference graph (augmentation is part of the
training input pipeline, not of the model, so the graph holds no random ops); with
``evaluate.tta: flip`` the flip averaging is part of the graph
(:func:`pipeline.models.with_tta`). A model trained in mixed precision is exported, and checked,
as its float32 copy (:func:`pipeline.models.float32_copy`). Writes ``models/export/``:

* ``saved_model/`` – ``keras.Model.export`` (endpoints ``serve`` and ``serving_default``),
* ``model.tflite`` – converted from the SavedModel, float32 (no quantisation),
* ``classes.json`` – the class names in output order.

Each takes float32 ``(batch, height, width, 3)`` pixels in ``[0, 255]`` (decoded and resized as
:func:`pipeline.data.decode_image` does with ``data.resize``) and returns
``(batch, n_classes)`` probabilities.

The check: every test image goes through each export in batches of 16, and its probabilities are
compared with the Keras model's. If any differs by more than ``export.tolerance``, the stage
fails. ``reports/export.json`` records the input shape and policy, and per format the size in
bytes, the largest absolute probability difference and the share of test images with the same
predicted class: a committed result, the same on every machine. The single-image CPU latency
(batch of 1, after one warm-up call; median and 90th percentile over the first 32 test images,
ms) is a property of the machine, not of the model: it is logged and written to
``logs/export/latency.json``, which is not versioned.

The exports are byte for byte the same for the same model
(:func:`pipeline.exporting.export_saved_model`), so a rerun leaves ``dvc.lock`` as it was.

Usage: ``python -m pipeline.stages.export [--params params.yaml]``
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from pipeline import paths
from pipeline.exporting import (
    EXPORT_FILES,
    batched,
    dir_size,
    latency,
    per_image,
    write_exports,
)
from pipeline.params import load_params
from pipeline.utils import PipelineError, atomic_dir, log, run_stage, write_json


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Export the fine-tuned model; check the copies.")
    parser.add_argument("--params", default=paths.PARAMS)
    parser.add_argument("--model", default=paths.FINETUNED_MODEL, type=Path)
    parser.add_argument("--split", default=paths.SPLIT, type=Path)
    parser.add_argument("--prepared", default=paths.PREPARED, type=Path)
    parser.add_argument("--out", default=paths.EXPORT, type=Path)
    parser.add_argument("--report", default=paths.EXPORT_REPORT, type=Path)
    parser.add_argument("--latency", default=paths.EXPORT_LATENCY, type=Path)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    params = load_params(args.params)
    tolerance, tta = params.export.tolerance, params.evaluate.tta
    if not args.model.is_file():
        raise PipelineError(f"{args.model} not found: run the finetune stage first")

    import tensorflow as tf

    from pipeline.data import load_prepared, make_dataset
    from pipeline.models import float32_copy, input_hw, load_model, with_tta

    # mixed precision: exported in float32; evaluate.tta flip: the averaging is in the graph
    model = with_tta(float32_copy(load_model(args.model)), tta)
    size = input_hw(model)
    test = load_prepared("test", args.prepared, args.split, size)
    # whole-number pixels: uint8 holds them exactly in a quarter of float32's memory
    images = np.concatenate(
        [x.astype(np.uint8) for x, _ in make_dataset(test, size, 64).as_numpy_iterator()]
    )
    reference = batched(model.predict_on_batch, images)
    keras_ms = per_image(model.predict_on_batch, images)
    with atomic_dir(args.out) as tmp:
        checks, times, sizes = write_exports(model, tmp, test.classes, images, reference, tolerance)

    report = {
        "image_size": list(size),
        "resize": params.data.resize,
        "tta": tta,
        "test_images": len(test),
        "tolerance": tolerance,
        "tensorflow": tf.__version__,
        "keras": {"path": args.model.as_posix(), "size_bytes": dir_size(args.model)},
    }
    timing: dict = {"cpu_count": os.cpu_count(), "keras": latency(keras_ms)}
    for name, f in EXPORT_FILES.items():
        report[name] = {
            "path": (args.out / f).as_posix(),
            "size_bytes": sizes[name],
            **checks[name],
        }
        timing[name] = latency(times[name])
        log.info(
            "%s: %.2f MB, %.3f ms/image, max |diff| %.2g, argmax agreement %.1f%%",
            name,
            sizes[name] / 1e6,
            timing[name]["latency_ms_median"],
            checks[name]["max_abs_diff"],
            100 * checks[name]["argmax_agreement"],
        )
    write_json(args.latency, timing)
    write_json(args.report, report)


if __name__ == "__main__":
    run_stage(main)
