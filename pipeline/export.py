"""Stage ``export``: the fine-tuned model as a TensorFlow SavedModel and a TFLite file, checked.

Reads ``export.tolerance``. Loads ``models/finetune/model.keras`` and exports its inference graph
(augmentation is part of the training input pipeline, not of the model, so the graph holds no
random ops). A model trained in mixed precision is exported, and checked, as its float32 copy
(:func:`pipeline.models.float32_copy`: the same weights, every layer in float32). Writes
``models/export/``:

* ``saved_model/`` – ``keras.Model.export`` (endpoints ``serve`` and ``serving_default``),
* ``model.tflite`` – converted from the SavedModel, float32 (no quantisation),
* ``classes.json`` – the class names in output order.

Each takes float32 ``(batch, size, size, 3)`` pixels in ``[0, 255]`` (decoded as in
:func:`pipeline.data.decode_image`) and returns ``(batch, n_classes)`` probabilities.

The check: every test image goes through each export one at a time, and its probabilities are
compared with the Keras model's (as the evaluate stage computes them). If any differs by more than
``export.tolerance``, the stage fails. ``reports/export.json`` records, per format, the size in
bytes, the largest absolute probability difference and the share of test images with the same
predicted class: a committed result, the same on every machine. The per-image CPU latency (batch
of 1, after one warm-up call; median and 90th percentile over the test split, ms) is a property
of the machine, not of the model: it is logged and written to ``logs/export/latency.json``,
which is not versioned.

The exports are byte for byte the same for the same model (:func:`export_saved_model`), so a
rerun leaves ``dvc.lock`` as it was.

Usage: ``python -m pipeline.export [--params params.yaml]``
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from pipeline.params import load_params
from pipeline.utils import PipelineError, atomic_dir, log, run_stage, write_json

Predictor = Callable[[np.ndarray], np.ndarray]  # (1, size, size, 3) pixels -> (1, n_classes)


def dir_size(path: Path) -> int:
    """Total size in bytes of the files below ``path`` (or of the file ``path``)."""
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def saved_model_predictor(path: Path) -> Predictor:
    """Call the ``serve`` endpoint of the SavedModel in ``path``."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))  # keep it referenced: it owns the variables
    return lambda x: loaded.serve(tf.constant(x)).numpy()


def tflite_predictor(path: Path) -> Predictor:
    """Run the TFLite model in ``path`` with TensorFlow's built-in interpreter (CPU)."""
    import tensorflow as tf

    with warnings.catch_warnings():  # tf.lite.Interpreter announces its move to ai_edge_litert
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_path=str(path))
    inp = interpreter.get_input_details()[0]["index"]
    out = interpreter.get_output_details()[0]["index"]
    shape: list[tuple[int, ...]] = []

    def predict(x: np.ndarray) -> np.ndarray:
        if shape != [x.shape]:
            interpreter.resize_tensor_input(inp, list(x.shape))
            interpreter.allocate_tensors()
            shape[:] = [x.shape]
        interpreter.set_tensor(inp, np.ascontiguousarray(x, dtype=np.float32))
        interpreter.invoke()
        return interpreter.get_tensor(out).copy()

    return predict


