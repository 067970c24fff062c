from __future__ import annotations

import numpy as np
from PIL import Image

from pipeline import plots


def _history():
    rows = []
    for epoch in range(1, 7):
        phase = "transfer" if epoch <= 3 else "finetune"
        rows.append(
            {
                "epoch": str(epoch),
                "phase": phase,
                "loss": 1 / epoch,
                "accuracy": 0.5 + epoch / 20,
                "val_loss": 1.2 / epoch,
                "val_accuracy": 0.45 + epoch / 20,
            }
        )
    return rows


def test_learning_curves_png(tmp_path):
    out = tmp_path / "fig" / "curves.png"
    plots.learning_curves(_history(), out)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 600
    assert not list(out.parent.glob(".tmp-*"))


def test_confusion_png(tmp_path):
    out = tmp_path / "cm.png"
    cm = np.array([[3, 1], [0, 4]])
    plots.confusion_matrices({"a": cm, "b": cm}, ["x", "y"], out)
    with Image.open(out) as im:
        assert im.format == "PNG"


def test_plots_are_reproducible(tmp_path):
    plots.learning_curves(_history(), tmp_path / "1.png")
    plots.learning_curves(_history(), tmp_path / "2.png")
    assert (tmp_path / "1.png").read_bytes() == (tmp_path / "2.png").read_bytes()
