from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.data import load_split, make_dataset
from pipeline.stages.split import main as split_main
from pipeline.utils import PipelineError


@pytest.fixture
def split_dir(sample_dataset: Path, tmp_path: Path, monkeypatch) -> Path:
    (tmp_path / "params.yaml").write_text(
        "seed: 1\nsplit:\n  train: 0.7\n  val: 0.2\n  test: 0.1\n"
    )
    monkeypatch.chdir(tmp_path)
    split_main(["--data", str(sample_dataset), "--out", str(tmp_path / "split")])
    return tmp_path / "split"


def test_dataset_shapes_types_and_ranges(split_dir: Path, sample_dataset: Path):
    train = load_split("train", split_dir, sample_dataset)
    assert len(train) == 36 and train.classes[0] == "jerry"
    ds = make_dataset(train, 48, 10)
    batches = list(ds.as_numpy_iterator())
    assert [b[0].shape for b in batches] == [(10, 48, 48, 3)] * 3 + [(6, 48, 48, 3)]
    x, y = batches[0]
    assert x.dtype == np.float32 and y.dtype == np.int32
    assert x.min() >= 0.0 and x.max() <= 255.0 and x.max() > 100
    assert sorted(np.concatenate([b[1] for b in batches])) == sorted(train.labels)


def test_shuffle_is_seeded_and_reshuffles_each_epoch(split_dir: Path, sample_dataset: Path):
    train = load_split("train", split_dir, sample_dataset)

    def order(seed):
        ds = make_dataset(train, 32, 64, shuffle=True, seed=seed)
        return next(iter(ds))[1].numpy().tolist(), ds

    first, ds = order(3)
    again, _ = order(3)
    assert first == again
    epochs = [b[1].numpy().tolist() for b in ds.take(1)] + [b[1].numpy().tolist() for b in ds]
    assert epochs[0] != epochs[1] or len(set(train.labels)) == 1
    assert order(4)[0] != first


def test_missing_manifest_says_which_stage(tmp_path: Path):
    with pytest.raises(PipelineError, match="run the split stage"):
        load_split("train", tmp_path, tmp_path)
