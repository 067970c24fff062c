"""Stage ``evaluate``: test-set metrics of the transfer-only and the fine-tuned model.

Puts them beside the linear-probe baseline (``reports/baseline.json``,
:mod:`pipeline.stages.baseline`) and flags a phase whose test accuracy does not beat it. Reads
``evaluate.tta``, ``diagnosis.*`` and, for the current values that the fit diagnosis's remedies
cite, the training params (the models and the split hold everything else). Writes
``reports/summary.json``, the headline (:func:`pipeline.evaluation.headline`: the top-level
``metrics:`` of ``dvc.yaml``, so what ``dvc exp show`` and ``dvc metrics diff`` display), and
``reports/metrics.json``, the details (accuracy, loss, macro F1 and per-class precision/recall/F1
of each model on test, ``val_accuracy`` and ``val_macro_f1`` on val, all with the test-time
augmentation of ``evaluate.tta``; ``finetune.tta``: the fine-tuned model's accuracy and macro F1
without (``none``) and with flip averaging (``flip``); ``baseline``: the linear probe's figures;
``diagnosis.<phase>``: the fit verdict, the baseline flag and their numeric evidence),
``reports/diagnosis.md`` (the verdicts with evidence and remedies, one paragraph per phase),
``reports/predictions.csv`` (one row per test image), the confusion plot data
``reports/plots/confusion_{transfer,finetune}.csv`` (``actual``, ``predicted``; DVC's ``confusion``
template) and the figures ``reports/figures/{learning_curves,confusion_matrix}.png`` (the learning
curves mark each phase's best epoch and shade the epochs its verdict points at).

Usage: ``python -m pipeline.stages.evaluate [--params params.yaml]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline import diagnosis, paths
from pipeline.evaluation import (
    PHASES,
    PREDICTION_COLUMNS,
    baseline_metrics,
    confusion_rows,
    diagnose,
    evaluate_model,
    headline,
    prediction_rows,
)
from pipeline.params import Params, load_params
from pipeline.utils import (
    PipelineError,
    atomic_file,
    log,
    read_csv,
    read_json,
    run_stage,
    write_csv,
    write_json,
)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Evaluate both models on the test split.")
    parser.add_argument("--models", default=paths.MODELS, type=Path)
    parser.add_argument("--reports", default=paths.REPORTS, type=Path)
    parser.add_argument("--baseline", default=paths.BASELINE, type=Path)
    parser.add_argument("--params", default=paths.PARAMS)
    return parser


def _check_inputs(args: argparse.Namespace) -> None:
    if not args.baseline.is_file():
        raise PipelineError(f"{args.baseline} not found: run the baseline stage (dvc repro)")
    for phase in PHASES:
        for name in ("model.keras", "state.json"):
            if not (args.models / phase / name).is_file():
                raise PipelineError(f"{args.models / phase}/{name} not found: run `dvc repro`")


def _write_diagnosis(
    args: argparse.Namespace, params: Params, metrics: dict, matrices: dict, test: object
) -> None:
    """The fit diagnosis into ``metrics``, then metrics.json, summary.json, diagnosis.md and
    the figures."""
    from pipeline import plots
    from pipeline.data import load_prepared

    reports = args.reports
    histories = {ph: read_csv(reports / "history" / f"{ph}.csv") for ph in PHASES}
    diagnoses = diagnose(
        histories,
        {ph: bool(read_json(args.models / ph / "state.json")["stopped_early"]) for ph in PHASES},
        load_prepared("train", image_size=params.data.image_size).labels,
        metrics,
        params,
    )
    metrics["diagnosis"] = {d.phase: d.to_metrics() for d in diagnoses}
    for d in diagnoses:
        log.info("%s: fit diagnosis: %s", d.phase, d.label)
    write_json(reports / "metrics.json", metrics)
    write_json(reports / "summary.json", headline(metrics))
    with atomic_file(reports / "diagnosis.md") as fh:
        fh.write(diagnosis.render_markdown(diagnoses, params))
    best_epochs, shaded = diagnosis.plot_marks(diagnoses)
    plots.learning_curves(
        [row for ph in PHASES for row in histories[ph]],
        reports / "figures" / "learning_curves.png",
        best_epochs=best_epochs,
        shaded=shaded,
    )
    plots.confusion_matrices(
        {"transfer only": matrices["transfer"], "fine-tuned": matrices["finetune"]},
        test.classes,
        reports / "figures" / "confusion_matrix.png",
    )


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    params = load_params(args.params)
    _check_inputs(args)

    from pipeline.data import load_prepared
    from pipeline.models import load_model

    test = load_prepared("test", image_size=params.data.image_size)
    val = load_prepared("val", image_size=params.data.image_size)
    metrics: dict = {
        "test_images": len(test),
        "val_images": len(val),
        "baseline": baseline_metrics(read_json(args.baseline)),
    }
    matrices, preds = {}, {}
    for phase in PHASES:
        model = load_model(args.models / phase / "model.keras")
        # the fine-tuned model is scored both ways, so the gain of evaluate.tta is on record
        metrics[phase], matrices[phase], preds[phase] = evaluate_model(
            model, test, val, params.evaluate.tta, both=phase == "finetune"
        )
        write_csv(
            args.reports / "plots" / f"confusion_{phase}.csv",
            ["actual", "predicted"],
            confusion_rows(test, preds[phase]),
        )
        log.info(
            "%s: test accuracy %.4f, macro F1 %.4f",
            phase,
            metrics[phase]["accuracy"],
            metrics[phase]["macro_f1"],
        )
    metrics["finetune_gain"] = round(
        metrics["finetune"]["accuracy"] - metrics["transfer"]["accuracy"], 4
    )
    write_csv(args.reports / "predictions.csv", PREDICTION_COLUMNS, prediction_rows(test, preds))
    _write_diagnosis(args, params, metrics, matrices, test)


if __name__ == "__main__":
    run_stage(main)
