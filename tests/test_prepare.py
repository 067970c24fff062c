"""The prepare stage and the two ways the transfer phase runs the frozen base."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.data import (
    load_prepared,
    load_prepared_array,
    load_split,
    make_dataset,
    read_prepared,
)
from pipeline.stages.prepare import main as prepare_main
from pipeline.utils import PipelineError, read_json
from tests.conftest import PREPARED_SIZE

SIZE = PREPARED_SIZE  # the `prepared` fixture's image size (tests/conftest.py)


def test_every_split_image_is_prepared_once_as_uint8(prepared: Path):
    info = read_json(prepared / "prepared/prepared.json")
    assert info["image_size"] == [SIZE, SIZE] and info["resize"] == "squash"
    total = 0
    for name in ("train", "val", "test"):
        split = load_prepared(name, prepared / "prepared", prepared / "split", SIZE)
        assert info["splits"][name]["images"] == len(split) > 0
        total += len(split)
        for path in split.paths:
            array = np.load(path)
            assert array.dtype == np.uint8 and array.shape == (SIZE, SIZE, 3)
    assert len(list((prepared / "prepared").rglob("*.npy"))) == total == 48


def test_prepared_pixels_equal_decoding_the_files(prepared: Path, sample_dataset: Path):
    """Training reads exactly the pixels that prediction decodes from the original files."""
    for name in ("train", "test"):
        raw = load_split(name, prepared / "split", sample_dataset)
        ready = load_prepared(name, prepared / "prepared", prepared / "split", SIZE)
        assert ready.names == raw.names and ready.labels == raw.labels
        a = list(make_dataset(raw, SIZE, 7).as_numpy_iterator())
        b = list(make_dataset(ready, SIZE, 7).as_numpy_iterator())
        assert len(a) == len(b)
        for (xa, ya), (xb, yb) in zip(a, b, strict=True):
            assert xb.dtype == np.float32 and np.array_equal(xa, xb) and np.array_equal(ya, yb)
        assert np.all(xb == np.round(xb)) and xb.max() > 100


def test_shuffled_prepared_dataset_is_seeded(prepared: Path):
    train = load_prepared("train", prepared / "prepared", prepared / "split", SIZE)

    def labels(seed: int) -> list[int]:
        ds = make_dataset(train, SIZE, 64, shuffle=True, seed=seed)
        return next(iter(ds))[1].numpy().tolist()

    assert labels(5) == labels(5) != labels(6)
    assert sorted(labels(5)) == sorted(train.labels)


def test_mismatched_size_or_split_says_to_run_prepare(prepared: Path, tmp_path: Path):
    with pytest.raises(PipelineError, match=r"holds 40×40 px images but 64×64 px.*repro prepare"):
        load_prepared("train", prepared / "prepared", prepared / "split", 64)
    with pytest.raises(PipelineError, match=r"prepared.json not found.*dvc repro prepare"):
        load_prepared("train", tmp_path / "missing", prepared / "split", SIZE)
    split = tmp_path / "split"
    shutil.copytree(prepared / "split", split)
    manifest = split / "val.csv"
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join(lines[:-1]) + "\n")  # the split changed after prepare
    with pytest.raises(PipelineError, match=r"another version of .*val.csv.*dvc repro prepare"):
        load_prepared("val", prepared / "prepared", split, SIZE)


def _frame(height: int, width: int) -> np.ndarray:
    """A ``(height, width, 3)`` uint8 test card: smooth gradients, no black pixel."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack(
        [40 + 200 * x / width, 40 + 200 * y / height, 40 + 100 * (x + y) / (width + height)], -1
    ).astype(np.uint8)


@pytest.mark.parametrize("policy", ["squash", "pad", "crop"])
def test_resize_policies_keep_or_drop_the_aspect_ratio(policy: str):
    """A 90x240 frame (8:3) into 64x96 (2:3): squash stretches it, pad scales it by 96/240 to
    36x96 between black bars, crop scales it by 64/90 to 64x171 and keeps the middle 96."""
    import tensorflow as tf

    from pipeline.data import resize_image

    img = tf.constant(_frame(90, 240))
    out = resize_image(img, (64, 96), policy).numpy()
    assert out.shape == (64, 96, 3) and out.dtype == np.float32 and np.all(out == np.round(out))

    def direct(size: tuple[int, int]) -> np.ndarray:
        x = tf.image.resize(tf.cast(img, tf.float32), size, antialias=True)
        return np.clip(np.round(x.numpy()), 0, 255)

    if policy == "squash":
        np.testing.assert_array_equal(out, direct((64, 96)))
    elif policy == "pad":
        np.testing.assert_array_equal(out[14:50], direct((36, 96)))
        assert not out[:14].any() and not out[50:].any() and out[14:50].min() > 0
    else:
        np.testing.assert_array_equal(out, direct((64, 171))[:, 37:133])


