"""DVCLive across both phases: one run, one step axis, although each phase is its own process."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import keras
import numpy as np
import pytest

from pipeline.training import live_callback, open_live
from pipeline.utils import PipelineError


def _tsv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def _fit(model: keras.Model, live: object, initial_epoch: int, epochs: int) -> dict:
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    return model.fit(
        x,
        y,
        validation_data=(x, y),
        initial_epoch=initial_epoch,
        epochs=epochs,
        callbacks=[live_callback(live)],
        verbose=0,
    ).history


def test_finetune_continues_the_transfer_run_on_one_step_axis(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no git or DVC repo around: DVCLive must not need one
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])

    first, run = tmp_path / "live" / "transfer", tmp_path / "live" / "training"
    run.mkdir(parents=True)
    (run / "stale.tsv").write_text("a previous run\n")  # replaced, not mixed in
    transfer = _fit(model, open_live(first, first_step=0), 0, 3)
    finetune = _fit(model, open_live(run, first_step=3, resume_from=first), 3, 5)

    # the transfer folder holds its phase; the run folder both, steps 0..4 (Keras's epoch index)
    for folder, steps, history in ((first, [0, 1, 2], transfer), (run, [0, 1, 2, 3, 4], None)):
        rows = _tsv(folder / "plots/metrics/eval/accuracy.tsv")
        assert [int(r["step"]) for r in rows] == steps
        if history is not None:
            assert [float(r["accuracy"]) for r in rows] == pytest.approx(history["val_accuracy"])
    losses = [float(r["loss"]) for r in _tsv(run / "plots/metrics/train/loss.tsv")]
    assert losses == pytest.approx(transfer["loss"] + finetune["loss"])
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["step"] == 4
    assert summary["eval"]["accuracy"] == pytest.approx(finetune["val_accuracy"][-1])
    # no dvc.yaml, report or experiment of DVCLive's own; nothing else written
    assert not list(tmp_path.rglob("dvc.yaml")) and not list(tmp_path.rglob("report.*"))
    assert not (run / "stale.tsv").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live"]


def test_resuming_needs_the_earlier_phase(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PipelineError, match="run the transfer stage first"):
        open_live(tmp_path / "training", first_step=3, resume_from=tmp_path / "missing")
