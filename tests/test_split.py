from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from pipeline.params import SplitParams
from pipeline.splitting import SPLITS, list_dataset, make_split
from pipeline.stages.split import main
from pipeline.utils import PipelineError, read_csv, read_json

SPLIT = SplitParams(train=0.7, val=0.2, test=0.1)  # the counts below follow these


def _classes(sizes: dict[str, int]) -> dict[str, list[str]]:
    return {c: [f"{c}/{i:03d}.jpg" for i in range(n)] for c, n in sizes.items()}


def test_split_is_stratified_disjoint_and_complete():
    classes = _classes({"a": 100, "b": 50, "c": 30})
    parts = make_split(classes, SPLIT, seed=1)
    all_paths = [p for s in SPLITS for p, _ in parts[s]]
    assert sorted(all_paths) == sorted(p for files in classes.values() for p in files)
    assert len(set(all_paths)) == len(all_paths)
    counts = {s: Counter(label for _, label in parts[s]) for s in SPLITS}
    assert counts["test"] == {"a": 10, "b": 5, "c": 3}
    assert counts["val"] == {"a": 20, "b": 10, "c": 6}
    assert counts["train"] == {"a": 70, "b": 35, "c": 21}


def test_split_depends_on_seed_only():
    classes = _classes({"a": 40, "b": 40})
    assert make_split(classes, SPLIT, 3) == make_split(classes, SPLIT, 3)
    assert make_split(classes, SPLIT, 3) != make_split(classes, SPLIT, 4)


def test_tiny_class_is_refused_with_advice():
    with pytest.raises(PipelineError, match="class 'b' is too small"):
        make_split(_classes({"a": 40, "b": 2}), SPLIT, 0)


def test_list_dataset_errors(tmp_path: Path):
    with pytest.raises(PipelineError, match="run the download_data stage"):
        list_dataset(tmp_path / "missing")
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "x.jpg").write_bytes(b"")
    with pytest.raises(PipelineError, match="need >= 2"):
        list_dataset(tmp_path)


def test_stage_writes_manifests(sample_dataset: Path, tmp_path: Path, monkeypatch):
    (tmp_path / "params.yaml").write_text(
        "seed: 1\nsplit:\n  train: 0.7\n  val: 0.2\n  test: 0.1\n"
    )
    monkeypatch.chdir(tmp_path)
    main(["--data", str(sample_dataset), "--out", "split"])
    assert read_json("split/classes.json") == ["jerry", "tom", "tom_jerry_0", "tom_jerry_1"]
    rows = {s: read_csv(f"split/{s}.csv") for s in SPLITS}
    assert [len(rows[s]) for s in SPLITS] == [36, 8, 4]
    for r in rows["train"]:
        assert (sample_dataset / r["path"]).is_file()
        assert r["path"].split("/")[0] == r["label"]
