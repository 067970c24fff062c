"""Evaluation: test and val metrics of the trained models, their predictions, the fit diagnosis.

:func:`evaluate_model` scores one phase's model; :func:`baseline_metrics` reads the linear
probe's figures; :func:`prediction_rows` and :func:`confusion_rows` are the per-image tables;
:func:`diagnose` runs the fit diagnosis (:mod:`pipeline.diagnosis`) of both phases;
:func:`headline` picks the numbers a run is judged by. The ``evaluate`` stage
(:mod:`pipeline.stages.evaluate`) runs them and writes the reports.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline import diagnosis
from pipeline.metrics import classification_metrics
from pipeline.params import Params

PHASES = ("transfer", "finetune")


def headline(metrics: dict) -> dict:
    """The few numbers a run is judged by, from the full ``reports/metrics.json`` content.

    Test accuracy of the linear-probe baseline and of both phases; macro F1, val accuracy and
    the fit verdict of the fine-tuned model. Everything else stays in ``metrics.json``.
    """
    tuned = metrics["finetune"]
    return {
        "baseline": {"accuracy": metrics["baseline"]["accuracy"]},
        "transfer": {"accuracy": metrics["transfer"]["accuracy"]},
        "finetune": {
            "accuracy": tuned["accuracy"],
            "macro_f1": tuned["macro_f1"],
            "val_accuracy": tuned["val_accuracy"],
            "verdict": metrics["diagnosis"]["finetune"]["verdict"],
        },
    }


def baseline_metrics(probe: dict) -> dict:
    """The ``baseline`` section of ``reports/metrics.json`` from ``reports/baseline.json``."""
    return {
        **probe["test"],
        **{f"val_{k}": v for k, v in probe["val"].items() if k != "loss"},
        "C": probe["C"],
    }


def predict_proba(model: Any, split: Any, flip: bool = False) -> dict[str, np.ndarray]:
    """``model``'s ``(n, n_classes)`` probabilities for ``split``'s images: ``{"none": ...}``,
    and with ``flip`` also ``{"flip": ...}``, the mean with those of the mirror images (what
    :func:`pipeline.models.with_tta` computes in one graph)."""
    import tensorflow as tf

    from pipeline.data import make_dataset
    from pipeline.models import input_hw

    ds = make_dataset(split, input_hw(model), 64)
    plain = model.predict(ds, verbose=0)
    if not flip:
        return {"none": plain}
    mirrored = model.predict(ds.map(lambda x, y: (tf.reverse(x, axis=[2]), y)), verbose=0)
    return {"none": plain, "flip": (plain + mirrored) / 2}


def evaluate_model(
    model: Any, test: Any, val: Any, tta: str = "none", both: bool = False
) -> tuple[dict, np.ndarray, np.ndarray]:
    """Metrics of ``model`` on the ``test`` split (with val accuracy and macro F1 on ``val``),
    its confusion matrix and its test probabilities, with test-time augmentation ``tta``.

    ``both``: also score the other ``tta`` (``none`` and ``flip``); their accuracy and macro F1
    on test and val go to the metrics' ``tta`` section.
    """
    flip = tta == "flip" or both
    on_test, on_val = predict_proba(model, test, flip), predict_proba(model, val, flip)
    scores = {}
    for way in on_test:
        t, _ = classification_metrics(np.asarray(test.labels), on_test[way], test.classes)
        v, _ = classification_metrics(np.asarray(val.labels), on_val[way], val.classes)
        scores[way] = {
            "accuracy": t["accuracy"],
            "macro_f1": t["macro_f1"],
            "val_accuracy": v["accuracy"],
            "val_macro_f1": v["macro_f1"],
        }
    metrics, matrix = classification_metrics(np.asarray(test.labels), on_test[tta], test.classes)
    metrics.update(
        val_accuracy=scores[tta]["val_accuracy"], val_macro_f1=scores[tta]["val_macro_f1"]
    )
    if both:
        metrics["tta"] = scores
    return metrics, matrix, on_test[tta]


def confusion_rows(test: Any, proba: np.ndarray) -> list[list[str]]:
    """``[actual, predicted]`` class names of each test image (DVC's confusion template)."""
    return [
        [test.classes[a], test.classes[b]]
        for a, b in zip(np.asarray(test.labels), proba.argmax(1), strict=True)
    ]


PREDICTION_COLUMNS = [
    "path",
    "actual",
    "transfer",
    "transfer_confidence",
    "finetune",
    "finetune_confidence",
]


def prediction_rows(test: Any, preds: dict[str, np.ndarray]) -> list[list[Any]]:
    """One row per test image (:data:`PREDICTION_COLUMNS`): each phase's class and confidence."""
    return [
        [
            name,
            test.classes[y],
        ]
        + [
            x
            for ph in PHASES
            for x in (
                test.classes[int(preds[ph][i].argmax())],
                round(float(preds[ph][i].max()), 4),
            )
        ]
        for i, (name, y) in enumerate(zip(test.names, np.asarray(test.labels), strict=True))
    ]


def diagnose(
    histories: dict[str, list[dict]],
    stopped_early: dict[str, bool],
    train_labels: list[int],
    metrics: dict,
    params: Params,
) -> list[diagnosis.Diagnosis]:
    """The fit diagnosis of each phase, compared with the linear probe."""
    baseline = diagnosis.majority_baseline(train_labels)
    return [
        diagnosis.compare_to_probe(
            diagnosis.diagnose_phase(
                histories[ph],
                phase=ph,
                stopped_early=stopped_early[ph],
                baseline=baseline,
                params=params,
                test_accuracy=metrics[ph]["accuracy"],
            ),
            metrics["baseline"]["accuracy"],
            params,
        )
        for ph in PHASES
    ]
