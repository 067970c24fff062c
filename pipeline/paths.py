"""Every path of the pipeline, relative to the project root (where ``dvc.yaml`` is).

``dvc.yaml`` names these paths as the stages' deps, outs, metrics and plots; the stages' command
line defaults and the library's defaults are these constants, so the two cannot drift apart
(``tests/test_paths.py`` checks every path of ``dvc.yaml`` against this module). Paths under
``logs/`` are by-products that no stage declares (wall-clock times; git-ignored).
"""

from __future__ import annotations

from pathlib import Path

PARAMS = Path("params.yaml")
PROFILES = Path("profiles")
CODE = Path("pipeline")  # the stages' code deps: modules of the package

# data/
DATA = Path("data")
RAW = DATA / "raw"  # download_data: one folder of images per class
SPLIT = DATA / "split"  # split: {train,val,test}.csv and classes.json
PREPARED = DATA / "prepared"  # prepare: one .npy per image, and prepared.json
FEATURES = DATA / "features"  # baseline: the frozen base's pooled features and the probe
CLASSES = SPLIT / "classes.json"  # the class names in label-index order

# models/
MODELS = Path("models")
BASE_WEIGHTS = MODELS / "base.weights.h5"  # download_weights
TRANSFER = MODELS / "transfer"  # transfer: model.keras, state.json
FINETUNE = MODELS / "finetune"  # finetune: model.keras, state.json
FINETUNED_MODEL = FINETUNE / "model.keras"
EXPORT = MODELS / "export"  # export: saved_model/, model.tflite, classes.json

# reports/
REPORTS = Path("reports")
DATA_SOURCE = REPORTS / "data_source.json"
DATA_VALIDATION = REPORTS / "data_validation.json"
WEIGHTS_SOURCE = REPORTS / "weights_source.json"
LEAKAGE = REPORTS / "leakage.json"
BASELINE = REPORTS / "baseline.json"
HISTORY = REPORTS / "history"
TRANSFER_HISTORY = HISTORY / "transfer.csv"
FINETUNE_HISTORY = HISTORY / "finetune.csv"
LIVE_TRANSFER = REPORTS / "live" / "transfer"  # DVCLive run of the transfer phase
LIVE_TRAINING = REPORTS / "live" / "training"  # the whole DVCLive run, continued by finetune
MODEL_SUMMARY = REPORTS / "model_summary.txt"
SUMMARY = REPORTS / "summary.json"  # evaluate's headline metrics
METRICS = REPORTS / "metrics.json"
DIAGNOSIS = REPORTS / "diagnosis.md"
PREDICTIONS = REPORTS / "predictions.csv"
PLOTS = REPORTS / "plots"  # confusion_{transfer,finetune}.csv
FIGURES = REPORTS / "figures"  # learning_curves.png, confusion_matrix.png
LEARNING_CURVES = FIGURES / "learning_curves.png"
CONFUSION_FIGURE = FIGURES / "confusion_matrix.png"
EXPORT_REPORT = REPORTS / "export.json"
MODEL_CARD = REPORTS / "model_card.md"
MISCLASSIFIED = REPORTS / "misclassified.png"
REVIEW = REPORTS / "review"  # tools.report: the review report (not a stage output)

# logs/: by-products, not outputs
LOGS = Path("logs")
TRANSFER_LOGS = LOGS / "transfer"
TENSORBOARD_LOGS = LOGS / "tensorboard"
EXPORT_LATENCY = LOGS / "export" / "latency.json"


def history(phase: str) -> Path:
    """``reports/history/<phase>.csv``: a training phase's epochs."""
    return HISTORY / f"{phase}.csv"


def confusion(phase: str) -> Path:
    """``reports/plots/confusion_<phase>.csv``: DVC's confusion plot data of a phase."""
    return PLOTS / f"confusion_{phase}.csv"
