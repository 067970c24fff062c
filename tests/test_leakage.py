from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from pipeline.leakage import dhash, near_duplicate_groups, near_duplicate_pairs
from pipeline.params import SplitParams
from pipeline.splitting import SPLITS, make_split
from pipeline.stages.split import main
from pipeline.utils import read_csv, read_json

SPLIT = SplitParams(train=0.7, val=0.2, test=0.1)  # the real profiles' fractions


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


# --- label conflicts: near-duplicates filed under different classes -------------------------


def test_cross_class_groups_stay_whole_and_the_split_stays_stratified():
    classes = {c: [f"{c}/{i:02d}.jpg" for i in range(50)] for c in ("a", "b")}
    # ten twin pairs across the classes (a/i ~ b/i), the other images single
    group_of = {p: i for c in classes for i, p in enumerate(classes[c])}
    group_of.update({f"b/{i:02d}.jpg": 100 + i for i in range(10, 50)})
    parts = make_split(classes, SPLIT, 5, group_of)
    where = {p: s for s in SPLITS for p, _ in parts[s]}
    assert len(where) == 100
    for i in range(10):
        assert where[f"a/{i:02d}.jpg"] == where[f"b/{i:02d}.jpg"]
    # the twins are spread over the splits like the rest, and every class keeps its shares
    assert {where[f"a/{i:02d}.jpg"] for i in range(10)} == set(SPLITS)
    for c in classes:
        got = {s: sum(label == c for _, label in parts[s]) for s in SPLITS}
        assert got == {"train": 35, "val": 10, "test": 5}
    assert make_split(classes, SPLIT, 5, group_of) == parts


def test_class_held_only_by_cross_class_groups_is_refused():
    classes = {"a": [f"a/{i}" for i in range(30)], "b": ["b/0", "b/1", "b/2"]}
    group_of = {p: i for i, p in enumerate(classes["a"])} | {"b/0": 0, "b/1": 0, "b/2": 0}
    from pipeline.utils import PipelineError

    with pytest.raises(PipelineError, match=r"class 'b'.*3 in groups shared with other classes"):
        make_split(classes, SPLIT, 0, group_of)


def _twins_across_classes(root: Path) -> list[tuple[str, str]]:
    """tom and jerry of 10 scenes x 3 frames; a frame of each class copied into the other."""
    rng = np.random.default_rng(1)
    for cls in ("tom", "jerry"):
        _frames(root, cls, 10, 3, rng)
    copies = [
        ("tom/s00_f0.jpg", "jerry/x_tom_s00.jpg"),
        ("jerry/s04_f1.jpg", "tom/x_jerry_s04.jpg"),
    ]
    for src, dst in copies:
        (root / dst).write_bytes((root / src).read_bytes())
    return copies


def _run_split(tmp_path: Path, monkeypatch, **split: object) -> dict:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"seed": 3, "split": split}))
    monkeypatch.chdir(tmp_path)
    main(["--data", "raw", "--out", "split", "--leakage", "leakage.json"])
    return read_json("leakage.json")


def test_cross_class_twins_are_grouped_into_one_split_and_counted(tmp_path, monkeypatch, caplog):
    copies = _twins_across_classes(tmp_path / "raw")
    with caplog.at_level("WARNING", logger="pipeline"):
        report = _run_split(tmp_path, monkeypatch)
    where = {r["path"]: (s, r["label"]) for s in SPLITS for r in read_csv(f"split/{s}.csv")}
    assert len(where) == 62  # keep: nothing dropped
    for src, dst in copies:
        scene = src.rsplit("_f", 1)[0]  # the copy and its scene's 3 frames: one split
        group = [p for p in where if p.startswith(scene + "_")] + [dst]
        assert len(group) == 4 and len({where[p][0] for p in group}) == 1
        assert where[dst][1] != where[src][1]  # under another label
    assert report["test_with_train_twin"] == report["val_with_train_twin"] == 0
    lc = report["label_conflicts"]
    assert lc["policy"] == "keep"
    # each copy is a twin of its scene's 3 frames: 3 pairs with different labels per copy
    assert (lc["pairs"], lc["groups"], lc["images"], lc["dropped"]) == (6, 2, 8, 0)
    assert sum(lc["by_split"].values()) == 8
    assert report["near_duplicate_pairs"] == 60 + 2 * 3
    listed = {im["path"]: im["label"] for g in lc["list"] for im in g["images"]}
    assert listed["jerry/x_tom_s00.jpg"] == "jerry" and listed["tom/s00_f0.jpg"] == "tom"
    assert len(listed) == 8
    assert [g["labels"] for g in lc["list"]] == [{"jerry": 3, "tom": 1}, {"jerry": 1, "tom": 3}]
    for g in lc["list"]:  # one split per group, named by the group and each of its images
        assert {where[im["path"]][0] for im in g["images"]} == {g["split"]}
        assert all(im["split"] == g["split"] for im in g["images"])
    assert "6 near-duplicate pair(s) with different labels" in caplog.text
    assert "leakage.json" in caplog.text and "split.label_conflicts: drop" in caplog.text


def test_drop_removes_every_image_of_a_conflicting_group(tmp_path, monkeypatch, caplog):
    _twins_across_classes(tmp_path / "raw")
    with caplog.at_level("WARNING", logger="pipeline"):
        report = _run_split(tmp_path, monkeypatch, label_conflicts="drop")
    paths = {r["path"] for s in SPLITS for r in read_csv(f"split/{s}.csv")}
    lc = report["label_conflicts"]
    assert (lc["policy"], lc["groups"], lc["images"], lc["dropped"]) == ("drop", 2, 8, 8)
    assert lc["by_split"] == {s: 0 for s in SPLITS}
    assert {g["split"] for g in lc["list"]} == {"dropped"}
    dropped = {im["path"] for g in lc["list"] for im in g["images"]}
    assert len(paths) == 62 - 8 and not paths & dropped
    assert "dropped 8 image(s) of 2 near-duplicate group(s)" in caplog.text


def test_conflicts_are_counted_without_grouping_too(tmp_path, monkeypatch):
    _twins_across_classes(tmp_path / "raw")
    report = _run_split(tmp_path, monkeypatch, group_near_duplicates=False)
    lc = report["label_conflicts"]
    assert report["mode"] == "random" and (lc["pairs"], lc["groups"], lc["images"]) == (6, 2, 8)
    where = {r["path"]: s for s in SPLITS for r in read_csv(f"split/{s}.csv")}
    for g in lc["list"]:  # a group may straddle splits here: each image says where it went
        assert all(im["split"] == where[im["path"]] for im in g["images"])
        splits = {im["split"] for im in g["images"]}
        assert g["split"] == (splits.pop() if len(splits) == 1 else "several")


def test_drop_that_empties_a_class_is_refused(tmp_path, monkeypatch):
    from pipeline.utils import PipelineError

    rng = np.random.default_rng(2)
    _frames(tmp_path / "raw", "tom", 6, 2, rng)
    (tmp_path / "raw/jerry").mkdir()
    for f in ("s00_f0.jpg", "s01_f0.jpg", "s02_f0.jpg"):
        (tmp_path / "raw/jerry" / f).write_bytes((tmp_path / "raw/tom" / f).read_bytes())
    with pytest.raises(PipelineError, match=r"every image of class\(es\) \['jerry'\]"):
        _run_split(tmp_path, monkeypatch, label_conflicts="drop")
