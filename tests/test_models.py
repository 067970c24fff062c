from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from pipeline.architectures import ARCHITECTURES, KERAS_APPLICATIONS
from pipeline.models import (
    _renumber_shared_objects,
    build_base,
    build_classifier,
    compile_model,
    get_base,
    load_model,
    unfreeze_last,
    with_tta,
)


def _classifier(size=32, arch="mobilenet_v2", alpha=0.35):
    base = build_base(arch, alpha, size)
    return build_classifier(base, arch, size, 4, seed=1, dense_units=8)


@pytest.mark.parametrize("arch", sorted(KERAS_APPLICATIONS))
def test_layer_count_table_matches_keras(arch):
    # keras_hub: the preset decides (tests/test_keras_hub.py checks its table)
    assert set(KERAS_APPLICATIONS) == set(ARCHITECTURES) - {"keras_hub"}
    spec = ARCHITECTURES[arch]
    base = build_base(arch, spec.alphas[-1 if arch == "mobilenet_v2" else 0], 32)
    assert len(base.layers) == spec.layers


def test_classifier_structure_and_frozen_base():
    model = _classifier()
    names = [layer.name for layer in model.layers]
    assert names == [
        "image",
        "preprocessing",
        "base",
        "pool",
        "dropout_1",
        "dense",
        "dropout_2",
        "predictions",
    ]
    assert not get_base(model).trainable
    assert model.output_shape == (None, 4)
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in model._flatten_layers())
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    probs = model.predict(x, verbose=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_unfreeze_last_keeps_batchnorm_frozen():
    model = _classifier()
    base = get_base(model)
    n_with_weights = unfreeze_last(model, 12)
    tail, head = base.layers[-12:], base.layers[:-12]
    assert not any(layer.trainable for layer in head)
    for layer in tail:
        assert layer.trainable == (not isinstance(layer, keras.layers.BatchNormalization))
    assert n_with_weights == sum(1 for layer in tail if layer.trainable and layer.weights)
    with pytest.raises(ValueError, match="n_layers must be"):
        unfreeze_last(model, len(base.layers) + 1)


def test_batchnorm_statistics_do_not_move_while_finetuning():
    model = _classifier()
    unfreeze_last(model, 30)
    compile_model(model, 1e-3)
    bn = [
        layer
        for layer in get_base(model).layers[-30:]
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    before = [layer.moving_mean.numpy().copy() for layer in bn]
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (16, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 4, 16)
    trainable_before = [w.numpy().copy() for w in model.trainable_weights]
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    for layer, mean in zip(bn, before, strict=True):
        np.testing.assert_array_equal(layer.moving_mean.numpy(), mean)
    assert any(
        not np.array_equal(a, w.numpy())
        for a, w in zip(trainable_before, model.trainable_weights, strict=True)
    )


def test_classifier_holds_no_random_layer():
    """Augmentation is in the input pipeline: the model is deterministic at inference."""
    model = _classifier()
    kinds = {type(layer).__name__ for layer in model._flatten_layers()}
    assert not {k for k in kinds if k.startswith("Random")}
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(model(x, training=False), model(x, training=False))


def test_flip_averaging_is_the_mean_with_the_mirror_image_in_one_graph():
    """``evaluate.tta: flip`` (:func:`with_tta`) on a wide input: stock layers, no Lambda."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((32, 56, 3)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(4, 3),
            keras.layers.Flatten(),
            keras.layers.Dense(4, activation="softmax"),
        ]
    )
    x = np.random.default_rng(0).uniform(0, 255, (3, 32, 56, 3)).astype("float32")
    assert with_tta(model, "none") is model
    tta = with_tta(model, "flip")
    assert tta.input_shape == model.input_shape == (None, 32, 56, 3)
    kinds = {type(layer).__name__ for layer in tta._flatten_layers()}
    assert "Lambda" not in kinds and "Average" in kinds
    plain, mirrored = model.predict(x, verbose=0), model.predict(x[:, :, ::-1], verbose=0)
    assert np.abs(plain - mirrored).max() > 1e-4
    np.testing.assert_allclose(tta.predict(x, verbose=0), (plain + mirrored) / 2, atol=1e-6)
    with pytest.raises(ValueError, match="tta must be"):
        with_tta(model, "rotate")


def test_save_load_roundtrip_in_safe_mode(tmp_path):
    model = _classifier()
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = load_model(path)
    again = keras.saving.load_model(path)  # safe mode is Keras' default
    x = np.random.default_rng(1).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, atol=1e-6)
    np.testing.assert_allclose(again.predict(x, verbose=0), expected, atol=1e-6)


def test_preprocessing_maps_pixels_to_model_range():
    model = _classifier()
    pre = model.get_layer("preprocessing")
    out = pre(np.array([[[[0.0, 127.5, 255.0]]]], dtype="float32"))
    np.testing.assert_allclose(np.asarray(out), [[[[-1.0, 0.0, 1.0]]]], atol=1e-6)


def test_size_free_weights_load_at_any_size(tmp_path):
    base = build_base("mobilenet_v2", 0.35, None)
    path = tmp_path / "b.weights.h5"
    base.save_weights(path)
    for size in (32, 64):
        other = build_base("mobilenet_v2", 0.35, size, weights=path)
        np.testing.assert_array_equal(other.weights[0].numpy(), base.weights[0].numpy())


def test_linear_head_splits_at_the_features_and_loads_in_safe_mode(tmp_path):
    from pipeline.models import split_at_features

    base = build_base("mobilenet_v2", 0.35, 32)
    model = build_classifier(base, "mobilenet_v2", 32, 3, seed=1,
                             dense_units=0, dropout=0.2)  # fmt: skip
    names = [layer.name for layer in model.layers]
    assert names[-3:] == ["pool", "dropout_1", "predictions"] and "dense" not in names
    features, head = split_at_features(model)
    assert [layer.name for layer in head.layers][1:] == ["dropout_1", "predictions"]
    x = np.random.default_rng(2).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(head.predict(features.predict(x, verbose=0), verbose=0), expected,
                               atol=1e-6)  # fmt: skip
    model.save(tmp_path / "m.keras")
    np.testing.assert_allclose(load_model(tmp_path / "m.keras").predict(x, verbose=0), expected,
                               atol=1e-6)  # fmt: skip


def test_save_model_is_byte_reproducible_and_loads(tmp_path: Path):
    """Keras stamps the save time into a .keras file; save_model does not."""
    import time

    from pipeline.models import load_model, save_model

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    save_model(model, tmp_path / "a.keras")
    time.sleep(2.1)  # the zip format's time resolution is 2 s
    save_model(model, tmp_path / "b.keras")
    assert (tmp_path / "a.keras").read_bytes() == (tmp_path / "b.keras").read_bytes()
    again = load_model(tmp_path / "a.keras")
    x = np.ones((1, 4), "float32")
    np.testing.assert_array_equal(again.predict(x, verbose=0), model.predict(x, verbose=0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.keras", "b.keras"]


def test_shared_objects_are_numbered_by_appearance():
    config = {"a": {"shared_object_id": 140675901775568}, "b": [{"shared_object_id": 99}],
              "c": {"x": {"shared_object_id": 140675901775568}}}  # fmt: skip
    assert _renumber_shared_objects(config) == {
        "a": {"shared_object_id": 1},
        "b": [{"shared_object_id": 2}],
        "c": {"x": {"shared_object_id": 1}},
    }
