from __future__ import annotations

import numpy as np
import pytest

from pipeline.metrics import classification_metrics


def test_metrics_on_known_predictions():
    y = np.array([0, 0, 1, 1, 2, 2])
    proba = np.array(
        [
            [0.9, 0.05, 0.05],
            [0.2, 0.7, 0.1],  # second sample wrong
            [0.1, 0.8, 0.1],
            [0.1, 0.6, 0.3],
            [0.0, 0.0, 1.0],
            [0.3, 0.3, 0.4],
        ]
    )
    metrics, cm = classification_metrics(y, proba, ["a", "b", "c"])
    assert metrics["accuracy"] == pytest.approx(5 / 6, abs=1e-4)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 2]]
    assert metrics["per_class"]["a"] == {
        "precision": 1.0,
        "recall": 0.5,
        "f1": 0.6667,
        "support": 2,
    }
    assert metrics["per_class"]["b"]["precision"] == pytest.approx(0.6667, abs=1e-4)
    expected_f1 = (2 / 3 + 0.8 + 1.0) / 3
    assert metrics["macro_f1"] == pytest.approx(expected_f1, abs=1e-4)
    expected_loss = -np.mean(np.log(np.clip(proba[np.arange(6), y], 1e-7, 1)))
    assert metrics["loss"] == pytest.approx(expected_loss, abs=1e-4)


def test_absent_class_does_not_crash():
    metrics, cm = classification_metrics(
        np.array([0, 0]), np.array([[1.0, 0.0], [1.0, 0.0]]), ["a", "b"]
    )
    assert metrics["accuracy"] == 1.0 and metrics["per_class"]["b"]["support"] == 0
    assert cm.shape == (2, 2)
