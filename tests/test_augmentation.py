"""Augmentation in the input pipeline: what each param does, seeding, and training only."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipeline.data import augment_batch, augment_images, load_split, make_dataset
from pipeline.params import AugmentationParams, TransferParams
from pipeline.stages.split import main as split_main

OFF = {"flip": False, "rotation": 0, "zoom": 0, "translation": 0, "contrast": 0, "brightness": 0}


def _aug(**on: object) -> AugmentationParams:
    return AugmentationParams(**{**OFF, **on})


def _smooth(n: int = 4, size: int = 24) -> np.ndarray:
    """``(n, size, size, 3)`` float32 images of smooth gradients (bilinear resampling of them is
    nearly exact), different per image and channel."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1)
    imgs = [
        np.stack([200 * xx + 20 * i, 150 * yy + 30, 100 * xx * yy + 10 * i], -1) for i in range(n)
    ]
    return np.stack(imgs).astype(np.float32)


def _draws(n: int, **columns: float) -> tf.Tensor:
    """``(n, 7)`` draws of :func:`augment_images`: 0.5 (no change) except ``columns``."""
    names = ("flip", "angle", "zoom", "shift_x", "shift_y", "contrast", "brightness")
    row = [columns.get(name, 0.5) for name in names]
    return tf.constant([row] * n, tf.float32)


def test_disabled_factors_leave_images_untouched():
    x = np.random.default_rng(0).integers(0, 256, (5, 16, 16, 3)).astype(np.uint8)
    out = augment_batch(tf.constant(x), _aug(), tf.constant([1, 2]))
    assert out.dtype == tf.float32
    np.testing.assert_array_equal(out.numpy(), x.astype(np.float32))


def test_flip_mirrors_about_half_of_the_images():
    x = np.random.default_rng(1).integers(0, 256, (64, 8, 8, 3)).astype(np.uint8)
    out = augment_batch(tf.constant(x), _aug(flip=True), tf.constant([3, 4])).numpy()
    mirrored = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, x, strict=True)]
    kept = [np.array_equal(o, i) for o, i in zip(out, x, strict=True)]
    assert all(m or k for m, k in zip(mirrored, kept, strict=True))
    assert 16 < sum(mirrored) < 48


def test_flip_inside_the_affine_transform_mirrors_exactly():
    x = _smooth()
    cfg = _aug(flip=True, rotation=0.1, interpolation="bilinear")  # flip inside the resampling
    mirrored = augment_images(tf.constant(x), cfg, _draws(4, flip=0.2)).numpy()
    kept = augment_images(tf.constant(x), cfg, _draws(4, flip=0.8)).numpy()
    np.testing.assert_allclose(mirrored, x[:, :, ::-1], atol=1e-3)
    np.testing.assert_allclose(kept, x, atol=1e-3)


@pytest.mark.parametrize(
    ("param", "column", "layer"),
    [
        ("rotation", "angle", keras.layers.RandomRotation((0.05, 0.05), fill_mode="reflect")),
        ("zoom", "zoom", keras.layers.RandomZoom((0.1, 0.1), fill_mode="reflect")),
        (
            "translation",
            "shift",
            keras.layers.RandomTranslation((0.05, 0.05), (0.05, 0.05), fill_mode="reflect"),
        ),
    ],
)
def test_geometric_factors_mean_what_keras_layers_mean(param, column, layer):
    """At the top of its range (draw 1), each factor transforms like the Keras layer of the
    same factor: rotation a fraction of a full turn, zoom and shift fractions of the size."""
    x = _smooth()
    value = {"rotation": 0.05, "zoom": 0.1, "translation": 0.05}[param]
    cols = {"shift_x": 1.0, "shift_y": 1.0} if column == "shift" else {column: 1.0}
    cfg = _aug(**{param: value}, interpolation="bilinear")
    ours = augment_images(tf.constant(x), cfg, _draws(4, **cols)).numpy()
    theirs = np.asarray(layer(x, training=True))
    assert np.abs(ours - x).max() > 5  # it did change the images
    np.testing.assert_allclose(ours, theirs, atol=1e-2)


def test_one_combined_transform_matches_keras_layers_in_sequence():
    x = _smooth(size=32)
    cfg = _aug(rotation=0.05, zoom=0.1, translation=0.05, interpolation="bilinear")
    ours = augment_images(tf.constant(x), cfg, _draws(4, angle=1.0, zoom=0.0, shift_x=1.0))
    keras_seq = keras.Sequential(
        [
            keras.layers.RandomRotation((0.05, 0.05), fill_mode="reflect"),
            keras.layers.RandomZoom((-0.1, -0.1), fill_mode="reflect"),
            keras.layers.RandomTranslation((0.0, 0.0), (0.05, 0.05), fill_mode="reflect"),
        ]
    )
    theirs = np.asarray(keras_seq(x, training=True))
    inner = slice(8, 24)  # away from the borders, where one reflection differs from three
    np.testing.assert_allclose(ours.numpy()[:, inner, inner], theirs[:, inner, inner], atol=1.0)


def test_nearest_resampling_moves_pixels_without_blending():
    x = np.random.default_rng(3).integers(0, 256, (4, 16, 16, 3)).astype(np.uint8)
    cfg = _aug(rotation=0.05, zoom=0.1)  # interpolation: nearest, the default
    out = augment_images(tf.constant(x), cfg, _draws(4, angle=0.9, zoom=0.2)).numpy()
    assert not np.array_equal(out, x.astype(np.float32))
    for o, i in zip(out, x, strict=True):  # every output pixel is one of the image's pixels
        assert {tuple(p) for p in o.reshape(-1, 3)} <= {tuple(p) for p in i.reshape(-1, 3)}