@pytest.mark.parametrize("policy", ["squash", "pad", "crop"])
def test_prepare_stores_what_decoding_gives_for_each_policy(
    policy: str, prepared: Path, sample_dataset: Path, tmp_path: Path
):
    """Non-square input, each policy: the prepared arrays are exactly :func:`decode_image` of
    the files (what predict runs), and ``load_prepared`` checks size and policy."""
    import tensorflow as tf

    from pipeline.data import decode_image

    params = tmp_path / "params.yaml"
    params.write_text(f"seed: 1\ndata:\n  image_size: [40, 72]\n  resize: {policy}\n")
    out = tmp_path / "prepared"
    prepare_main(["--params", str(params), "--split", str(prepared / "split"),
                  "--data", str(sample_dataset), "--out", str(out)])  # fmt: skip
    info = read_json(out / "prepared.json")
    assert info["image_size"] == [40, 72] and info["resize"] == policy
    raw = load_split("test", prepared / "split", sample_dataset)
    ready = load_prepared("test", out, prepared / "split", (40, 72), policy)
    for path, npy in zip(raw.paths, ready.paths, strict=True):
        expected = decode_image(tf.constant(path), (40, 72), policy).numpy()
        stored = np.load(npy)
        assert stored.dtype == np.uint8 and stored.shape == (40, 72, 3)
        np.testing.assert_array_equal(stored, expected)
    other = "pad" if policy != "pad" else "crop"
    with pytest.raises(PipelineError, match=rf"resized by '{policy}'.*data.resize is '{other}'"):
        load_prepared("test", out, prepared / "split", (40, 72), other)
    with pytest.raises(PipelineError, match=r"holds 40×72 px images but 72×40 px"):
        load_prepared("test", out, prepared / "split", (72, 40))


def test_undecodable_image_names_the_file_and_keeps_previous_output(
    prepared: Path, sample_dataset: Path, tmp_path: Path
):
    data = tmp_path / "raw"
    shutil.copytree(sample_dataset, data)
    bad = data / load_split("val", prepared / "split", data).names[2]
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "prepared"
    shutil.copytree(prepared / "prepared", out)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    with pytest.raises(PipelineError, match=rf"cannot decode .*{bad.name}.*download_data"):
        prepare_main(["--params", str(prepared / "params.yaml"), "--split",
                      str(prepared / "split"), "--data", str(data), "--out", str(out)])  # fmt: skip
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def _train_transfer(
    repo: Path, work: Path, once: bool, epochs: int = 2, stored: bool = False
) -> tuple[list[list], np.ndarray, float]:
    """Train a head on ``repo``'s base and prepared images, with base features once or not.

    ``stored``: the features the baseline stage stored in ``data/features``, not computed.
    """
    from pipeline.models import build_base, build_classifier, compile_model, split_at_features
    from pipeline.training import feature_datasets, fit_phase, load_train_val
    from pipeline.utils import seed_everything

    seed_everything(3)
    size = read_json(repo / "data/prepared/prepared.json")["image_size"]
    base = build_base("mobilenet_v2", 0.35, size, weights=repo / "models/base.weights.h5")
    model = build_classifier(base, "mobilenet_v2", size, 4, seed=3, dense_units=8)
    paths = {"split_dir": repo / "data/split", "prepared_dir": repo / "data/prepared"}
    if once:
        features, trained = split_at_features(model)
        kept = {n: np.load(repo / f"data/features/{n}.npy") for n in ("train", "val")}
        _, train_ds, val_ds = feature_datasets(
            features, size, 8, 3, **paths, stored=kept if stored else None
        )
    else:
        trained = model
        _, train_ds, val_ds = load_train_val(size, 8, 3, **paths)
    compile_model(trained, 1e-2)
    before = model.get_layer("dense").get_weights()[0].copy()
    work.mkdir()
    rows, _ = fit_phase(
        trained, train_ds, val_ds, phase="transfer", epochs=epochs, initial_epoch=0,
        patience=epochs, work_dir=work, log_dir=work / "logs", checkpoint=model,
    )  # fmt: skip
    assert (work / "best.weights.h5").is_file()
    test = load_prepared("test", **paths, image_size=size)
    change = float(np.abs(model.get_layer("dense").get_weights()[0] - before).max())
    return rows, model.predict(make_dataset(test, size, 8), verbose=0), change


