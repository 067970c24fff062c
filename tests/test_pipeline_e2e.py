"""End to end: ``dvc repro`` on tiny params in a temporary git repo."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from pipeline.synthetic import SCENE_CLASSES
from tests.conftest import ROOT, TINY_HEIGHT, TINY_WIDTH, tiny_params_dict
from tests.e2e import make_repo, run, stages_run

pytestmark = pytest.mark.slow
ALL_STAGES = [
    "download_data",
    "download_weights",
    "split",
    "prepare",
    "baseline",
    "transfer",
    "finetune",
    "evaluate",
    "export",
    "model_card",
]
# a run through the first stage that builds the base and computes features on the images
THROUGH_BASELINE = ALL_STAGES[: ALL_STAGES.index("baseline") + 1]


@pytest.fixture(scope="module")
def repo(trained_repo: Path) -> Path:
    """The session's tiny run (all stages); tests here restore its params when they change them."""
    return trained_repo


def test_stage_order():
    assert list(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]) == ALL_STAGES


def test_outputs(repo: Path):
    assert sorted(p.name for p in (repo / "data/raw").iterdir()) == sorted(SCENE_CLASSES)
    assert {p.name for p in (repo / "data/split").iterdir()} == {
        "train.csv",
        "val.csv",
        "test.csv",
        "classes.json",
    }
    prepared = json.loads((repo / "data/prepared/prepared.json").read_text())
    assert prepared["image_size"] == [TINY_HEIGHT, TINY_WIDTH] and prepared["resize"] == "pad"
    arrays = sorted((repo / "data/prepared").rglob("*.npy"))
    assert len(arrays) == sum(s["images"] for s in prepared["splits"].values()) == 48
    assert np.load(arrays[0]).shape == (TINY_HEIGHT, TINY_WIDTH, 3)
    state = json.loads((repo / "models/transfer/state.json").read_text())
    assert state["base_features"] == "every_epoch"  # tiny params keep augmentation on
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    for phase in ("transfer", "finetune"):
        m = metrics[phase]
        assert 0 <= m["accuracy"] <= 1 and m["loss"] > 0 and 0 <= m["macro_f1"] <= 1
        assert set(m["per_class"]) == set(SCENE_CLASSES)
    assert metrics["test_images"] == 4
    for name in ("learning_curves.png", "confusion_matrix.png"):
        with Image.open(repo / "reports/figures" / name) as im:
            assert im.format == "PNG"
    rows = (repo / "reports/plots/confusion_finetune.csv").read_text().splitlines()
    assert rows[0] == "actual,predicted" and len(rows) == 5
    hist_t = (repo / "reports/history/transfer.csv").read_text().splitlines()
    hist_f = (repo / "reports/history/finetune.csv").read_text().splitlines()
    last_transfer = int(hist_t[-1].split(",")[0])
    assert int(hist_f[1].split(",")[0]) == last_transfer + 1  # one epoch axis
    # DVCLive: one run across both stages, steps = 0-based epochs of both phases
    tsv = "plots/metrics/eval/accuracy.tsv"
    live_t = (repo / "reports/live/transfer" / tsv).read_text().splitlines()
    live = (repo / "reports/live/training" / tsv).read_text().splitlines()
    assert live[: len(live_t)] == live_t
    assert [int(r.split("\t")[0]) for r in live[1:]] == list(range(len(hist_t) + len(hist_f) - 2))
    val = [float(r.split(",")[5]) for r in hist_t[1:] + hist_f[1:]]
    assert [float(r.split("\t")[1]) for r in live[1:]] == pytest.approx(val, abs=1e-6)
    summary = json.loads((repo / "reports/summary.json").read_text())
    assert summary["finetune"]["accuracy"] == metrics["finetune"]["accuracy"]
    summary = (repo / "reports/model_summary.txt").read_text()
    assert "Trainable" in summary and "block_16_project" in summary
    assert (repo / "logs/transfer").is_dir() and (repo / "logs/tensorboard").is_dir()
    info = json.loads((repo / "reports/weights_source.json").read_text())
    assert info["source"] == "sample" and info["architecture"] == "mobilenet_v2"


