"""Classification metrics shared by the ``baseline`` and ``evaluate`` stages (scikit-learn)."""

from __future__ import annotations

import numpy as np


def classification_metrics(
    y_true: np.ndarray, proba: np.ndarray, classes: list[str]
) -> tuple[dict, np.ndarray]:
    """Metrics of ``proba`` (``(n, n_classes)``) against integer labels ``y_true`` (``(n,)``).

    Returns ``({accuracy, loss, macro_f1, per_class}, confusion matrix (n_classes, n_classes))``;
    loss is the mean categorical cross-entropy in nats.
    """
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        f1_score,
        precision_recall_fscore_support,
    )

    labels = list(range(len(classes)))
    y_pred = proba.argmax(axis=1)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    per_class = {
        c: {
            "precision": round(float(p[i]), 4),
            "recall": round(float(r[i]), 4),
            "f1": round(float(f[i]), 4),
            "support": int(s[i]),
        }
        for i, c in enumerate(classes)
    }
    metrics = {
        "accuracy": round(float(accuracy_score(y_true, y_pred)), 4),
        "loss": round(
            float(-np.mean(np.log(np.clip(proba[np.arange(len(y_true)), y_true], 1e-7, 1.0)))), 4
        ),
        "macro_f1": round(
            float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)), 4
        ),
        "per_class": per_class,
    }
    return metrics, confusion_matrix(y_true, y_pred, labels=labels)
