"""Stage ``transfer``: train a new head on the frozen pretrained base.

Reads ``seed``, ``data.image_size``, ``model.*``, ``augmentation.*``, ``transfer.*`` and
``train.*`` (distribution, precision; see :mod:`pipeline.distribute`).
Writes ``models/transfer/`` (``model.keras``: the classifier at its best epoch;
``best.weights.h5``: the ModelCheckpoint; ``state.json``: epochs run and best epoch),
``reports/history/transfer.csv`` (one row per epoch) and TensorBoard logs in ``logs/transfer``;
in a multi-worker run only the chief writes them.

Usage: ``python -m pipeline.transfer [--params params.yaml]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.params import load_params
from pipeline.utils import PipelineError, log, run_stage, write_json


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Transfer learning: frozen base, new head.")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--weights", default="models/base.weights.h5", type=Path)
    parser.add_argument("--out", default="models/transfer", type=Path)
    parser.add_argument("--history", default="reports/history/transfer.csv", type=Path)
    parser.add_argument("--logs", default="logs/transfer", type=Path)
    args = parser.parse_args(argv)

    params = load_params(args.params)
    if not args.weights.is_file():
        raise PipelineError(f"{args.weights} not found: run the download_weights stage first")

    from pipeline import distribute
    from pipeline.models import build_base, build_classifier, compile_model
    from pipeline.training import fit_phase, load_train_val, write_history

    strategy = distribute.setup(params.train, params.seed)
    m, cfg, size = params.model, params.transfer, params.data.image_size
    batch = distribute.global_batch_size(cfg.batch_size, strategy)
    train, train_ds, val_ds = load_train_val(size, batch, params.seed)
    with strategy.scope():
        base = build_base(m.architecture, m.alpha, size, weights=args.weights)
        model = build_classifier(
            base,
            m.architecture,
            size,
            len(train.classes),
            aug=params.augmentation,
            seed=params.seed,
            dense_units=m.dense_units,
            dropout=m.dropout,
        )
        compile_model(model, distribute.learning_rate(cfg.learning_rate, params.train, strategy))
    log.info(
        "transfer: %d trainable / %d total parameters",
        sum(int(w.numpy().size) for w in model.trainable_weights),
        model.count_params(),
    )
    with distribute.output_dirs(strategy, args.out, args.logs) as (tmp, tb):
        rows, result = fit_phase(
            model,
            train_ds,
            val_ds,
            phase="transfer",
            epochs=cfg.epochs,
            initial_epoch=0,
            patience=cfg.patience,
            work_dir=tmp,
            log_dir=tb,
            strategy=strategy,
        )
        model.save(tmp / "model.keras")
        write_json(tmp / "state.json", result.to_dict())
        if distribute.is_chief(strategy):
            write_history(args.history, rows)


if __name__ == "__main__":
    run_stage(main)
