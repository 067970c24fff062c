"""The export stage: inference graph, equivalence check, and its outputs after a tiny run."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from pipeline import exporting
from pipeline.stages import export
from pipeline.utils import PipelineError
from tests.conftest import ROOT, TINY_HEIGHT, TINY_WIDTH


def _probs(n: int = 20, k: int = 4, seed: int = 0) -> np.ndarray:
    logits = np.random.default_rng(seed).normal(size=(n, k))
    e = np.exp(logits)
    return (e / e.sum(1, keepdims=True)).astype("float32")


def test_check_exports_accepts_small_and_names_large_differences():
    ref = _probs()
    close = ref + np.float32(2e-6)
    results = exporting.check_exports(ref, {"saved_model": close}, tolerance=1e-4)
    assert results["saved_model"]["max_abs_diff"] == pytest.approx(2e-6, rel=0.05)
    assert results["saved_model"]["argmax_agreement"] == 1.0

    far = ref.copy()
    far[3] = far[3][::-1]  # one image with its probabilities reversed: another class
    with pytest.raises(PipelineError) as err:
        exporting.check_exports(ref, {"saved_model": close, "tflite": far}, tolerance=1e-4)
    message = str(err.value)
    assert "tflite" in message and "saved_model" not in message
    assert "export.tolerance" in message and "95.0% of 20 test images" in message


def test_check_exports_refuses_nan():
    ref = _probs()
    bad = ref.copy()
    bad[0, 0] = np.nan
    with pytest.raises(PipelineError, match="tflite"):
        exporting.check_exports(ref, {"tflite": bad}, tolerance=0.5)


# --- after one tiny `dvc repro` (the session's `trained_repo`) -------------------------------


def _digest(folder: Path) -> dict[str, str]:
    return {
        f.relative_to(folder).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(folder.rglob("*"))
        if f.is_file()
    }


@pytest.mark.slow
def test_export_outputs_and_report(trained_repo: Path):
    out = trained_repo / "models/export"
    assert (out / "saved_model/saved_model.pb").is_file() and (out / "model.tflite").is_file()
    classes = json.loads((trained_repo / "data/split/classes.json").read_text())
    assert json.loads((out / "classes.json").read_text()) == classes
    report = json.loads((trained_repo / "reports/export.json").read_text())
    assert report["test_images"] == 4 and report["image_size"] == [TINY_HEIGHT, TINY_WIDTH]
    assert report["tolerance"] == 1e-4 and report["resize"] == "pad" and report["tta"] == "flip"
    assert (
        report["keras"]["size_bytes"]
        == (trained_repo / "models/finetune/model.keras").stat().st_size
    )
    assert report["tflite"]["size_bytes"] == (out / "model.tflite").stat().st_size
    assert report["saved_model"]["size_bytes"] == sum(
        f.stat().st_size for f in (out / "saved_model").rglob("*") if f.is_file()
    )
    for name in ("saved_model", "tflite"):
        assert 0 <= report[name]["max_abs_diff"] <= report["tolerance"]
        assert report[name]["argmax_agreement"] == 1.0
    assert "latency_ms_median" not in json.dumps(report)  # machine-dependent: not committed
    timing = json.loads((trained_repo / "logs/export/latency.json").read_text())
    for name in ("keras", "saved_model", "tflite"):
        assert 0 < timing[name]["latency_ms_median"] <= timing[name]["latency_ms_p90"]


def test_saved_model_export_is_byte_reproducible(tmp_path: Path):
    """The same model exported by two processes gives the same files: dvc.lock stays as it was.

    (Within one process TensorFlow numbers traced functions on, so two exports differ there.)
    """
    import keras

    from pipeline.models import save_model
    from tests.e2e import venv_env

    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(5, activation="relu"), keras.layers.Dense(3)]
    )
    save_model(model, tmp_path / "model.keras")
    code = (
        "import sys; from pathlib import Path; from pipeline.models import load_model; "
        "from pipeline.exporting import export_saved_model; "
        "export_saved_model(load_model(sys.argv[1]), Path(sys.argv[2]))"
    )
    for name in ("a", "b"):
        cmd = [sys.executable, "-c", code, str(tmp_path / "model.keras"), str(tmp_path / name)]
        subprocess.run(cmd, check=True, env=venv_env(), cwd=ROOT, capture_output=True)
    first = tmp_path / "a"
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert Path("fingerprint.pb") in files and Path("saved_model.pb") in files
    for f in files:
        assert (first / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


@pytest.mark.slow
def test_exports_reproduce_keras_predictions(trained_repo: Path):
    """Checked here independently of the stage: batched, straight through the TF APIs, on the
    original files padded to the tiny run's wide input; the exports average each image with its
    mirror in their own graph (``evaluate.tta: flip``)."""
    import tensorflow as tf

    from pipeline.data import load_split, make_dataset
    from pipeline.models import load_model

    test = load_split("test", trained_repo / "data/split", trained_repo / "data/raw")
    model = load_model(trained_repo / "models/finetune/model.keras")
    ds = make_dataset(test, (TINY_HEIGHT, TINY_WIDTH), 8, resize="pad")
    images = np.concatenate([x for x, _ in ds.as_numpy_iterator()])
    reference = (
        model.predict(images, verbose=0) + model.predict(images[:, :, ::-1], verbose=0)
    ) / 2

    saved = tf.saved_model.load(str(trained_repo / "models/export/saved_model"))
    signature = saved.signatures["serving_default"].structured_input_signature[1]
    assert [tuple(s.shape) for s in signature.values()] == [(None, TINY_HEIGHT, TINY_WIDTH, 3)]
    from_saved = saved.serve(tf.constant(images)).numpy()

    with warnings.catch_warnings():  # tf.lite.Interpreter announces its move to ai_edge_litert
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(
            model_path=str(trained_repo / "models/export/model.tflite")
        )
    inp = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(inp, list(images.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp, images)
    interpreter.invoke()
    from_tflite = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])

    for proba in (from_saved, from_tflite):
        assert proba.shape == reference.shape == (4, 4)
        np.testing.assert_allclose(proba, reference, atol=1e-4)
        assert (proba.argmax(1) == reference.argmax(1)).all()


@pytest.mark.slow
def test_failed_check_keeps_previous_exports(trained_repo: Path, monkeypatch):
    out, report = trained_repo / "models/export", trained_repo / "reports/export.json"
    before, report_before = _digest(out), report.read_text()
    real = exporting.tflite_predictor

    def drifting(path: Path) -> exporting.Predictor:
        predict = real(path)
        return lambda x: predict(x) + np.float32(0.01)

    monkeypatch.setattr(exporting, "tflite_predictor", drifting)
    with pytest.raises(PipelineError, match=r"tflite: max \|probability difference\| 0\.01"):
        export.main(
            [
                "--params",
                str(trained_repo / "params.yaml"),
                "--model",
                str(trained_repo / "models/finetune/model.keras"),
                "--split",
                str(trained_repo / "data/split"),
                "--prepared",
                str(trained_repo / "data/prepared"),
                "--out",
                str(out),
                "--report",
                str(report),
            ]
        )
    assert _digest(out) == before and report.read_text() == report_before
    assert not list(out.parent.glob(".export*"))
