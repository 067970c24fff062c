"""Stage ``download_weights``: the pretrained base-model weights file.

Reads ``model.architecture``, ``model.alpha``, ``model.weights``,
``model.weights_path``, ``model.kaggle_handle``, ``model.kaggle_file`` and ``pretrain.*``.
Writes ``models/base.weights.h5`` (weights of the headless base, loadable at any
``data.image_size``; for a KerasHub base also its config and preprocessing, see
:func:`pipeline.models.save_base`) and the provenance record ``reports/weights_source.json``.

Usage: ``python -m pipeline.stages.download_weights [--params params.yaml]
[--out models/base.weights.h5]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline import paths
from pipeline.params import load_params
from pipeline.utils import atomic_path, log, run_stage, seed_everything, write_json


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Fetch or pretrain the base-model weights.")
    parser.add_argument("--params", default=paths.PARAMS)
    parser.add_argument("--out", default=paths.BASE_WEIGHTS, type=Path)
    parser.add_argument("--info", default=paths.WEIGHTS_SOURCE, type=Path)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)

    params = load_params(args.params)
    from pipeline.models import save_base  # imports TensorFlow: after validation
    from pipeline.weights import pretrained_base

    seed_everything(params.pretrain.seed)  # the base does not vary with `seed`
    base, info = pretrained_base(params)
    info.update(architecture=params.model.architecture, alpha=params.model.alpha)
    with atomic_path(args.out) as tmp:
        save_base(base, tmp, info.get("preprocessing"))
    write_json(args.info, info)
    log.info("wrote %s (%s weights)", args.out, info["source"])


if __name__ == "__main__":
    run_stage(main)
