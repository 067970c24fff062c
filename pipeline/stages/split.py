"""Stage ``split``: stratified, seeded train/val/test manifests of ``data/raw``.

Reads ``seed`` and ``split.*``. Writes ``data/split/{train,val,test}.csv`` (columns ``path`` –
relative to ``data/raw``, POSIX separators – and ``label``, the class name),
``data/split/classes.json`` (the class names in label-index order), once for all later stages, and
``reports/leakage.json``: how many val/test images have a near-duplicate in train
(:mod:`pipeline.leakage`), and the label conflicts: near-duplicates filed under different classes.
With ``split.group_near_duplicates`` near-duplicates stay together, across classes too (see
:func:`pipeline.splitting.make_split`); ``split.label_conflicts`` keeps groups that hold several
labels (with a warning) or drops all their images.

Usage: ``python -m pipeline.stages.split [--params params.yaml] [--data data/raw]
[--out data/split]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline import paths
from pipeline.params import load_params
from pipeline.splitting import SPLITS, log_leakage, split_dataset
from pipeline.utils import atomic_dir, log, run_stage, write_csv, write_json


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Split the dataset into train/val/test.")
    parser.add_argument("--params", default=paths.PARAMS)
    parser.add_argument("--data", default=paths.RAW, type=Path)
    parser.add_argument("--out", default=paths.SPLIT, type=Path)
    parser.add_argument("--leakage", default=paths.LEAKAGE, type=Path)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)

    params = load_params(args.params)
    classes, parts, leakage = split_dataset(args.data, params)
    with atomic_dir(args.out) as tmp:
        for s in SPLITS:
            write_csv(tmp / f"{s}.csv", ["path", "label"], parts[s])
        write_json(tmp / "classes.json", classes)
        write_json(args.leakage, leakage)
    log.info("split: %s", ", ".join(f"{s}={len(parts[s])}" for s in SPLITS))
    log_leakage(leakage, params.split, args.leakage)


if __name__ == "__main__":
    run_stage(main)
