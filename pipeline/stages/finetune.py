"""Stage ``finetune``: unfreeze the last layers of the base and train on at a low learning rate.

Reads ``seed``, ``data.image_size``, ``augmentation.*``, ``finetune.*`` and ``train.*``
(``train.class_weight``: :mod:`pipeline.balance`, from this phase's train split, as in transfer).
Loads ``models/transfer/model.keras``, makes the last ``finetune.unfreeze_layers`` layers of the
base trainable (BatchNorm layers stay frozen and in inference mode), recompiles with
``finetune.learning_rate`` and continues the epoch count where transfer learning stopped, on
train batches augmented as ``augmentation.*`` says (:func:`pipeline.data.augment_batch`).
With ``finetune.frozen_activations`` resolving to ``once`` (augmentation off or flip only), the
still-frozen bottom of the base runs once over the train images, their mirrors and the val
images (:func:`pipeline.training.activation_datasets`), and each epoch runs only the unfrozen top
of the base and the head on those activations (:func:`pipeline.models.split_at_frozen`): the same
layers of the same model. Writes ``models/finetune/`` (``model.keras``, ``best.weights.h5``,
``state.json`` with the class weights and how the frozen layers ran),
``reports/history/finetune.csv``, ``reports/model_summary.txt``
(``summary(show_trainable=True)``), ``reports/live/training`` (the transfer stage's DVCLive
run, ``reports/live/transfer``, continued with this phase's epochs: both phases on one step axis)
and ``logs/tensorboard/``: the transfer stage's TensorBoard logs (``logs/transfer``) with this
phase's events added to the same ``train/`` and ``validation/`` runs, so that
``tensorboard --logdir logs/tensorboard`` shows both phases as one continuous curve (epochs and
optimizer steps both continue). In a multi-worker run only the chief writes them.

Usage: ``python -m pipeline.stages.finetune [--params params.yaml]``
"""

from __future__ import annotations

import argparse
import io
import math
import shutil
from collections.abc import Callable
from pathlib import Path

from pipeline import paths
from pipeline.params import Params, load_params
from pipeline.utils import (
    PipelineError,
    atomic_file,
    log,
    read_json,
    run_stage,
    write_json,
)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Fine-tuning: unfreeze the last base layers.")
    parser.add_argument("--params", default=paths.PARAMS)
    parser.add_argument("--model", default=paths.TRANSFER, type=Path)
    parser.add_argument("--out", default=paths.FINETUNE, type=Path)
    parser.add_argument("--history", default=paths.FINETUNE_HISTORY, type=Path)
    parser.add_argument("--summary", default=paths.MODEL_SUMMARY, type=Path)
    parser.add_argument("--transfer-logs", default=paths.TRANSFER_LOGS, type=Path)
    parser.add_argument("--logs", default=paths.TENSORBOARD_LOGS, type=Path)
    parser.add_argument("--transfer-live", default=paths.LIVE_TRANSFER, type=Path)
    parser.add_argument("--live", default=paths.LIVE_TRAINING, type=Path)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)

    params = load_params(args.params)
    model_file, state_file = args.model / "model.keras", args.model / "state.json"
    if not model_file.is_file() or not state_file.is_file():
        raise PipelineError(f"{args.model} is incomplete: run the transfer stage first")

    from pipeline import distribute
    from pipeline.balance import by_name, class_weights, describe
    from pipeline.models import save_model
    from pipeline.training import fit_phase, open_live, write_history

    strategy = distribute.setup(params.train, params.seed)
    cfg = params.finetune
    model = _unfrozen_model(model_file, params, strategy)
    batch = distribute.global_batch_size(cfg.batch_size, strategy)
    trained, how, (train, train_ds, val_ds) = _training_data(model, params, batch, strategy)
    weights = class_weights(train.labels, len(train.classes), params.train.class_weight)
    log.info("finetune: class weights %s", describe(weights, train.classes))
    state = read_json(state_file)
    start = int(state["last_epoch"])
    chief = distribute.is_chief(strategy)
    with distribute.output_dirs(strategy, args.out, args.logs) as (tmp, tb):
        live = None
        if chief:  # the DVCLive run of transfer, continued from the next epoch on
            live = open_live(args.live, first_step=start, resume_from=args.transfer_live)
        if args.transfer_logs.is_dir():  # one run: transfer events, then this phase's
            shutil.copytree(args.transfer_logs, tb, dirs_exist_ok=True)
        else:
            log.warning("%s not found: TensorBoard shows fine-tuning only", args.transfer_logs)
        rows, result = fit_phase(
            trained,
            train_ds,
            val_ds,
            phase="finetune",
            epochs=cfg.epochs,
            initial_epoch=start,
            patience=cfg.patience,
            work_dir=tmp,
            log_dir=tb,
            step_offset=int(state.get("optimizer_steps", 0)),
            checkpoint=model,
            strategy=strategy,
            class_weight=weights,
            live=live,
            schedule=_cosine(params, strategy, start) if cfg.schedule == "cosine" else None,
        )
        save_model(model, tmp / "model.keras")
        write_json(
            tmp / "state.json",
            result.to_dict() | how | {"class_weight": by_name(weights, train.classes)},
        )
        if not chief:
            return  # the other workers write nothing that DVC tracks
        write_history(args.history, rows)
        _write_summary(model, args.summary)


