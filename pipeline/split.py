"""Stage ``split``: stratified, seeded train/val/test manifests of ``data/raw``.

Reads ``seed`` and ``split.*``. Writes ``data/split/{train,val,test}.csv`` (columns ``path`` –
relative to ``data/raw``, POSIX separators – and ``label``, the class name) and
``data/split/classes.json`` (the class names in label-index order), once for all later stages.

Usage: ``python -m pipeline.split [--params params.yaml] [--data data/raw] [--out data/split]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

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
    files: list[str], cfg: SplitParams, rng: np.random.Generator
) -> dict[str, list[str]]:
    """Shuffle one class's files and cut them by the split fractions (>= 1 file per split)."""
    n = len(files)
    n_test = max(1, round(n * cfg.test))
    n_val = max(1, round(n * cfg.val))
    if n - n_test - n_val < 1:
        raise ValueError(f"{n} image(s) cannot fill train, val and test")
    order = rng.permutation(n)
    shuffled = [files[i] for i in order]
    return {
        "test": shuffled[:n_test],
        "val": shuffled[n_test : n_test + n_val],
        "train": shuffled[n_test + n_val :],
    }


def make_split(
    classes: dict[str, list[str]], cfg: SplitParams, seed: int
) -> dict[str, list[tuple[str, str]]]:
    """Stratified split: ``{split: [(path, class_name), ...]}``, each sorted by path."""
    out: dict[str, list[tuple[str, str]]] = {s: [] for s in SPLITS}
    for k, (name, files) in enumerate(sorted(classes.items())):
        try:
            parts = split_class(files, cfg, np.random.default_rng([seed, k]))
        except ValueError as exc:
            raise PipelineError(
                f"class '{name}' is too small to split: {exc}; add images to it (3 at the very "
                "least, a few dozen to learn anything) or remove the class folder"
            ) from None
        for s in SPLITS:
            out[s].extend((p, name) for p in parts[s])
    return {s: sorted(rows) for s, rows in out.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Split the dataset into train/val/test.")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--data", default="data/raw", type=Path)
    parser.add_argument("--out", default="data/split", type=Path)
    args = parser.parse_args(argv)

    params = load_params(args.params)
    classes = list_dataset(args.data)
    parts = make_split(classes, params.split, params.seed)
    with atomic_dir(args.out) as tmp:
        for s in SPLITS:
            write_csv(tmp / f"{s}.csv", ["path", "label"], parts[s])
        write_json(tmp / "classes.json", sorted(classes))
    log.info("split: %s", ", ".join(f"{s}={len(parts[s])}" for s in SPLITS))


if __name__ == "__main__":
    run_stage(main)
