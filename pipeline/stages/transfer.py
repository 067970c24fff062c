"""Stage ``transfer``: train a new head on the frozen pretrained base.

Reads ``seed``, ``data.image_size``, ``model.*``, ``augmentation.*``, ``transfer.*`` and
``train.*`` (distribution, precision, see :mod:`pipeline.distribute`; class weights, see
:mod:`pipeline.balance`), and the prepared images of ``data/prepared``. Writes
``models/transfer/`` (``model.keras``: the classifier at its best epoch; ``best.weights.h5``: its
checkpoint; ``state.json``: epochs run, best epoch, how the base ran and the class weights),
``reports/history/transfer.csv`` (one row per epoch), TensorBoard logs in ``logs/transfer`` and
the DVCLive run in ``reports/live/transfer`` (:func:`pipeline.training.open_live`, continued by
the finetune stage); in a multi-worker run only the chief writes them.

With ``transfer.base_features`` resolving to ``once`` (``auto`` without augmentation or with
``transfer.augmented_views``), the frozen base runs once over the train and val images and the
head trains on the pooled features (:func:`pipeline.models.split_at_features`), reusing the
features that the ``baseline`` stage stored in ``data/features`` when they come from the same
base, size and split; with augmentation and ``transfer.augmented_views`` > 0, the head trains on
that many augmented views of the train features instead, computed once. Otherwise the whole
model runs on every batch of augmented images (:func:`pipeline.data.augment_batch`).

Usage: ``python -m pipeline.stages.transfer [--params params.yaml]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline import paths
from pipeline.params import Params, load_params
from pipeline.utils import PipelineError, log, run_stage, write_json


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Transfer learning: frozen base, new head.")
    parser.add_argument("--params", default=paths.PARAMS)
    parser.add_argument("--weights", default=paths.BASE_WEIGHTS, type=Path)
    parser.add_argument("--features", default=paths.FEATURES, type=Path)
    parser.add_argument("--out", default=paths.TRANSFER, type=Path)
    parser.add_argument("--history", default=paths.TRANSFER_HISTORY, type=Path)
    parser.add_argument("--logs", default=paths.TRANSFER_LOGS, type=Path)
    parser.add_argument("--live", default=paths.LIVE_TRANSFER, type=Path)
    return parser


def _build(params: Params, weights: Path, features_dir: Path, n_classes: int, strategy) -> tuple:
    """The classifier, the model that trains (the head alone when the base features are
    computed once) and the features model (or ``None``), built and compiled under ``strategy``."""
    from pipeline import distribute
    from pipeline.models import classifier_from_params, compile_model, split_at_features

    cfg = params.transfer
    features = None
    with strategy.scope():
        model = classifier_from_params(params, n_classes, weights=weights)
        if cfg.head_init == "probe":
            from pipeline.features import load_probe

            probe = load_probe(features_dir)
            model.get_layer("predictions").set_weights([probe["kernel"], probe["bias"]])
            log.info("transfer: the head starts as the baseline's logistic regression")
        if cfg.features_once(params.augmentation):
            features, trained = split_at_features(model)
        else:
            trained = model
        compile_model(trained, distribute.learning_rate(cfg.learning_rate, params.train, strategy))
    return model, trained, features


def _datasets(params: Params, args: argparse.Namespace, features: object, batch: int) -> tuple:
    """The train split and the train and val datasets: base features (``features`` is not
    ``None``) or augmented images."""
    from pipeline.training import feature_datasets, load_train_val

    cfg, size, aug = params.transfer, params.data.image_size, params.augmentation
    views = cfg.views(aug)
    if features is not None:
        if aug.enabled and not views:
            log.warning(
                "transfer.base_features is 'once' and transfer.augmented_views 0: the head "
                "trains on un-augmented images (augmentation applies in fine-tuning only)"
            )
        from pipeline import features as feats

        stored = feats.load(feats.spec(params, args.weights), ("train", "val"), args.features)
        return feature_datasets(
            features, size, batch, params.seed, stored=stored, augment=aug, views=views
        )
    if cfg.augmented_views:
        log.warning("transfer.augmented_views is ignored: the whole model runs every batch")
    return load_train_val(size, batch, params.seed, augment=aug)


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)

    params = load_params(args.params)
    if not args.weights.is_file():
        raise PipelineError(f"{args.weights} not found: run the download_weights stage first")

    from pipeline import distribute
    from pipeline.balance import by_name, class_weights, describe
    from pipeline.data import load_prepared
    from pipeline.models import save_model
    from pipeline.training import fit_phase, open_live, write_history

    strategy = distribute.setup(params.train, params.seed)
    cfg, size = params.transfer, params.data.image_size
    batch = distribute.global_batch_size(cfg.batch_size, strategy)
    classes = load_prepared("train", image_size=size).classes  # fails fast if not prepared
    model, trained, features = _build(params, args.weights, args.features, len(classes), strategy)
    train, train_ds, val_ds = _datasets(params, args, features, batch)
    weights = class_weights(train.labels, len(classes), params.train.class_weight)
    log.info("transfer: class weights %s", describe(weights, classes))
    log.info(
        "transfer: %d trainable / %d total parameters",
        sum(int(w.numpy().size) for w in model.trainable_weights),
        model.count_params(),
    )
    chief = distribute.is_chief(strategy)
    with distribute.output_dirs(strategy, args.out, args.logs) as (tmp, tb):
        live = open_live(args.live, first_step=0) if chief else None
        rows, result = fit_phase(
            trained,
            train_ds,
            val_ds,
            phase="transfer",
            epochs=cfg.epochs,
            initial_epoch=0,
            patience=cfg.patience,
            work_dir=tmp,
            log_dir=tb,
            checkpoint=model,
            strategy=strategy,
            class_weight=weights,
            live=live,
        )
        save_model(model, tmp / "model.keras")
        state = result.to_dict() | {
            "base_features": "once" if features is not None else "every_epoch",
            "augmented_views": cfg.views(params.augmentation),
            "class_weight": by_name(weights, classes),
        }
        write_json(tmp / "state.json", state)
        if chief:
            write_history(args.history, rows)


if __name__ == "__main__":
    run_stage(main)
