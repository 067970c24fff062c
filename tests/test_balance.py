"""Class weights (``train.class_weight``): the values, their effect on training in both training
loops, and both phases' stages using them."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml
from sklearn.utils.class_weight import compute_class_weight

from pipeline.balance import class_weights, describe, weights_from_counts
from pipeline.training import fit_distributed, fit_phase
from pipeline.utils import PipelineError, read_csv, read_json


def test_balanced_weights_are_scikit_learns():
    labels = [0] * 1930 + [1] * 780 + [2] * 55
    want = compute_class_weight("balanced", classes=np.arange(3), y=np.asarray(labels))
    got = class_weights(labels, 3, "balanced")
    assert list(got) == [0, 1, 2]
    np.testing.assert_allclose(list(got.values()), want, rtol=1e-12)
    # the mean weight over the images is 1: the loss keeps its scale
    assert np.mean([got[y] for y in labels]) == pytest.approx(1.0)
    assert class_weights(labels, 3, "none") is None
    assert weights_from_counts([1930, 780, 55], "balanced") == got
    assert class_weights([0, 1, 0, 1], 2, "balanced") == {0: 1.0, 1: 1.0}


def test_bad_class_weight_inputs_are_refused():
    with pytest.raises(PipelineError, match=r"class index\(es\) \[1\] have no train image"):
        class_weights([0, 0, 2], 3, "balanced")
    with pytest.raises(PipelineError, match="choose one of none, balanced"):
        class_weights([0, 1], 2, "inverse")
    with pytest.raises(PipelineError, match=r"labels must lie in 0\.\.1"):
        class_weights([0, 2], 2, "balanced")


def test_describe():
    assert describe(None, ["a", "b"]).startswith("none")
    assert describe({0: 0.75, 1: 1.5}, ["a", "b"]) == "balanced: `a` 0.7500, `b` 1.5000"


def _imbalanced(n: int = 60, seed: int = 0) -> tuple[tf.data.Dataset, tf.data.Dataset, list]:
    """Features (4,), 3 classes of about 65%, 25% and 10% of the images; batches of 8."""
    rng = np.random.default_rng(seed)
    y = rng.choice(3, size=n, p=[0.65, 0.25, 0.1]).astype("int32")
    x = (rng.normal(size=(n, 4)) + np.eye(4)[y] * 1.5).astype("float32")
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)  # last batch short (4)
    return train, tf.data.Dataset.from_tensor_slices((x[:16], y[:16])).batch(8), y.tolist()


def _model() -> keras.Model:
    from pipeline.models import compile_model

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, "relu"), keras.layers.Dense(3, "softmax")]
    )
    compile_model(model, 0.05)
    return model


def test_weights_change_training_and_both_loops_apply_them_alike(tmp_path, monkeypatch):
    """fit_phase (Model.fit) and the strategy.run loop of multi-worker runs: same weighted
    history and weights; unweighted training ends elsewhere."""
    monkeypatch.chdir(tmp_path)  # fit_phase writes reports/live/transfer.json
    train, val, y = _imbalanced()
    weights = class_weights(y, 3, "balanced")
    assert max(weights.values()) > 2 * min(weights.values())
    fitted = _model()
    rows, _ = fit_phase(
        fitted, train, val, phase="transfer", epochs=3, initial_epoch=0, patience=3,
        work_dir=tmp_path, log_dir=tmp_path / "logs", class_weight=weights,
    )  # fmt: skip
    looped = _model()
    hist = fit_distributed(
        looped, tf.distribute.get_strategy(), train, val, epochs=3, verbose=0,
        class_weight=weights,
    ).history  # fmt: skip
    for col, key in enumerate(("loss", "accuracy", "val_loss", "val_accuracy"), start=2):
        np.testing.assert_allclose(hist[key], [r[col] for r in rows], atol=1e-5, err_msg=key)
    for a, b in zip(looped.get_weights(), fitted.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    plain = _model()
    unweighted = fit_distributed(plain, tf.distribute.get_strategy(), train, val, epochs=3,
                                 verbose=0).history  # fmt: skip
    assert abs(unweighted["loss"][0] - hist["loss"][0]) > 1e-3
    assert not np.allclose(plain.get_weights()[-1], fitted.get_weights()[-1], atol=1e-3)
    # the validation figures are never weighted: with equal weights they are the unweighted ones
    ones = fit_distributed(_model(), tf.distribute.get_strategy(), train, val, epochs=1,
                           verbose=0, class_weight={0: 1.0, 1: 1.0, 2: 1.0}).history  # fmt: skip
    assert ones["val_loss"][0] == pytest.approx(unweighted["val_loss"][0], abs=1e-6)


@pytest.mark.slow
def test_finetune_stage_trains_with_the_train_splits_class_weights(
    trained_repo: Path, tmp_path: Path, monkeypatch
):
    """The fine-tune stage of the tiny pipeline, one epoch, on a train split made imbalanced (3
    images of one class, 9 of each other) trains with, and records, that split's balanced
    weights. (The transfer stage does so in tests/test_distribute_e2e.py, in both loops.)"""
    from pipeline.card import class_counts
    from pipeline.stages import finetune, prepare

    work = tmp_path / "work"
    inputs = ("params.yaml", "data/raw", "data/split", "models/transfer", "reports/live/transfer")
    for name in inputs:
        src, dst = trained_repo / name, work / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["train"]["class_weight"] = "balanced"
    params["finetune"]["epochs"] = 1
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    rows = read_csv(work / "data/split/train.csv")
    first = rows[0]["label"]
    kept = [r for r in rows if r["label"] != first] + [r for r in rows if r["label"] == first][:3]
    lines = ["path,label", *(f"{r['path']},{r['label']}" for r in kept)]
    (work / "data/split/train.csv").write_text("\n".join(lines) + "\n")
    monkeypatch.chdir(work)
    prepare.main([])
    classes, counts = class_counts(Path("data/split"))
    expected = weights_from_counts([counts["train"][c] for c in classes], "balanced")
    assert Counter(counts["train"].values()) == Counter({3: 1, 9: 3})
    finetune.main([])
    state = read_json("models/finetune/state.json")
    assert state["class_weight"] == {c: expected[i] for i, c in enumerate(classes)}
    assert state["class_weight"][first] == pytest.approx(30 / (4 * 3))  # 30 images, 4 classes
    assert len(read_csv("reports/history/finetune.csv")) == 1
