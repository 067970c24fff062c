"""Stage ``model_card``: ``reports/model_card.md`` and the gallery of misclassified test images.

Reads the params the card lists (``profile``, ``seed``, ``data``, ``split``, ``model``,
``pretrain``, ``augmentation``, ``transfer``, ``finetune``, ``train``, ``export``; the class
weights of ``train.class_weight`` are computed from the train manifest, as the training phases
compute them) and the pipeline's outputs:
``reports/metrics.json``, ``reports/predictions.csv``, ``reports/history/*.csv``,
``reports/data_source.json``, ``reports/weights_source.json``, ``reports/export.json`` and the
manifests in ``data/split``; ``reports/diagnosis.md`` and ``reports/leakage.json`` are included
when they exist (else the card says they are not available / not checked). Writes
``reports/model_card.md`` and ``reports/misclassified.png`` (the fine-tuned model's misclassified
test images, most confident first, from ``data/raw``).

Usage: ``python -m pipeline.stages.model_card [--params params.yaml]``
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from pipeline import paths
from pipeline.card import PHASES, class_counts, load_gallery_items, render_card
from pipeline.params import load_params
from pipeline.utils import PipelineError, atomic_file, log, read_csv, read_json, run_stage

# The reports the card needs, relative to --reports, and the stage that writes each
NEEDED = {
    "metrics.json": "evaluate",
    "predictions.csv": "evaluate",
    "data_source.json": "download_data",
    "weights_source.json": "download_weights",
    "export.json": "export",
    "history/transfer.csv": "transfer",
    "history/finetune.csv": "finetune",
}


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Write the model card and the error gallery.")
    parser.add_argument("--params", default=paths.PARAMS)
    parser.add_argument("--reports", default=paths.REPORTS, type=Path)
    parser.add_argument("--split", default=paths.SPLIT, type=Path)
    parser.add_argument("--data", default=paths.RAW, type=Path)
    parser.add_argument("--out", default=paths.MODEL_CARD, type=Path)
    parser.add_argument("--gallery", default=paths.MISCLASSIFIED, type=Path)
    parser.add_argument("--max-images", default=36, type=int, help="images in the gallery")
    return parser


def _check_inputs(reports: Path, split: Path) -> None:
    for name, stage in NEEDED.items():
        if not (reports / name).is_file():
            raise PipelineError(f"{reports / name} not found: run the {stage} stage first")
    if not (split / "classes.json").is_file():
        raise PipelineError(f"{split}/classes.json not found: run the split stage first")


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    params = load_params(args.params)
    reports = args.reports
    _check_inputs(reports, args.split)

    from pipeline import plots

    classes, counts = class_counts(args.split)
    items, n_wrong = load_gallery_items(
        read_csv(reports / "predictions.csv"), args.data, args.max_images
    )
    plots.misclassified_gallery(items, args.gallery, total=n_wrong)
    diagnosis = reports / "diagnosis.md"
    leakage = reports / "leakage.json"
    card = render_card(
        params,
        read_json(reports / "metrics.json"),
        read_json(reports / "data_source.json"),
        read_json(reports / "weights_source.json"),
        read_json(reports / "export.json"),
        classes,
        counts,
        {p: read_csv(reports / "history" / f"{p}.csv") for p in PHASES},
        diagnosis=diagnosis.read_text(encoding="utf-8") if diagnosis.is_file() else None,
        leakage=read_json(leakage) if leakage.is_file() else None,
        gallery=Path(os.path.relpath(args.gallery, args.out.parent)).as_posix(),
        misclassified=n_wrong,
    )
    with atomic_file(args.out) as fh:
        fh.write(card)
    log.info("wrote %s and %s (%d misclassified)", args.out, args.gallery, n_wrong)


if __name__ == "__main__":
    run_stage(main)
