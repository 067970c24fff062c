"""The linear-probe baseline: C chosen on val, the stored features, its place in the metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline import features as feats
from pipeline.probe import C_GRID, fit_probe, linear_head, probabilities
from tests.conftest import tiny_params_dict


def _blobs(rng: np.random.Generator, n: int, spread: float) -> tuple[np.ndarray, np.ndarray]:
    """Three Gaussian classes in 20 dimensions, ``n`` points each."""
    centres = rng.normal(size=(3, 20)) * 3
    y = np.repeat(np.arange(3), n)
    return centres[y] + rng.normal(scale=spread, size=(3 * n, 20)), y


def test_probe_picks_c_on_val_and_separates_easy_classes():
    rng = np.random.default_rng(0)
    x_train, y_train = _blobs(rng, 40, 1.0)
    x_val, y_val = x_train + rng.normal(scale=0.1, size=x_train.shape), y_train
    probe, c, scores = fit_probe(x_train, y_train, x_val, y_val, seed=0)
    assert list(scores) == list(C_GRID)
    assert scores[c] == max(scores.values()) == 1.0
    assert c == min(k for k, v in scores.items() if v == 1.0)  # ties: the smaller C
    assert (probe.predict(x_val) == y_val).all()  # the returned probe is the chosen one


def test_probe_regularises_when_val_says_so():
    rng = np.random.default_rng(1)
    # 30 informative-looking but random dimensions: strong regularisation generalises best
    x_train, y_train = rng.normal(size=(60, 30)), np.arange(60) % 2
    x_val, y_val = rng.normal(size=(200, 30)), np.arange(200) % 2
    x_train[:, 0] += y_train * 1.5
    x_val[:, 0] += y_val * 1.5
    _, c, scores = fit_probe(x_train, y_train, x_val, y_val, seed=0)
    assert scores[c] >= scores[max(C_GRID)]
    assert c < max(C_GRID)


def test_probabilities_give_zero_to_classes_the_train_split_lacks():
    x, y = np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([0, 0, 2, 2])
    probe, _, _ = fit_probe(x, y, x, y, seed=0, grid=(1.0,))
    proba = probabilities(probe, x, 3)
    assert proba.shape == (4, 3)
    np.testing.assert_allclose(proba.sum(1), 1.0)
    assert (proba[:, 1] == 0).all()


@pytest.mark.parametrize("labels", [(0, 1, 2), (0, 2), (1, 2)])
def test_probe_as_a_softmax_layer_gives_its_probabilities(labels):
    rng = np.random.default_rng(3)
    x, y = _blobs(rng, 30, 2.0)
    keep = np.isin(y, labels)  # a class may be missing from the train split
    probe, _, _ = fit_probe(x[keep], y[keep], x, y, seed=0, grid=(0.1,))
    head = linear_head(probe, 3)
    assert head["kernel"].shape == (20, 3) and head["bias"].shape == (3,)
    logits = x @ head["kernel"].astype(np.float64) + head["bias"]
    proba = np.exp(logits - logits.max(1, keepdims=True))
    proba /= proba.sum(1, keepdims=True)
    np.testing.assert_allclose(proba, probabilities(probe, x, 3), atol=1e-5)


def test_stored_features_are_used_only_for_their_inputs(tmp_path: Path):
    from pipeline.params import parse_params

    split, weights = tmp_path / "split", tmp_path / "base.weights.h5"
    split.mkdir()
    for name in feats.SPLITS:
        (split / f"{name}.csv").write_text(f"path,label\n{name}/a.jpg,a\n")
    weights.write_bytes(b"weights v1")
    params = parse_params(tiny_params_dict())
    spec = feats.spec(params, weights, split)
    x = {n: np.full((1, 4), i, np.float32) for i, n in enumerate(feats.SPLITS)}
    feats.save(x, spec, tmp_path / "features")
    got = feats.load(spec, ("train", "val"), tmp_path / "features")
    assert got is not None and set(got) == {"train", "val"}
    np.testing.assert_array_equal(got["val"], x["val"])
    weights.write_bytes(b"weights v2")  # another base: the stored features do not apply
    assert feats.load(feats.spec(params, weights, split), ("train",), tmp_path / "features") is None
    bigger = parse_params(tiny_params_dict(data={"image_size": 64}))
    assert feats.spec(bigger, weights, split)["image_size"] == [64, 64]
    assert feats.load(spec, ("train",), tmp_path / "missing") is None


@pytest.mark.slow
def test_baseline_stage_outputs_and_metrics(trained_repo: Path):
    result = json.loads((trained_repo / "reports/baseline.json").read_text())
    assert result["C"] in C_GRID and set(result["val_accuracy_by_C"]) == {f"{c:g}" for c in C_GRID}
    metrics = json.loads((trained_repo / "reports/metrics.json").read_text())
    assert metrics["baseline"] == {
        **result["test"],
        "val_accuracy": result["val"]["accuracy"],
        "val_macro_f1": result["val"]["macro_f1"],
        "C": result["C"],
    }
    for phase in ("transfer", "finetune"):
        assert 0 <= metrics[phase]["val_accuracy"] <= 1 and "val_macro_f1" in metrics[phase]
        below = metrics[phase]["accuracy"] <= metrics["baseline"]["accuracy"]
        assert metrics["diagnosis"][phase]["below_baseline"] == below
        assert metrics["diagnosis"][phase]["probe_test_accuracy"] == result["test"]["accuracy"]
    info = json.loads((trained_repo / "data/features/features.json").read_text())
    for name in feats.SPLITS:
        rows = (trained_repo / f"data/split/{name}.csv").read_text().count("\n") - 1
        x = np.load(trained_repo / f"data/features/{name}.npy")
        assert x.shape == (rows, result["features"]) and x.dtype == np.float32
        assert np.isfinite(x).all()
    assert info["image_size"] == [32, 56] and set(info["splits"]) == set(feats.SPLITS)
