"""Live training metrics: a small JSON file per phase, rewritten after every epoch.

``reports/live/<phase>.json`` holds the latest epoch of a running (or the last finished) phase:
``epoch`` (1-based, on the epoch axis shared by both phases), ``max_epoch`` (the last epoch the
phase may reach; EarlyStopping can end it sooner) and that epoch's ``loss``, ``accuracy``,
``val_loss`` and ``val_accuracy``; until the phase's first epoch ends, only ``max_epoch``.
The files are top-level ``metrics:`` in ``dvc.yaml``, so ``dvc exp show`` and
``dvc metrics show`` report a training run's progress while it runs, and its last epoch
afterwards. Each write replaces the whole file atomically: a reader never sees half of it.
"""

from __future__ import annotations

from pathlib import Path

import keras

from pipeline.utils import write_json

LIVE_DIR = Path("reports/live")
LIVE_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")


class LiveMetrics(keras.callbacks.Callback):
    """Keras callback that rewrites ``path`` with the latest epoch's metrics."""

    def __init__(self, path: str | Path, *, max_epoch: int) -> None:
        super().__init__()
        self.path = Path(path)
        self.max_epoch = max_epoch

    def on_train_begin(self, logs: dict | None = None) -> None:
        # Drop the previous run's numbers at once, so they are never read as this run's.
        write_json(self.path, {"max_epoch": self.max_epoch})

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        # Keras passes the 0-based epoch index, offset by ``initial_epoch``.
        data: dict[str, float | int] = {"epoch": epoch + 1, "max_epoch": self.max_epoch}
        for key in LIVE_KEYS:
            if logs and key in logs:
                data[key] = round(float(logs[key]), 6)
        write_json(self.path, data)
