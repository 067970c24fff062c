"""Stage ``split``: stratified, seeded train/val/test manifests of ``data/raw``.

Reads ``seed`` and ``split.*``. Writes ``data/split/{train,val,test}.csv`` (columns ``path`` –
relative to ``data/raw``, POSIX separators – and ``label``, the class name),
``data/split/classes.json`` (the class names in label-index order), once for all later stages,
and ``reports/leakage.json``: how many val/test images have a near-duplicate in train
(:mod:`pipeline.leakage`). With ``split.group_near_duplicates`` near-duplicates stay together.

Usage: ``python -m pipeline.split [--params params.yaml] [--data data/raw] [--out data/split]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pipeline.leakage import dhash, near_duplicate_groups, near_duplicate_pairs
from pipeline.params import SplitParams, load_params
from pipeline.sources import image_files
from pipeline.utils import PipelineError, atomic_dir, log, run_stage, write_csv, write_json

SPLITS = ("train", "val", "test")


def list_dataset(root: Path) -> dict[str, list[str]]:
    """Map each class folder of ``root`` to its image paths (relative, POSIX, sorted)."""
    if not root.is_dir():
        raise PipelineError(f"{root} does not exist: run the download_data stage first")
    classes = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = [f.relative_to(root).as_posix() for f in image_files(d)]
        if files:
            classes[d.name] = files
    if len(classes) < 2:
        raise PipelineError(f"{root} holds {len(classes)} class folder(s) with images; need >= 2")
    return classes


def split_class(
    groups: list[list[str]], cfg: SplitParams, rng: np.random.Generator
) -> dict[str, list[str]]:
    """Shuffle one class's groups of files and deal them to test, val, then train.

    A group (near-duplicates kept together, or a single file) never straddles two splits.
    Test and val take whole groups until they hold their share of the class's files (at least
    one file each); train keeps the rest and must not be empty.
    """
    n = sum(len(g) for g in groups)
    want = {"test": max(1, round(n * cfg.test)), "val": max(1, round(n * cfg.val))}
    out: dict[str, list[str]] = {"test": [], "val": [], "train": []}
    order = iter(rng.permutation(len(groups)))
    for name in ("test", "val"):
        while len(out[name]) < want[name]:
            k = next(order, None)
            if k is None:
                break
            out[name].extend(groups[k])
    for k in order:
        out["train"].extend(groups[k])
    if not out["train"] or not out["val"] or not out["test"]:
        raise ValueError(
            f"{n} image(s) in {len(groups)} group(s) of near-duplicates cannot fill train, val "
            "and test"
        )
    return out


def make_split(
    classes: dict[str, list[str]],
    cfg: SplitParams,
    seed: int,
    group_of: dict[str, int] | None = None,
) -> dict[str, list[tuple[str, str]]]:
    """Stratified split: ``{split: [(path, class_name), ...]}``, each sorted by path.

    ``group_of`` maps a path to its near-duplicate group; paths of one group stay in one split.
    Without it every file is its own group.
    """
    out: dict[str, list[tuple[str, str]]] = {s: [] for s in SPLITS}
    for k, (name, files) in enumerate(sorted(classes.items())):
        grouped: dict[int | str, list[str]] = {}
        for path in files:
            grouped.setdefault(group_of[path] if group_of else path, []).append(path)
        try:
            parts = split_class(list(grouped.values()), cfg, np.random.default_rng([seed, k]))
        except ValueError as exc:
            raise PipelineError(
                f"class '{name}' is too small to split: {exc}; add images to it (3 at the very "
                "least, a few dozen to learn anything) or remove the class folder"
            ) from None
        for s in SPLITS:
            out[s].extend((p, name) for p in parts[s])
    return {s: sorted(rows) for s, rows in out.items()}


def leakage_report(
    parts: dict[str, list[tuple[str, str]]],
    paths: list[str],
    pairs: list[tuple[int, int]],
    cfg: SplitParams,
) -> dict:
    """How many val/test images have a near-duplicate in train, with examples."""
    where = {p: s for s in SPLITS for p, _ in parts[s]}
    twins: dict[str, set[str]] = {s: set() for s in SPLITS}
    examples = []
    for i, j in pairs:
        a, b = paths[i], paths[j]
        sa, sb = where[a], where[b]
        if sa != sb and "train" in (sa, sb):
            other, split = (b, sb) if sa == "train" else (a, sa)
            twins[split].add(other)
            if len(examples) < 20:
                examples.append({"train": a if sa == "train" else b, split: other})
    return {
        "mode": "grouped" if cfg.group_near_duplicates else "random",
        "max_distance": cfg.near_duplicate_distance,
        "near_duplicate_pairs": len(pairs),
        "test_with_train_twin": len(twins["test"]),
        "test_with_train_twin_fraction": round(len(twins["test"]) / max(1, len(parts["test"])), 4),
        "val_with_train_twin": len(twins["val"]),
        "examples": examples,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Split the dataset into train/val/test.")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--data", default="data/raw", type=Path)
    parser.add_argument("--out", default="data/split", type=Path)
    parser.add_argument("--leakage", default="reports/leakage.json", type=Path)
    args = parser.parse_args(argv)

    params = load_params(args.params)
    cfg = params.split
    classes = list_dataset(args.data)
    paths = [p for files in classes.values() for p in files]
    hashes = [dhash(args.data / p) for p in paths]
    pairs = near_duplicate_pairs(hashes, cfg.near_duplicate_distance)
    group_of = None
    if cfg.group_near_duplicates:
        ids = near_duplicate_groups(len(paths), pairs)
        group_of = dict(zip(paths, ids, strict=True))
    parts = make_split(classes, cfg, params.seed, group_of)
    leakage = leakage_report(parts, paths, pairs, cfg)
    with atomic_dir(args.out) as tmp:
        for s in SPLITS:
            write_csv(tmp / f"{s}.csv", ["path", "label"], parts[s])
        write_json(tmp / "classes.json", sorted(classes))
        write_json(args.leakage, leakage)
    log.info("split: %s", ", ".join(f"{s}={len(parts[s])}" for s in SPLITS))
    if leakage["test_with_train_twin"] or leakage["val_with_train_twin"]:
        log.warning(
            "%d test and %d val image(s) have a near-duplicate in train (%s split); set "
            "split.group_near_duplicates: true to keep near-duplicates in one split",
            leakage["test_with_train_twin"],
            leakage["val_with_train_twin"],
            leakage["mode"],
        )


if __name__ == "__main__":
    run_stage(main)