def test_contrast_and_brightness_are_arithmetic_on_each_image():
    x = _smooth()
    mean = x.mean(axis=(1, 2), keepdims=True)
    contrast = augment_images(tf.constant(x), _aug(contrast=0.2), _draws(4, contrast=1.0))
    np.testing.assert_allclose(contrast, np.clip((x - mean) * 1.2 + mean, 0, 255), atol=1e-3)
    darker = augment_images(tf.constant(x), _aug(brightness=0.1), _draws(4, brightness=0.0))
    np.testing.assert_allclose(darker, np.clip(x - 25.5, 0, 255), atol=1e-3)
    both = augment_images(
        tf.constant(x), _aug(contrast=0.2, brightness=0.1), _draws(4, contrast=0.0, brightness=1.0)
    )
    np.testing.assert_allclose(both, np.clip((x - mean) * 0.8 + mean + 25.5, 0, 255), atol=1e-3)


def test_augmentation_is_seeded_and_new_every_epoch():
    x = np.random.default_rng(2).integers(0, 256, (6, 16, 16, 3)).astype(np.uint8)
    cfg = AugmentationParams()  # all six on
    a = augment_batch(tf.constant(x), cfg, tf.constant([5, 6])).numpy()
    b = augment_batch(tf.constant(x), cfg, tf.constant([5, 6])).numpy()
    c = augment_batch(tf.constant(x), cfg, tf.constant([5, 7])).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.min() >= 0 and a.max() <= 255


@pytest.fixture
def train_val(sample_dataset: Path, tmp_path: Path, monkeypatch):
    (tmp_path / "params.yaml").write_text("seed: 1\n")
    monkeypatch.chdir(tmp_path)
    split_main(["--data", str(sample_dataset), "--out", str(tmp_path / "split")])
    return (load_split(n, tmp_path / "split", sample_dataset) for n in ("train", "val"))


def _epochs(ds: tf.data.Dataset, n: int = 2) -> list[np.ndarray]:
    return [np.concatenate([x for x, _ in ds.as_numpy_iterator()]) for _ in range(n)]


def test_datasets_augment_the_train_split_only_and_only_when_enabled(train_val, monkeypatch):
    import pipeline.training as training

    train, val = train_val
    cfg = AugmentationParams()
    plain = _epochs(make_dataset(train, 24, 8, shuffle=True, seed=3), 1)[0]
    run1 = _epochs(make_dataset(train, 24, 8, shuffle=True, seed=3, augment=cfg))
    run2 = _epochs(make_dataset(train, 24, 8, shuffle=True, seed=3, augment=cfg))
    for a, b in zip(run1, run2, strict=True):  # the same seed, the same epochs
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(run1[0], run1[1])  # new draws every epoch
    assert not np.array_equal(run1[0], plain)
    off = _epochs(make_dataset(train, 24, 8, shuffle=True, seed=3, augment=_aug()), 1)[0]
    np.testing.assert_array_equal(off, plain)  # all factors 0: the images as read

    # what the training phases get: augmented train batches, val batches as read
    splits = {"train": train, "val": val}
    monkeypatch.setattr(training, "load_prepared", lambda name, *_: splits[name])
    _, train_ds, val_ds = training.load_train_val(24, 8, 3, augment=cfg)
    np.testing.assert_array_equal(_epochs(val_ds, 1)[0], _epochs(make_dataset(val, 24, 8), 1)[0])
    np.testing.assert_array_equal(_epochs(train_ds, 1)[0], run1[0])


def test_augmented_views_of_features(train_val):
    from pipeline.training import extract_features, view_dataset

    train, _ = train_val
    n = len(train)
    forward = tf.function(lambda x: tf.reduce_mean(x, axis=(1, 2)))  # (b, 3) "features"
    plain = extract_features(forward, train, 16, 8)
    views = extract_features(forward, train, 16, 8, augment=AugmentationParams(), views=3, seed=1)
    again = extract_features(forward, train, 16, 8, augment=AugmentationParams(), views=3, seed=1)
    assert plain.shape == (n, 3) and views.shape == (3, n, 3)
    np.testing.assert_array_equal(views, again)
    assert not np.array_equal(views[0], views[1]) and not np.array_equal(views[0], plain)

    # every epoch each image contributes one of its views, drawn anew
    tagged = np.arange(3 * n, dtype=np.float32).reshape(3, n, 1)  # view k of image i: k*n + i
    labels = np.arange(n, dtype=np.int32)

    def epochs(ds: tf.data.Dataset) -> list[np.ndarray]:
        out = []
        for _ in range(3):
            x, y = (np.concatenate(a) for a in zip(*ds.as_numpy_iterator(), strict=True))
            assert sorted(y) == list(labels)
            np.testing.assert_array_equal(x[:, 0] % n, y)  # an image's own view
            out.append(x[:, 0])
        return out

    first = epochs(view_dataset(tagged, labels, 8, seed=4))
    assert set(np.concatenate(first) // n) == {0, 1, 2}  # all views are used
    assert not np.array_equal(first[0], first[1])  # new draws (and order) every epoch
    np.testing.assert_array_equal(first, epochs(view_dataset(tagged, labels, 8, seed=4)))


def test_transfer_views_and_auto_base_features():
    on, off = AugmentationParams(), _aug()
    auto = TransferParams(base_features="auto")
    assert not auto.features_once(on) and auto.features_once(off)
    assert TransferParams().features_once(on)  # the default, once: un-augmented features
    views = TransferParams(base_features="auto", augmented_views=4)
    assert views.features_once(on) and views.views(on) == 4 and views.views(off) == 0
    every = TransferParams(base_features="every_epoch", augmented_views=4)
    assert not every.features_once(on) and every.views(on) == 0