def _unfrozen_model(model_file: Path, params: Params, strategy: object) -> object:
    """The transfer stage's model with the last ``finetune.unfreeze_layers`` base layers
    unfrozen, recompiled under ``strategy``."""
    from pipeline import distribute
    from pipeline.models import compile_model, get_base, load_model, unfreeze_last

    cfg = params.finetune
    with strategy.scope():
        model = load_model(model_file)
        n_base = len(get_base(model).layers)
        if cfg.unfreeze_layers > n_base:
            hub = type(get_base(model)).__module__.startswith("keras_hub")
            blocks = " (a KerasHub block counts as one)" if hub else ""
            raise PipelineError(
                f"finetune.unfreeze_layers = {cfg.unfreeze_layers} but the base has {n_base} "
                f"layers{blocks}: choose 1..{n_base}; the transfer stage's model is kept"
            )
        n_trainable = unfreeze_last(model, cfg.unfreeze_layers)
        # recompile: `trainable` changed
        compile_model(model, distribute.learning_rate(cfg.learning_rate, params.train, strategy))
    log.info(
        "finetune: last %d of %d base layers unfrozen (%d with trainable weights, BatchNorm "
        "frozen); %d trainable parameters",
        cfg.unfreeze_layers,
        n_base,
        n_trainable,
        sum(int(w.numpy().size) for w in model.trainable_weights),
    )
    return model


def _cosine(params: Params, strategy: object, start: int) -> Callable[[int], float]:
    """Epoch (0-based, counted over both phases) -> learning rate: ``finetune.learning_rate``
    at this phase's first epoch, down a half cosine towards 0 at its last."""
    from pipeline import distribute

    lr = distribute.learning_rate(params.finetune.learning_rate, params.train, strategy)
    epochs = params.finetune.epochs
    return lambda epoch: lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - start) / epochs))


def _training_data(model: object, params: Params, batch: int, strategy: object) -> tuple:
    """The model that trains, how the frozen layers run (for ``state.json``) and the train
    split with the train and val datasets: frozen activations computed once, with the unfrozen
    top of ``model`` training on them, or augmented images through the whole ``model``."""
    from pipeline import distribute
    from pipeline.models import compile_model, input_hw, split_at_frozen
    from pipeline.training import activation_datasets, load_train_val

    cfg, aug = params.finetune, params.augmentation
    size = input_hw(model)
    forced = cfg.frozen_activations == "once"
    if cfg.activations_once(aug):
        with strategy.scope():
            split = split_at_frozen(model)
        if split is None:
            why = "no frozen layer before the unfrozen ones but the input"
        else:
            bottom, top, cut = split
            data = activation_datasets(
                bottom, size, batch, params.seed, mirror=aug.flip, cache_mb=cfg.cache_mb
            )
            if data is not None:
                with strategy.scope():
                    lr = distribute.learning_rate(cfg.learning_rate, params.train, strategy)
                    compile_model(top, lr)
                log.info(
                    "finetune: the frozen layers up to %s ran once; epochs run the %d layers "
                    "after it and the head",
                    cut,
                    len(top.get_layer("trainable_top").operations) - 1,
                )
                return top, {"frozen_activations": "once", "frozen_until": cut}, data
            why = f"they would take more than finetune.cache_mb ({cfg.cache_mb:g} MiB)"
        if forced:
            raise PipelineError(
                f"finetune.frozen_activations is 'once' but the frozen activations cannot be "
                f"computed once: {why}. Set finetune.frozen_activations: every_epoch (or auto), "
                "or raise finetune.cache_mb; the transfer stage's model is kept"
            )
        log.info("finetune: the whole model runs every batch (%s)", why)
    data = load_train_val(size, batch, params.seed, augment=aug)
    return model, {"frozen_activations": "every_epoch"}, data


def _write_summary(model: object, path: Path) -> None:
    """``model.summary()`` with trainable flags and nested layers, into ``path``."""
    buf = io.StringIO()
    model.summary(
        print_fn=lambda line, **_: buf.write(line + "\n"),
        show_trainable=True,
        expand_nested=True,
        line_length=110,
    )
    with atomic_file(path) as fh:
        fh.write(buf.getvalue())


if __name__ == "__main__":
    run_stage(main)