def test_tensorboard_shows_both_phases_as_one_run(repo: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    last = int((repo / "reports/history/finetune.csv").read_text().splitlines()[-1].split(",")[0])
    steps = {}
    for run_dir in ("train", "validation"):
        events = EventAccumulator(str(repo / "logs/tensorboard" / run_dir), {"tensors": 0})
        events.Reload()
        for tag in events.Tags()["tensors"]:
            steps[run_dir, tag] = [e.step for e in events.Tensors(tag)]
    for run_dir in ("train", "validation"):  # Keras counts epochs from 0
        assert steps[run_dir, "epoch_loss"] == list(range(last))
        assert steps[run_dir, "epoch_accuracy"] == list(range(last))
    optimizer_steps = steps["validation", "evaluation_loss_vs_iterations"]
    assert len(optimizer_steps) == last
    assert sorted(set(optimizer_steps)) == optimizer_steps  # strictly increasing


def test_models_load_in_safe_mode_and_reproduce_predictions(repo: Path):
    import keras

    from pipeline.data import load_split, make_dataset
    from pipeline.models import with_tta

    model = keras.saving.load_model(repo / "models/finetune/model.keras", safe_mode=True)
    test = load_split("test", repo / "data/split", repo / "data/raw")
    ds = make_dataset(test, (TINY_HEIGHT, TINY_WIDTH), 8, resize="pad")
    proba = with_tta(model, "flip").predict(ds, verbose=0)
    rows = (repo / "reports/predictions.csv").read_text().splitlines()[1:]
    assert [r.split(",")[4] for r in rows] == [test.classes[i] for i in proba.argmax(1)]


def test_up_to_date_after_repro(repo: Path):
    status = run(["dvc", "status"], repo).stdout
    assert "up to date" in status
    out = run(["dvc", "repro"], repo).stdout
    assert stages_run(out) == []


@pytest.mark.parametrize(
    ("key", "value", "stages"),
    [
        ("data.image_size", 40, ["prepare", "baseline", "transfer", "evaluate", "model_card"]),
        ("transfer.base_features", "once", ["transfer", "evaluate", "model_card"]),
        ("split.val", 0.25, ["split", "evaluate", "model_card"]),
    ],
)
def test_param_change_marks_exactly_the_stages_that_read_it(repo: Path, key, value, stages):
    """``dvc repro --dry`` lists the stages whose own params changed (the stages after them
    rerun when their inputs change, as the full runs above show), without running anything."""
    params_file = repo / "params.yaml"
    good = params_file.read_text()
    params = yaml.safe_load(good)
    section, name = key.split(".")
    params[section][name] = value
    if key == "split.val":
        params["split"]["train"] = 0.65  # evaluate reads split.train
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        out = run(["dvc", "repro", "--dry"], repo).stdout
    finally:
        params_file.write_text(good)
    assert stages_run(out) == stages


def test_bad_params_fail_fast_and_keep_outputs(repo: Path):
    params_file = repo / "params.yaml"
    good = params_file.read_text()
    params = yaml.safe_load(good)
    params["finetune"]["unfreeze_layer"] = 5  # typo of unfreeze_layers
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        proc = run(["dvc", "repro"], repo, check=False)
        assert proc.returncode != 0
        assert "did you mean 'finetune.unfreeze_layers'" in proc.stderr + proc.stdout
        assert "Running stage 'evaluate'" not in proc.stdout  # nothing after the failed stage
    finally:
        params_file.write_text(good)
    # DVC removed the failed stage's outputs before running it (no `persist`, so that the
    # run-cache works); they were not lost: the next repro restores them, training nothing
    out = run(["dvc", "repro"], repo).stdout
    assert stages_run(out) == [], out
    assert (repo / "models/finetune/model.keras").is_file()
    assert "up to date" in run(["dvc", "status"], repo).stdout


def _legacy_h5_weights(path: Path) -> Path:
    """A weights file in the legacy HDF5 layout that keras.applications' downloads use."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    from pipeline.models import build_base

    base = build_base("mobilenet_v2", 0.35, None)
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, base)
    return path


def test_local_folder_with_weights_file(tmp_path: Path):
    photos = tmp_path / "download" / "pets" / "pets"
    rng = np.random.default_rng(0)
    for cls, color in (("cat", (200, 60, 60)), ("dog", (60, 60, 200))):
        (photos / cls).mkdir(parents=True)
        for i in range(12):
            arr = rng.normal(color, 40, size=(48 + i, 64, 3)).clip(0, 255).astype("uint8")
            Image.fromarray(arr).save(photos / cls / f"{i}.jpg")
    (tmp_path / "download" / "labels.csv").write_text("file,label\n")
    weights = _legacy_h5_weights(
        tmp_path / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
    )
    params = tiny_params_dict(
        data={"source": "local", "path": str(tmp_path / "download")},
        model={"weights": "file", "weights_path": str(weights)},
    )
    repo = make_repo(tmp_path / "repo", params)
    # through the first stage that builds the base from the file and computes its features;
    # every later stage reads them as it does for any source (the session's tiny run)
    out = run(["dvc", "repro", "baseline"], repo).stdout
    assert stages_run(out) == THROUGH_BASELINE
    assert sorted(p.name for p in (repo / "data/raw").iterdir()) == ["cat", "dog"]
    assert json.loads((repo / "data/split/classes.json").read_text()) == ["cat", "dog"]
    baseline = json.loads((repo / "reports/baseline.json").read_text())
    assert baseline["features"] == 1280 and 0 <= baseline["test"]["accuracy"] <= 1
    info = json.loads((repo / "reports/weights_source.json").read_text())
    assert info == {
        "source": "file",
        "path": weights.name,
        "architecture": "mobilenet_v2",
        "alpha": 0.35,
    }
