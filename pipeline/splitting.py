"""The split: stratified, seeded train/val/test manifests, and the leakage report.

:func:`split_dataset` lists the class folders of ``data/raw``, finds near-duplicate images
(:mod:`pipeline.leakage`) and deals the images to the splits (:func:`make_split`); the label
conflicts (near-duplicates filed under different classes) are kept, each group in one split, or
dropped (``split.label_conflicts``). :func:`leakage_report` and :func:`conflict_report` make
``reports/leakage.json``. The ``split`` stage (:mod:`pipeline.stages.split`) writes the files.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from pipeline.leakage import dhash, near_duplicate_groups, near_duplicate_pairs
from pipeline.params import Params, SplitParams
from pipeline.sources import image_files
from pipeline.utils import PipelineError, log

SPLITS = ("train", "val", "test")
MAX_LISTED_GROUPS = 200  # label-conflict groups listed in reports/leakage.json (all are counted)
MAX_LISTED_IMAGES = 20  # images listed per group


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
    groups: list[list[str]],
    cfg: SplitParams,
    rng: np.random.Generator,
    placed: dict[str, int] | None = None,
) -> dict[str, list[str]]:
    """Shuffle one class's groups of files and deal them to test, val, then train.

    A group (near-duplicates kept together, or a single file) never straddles two splits.
    ``placed``: images of this class that already sit in each split (in groups shared with
    other classes, see :func:`make_split`); they count towards the shares. Test and val take
    whole groups until they hold their share of the class's images (at least one image each);
    train keeps the rest and must not be empty.
    """
    placed = placed or {}
    n = sum(len(g) for g in groups) + sum(placed.values())
    want = {"test": max(1, round(n * cfg.test)), "val": max(1, round(n * cfg.val))}
    out: dict[str, list[str]] = {"test": [], "val": [], "train": []}
    order = iter(rng.permutation(len(groups)))
    for name in ("test", "val"):
        while placed.get(name, 0) + len(out[name]) < want[name]:
            k = next(order, None)
            if k is None:
                break
            out[name].extend(groups[k])
    for k in order:
        out["train"].extend(groups[k])
    if not all(out[s] or placed.get(s, 0) for s in SPLITS):
        shared = sum(placed.values())
        raise ValueError(
            f"{n} image(s) in {len(groups)} group(s) of near-duplicates"
            + (f" (and {shared} in groups shared with other classes)" if shared else "")
            + " cannot fill train, val and test"
        )
    return out


def _spread(
    groups: list[list[tuple[str, str]]], cfg: SplitParams, rng: np.random.Generator
) -> dict[str, list[tuple[str, str]]]:
    """Deal groups of ``(path, label)`` to the splits in proportion to the split fractions.

    In a seeded random order, each group goes to the split furthest below its fraction of the
    images dealt so far, this group included (ties: train, then val, then test).
    """
    frac = {"train": cfg.train, "val": cfg.val, "test": cfg.test}
    out: dict[str, list[tuple[str, str]]] = {s: [] for s in SPLITS}
    dealt = 0
    for k in rng.permutation(len(groups)):
        dealt += len(groups[k])
        best = max(SPLITS, key=lambda s: round(frac[s] * dealt - len(out[s]), 9))
        out[best].extend(groups[k])
    return out


def make_split(
    classes: dict[str, list[str]],
    cfg: SplitParams,
    seed: int,
    group_of: dict[str, int] | None = None,
) -> dict[str, list[tuple[str, str]]]:
    """Stratified split: ``{split: [(path, class_name), ...]}``, each sorted by path.

    ``group_of`` maps a path to its near-duplicate group; paths of one group stay in one split,
    also when the group holds images of several classes. Without it every file is its own group.

    Groups of one class are dealt class by class (:func:`split_class`, seeded by ``seed`` and
    the class's position). Groups that span classes (label conflicts) are dealt first, as
    wholes, in proportion to the split fractions (:func:`_spread`, seeded by ``seed`` and the
    number of classes); each class's own groups then fill what its shares still lack. Without
    such groups the split is exactly the per-class one.
    """
    label_of = {p: name for name, files in classes.items() for p in files}
    key_of = (lambda p: group_of[p]) if group_of else (lambda p: p)
    members: dict[int | str, list[str]] = {}
    for _, files in sorted(classes.items()):
        for path in files:
            members.setdefault(key_of(path), []).append(path)
    mixed = {g for g, paths in members.items() if len({label_of[p] for p in paths}) > 1}
    shared = _spread(
        [[(p, label_of[p]) for p in members[g]] for g in members if g in mixed],
        cfg,
        np.random.default_rng([seed, len(classes)]),
    )
    out: dict[str, list[tuple[str, str]]] = {s: list(shared[s]) for s in SPLITS}
    for k, (name, files) in enumerate(sorted(classes.items())):
        grouped: dict[int | str, list[str]] = {}
        for path in files:
            if key_of(path) not in mixed:
                grouped.setdefault(key_of(path), []).append(path)
        placed = {s: sum(label == name for _, label in shared[s]) for s in SPLITS}
        try:
            parts = split_class(
                list(grouped.values()), cfg, np.random.default_rng([seed, k]), placed
            )
        except ValueError as exc:
            raise PipelineError(
                f"class '{name}' is too small to split: {exc}; add images to it (3 at the very "
                "least, a few dozen to learn anything) or remove the class folder"
            ) from None
        for s in SPLITS:
            out[s].extend((p, name) for p in parts[s])
    return {s: sorted(rows) for s, rows in out.items()}


def conflict_groups(labels: list[str], group_ids: list[int]) -> list[list[int]]:
    """Near-duplicate groups whose images carry more than one label: lists of image indices.

    ``labels`` and ``group_ids`` (:func:`pipeline.leakage.near_duplicate_groups`) are per
    image, in the same order. Groups are returned in order of their first image.
    """
    members: dict[int, list[int]] = {}
    for i, g in enumerate(group_ids):
        members.setdefault(g, []).append(i)
    return [m for m in members.values() if len({labels[i] for i in m}) > 1]


def conflict_report(
    parts: dict[str, list[tuple[str, str]]],
    paths: list[str],
    labels: list[str],
    pairs: list[tuple[int, int]],
    conflicts: list[list[int]],
    cfg: SplitParams,
) -> dict:
    """The ``label_conflicts`` section of ``reports/leakage.json``.

    Counts: near-duplicate ``pairs`` with different labels, conflicting ``groups`` (pairs
    joined transitively), the ``images`` in them, how many were ``dropped`` and where the kept
    ones are (``by_split``). ``list``: the first :data:`MAX_LISTED_GROUPS` groups, each with its
    labels' image counts, its ``split`` (``dropped``; ``several`` when the group straddles
    splits, which only an ungrouped split allows) and its first :data:`MAX_LISTED_IMAGES` images
    (``path``, ``label``, ``split``); ``more_images`` counts the rest.
    """
    where = {p: s for s in SPLITS for p, _ in parts[s]}
    in_conflict = [paths[i] for m in conflicts for i in m]
    listed = []
    for m in conflicts[:MAX_LISTED_GROUPS]:
        split = {where.get(paths[i], "dropped") for i in m}
        listed.append(
            {
                "labels": dict(sorted(Counter(labels[i] for i in m).items())),
                "split": split.pop() if len(split) == 1 else "several",
                "images": [
                    {"path": paths[i], "label": labels[i], "split": where.get(paths[i], "dropped")}
                    for i in m[:MAX_LISTED_IMAGES]
                ],
                "more_images": max(0, len(m) - MAX_LISTED_IMAGES),
            }
        )
    return {
        "policy": cfg.label_conflicts,
        "pairs": sum(labels[i] != labels[j] for i, j in pairs),
        "groups": len(conflicts),
        "images": len(in_conflict),
        "dropped": sum(p not in where for p in in_conflict),
        "by_split": {s: sum(where.get(p) == s for p in in_conflict) for s in SPLITS},
        "list": listed,
    }


def leakage_report(
    parts: dict[str, list[tuple[str, str]]],
    paths: list[str],
    pairs: list[tuple[int, int]],
    cfg: SplitParams,
) -> dict:
    """How many val/test images have a near-duplicate in train, with examples.

    Pairs with an image in no split (dropped label conflicts) are left out.
    """
    where = {p: s for s in SPLITS for p, _ in parts[s]}
    twins: dict[str, set[str]] = {s: set() for s in SPLITS}
    examples = []
    for i, j in pairs:
        a, b = paths[i], paths[j]
        sa, sb = where.get(a), where.get(b)
        if sa and sb and sa != sb and "train" in (sa, sb):
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


def _drop_conflicts(
    classes: dict[str, list[str]], paths: list[str], conflicts: list[list[int]]
) -> dict[str, list[str]]:
    """``classes`` without the images of label-conflict groups; refuses to empty a class."""
    dropped = {paths[i] for m in conflicts for i in m}
    kept = {c: [p for p in files if p not in dropped] for c, files in classes.items()}
    emptied = sorted(c for c, files in kept.items() if not files)
    if emptied:
        raise PipelineError(
            f"split.label_conflicts is 'drop' and every image of class(es) {emptied} is a "
            "near-duplicate of an image of another class: set split.label_conflicts: keep, "
            "or check the class folders for copies"
        )
    return kept


def split_dataset(
    data: Path, params: Params
) -> tuple[list[str], dict[str, list[tuple[str, str]]], dict]:
    """Split the class folders of ``data``: the class names, ``{split: [(path, class), ...]}``
    (:func:`make_split`) and the content of ``reports/leakage.json``."""
    cfg = params.split
    classes = list_dataset(data)
    paths = [p for files in classes.values() for p in files]
    labels = [name for name, files in classes.items() for _ in files]
    hashes = [dhash(data / p) for p in paths]
    pairs = near_duplicate_pairs(hashes, cfg.near_duplicate_distance)
    ids = near_duplicate_groups(len(paths), pairs)
    conflicts = conflict_groups(labels, ids)
    kept = classes
    if cfg.label_conflicts == "drop" and conflicts:
        kept = _drop_conflicts(classes, paths, conflicts)
    group_of = dict(zip(paths, ids, strict=True)) if cfg.group_near_duplicates else None
    try:
        parts = make_split(kept, cfg, params.seed, group_of)
    except PipelineError as exc:
        if kept is classes:
            raise
        n = sum(map(len, classes.values())) - sum(map(len, kept.values()))
        raise PipelineError(
            f"{exc} ({n} image(s) were left out as label conflicts: split.label_conflicts is "
            "'drop')"
        ) from None
    leakage = leakage_report(parts, paths, pairs, cfg)
    leakage["label_conflicts"] = conflict_report(parts, paths, labels, pairs, conflicts, cfg)
    return sorted(classes), parts, leakage


def log_leakage(leakage: dict, cfg: SplitParams, where: Path) -> None:
    """Warn about train twins of val/test images and about label conflicts (listed in
    ``where``, the leakage report)."""
    if leakage["test_with_train_twin"] or leakage["val_with_train_twin"]:
        log.warning(
            "%d test and %d val image(s) have a near-duplicate in train (%s split); set "
            "split.group_near_duplicates: true to keep near-duplicates in one split",
            leakage["test_with_train_twin"],
            leakage["val_with_train_twin"],
            leakage["mode"],
        )
    lc = leakage["label_conflicts"]
    if lc["groups"] and lc["dropped"]:
        log.warning(
            "label conflicts: dropped %d image(s) of %d near-duplicate group(s) that hold more "
            "than one label (%d pair(s) with different labels; split.label_conflicts: drop); "
            "listed under label_conflicts in %s",
            lc["dropped"],
            lc["groups"],
            lc["pairs"],
            where,
        )
    elif lc["groups"]:
        log.warning(
            "label conflicts: %d near-duplicate pair(s) with different labels, in %d group(s) "
            "of %d image(s), kept (%s); listed under label_conflicts in %s. Fix the labels, or "
            "set split.label_conflicts: drop to leave them out",
            lc["pairs"],
            lc["groups"],
            lc["images"],
            "each group in one split"
            if cfg.group_near_duplicates
            else "split.group_near_duplicates is false: twins may straddle splits",
            where,
        )
