"""Exporting a classifier as a TensorFlow SavedModel and a TFLite file, and checking the copies.

:func:`export_saved_model` writes a byte-reproducible SavedModel; :func:`write_exports` writes
both formats and ``classes.json`` and runs every test image through each export in batches
(:func:`batched`), :func:`check_exports` compares their probabilities with the Keras model's, and
:func:`per_image` times single-image calls on a sample.
The ``export`` stage (:mod:`pipeline.stages.export`) runs them and writes the report.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from pipeline.utils import PipelineError, write_json

Predictor = Callable[[np.ndarray], np.ndarray]  # (n, height, width, 3) pixels -> (n, n_classes)
BATCH = 16  # images per call of the parity check: at 224x400 with flip averaging, 64 took
# the export stage to a 3.7 GB peak (the TFLite interpreter holds every intermediate tensor)
LATENCY_SAMPLE = 32  # images timed one at a time


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


def batched(predict: Predictor, images: np.ndarray, batch: int = BATCH) -> np.ndarray:
    """``predict`` over ``images`` (``(n, height, width, 3)``, as float32) in batches:
    ``(n, n_classes)``."""
    return np.concatenate(
        [
            np.asarray(predict(images[i : i + batch].astype(np.float32)))
            for i in range(0, len(images), batch)
        ]
    )


def per_image(predict: Predictor, images: np.ndarray, n: int = LATENCY_SAMPLE) -> np.ndarray:
    """Wall time (ms) of ``predict`` on each of the first ``n`` ``images``, one at a time,
    after a warm-up call: ``(min(n, len(images)),)``."""
    predict(images[:1].astype(np.float32))
    ms = []
    for i in range(min(n, len(images))):
        x = images[i : i + 1].astype(np.float32)
        start = time.perf_counter()
        predict(x)
        ms.append((time.perf_counter() - start) * 1000)
    return np.asarray(ms)


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


# The exported formats: file (or folder) name inside models/export
EXPORT_FILES = {"saved_model": "saved_model", "tflite": "model.tflite"}


def write_exports(
    model: object,
    out: Path,
    classes: list[str],
    images: np.ndarray,
    reference: np.ndarray,
    tolerance: float,
) -> tuple[dict, dict, dict]:
    """Write every format of :data:`EXPORT_FILES` and ``classes.json`` into ``out``; run
    ``images`` through each in batches. Returns, per format, the checks (:func:`check_exports`),
    the single-image latencies of a sample (ms, :func:`per_image`) and the size in bytes."""
    import tensorflow as tf

    files = EXPORT_FILES
    export_saved_model(model, out / files["saved_model"])
    converter = tf.lite.TFLiteConverter.from_saved_model(str(out / files["saved_model"]))
    (out / files["tflite"]).write_bytes(converter.convert())
    write_json(out / "classes.json", classes)
    outputs, times = {}, {}
    loaders = {"saved_model": saved_model_predictor, "tflite": tflite_predictor}
    for name, load in loaders.items():
        predict = load(out / files[name])
        outputs[name], times[name] = batched(predict, images), per_image(predict, images)
    checks = check_exports(reference, outputs, tolerance)
    sizes = {name: dir_size(out / f) for name, f in files.items()}
    return checks, times, sizes
