"""The live-metrics callback: one JSON file rewritten after every epoch of a real ``fit``."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np

from pipeline.live import LiveMetrics


class _Snapshots(keras.callbacks.Callback):
    """Reads the live file when training starts and after every epoch (runs after LiveMetrics)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.seen: list[dict] = []

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.seen.append(json.loads(self.path.read_text()))

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seen.append(json.loads(self.path.read_text()))


def test_live_file_follows_every_epoch(tmp_path: Path):
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])

    path = tmp_path / "live" / "finetune.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"epoch": 99, "loss": 9.0}))  # a previous run's numbers
    snapshots = _Snapshots(path)
    hist = model.fit(
        x,
        y,
        validation_data=(x, y),
        initial_epoch=2,
        epochs=5,
        callbacks=[LiveMetrics(path, max_epoch=5), snapshots],
        verbose=0,
    )

    assert snapshots.seen[0] == {"max_epoch": 5}  # the old run's numbers are gone at once
    assert [s["epoch"] for s in snapshots.seen[1:]] == [3, 4, 5]  # the shared epoch axis
    for i, snap in enumerate(snapshots.seen[1:]):
        assert snap["max_epoch"] == 5
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert snap[key] == round(float(hist.history[key][i]), 6)
    assert json.loads(path.read_text()) == snapshots.seen[-1]
    assert sorted(p.name for p in path.parent.iterdir()) == ["finetune.json"]  # no temporaries
