"""Stage ``baseline``: a linear probe, the reference every trained model must beat.

A scikit-learn logistic regression on the frozen base's pooled features of the same split
(standardised; ``C`` chosen on val from :data:`pipeline.probe.C_GRID`). If the transfer
phase's head, which sees the same features, cannot beat it, the head's recipe is wrong; if
fine-tuning cannot, it did
not pay. Reads ``seed``, ``data.image_size``, ``model.architecture``, ``model.alpha``, the base
weights and the prepared images. Writes:

* ``data/features/``: the pooled features of every split (:mod:`pipeline.features`), one
  forward pass over the split, reused by the transfer phase when it trains its head on features,
  and the probe as a softmax layer (``probe.npz``), the head's starting point with
  ``transfer.head_init: probe``;
* ``reports/baseline.json``: the chosen ``C``, val accuracy for each ``C`` tried, val and test
  accuracy, macro F1 and loss, and the time taken.

The ``evaluate`` stage puts these figures beside transfer and fine-tuning in
``reports/metrics.json`` and flags a phase that does not beat the baseline on test accuracy.

Usage: ``python -m pipeline.stages.baseline [--params params.yaml]``
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from pipeline import paths
from pipeline.params import load_params
from pipeline.probe import fit_probe, linear_head, probe_report
from pipeline.utils import PipelineError, log, run_stage, write_json


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Linear-probe baseline on the frozen features.")
    parser.add_argument("--params", default=paths.PARAMS)
    parser.add_argument("--weights", default=paths.BASE_WEIGHTS, type=Path)
    parser.add_argument("--features", default=paths.FEATURES, type=Path)
    parser.add_argument("--out", default=paths.BASELINE, type=Path)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    params = load_params(args.params)
    if not args.weights.is_file():
        raise PipelineError(f"{args.weights} not found: run the download_weights stage first")

    from pipeline import features as feats
    from pipeline.data import load_prepared
    from pipeline.utils import seed_everything

    seed_everything(params.seed)
    size = params.data.image_size
    splits = {n: load_prepared(n, image_size=size) for n in feats.SPLITS}
    start = time.perf_counter()
    x = feats.compute(params, args.weights)
    extract_s = time.perf_counter() - start
    y = {n: np.asarray(s.labels) for n, s in splits.items()}
    classes = splits["train"].classes

    start = time.perf_counter()
    probe, c, scores = fit_probe(x["train"], y["train"], x["val"], y["val"], params.seed)
    fit_s = time.perf_counter() - start
    result = probe_report(probe, c, scores, x, y, classes)
    log.info(
        "baseline (C=%g, features %.1f s, fit %.1f s): val accuracy %.4f, test accuracy %.4f, "
        "macro F1 %.4f",
        c,
        extract_s,
        fit_s,
        result["val"]["accuracy"],
        result["test"]["accuracy"],
        result["test"]["macro_f1"],
    )
    feats.save(
        x, feats.spec(params, args.weights), args.features, probe=linear_head(probe, len(classes))
    )
    write_json(args.out, result)


if __name__ == "__main__":
    run_stage(main)
