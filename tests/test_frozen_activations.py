"""Fine-tuning on the frozen activations computed once (``finetune.frozen_activations``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.models import (
    build_base,
    build_classifier,
    calibrate_batchnorm,
    compile_model,
    get_base,
    preprocessing,
    split_at_frozen,
    unfreeze_last,
)
from pipeline.params import AugmentationParams, FinetuneParams, parse_params
from pipeline.utils import PipelineError, read_csv, read_json, seed_everything
from tests.conftest import PREPARED_SIZE

SIZE = PREPARED_SIZE  # the `prepared` fixture's image size (tests/conftest.py)


def _classifier(prepared: Path, architecture: str = "mobilenet_v2", unfreeze: int = 50):
    """A classifier on a random base whose BatchNorm statistics are those of the images (so that
    activations do not vanish), its last ``unfreeze`` base layers unfrozen."""
    seed_everything(3)
    base = build_base(architecture, 0.35, SIZE)
    images = np.stack([np.load(f) for f in sorted((prepared / "prepared").rglob("*.npy"))[:16]])
    calibrate_batchnorm(base, preprocessing(architecture)(images.astype(np.float32)))
    model = build_classifier(base, architecture, SIZE, 4, seed=3, dense_units=0, dropout=0.2)
    unfreeze_last(model, unfreeze)
    return model


@pytest.mark.parametrize(
    ("architecture", "unfreeze", "cut"),
    [
        # block_11 (the first unfrozen layer is its project conv) adds its input back: the cut
        # is that input, the output of block_10
        ("mobilenet_v2", 50, "block_10_project_BN"),
        ("mobilenet_v3_small", 30, None),
        ("efficientnet_b0", 40, None),
    ],
)
def test_top_on_the_frozen_activations_is_the_whole_model(
    prepared: Path, architecture: str, unfreeze: int, cut: str | None
):
    model = _classifier(prepared, architecture, unfreeze)
    bottom, top, name = split_at_frozen(model)
    if cut is not None:
        assert name == cut
    x = np.stack([np.load(f) for f in sorted((prepared / "prepared").rglob("*.npy"))[:6]])
    x = x.astype(np.float32)
    activations = bottom(x, training=False)
    assert activations.shape[1:] == get_base(model).get_layer(name).output.shape[1:]
    np.testing.assert_allclose(top(activations), model(x, training=False), atol=1e-6)
    # the top trains every weight that fine-tuning trains; the bottom holds none of them
    assert {w.path for w in top.trainable_weights} == {w.path for w in model.trainable_weights}
    assert bottom.trainable_weights == []
    # the cut came before every unfrozen layer
    names = [layer.name for layer in get_base(model).layers]
    first = min(names.index(w.path.split("/")[0]) for w in get_base(model).trainable_weights)
    assert names.index(name) < first


def test_nothing_to_cut_when_the_whole_base_is_unfrozen(prepared: Path):
    model = _classifier(prepared, unfreeze=len(get_base(_classifier(prepared)).layers))
    assert split_at_frozen(model) is None


def _fine_tune(prepared: Path, work: Path, once: bool) -> tuple[list[list], np.ndarray, dict]:
    """Two fine-tuning epochs without augmentation, on the frozen activations or the images;
    returns the history rows, the test probabilities and the weights by name."""
    from pipeline.data import load_prepared, make_dataset
    from pipeline.training import activation_datasets, fit_phase, load_train_val

    model = _classifier(prepared)
    paths = {"split_dir": prepared / "split", "prepared_dir": prepared / "prepared"}
    if once:
        bottom, trained, _ = split_at_frozen(model)
        data = activation_datasets(bottom, SIZE, 8, 3, mirror=False, cache_mb=64, **paths)
        _, train_ds, val_ds = data
    else:
        trained = model
        _, train_ds, val_ds = load_train_val(SIZE, 8, 3, **paths)
    compile_model(trained, 1e-3)
    work.mkdir()
    rows, _ = fit_phase(
        trained, train_ds, val_ds, phase="finetune", epochs=2, initial_epoch=0, patience=2,
        work_dir=work, log_dir=work / "logs", checkpoint=model,
    )  # fmt: skip
    assert (work / "best.weights.h5").is_file()
    test = load_prepared("test", **paths, image_size=SIZE)
    proba = model.predict(make_dataset(test, SIZE, 8), verbose=0)
    return rows, proba, {w.path: w.numpy().copy() for w in model.weights}


@pytest.mark.slow
def test_fine_tuning_on_frozen_activations_trains_the_same_model(prepared: Path, tmp_path: Path):
    """Same batches, same dropout masks, the same layers: only float round-off may differ."""
    initial = _classifier(prepared)
    before = {w.path: w.numpy().copy() for w in initial.weights}
    trainable = {w.path for w in initial.trainable_weights}
    rows_every, proba_every, every = _fine_tune(prepared, tmp_path / "every", once=False)
    rows_once, proba_once, once = _fine_tune(prepared, tmp_path / "once", once=True)
    assert len(rows_once) == len(rows_every) == 2
    for a, b in zip(rows_once, rows_every, strict=True):
        assert a[:2] == b[:2]
        np.testing.assert_allclose(a[2:6], b[2:6], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(proba_once, proba_every, atol=1e-5)
    changed = {p for p in before if not np.array_equal(before[p], once[p])}
    assert changed and changed <= trainable  # the unfrozen weights trained, nothing else
    assert any("block_16" in p for p in changed) and "predictions/kernel" in changed
    for path in before:
        np.testing.assert_allclose(once[path], every[path], atol=1e-5)


def test_mirrored_activations_stand_in_for_the_flip(prepared: Path):
    """With ``mirror``, every epoch each train image brings the activations of itself or of its
    mirror image, both occurring; val activations are never mirrored."""
    import tensorflow as tf

    from pipeline.data import load_prepared
    from pipeline.training import activation_datasets

    model = _classifier(prepared)
    bottom, _, _ = split_at_frozen(model)
    paths = {"split_dir": prepared / "split", "prepared_dir": prepared / "prepared"}
    train, train_ds, val_ds = activation_datasets(
        bottom, SIZE, 8, 3, mirror=True, cache_mb=64, **paths
    )
    x = np.stack([np.load(p) for p in train.paths]).astype(np.float32)
    plain = bottom(x, training=False).numpy().reshape(len(x), -1)
    mirrored = bottom(tf.reverse(x, axis=[2]), training=False).numpy().reshape(len(x), -1)
    assert not np.allclose(plain, mirrored, atol=1e-3)

    def which(ds) -> list[tuple[int, int]]:
        """(image, 0 for itself or 1 for its mirror) of every row of one epoch."""
        rows = np.concatenate([a for a, _ in ds.as_numpy_iterator()]).reshape(len(x), -1)
        found = []
        for row in rows:
            for view, table in enumerate((plain, mirrored)):
                hit = np.flatnonzero(np.abs(table - row).max(axis=1) < 1e-4)
                if hit.size:
                    found.append((int(hit[0]), view))
                    break
        return found

    first, second = which(train_ds), which(train_ds)
    assert sorted(i for i, _ in first) == sorted(i for i, _ in second) == list(range(len(x)))
    views = [v for _, v in first + second]
    assert 0 < sum(views) < len(views)  # both the images and their mirrors occur
    assert first != second  # new draws (and order) every epoch
    val = load_prepared("val", **paths, image_size=SIZE)
    xv = np.stack([np.load(p) for p in val.paths]).astype(np.float32)
    rows = np.concatenate([a for a, _ in val_ds.as_numpy_iterator()])
    np.testing.assert_allclose(rows, bottom(xv, training=False), atol=1e-5)


def test_activations_over_the_memory_cap_are_not_computed(prepared: Path):
    from pipeline.training import activation_datasets

    bottom, _, _ = split_at_frozen(_classifier(prepared))
    paths = {"split_dir": prepared / "split", "prepared_dir": prepared / "prepared"}
    assert activation_datasets(bottom, SIZE, 8, 3, mirror=True, cache_mb=0.01, **paths) is None


def test_auto_computes_the_activations_once_without_augmentation_or_with_the_flip_only():
    off = {k: 0.0 for k in ("rotation", "zoom", "translation", "contrast", "brightness")}
    flip = AugmentationParams(**off)
    none = AugmentationParams(**off, flip=False)
    full = AugmentationParams()
    auto, every = FinetuneParams(), FinetuneParams(frozen_activations="every_epoch")
    assert flip.flip_only and not full.flip_only and not none.flip_only
    assert auto.activations_once(flip) and auto.activations_once(none)
    assert not auto.activations_once(full)
    assert not every.activations_once(flip)
    assert FinetuneParams(frozen_activations="once").activations_once(flip)


def test_once_with_an_augmentation_it_cannot_cover_is_refused():
    with pytest.raises(ValueError, match=r"'once'.*augmentation.rotation, augmentation.zoom.*0"):
        parse_params({"finetune": {"frozen_activations": "once"}, "augmentation": {"flip": True}})
    parse_params(
        {
            "finetune": {"frozen_activations": "once"},
            "augmentation": {"rotation": 0, "zoom": 0, "translation": 0, "contrast": 0,
                             "brightness": 0},
        }
    )  # fmt: skip


@pytest.mark.slow
def test_finetune_stage_runs_the_frozen_layers_once_with_flip_only(
    trained_repo: Path, tmp_path: Path, monkeypatch
):
    """The tiny pipeline's fine-tune stage with flips only and the cosine schedule: the frozen
    activations once, each epoch's rate in the history, and the stage's outputs as usual. Forced
    ``once`` over the memory cap stops with an error that says what to change, and leaves the
    earlier outputs alone."""
    from pipeline.stages import finetune

    work = tmp_path / "work"
    inputs = ("params.yaml", "data/split", "data/prepared", "models/transfer",
              "reports/live/transfer")  # fmt: skip
    for name in inputs:
        src, dst = trained_repo / name, work / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)
    params = yaml.safe_load((work / "params.yaml").read_text())
    for key in ("rotation", "zoom", "translation", "contrast", "brightness"):
        params["augmentation"][key] = 0.0
    params["augmentation"]["flip"] = True
    params["finetune"] |= {"schedule": "cosine", "epochs": 3, "patience": 3}
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.chdir(work)
    finetune.main([])
    state = read_json("models/finetune/state.json")
    assert state["frozen_activations"] == "once" and state["frozen_until"]
    rates = [float(r["learning_rate"]) for r in read_csv("reports/history/finetune.csv")]
    lr = params["finetune"]["learning_rate"]  # cosine: lr, then a half cosine towards 0
    np.testing.assert_allclose(rates, [lr, lr * 0.75, lr * 0.25], rtol=1e-5)
    assert Path("models/finetune/model.keras").is_file()
    kept = Path("models/finetune/model.keras").read_bytes()

    params["finetune"] |= {"frozen_activations": "once", "cache_mb": 0.01}
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with pytest.raises(PipelineError, match=r"'once'.*finetune.cache_mb \(0.01 MiB\).*every_epoch"):
        finetune.main([])
    assert Path("models/finetune/model.keras").read_bytes() == kept
