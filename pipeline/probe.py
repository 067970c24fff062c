"""The linear probe: a logistic regression on the frozen base's pooled features.

:func:`fit_probe` standardises the features and picks ``C`` on val from :data:`C_GRID`;
:func:`probe_report` is the content of ``reports/baseline.json``; :func:`linear_head` turns the
probe into the weights of a softmax layer (the head's start with ``transfer.head_init: probe``).
The ``baseline`` stage (:mod:`pipeline.stages.baseline`) runs it.
"""

from __future__ import annotations

import numpy as np

from pipeline.metrics import classification_metrics

# Inverse regularisation strengths tried; the best val accuracy wins (ties: the smaller C).
C_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)


def fit_probe(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    seed: int,
    grid: tuple[float, ...] = C_GRID,
) -> tuple[object, float, dict[float, float]]:
    """Fit standardised logistic regressions on ``(n, d)`` features; pick ``C`` by val accuracy.

    Returns ``(the fitted pipeline of the chosen C, C, {C: val accuracy})``. Ties go to the
    smaller ``C`` (the stronger regularisation). BLAS runs on one thread: on these small
    matrices OpenBLAS' threads only wait on each other, and on a busy 2-core machine they made
    the grid 10x slower (measured: 5.9 s against 0.5 s for one fit of 700 x 1280 features).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    scores: dict[float, float] = {}
    best = None
    for c in grid:
        probe = make_pipeline(
            StandardScaler(), LogisticRegression(C=c, max_iter=3000, random_state=seed)
        )
        with threadpool_limits(limits=1, user_api="blas"):
            probe.fit(x_train, y_train)
        scores[c] = round(float((probe.predict(x_val) == y_val).mean()), 4)
        if best is None or scores[c] > scores[best[0]]:
            best = (c, probe)
    assert best is not None
    return best[1], best[0], scores


def probabilities(probe: object, x: np.ndarray, n_classes: int) -> np.ndarray:
    """``(n, n_classes)`` probabilities; classes absent from the train split get 0."""
    proba = np.zeros((len(x), n_classes))
    proba[:, probe.classes_] = probe.predict_proba(x)
    return proba


def linear_head(probe: object, n_classes: int) -> dict[str, np.ndarray]:
    """The probe as a softmax layer on raw features: ``{"kernel": (d, k), "bias": (k,)}``.

    The standardisation is folded into the weights (``w / scale``, ``b - w . mean / scale``),
    so ``softmax(x @ kernel + bias)`` gives the probe's probabilities for ``(n, d)`` features.
    Classes absent from the train split get a zero kernel and a bias of -30.
    """
    scaler, lr = probe.named_steps["standardscaler"], probe.named_steps["logisticregression"]
    coef = np.asarray(lr.coef_, np.float64)
    intercept = np.asarray(lr.intercept_, np.float64)
    if coef.shape[0] == 1:  # binary: scikit-learn keeps one row, for the second class
        coef, intercept = np.vstack([-coef / 2, coef / 2]), np.array([-1, 1]) * intercept / 2
    scale = np.where(scaler.scale_ == 0, 1.0, scaler.scale_)
    kernel = np.zeros((coef.shape[1], n_classes))
    bias = np.full(n_classes, -30.0)
    kernel[:, lr.classes_] = (coef / scale).T
    bias[lr.classes_] = intercept - (coef / scale) @ scaler.mean_
    return {"kernel": kernel.astype(np.float32), "bias": bias.astype(np.float32)}


def probe_report(
    probe: object,
    c: float,
    scores: dict[float, float],
    x: dict[str, np.ndarray],
    y: dict[str, np.ndarray],
    classes: list[str],
) -> dict:
    """The content of ``reports/baseline.json``: the chosen ``C``, val accuracy for each ``C``
    tried, and accuracy, macro F1 and loss on val and test (no wall times: this file is a
    committed result, the same on every machine)."""
    result: dict = {
        "model": "logistic regression on standardised pooled base features",
        "C": c,
        "val_accuracy_by_C": {f"{k:g}": v for k, v in scores.items()},
        "features": int(x["train"].shape[1]),
    }
    for name in ("val", "test"):
        metrics, _ = classification_metrics(
            y[name], probabilities(probe, x[name], len(classes)), classes
        )
        result[name] = {k: metrics[k] for k in ("accuracy", "macro_f1", "loss")}
    return result
