"""Stage ``evaluate``: test-set metrics of the transfer-only and the fine-tuned model.

Puts them beside the linear-probe baseline (``reports/baseline.json``, :mod:`pipeline.baseline`)
and flags a phase whose test accuracy does not beat it. Reads ``diagnosis.*`` and, for the
current values that the fit diagnosis's remedies cite, the training params (the models and the
split hold everything else). Writes ``reports/summary.json``, the headline (:func:`headline`:
the top-level ``metrics:`` of ``dvc.yaml``, so what ``dvc exp show`` and ``dvc metrics diff``
display), and ``reports/metrics.json``, the details (accuracy, loss, macro F1 and
per-class precision/recall/F1 of each model on test, ``val_accuracy`` and ``val_macro_f1`` on
val; ``baseline``: the linear probe's figures; ``diagnosis.<phase>``: the fit verdict, the
baseline flag and their numeric evidence), ``reports/diagnosis.md`` (the verdicts with evidence
and remedies, one paragraph per phase), ``reports/predictions.csv`` (one row per test image), the
confusion plot data ``reports/plots/confusion_{transfer,finetune}.csv`` (``actual``,
``predicted``; DVC's ``confusion`` template) and the figures
``reports/figures/{learning_curves,confusion_matrix}.png`` (the learning curves mark each phase's
best epoch and shade the epochs its verdict points at).

Usage: ``python -m pipeline.evaluate [--params params.yaml]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pipeline import diagnosis
from pipeline.metrics import classification_metrics
from pipeline.params import load_params
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

PHASES = ("transfer", "finetune")


def headline(metrics: dict) -> dict:
    """The few numbers a run is judged by, from the full ``reports/metrics.json`` content.

    Test accuracy of the linear-probe baseline and of both phases; macro F1, val accuracy and
    the fit verdict of the fine-tuned model. Everything else stays in ``metrics.json``.
    """
    tuned = metrics["finetune"]
    return {
        "baseline": {"accuracy": metrics["baseline"]["accuracy"]},
        "transfer": {"accuracy": metrics["transfer"]["accuracy"]},
        "finetune": {
            "accuracy": tuned["accuracy"],
            "macro_f1": tuned["macro_f1"],
            "val_accuracy": tuned["val_accuracy"],
            "verdict": metrics["diagnosis"]["finetune"]["verdict"],
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Evaluate both models on the test split.")
    parser.add_argument("--models", default="models", type=Path)
    parser.add_argument("--reports", default="reports", type=Path)
    parser.add_argument("--baseline", default="reports/baseline.json", type=Path)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    reports = args.reports
    if not args.baseline.is_file():
        raise PipelineError(f"{args.baseline} not found: run the baseline stage (dvc repro)")
    for phase in PHASES:
        for name in ("model.keras", "state.json"):
            if not (args.models / phase / name).is_file():
                raise PipelineError(f"{args.models / phase}/{name} not found: run `dvc repro`")

    from pipeline import plots
    from pipeline.data import load_prepared, make_dataset
    from pipeline.models import load_model

    test = load_prepared("test", image_size=params.data.image_size)
    val = load_prepared("val", image_size=params.data.image_size)
    y_true, y_val = np.asarray(test.labels), np.asarray(val.labels)
    probe = read_json(args.baseline)
    metrics: dict = {
        "test_images": len(test),
        "val_images": len(val),
        "baseline": {
            **probe["test"],
            **{f"val_{k}": v for k, v in probe["val"].items() if k != "loss"},
            "C": probe["C"],
        },
    }
    matrices, preds = {}, {}
    for phase in PHASES:
        model = load_model(args.models / phase / "model.keras")
        size = int(model.input_shape[1])
        proba = model.predict(make_dataset(test, size, 64), verbose=0)
        metrics[phase], matrices[phase] = classification_metrics(y_true, proba, test.classes)
        on_val, _ = classification_metrics(
            y_val, model.predict(make_dataset(val, size, 64), verbose=0), val.classes
        )
        metrics[phase].update(val_accuracy=on_val["accuracy"], val_macro_f1=on_val["macro_f1"])
        preds[phase] = proba
        write_csv(
            reports / "plots" / f"confusion_{phase}.csv",
            ["actual", "predicted"],
            [
                [test.classes[a], test.classes[b]]
                for a, b in zip(y_true, proba.argmax(1), strict=True)
            ],
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
    write_csv(
        reports / "predictions.csv",
        ["path", "actual", "transfer", "transfer_confidence", "finetune", "finetune_confidence"],
        [
            [
                name,
                test.classes[y],
            ]
            + [
                x
                for ph in PHASES
                for x in (
                    test.classes[int(preds[ph][i].argmax())],
                    round(float(preds[ph][i].max()), 4),
                )
            ]
            for i, (name, y) in enumerate(zip(test.names, y_true, strict=True))
        ],
    )
    histories = {ph: read_csv(reports / "history" / f"{ph}.csv") for ph in PHASES}
    baseline = diagnosis.majority_baseline(
        load_prepared("train", image_size=params.data.image_size).labels
    )
    diagnoses = [
        diagnosis.compare_to_probe(
            diagnosis.diagnose_phase(
                histories[ph],
                phase=ph,
                stopped_early=bool(read_json(args.models / ph / "state.json")["stopped_early"]),
                baseline=baseline,
                params=params,
                test_accuracy=metrics[ph]["accuracy"],
            ),
            metrics["baseline"]["accuracy"],
            params,
        )
        for ph in PHASES
    ]
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


if __name__ == "__main__":
    run_stage(main)
