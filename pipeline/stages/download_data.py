"""Stage ``download_data``: materialise the dataset as ``data/raw/<class>/<image>``.

Reads ``seed`` and ``data.source``, ``data.path``, ``data.sample``, ``data.kaggle``,
``data.min_image_side``, ``data.max_image_pixels``. Every image is checked once
(:mod:`pipeline.validation`): unusable files are skipped and listed, odd formats normalised.
Writes ``data/raw/`` (atomically: a failed run leaves the previous output untouched), the
provenance record ``reports/data_source.json`` and ``reports/data_validation.json`` (per-class
counts, size statistics, skipped and converted files with the reason).

Usage: ``python -m pipeline.stages.download_data [--params params.yaml] [--out data/raw]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline import paths
from pipeline.params import load_params
from pipeline.sources import get_data_source
from pipeline.utils import PipelineError, atomic_dir, log, run_stage, write_json
from pipeline.validation import validate_images

MIN_CLASSES = 2


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Download or generate the dataset.")
    parser.add_argument("--params", default=paths.PARAMS)
    parser.add_argument("--out", default=paths.RAW, type=Path)
    parser.add_argument("--info", default=paths.DATA_SOURCE, type=Path)
    parser.add_argument("--validation", default=paths.DATA_VALIDATION, type=Path)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)

    params = load_params(args.params)
    source = get_data_source(params)
    log.info("data source: %s", source.name)
    with atomic_dir(args.out) as tmp:
        info = source.fetch(tmp)
        if len(info["images"]) < MIN_CLASSES:
            raise PipelineError(
                f"the {source.name} source gave {len(info['images'])} class(es); at least "
                f"{MIN_CLASSES} class folders of images are needed"
            )
        report = validate_images(
            tmp, min_side=params.data.min_image_side, max_pixels=params.data.max_image_pixels
        ).to_dict()
        report["ignored"] = info.pop("ignored", [])
        counts = info["images"] = report["per_class"]
        write_json(args.validation, report)
        write_json(args.info, info)
    if report["skipped"] or report["ignored"]:
        log.warning(
            "skipped %d unusable file(s) and ignored %d non-image entr(ies): see %s",
            report["skipped"],
            len(report["ignored"]),
            args.validation,
        )
    log.info("wrote %d images in %d classes to %s", sum(counts.values()), len(counts), args.out)


if __name__ == "__main__":
    run_stage(main)
