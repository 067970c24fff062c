"""Class weights of the training loss (``train.class_weight``), used by both training phases.

``none``: every training image counts the same. ``balanced``: scikit-learn's
``compute_class_weight("balanced")``, ``n / (k * n_c)`` for class ``c``: every class then weighs
as much in the loss as a class of ``n / k`` images would. The weights come from the train split
only; validation and test figures are never weighted.

No TensorFlow here: the ``model_card`` stage computes the same values from the manifests.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.utils import PipelineError

MODES = ("none", "balanced")


def class_weights(labels: Sequence[int], n_classes: int, mode: str) -> dict[int, float] | None:
    """Weight of each class index ``0..n_classes-1`` for ``Model.fit(class_weight=...)``.

    ``labels``: the train split's integer labels, ``(n,)``. Returns ``None`` for ``none`` (no
    weighting), else ``{class index: weight}`` (dimensionless; the weights' mean over the
    images is 1). Raises :class:`PipelineError` when a class has no train image.
    """
    y = np.asarray(labels, dtype=np.int64)
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise PipelineError(f"labels must lie in 0..{n_classes - 1}, got {y.min()}..{y.max()}")
    return weights_from_counts(np.bincount(y, minlength=n_classes).tolist(), mode)


def weights_from_counts(counts: Sequence[int], mode: str) -> dict[int, float] | None:
    """:func:`class_weights` from the train images per class (``counts[c]``, class order)."""
    if mode not in MODES:
        raise PipelineError(
            f"train.class_weight = {mode!r} is not supported: choose one of {', '.join(MODES)}"
        )
    if mode == "none":
        return None
    empty = [c for c, n in enumerate(counts) if n <= 0]
    if empty:
        raise PipelineError(
            f"train.class_weight is 'balanced' but class index(es) {empty} have no train image: "
            "re-run the split stage (dvc repro split) or set train.class_weight: none"
        )
    from sklearn.utils.class_weight import compute_class_weight

    classes = np.arange(len(counts))
    weights = compute_class_weight("balanced", classes=classes, y=np.repeat(classes, counts))
    return {int(c): float(w) for c, w in enumerate(weights)}


def by_name(weights: dict[int, float] | None, classes: Sequence[str]) -> dict[str, float] | None:
    """``{class name: weight}`` for ``state.json``; ``None`` when there is no weighting."""
    return None if weights is None else {classes[i]: w for i, w in weights.items()}


def describe(weights: dict[int, float] | None, classes: Sequence[str]) -> str:
    """One line for logs and the model card: ``none`` or each class's weight (4 decimals)."""
    if weights is None:
        return "none (every training image counts the same)"
    shown = ", ".join(f"`{name}` {weights[i]:.4f}" for i, name in enumerate(classes))
    return f"balanced: {shown}"