def per_image(predict: Predictor, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run ``images`` (``(n, size, size, 3)``, as float32) one at a time after a warm-up call.

    Returns the probabilities ``(n, n_classes)`` and each call's wall time ``(n,)`` in ms.
    """
    predict(images[:1].astype(np.float32))
    proba, ms = [], []
    for i in range(len(images)):
        x = images[i : i + 1].astype(np.float32)
        start = time.perf_counter()
        p = predict(x)
        ms.append((time.perf_counter() - start) * 1000)
        proba.append(np.asarray(p)[0])
    return np.stack(proba), np.asarray(ms)


def compare(reference: np.ndarray, proba: np.ndarray) -> dict:
    """Largest absolute probability difference and argmax agreement (share) of two ``(n, k)``."""
    return {
        "max_abs_diff": float(f"{np.abs(proba - reference).max():.3g}"),
        "argmax_agreement": round(float(np.mean(proba.argmax(1) == reference.argmax(1))), 4),
    }


def check_exports(reference: np.ndarray, outputs: dict[str, np.ndarray], tolerance: float) -> dict:
    """:func:`compare` each export's ``(n, k)`` probabilities with the Keras ``reference``.

    Raises :class:`PipelineError` naming every export whose largest difference exceeds
    ``tolerance``; returns ``{name: compare(...)}`` otherwise.
    """
    results = {name: compare(reference, proba) for name, proba in outputs.items()}
    bad = [
        f"{name}: max |probability difference| {r['max_abs_diff']:.3g} > export.tolerance "
        f"{tolerance:g} (same predicted class on {r['argmax_agreement']:.1%} of "
        f"{len(reference)} test images)"
        for name, r in results.items()
        if not r["max_abs_diff"] <= tolerance
    ]
    if bad:
        raise PipelineError(
            "exported model(s) do not reproduce the Keras model's predictions; previous "
            "exports kept:\n  " + "\n  ".join(bad)
        )
    return results


@contextlib.contextmanager
def _variables_in_name_order() -> Iterator[None]:
    """Keras's SavedModel export lists variables in an order that varies between processes.

    Sorted by path, the SavedModel's files (graph, variables) are the same in every run.
    """
    from keras.src.export import saved_model_export_archive as archive

    listed = archive._list_variables_used_by_fns

    def in_order(fns: list) -> tuple[list, list]:
        trainable, other = listed(fns)
        return sorted(trainable, key=_var_key), sorted(other, key=_var_key)

    archive._list_variables_used_by_fns = in_order
    try:
        yield
    finally:
        archive._list_variables_used_by_fns = listed


def _var_key(variable: object) -> str:
    return str(getattr(variable, "path", None) or variable.name)


def export_saved_model(model: object, path: Path) -> None:
    """``model.export(path)`` as a SavedModel whose bytes depend on the model only.

    Besides the variable order (:func:`_variables_in_name_order`), TensorFlow writes a random
    ``uuid`` into ``fingerprint.pb``; it becomes a digest of the fingerprint's own content
    hashes, so it still tells different models apart.
    """
    import hashlib

    from tensorflow.core.protobuf import fingerprint_pb2

    with _variables_in_name_order():
        model.export(str(path), verbose=False)
    fingerprint_file = path / "fingerprint.pb"
    if fingerprint_file.is_file():
        fingerprint = fingerprint_pb2.FingerprintDef()
        fingerprint.ParseFromString(fingerprint_file.read_bytes())
        content = (
            fingerprint.saved_model_checksum,
            fingerprint.graph_def_program_hash,
            fingerprint.signature_def_hash,
            fingerprint.saved_object_graph_hash,
            fingerprint.checkpoint_hash,
        )
        digest = hashlib.sha256(repr(content).encode()).digest()[:16]
        fingerprint.uuid = str(int.from_bytes(digest, "big"))
        fingerprint_file.write_bytes(fingerprint.SerializeToString(deterministic=True))


def latency(ms: np.ndarray) -> dict:
    return {
        "latency_ms_median": round(float(np.median(ms)), 3),
        "latency_ms_p90": round(float(np.percentile(ms, 90)), 3),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Export the fine-tuned model; check the copies.")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", default="models/finetune/model.keras", type=Path)
    parser.add_argument("--split", default="data/split", type=Path)
    parser.add_argument("--prepared", default="data/prepared", type=Path)
    parser.add_argument("--out", default="models/export", type=Path)
    parser.add_argument("--report", default="reports/export.json", type=Path)
    parser.add_argument("--latency", default="logs/export/latency.json", type=Path)
    args = parser.parse_args(argv)

    tolerance = load_params(args.params).export.tolerance
    if not args.model.is_file():
        raise PipelineError(f"{args.model} not found: run the finetune stage first")

    import tensorflow as tf

    from pipeline.data import load_prepared, make_dataset
    from pipeline.models import float32_copy, load_model

    model = float32_copy(load_model(args.model))  # mixed precision: exported in float32
    size = int(model.input_shape[1])
    test = load_prepared("test", args.prepared, args.split, size)
    # whole-number pixels: uint8 holds them exactly in a quarter of float32's memory
    images = np.concatenate(
        [x.astype(np.uint8) for x, _ in make_dataset(test, size, 64).as_numpy_iterator()]
    )
    reference = model.predict(make_dataset(test, size, 64), verbose=0)
    _, keras_ms = per_image(model.predict_on_batch, images)

    files = {"saved_model": "saved_model", "tflite": "model.tflite"}
    loaders = {"saved_model": saved_model_predictor, "tflite": tflite_predictor}
    with atomic_dir(args.out) as tmp:
        export_saved_model(model, tmp / files["saved_model"])
        converter = tf.lite.TFLiteConverter.from_saved_model(str(tmp / files["saved_model"]))
        (tmp / files["tflite"]).write_bytes(converter.convert())
        write_json(tmp / "classes.json", test.classes)
        outputs, times = {}, {}
        for name, load in loaders.items():
            outputs[name], times[name] = per_image(load(tmp / files[name]), images)
        checks = check_exports(reference, outputs, tolerance)
        sizes = {name: dir_size(tmp / f) for name, f in files.items()}

    report = {
        "image_size": size,
        "test_images": len(test),
        "tolerance": tolerance,
        "tensorflow": tf.__version__,
        "keras": {"path": args.model.as_posix(), "size_bytes": dir_size(args.model)},
    }
    timing: dict = {"cpu_count": os.cpu_count(), "keras": latency(keras_ms)}
    for name, f in files.items():
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
