from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from pipeline.leakage import dhash, near_duplicate_groups, near_duplicate_pairs
from pipeline.params import SplitParams
from pipeline.split import SPLITS, main, make_split
from pipeline.utils import read_csv, read_json


def _frames(root: Path, cls: str, scenes: int, per_scene: int, rng: np.random.Generator) -> None:
    """``scenes`` random pictures, each saved ``per_scene`` times with a little noise."""
    (root / cls).mkdir(parents=True)
    for s in range(scenes):
        base = rng.integers(0, 256, size=(12, 16, 3)).astype(np.float64)
        big = np.kron(base, np.ones((6, 6, 1)))  # 72x96 blocks: a "frame"
        for f in range(per_scene):
            noisy = np.clip(big + rng.normal(0, 3, big.shape), 0, 255).astype(np.uint8)
            Image.fromarray(noisy).save(root / cls / f"s{s:02d}_f{f}.jpg", quality=90)


def test_dhash_finds_near_duplicates_only(tmp_path):
    rng = np.random.default_rng(0)
    _frames(tmp_path, "a", 6, 2, rng)
    files = sorted((tmp_path / "a").glob("*.jpg"))
    hashes = [dhash(f) for f in files]
    pairs = near_duplicate_pairs(hashes, 4)
    assert sorted(pairs) == [(2 * k, 2 * k + 1) for k in range(6)]  # each scene's two frames
    assert near_duplicate_pairs(hashes, 0) == [] or all(
        j == i + 1 for i, j in near_duplicate_pairs(hashes, 0)
    )


def test_groups_are_transitive():
    assert near_duplicate_groups(5, [(0, 1), (1, 2), (3, 4)]) == [0, 0, 0, 3, 3]
    assert near_duplicate_groups(3, []) == [0, 1, 2]


def test_grouped_split_never_separates_a_group():
    classes = {
        "a": [f"a/{i:02d}.jpg" for i in range(30)],
        "b": [f"b/{i:02d}.jpg" for i in range(30)],
    }
    group_of = {
        p: int(p[2:4]) // 3 + (100 if p[0] == "b" else 0) for c in classes.values() for p in c
    }
    parts = make_split(classes, SplitParams(train=0.7, val=0.2, test=0.1), 5, group_of)
    where = {p: s for s in SPLITS for p, _ in parts[s]}
    for g in set(group_of.values()):
        assert len({where[p] for p, gid in group_of.items() if gid == g}) == 1
    assert sum(len(v) for v in parts.values()) == 60
    assert len(parts["test"]) == 6 and len(parts["val"]) == 12


def test_class_made_of_one_group_cannot_be_split():
    from pipeline.utils import PipelineError

    with pytest.raises(PipelineError, match="near-duplicates cannot fill"):
        make_split(
            {"a": ["a/1", "a/2", "a/3"], "b": ["b/1", "b/2", "b/3"]},
            SplitParams(train=0.7, val=0.2, test=0.1),
            0,
            {"a/1": 0, "a/2": 0, "a/3": 0, "b/1": 1, "b/2": 2, "b/3": 3},
        )


@pytest.mark.parametrize("grouped", [False, True])
def test_split_stage_reports_and_prevents_leakage(tmp_path, monkeypatch, grouped):
    rng = np.random.default_rng(1)
    for cls in ("tom", "jerry"):
        _frames(tmp_path / "raw", cls, 10, 3, rng)
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump({"seed": 3, "split": {"group_near_duplicates": grouped}})
    )
    monkeypatch.chdir(tmp_path)
    main(["--data", "raw", "--out", "split", "--leakage", "leakage.json"])
    report = read_json("leakage.json")
    assert report["mode"] == ("grouped" if grouped else "random")
    assert report["near_duplicate_pairs"] == 2 * 10 * 3  # 3 pairs per scene of 3 frames
    if grouped:
        assert report["test_with_train_twin"] == 0 and report["val_with_train_twin"] == 0
        where = {r["path"]: s for s in SPLITS for r in read_csv(f"split/{s}.csv")}
        for path, split in where.items():
            scene = path.rsplit("_f", 1)[0]
            assert {where[p] for p in where if p.startswith(scene + "_")} == {split}
    else:
        assert report["test_with_train_twin"] > 0
        assert report["examples"] and "train" in report["examples"][0]
