"""Stage ``download_data``: materialise the dataset as ``data/raw/<class>/<image>``.

Reads ``seed`` and ``data.source``, ``data.path``, ``data.sample``, ``data.kaggle``.
Writes ``data/raw/`` (atomically: a failed run leaves the previous output untouched) and the
provenance record ``reports/data_source.json``.

Usage: ``python -m pipeline.download_data [--params params.yaml] [--out data/raw]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.params import load_params
from pipeline.sources import get_data_source
from pipeline.utils import PipelineError, atomic_dir, log, run_stage, write_json

MIN_CLASSES = 2


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Download or generate the dataset.")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", default="data/raw", type=Path)
    parser.add_argument("--info", default="reports/data_source.json", type=Path)
    args = parser.parse_args(argv)

    params = load_params(args.params)
    source = get_data_source(params)
    log.info("data source: %s", source.name)
    with atomic_dir(args.out) as tmp:
        info = source.fetch(tmp)
        counts = info["images"]
        if len(counts) < MIN_CLASSES:
            raise PipelineError(
                f"the {source.name} source gave {len(counts)} class(es); at least "
                f"{MIN_CLASSES} class folders of images are needed"
            )
    write_json(args.info, info)
    log.info("wrote %d images in %d classes to %s", sum(counts.values()), len(counts), args.out)


if __name__ == "__main__":
    run_stage(main)