@pytest.mark.slow
def test_base_features_once_trains_the_same_head(trained_repo: Path, tmp_path: Path, monkeypatch):
    """Same data order, same dropout masks: only float round-off may differ.

    Uses the pipeline's pretrained base (a random one gives vanishing features).
    """
    monkeypatch.chdir(tmp_path)  # relative paths stay in the test folder
    every = _train_transfer(trained_repo, tmp_path / "every", once=False)
    once = _train_transfer(trained_repo, tmp_path / "once", once=True)
    # the baseline stage's stored features stand in for the base: the same training again
    stored = _train_transfer(trained_repo, tmp_path / "stored", once=True, stored=True)
    (rows_every, proba_every, change_every), (rows_once, proba_once, change_once) = every, once
    assert len(rows_once) == len(rows_every) == len(stored[0]) == 2
    for a, b, c in zip(rows_once, rows_every, stored[0], strict=True):
        assert a[:2] == b[:2] == c[:2]
        np.testing.assert_allclose(a[2:6], b[2:6], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(c[2:6], b[2:6], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(proba_once, proba_every, atol=1e-5)
    np.testing.assert_allclose(stored[1], proba_every, atol=1e-5)
    # the classifier's own head was trained (its layers are shared with the head model)
    assert change_once > 1e-3
    assert change_once == pytest.approx(change_every, rel=1e-3)


def test_head_trains_on_augmented_views_of_the_features(prepared: Path):
    """``transfer.augmented_views``: each epoch, every train image brings one of its augmented
    views' features; val features stay un-augmented."""
    from pipeline.models import (
        build_base,
        build_classifier,
        calibrate_batchnorm,
        preprocessing,
        split_at_features,
    )
    from pipeline.params import AugmentationParams
    from pipeline.training import feature_datasets

    base = build_base("mobilenet_v2", 0.35, SIZE)
    images = np.stack([np.load(f) for f in sorted((prepared / "prepared").rglob("*.npy"))[:16]])
    calibrate_batchnorm(base, preprocessing("mobilenet_v2")(images.astype(np.float32)))
    features, _ = split_at_features(build_classifier(base, "mobilenet_v2", SIZE, 4, seed=1))
    paths = {"split_dir": prepared / "split", "prepared_dir": prepared / "prepared"}
    train, plain_ds, val_plain = feature_datasets(features, SIZE, 8, 3, **paths)
    _, views_ds, val_views = feature_datasets(
        features, SIZE, 8, 3, **paths, augment=AugmentationParams(), views=2
    )

    def epoch(ds):  # rows sorted, so that epochs in different orders compare
        x, y = (np.concatenate(a) for a in zip(*ds.as_numpy_iterator(), strict=True))
        return x[np.lexsort(x.T[::-1])], np.sort(y)

    (x1, y1), (x2, _), (xp, yp) = epoch(views_ds), epoch(views_ds), epoch(plain_ds)
    assert x1.shape == xp.shape == (len(train), xp.shape[1]) and list(y1) == list(yp)
    assert np.abs(x1).max() > 1e-3  # calibrated: features that are not vanishingly small
    assert not np.allclose(x1, xp) and not np.allclose(x1, x2)
    np.testing.assert_array_equal(epoch(val_views)[0], epoch(val_plain)[0])


@pytest.mark.parametrize(
    "array",
    [np.zeros((4, 6, 3), np.float32), np.zeros((6, 4, 3), np.uint8), np.zeros((4, 6), np.uint8)],
    ids=["float32", "transposed", "grey"],
)
def test_a_prepared_file_of_another_dtype_or_shape_is_refused(tmp_path, array):
    path = tmp_path / "frame.npy"
    np.save(path, array)
    with pytest.raises(PipelineError, match=r"re-run the prepare stage"):
        load_prepared_array(str(path), [4, 6])
    good = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    np.save(path, good)
    np.testing.assert_array_equal(read_prepared(str(path), [4, 6]).numpy(), good)
