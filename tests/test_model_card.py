"""The model card and the gallery of misclassified test images."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline import plots
from pipeline.card import class_counts, relevant_params, render_card, wilson_interval
from pipeline.utils import read_csv

CLASSES = ["cat", "dog"]


def _phase(acc: float, loss: float, f1: float) -> dict:
    return {
        "accuracy": acc,
        "loss": loss,
        "macro_f1": f1,
        "val_accuracy": acc - 0.02,
        "val_macro_f1": f1 - 0.02,
        "per_class": {
            c: {"precision": acc, "recall": acc - 0.01 * i, "f1": f1 - 0.01 * i, "support": 5}
            for i, c in enumerate(CLASSES)
        },
    }


def _export() -> dict:
    fmt = {"size_bytes": 2_000_000}
    return {
        "test_images": 10,
        "tolerance": 1e-4,
        "tensorflow": "2.21.0",
        "keras": {"path": "models/finetune/model.keras", **fmt},
        "saved_model": {
            "path": "models/export/saved_model",
            "max_abs_diff": 3e-7,
            "argmax_agreement": 1.0,
            **fmt,
        },
        "tflite": {
            "path": "models/export/model.tflite",
            "max_abs_diff": 5e-7,
            "argmax_agreement": 1.0,
            **fmt,
        },
    }


def _card(params, counts: dict | None = None, **kwargs) -> str:
    history = {
        "transfer": [
            {"epoch": "1", "val_loss": "0.9", "val_accuracy": "0.6"},
            {"epoch": "2", "val_loss": "0.8", "val_accuracy": "0.7"},
        ],
        "finetune": [{"epoch": "3", "val_loss": "0.7", "val_accuracy": "0.75"}],
    }
    counts = counts or {
        s: Counter({"cat": n, "dog": n}) for s, n in (("train", 7), ("val", 2), ("test", 5))
    }
    return render_card(
        params,
        {
            "test_images": 10,
            "val_images": 4,
            "baseline": {**_phase(0.7, 0.7, 0.65), "C": 0.01},
            "transfer": _phase(0.6, 0.8123, 0.5876),
            "finetune": _phase(0.8, 0.4567, 0.7891),
            "finetune_gain": 0.2,
        },
        {"source": "kaggle", "handle": "owner/pets", "version": 3, "images": {"cat": 14}},
        {"source": "file", "path": "base_no_top.h5"},
        _export(),
        CLASSES,
        counts,
        history,
        **kwargs,
    )


def _section(card: str, title: str) -> str:
    return card.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_card_content(tiny_params):
    card = _card(tiny_params)
    metrics = _section(card, "Test metrics")
    assert "| metric | linear-probe baseline | transfer only | fine-tuned |" in metrics
    assert "| test accuracy | 0.7000 | 0.6000 | 0.8000 |" in metrics
    assert "| test loss (cross-entropy, nats) | 0.7000 | 0.8123 | 0.4567 |" in metrics
    assert "| test macro F1 | 0.6500 | 0.5876 | 0.7891 |" in metrics
    assert "| val accuracy | 0.6800 | 0.5800 | 0.7800 |" in metrics
    assert "C = 0.01, chosen on val" in metrics
    assert "over the baseline: transfer only -0.1000, fine-tuned +0.1000." in metrics
    assert "| `dog` | 0.6000 | 0.8000 | 0.5900 | 0.7900 | 0.5776 | 0.7791 | 5 |" in metrics
    data = _section(card, "Data")
    assert "Kaggle dataset `owner/pets`, version 3" in data
    assert "| `cat` | 7 | 2 | 5 | 14 |" in data and "| **all** | 14 | 4 | 10 | 28 |" in data
    assert "weights file `base_no_top.h5`" in _section(card, "Pretrained weights")
    assert "epochs 1–2, best epoch 2 (val loss 0.8000" in _section(card, "Model")
    assert (
        "not part of the saved model): horizontal flip, rotation ±0.05 turn, zoom ±0.1, "
        "translation ±0.05, contrast ±0.1, brightness ±0.1, nearest resampling."
        in _section(card, "Model")
    )
    exported = _section(card, "Exported formats")
    assert "| tflite | `models/export/model.tflite` | 2.00 MB | 5e-07 | 100.0% |" in (exported)
    assert "Not available" in _section(card, "Fit diagnosis")
    assert "Not checked" in _section(card, "Data leakage")
    assert "`cat`, `dog`" in _section(card, "Intended use")


def test_card_includes_diagnosis_and_leakage_when_present(tiny_params):
    card = _card(
        tiny_params,
        diagnosis="# Fit\n\n**Fine-tuning: good fit.**\n",
        leakage={"near_duplicate_pairs": 2, "examples": [["a.jpg", "b.jpg"]]},
        gallery="misclassified.png",
        misclassified=2,
    )
    diagnosis = _section(card, "Fit diagnosis")
    assert "### Fit" in diagnosis and "**Fine-tuning: good fit.**" in diagnosis
    leakage = _section(card, "Data leakage")
    assert "Not checked" not in leakage
    assert "- near_duplicate_pairs: 2" in leakage and '[["a.jpg", "b.jpg"]]' in leakage
    assert "![misclassified test images](misclassified.png)" in card


def test_card_states_the_class_weights(tiny_params):
    assert "(`train.class_weight`): none (every training image counts the same)." in (
        _section(_card(tiny_params), "Model")
    )
    balanced = tiny_params.model_copy(
        update={"train": tiny_params.train.model_copy(update={"class_weight": "balanced"})}
    )
    counts = {"train": Counter({"cat": 12, "dog": 4}), "val": Counter(cat=2, dog=2)}
    model = _section(_card(balanced, {**counts, "test": Counter(cat=5, dog=5)}), "Model")
    # 16 train images, 2 classes: 16 / (2 x 12) and 16 / (2 x 4)
    assert "(`train.class_weight`): balanced: `cat` 0.6667, `dog` 2.0000 (n_train /" in model
    assert "| `train.class_weight` | `balanced` |" in _card(balanced)


def test_card_summarises_label_conflicts(tiny_params):
    conflict = {
        "labels": {"cat": 1, "dog": 5},
        "split": "train",
        "images": [{"path": f"dog/{i}.jpg", "label": "dog"} for i in range(5)]
        + [{"path": "cat/9.jpg", "label": "cat"}],
        "more_images": 0,
    }
    leakage = {
        "near_duplicate_pairs": 9,
        "label_conflicts": {
            "policy": "keep",
            "pairs": 5,
            "groups": 1,
            "images": 6,
            "dropped": 0,
            "by_split": {"train": 6, "val": 0, "test": 0},
            "list": [conflict],
        },
    }
    text = _section(_card(tiny_params, leakage=leakage), "Data leakage")
    assert "- near_duplicate_pairs: 9" in text
    assert (
        "- label conflicts: 5 near-duplicate pair(s) with different labels, in 1 group(s) of 6 "
        "image(s); kept, train 6, val 0, test 0 (split.label_conflicts: keep)." in text
    )
    assert (
        "  - `dog/0.jpg` (dog), `cat/9.jpg` (cat), `dog/1.jpg` (dog), `dog/2.jpg` (dog) and 2 more "
        "(train)" in text
    )
    dropped = {**leakage["label_conflicts"], "policy": "drop", "dropped": 6, "list": []}
    text = _section(_card(tiny_params, leakage={"label_conflicts": dropped}), "Data leakage")
    assert "all 6 dropped from the splits" in text
    none = {**dropped, "pairs": 0, "groups": 0, "images": 0, "dropped": 0}
    text = _section(_card(tiny_params, leakage={"label_conflicts": none}), "Data leakage")
    assert "- label conflicts: none" in text


def test_relevant_params_leave_out_unused_sources(tiny_params):
    keys = dict(relevant_params(tiny_params))
    assert keys["seed"] == 7 and keys["finetune.unfreeze_layers"] == 10
    assert keys["export.tolerance"] == 1e-4 and "data.sample.images_per_class" in keys
    assert not any(
        k.startswith(("data.kaggle", "model.kaggle", "model.weights_path")) for k in keys
    )


def test_wilson_interval():
    low, high = wilson_interval(65, 100)
    assert low == pytest.approx(0.5525, abs=1e-3) and high == pytest.approx(0.7364, abs=1e-3)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_gallery_png(tmp_path: Path):
    rng = np.random.default_rng(0)
    items = [
        {
            "image": rng.integers(0, 255, (40 + i, 50, 3), dtype=np.uint8),
            "actual": "cat",
            "predicted": "dog",
            "confidence": 0.9 - i / 10,
        }
        for i in range(3)
    ]
    plots.misclassified_gallery(items, tmp_path / "g.png", total=5)
    plots.misclassified_gallery([], tmp_path / "none.png")
    for name in ("g.png", "none.png"):
        with Image.open(tmp_path / name) as im:
            assert im.format == "PNG"


# --- after one tiny `dvc repro` (the session's `trained_repo`) -------------------------------


def _row(card: str, label: str) -> list[str]:
    line = next(x for x in card.splitlines() if x.startswith(f"| {label} |"))
    return [c.strip() for c in line.strip("|").split("|")][1:]


@pytest.mark.slow
def test_model_card_holds_the_real_values(trained_repo: Path):
    card = (trained_repo / "reports/model_card.md").read_text()
    metrics = json.loads((trained_repo / "reports/metrics.json").read_text())
    for key, label in (
        ("accuracy", "test accuracy"),
        ("loss", "test loss (cross-entropy, nats)"),
        ("macro_f1", "test macro F1"),
        ("val_accuracy", "val accuracy"),
        ("val_macro_f1", "val macro F1"),
    ):
        phases = ("baseline", "transfer", "finetune")
        assert _row(card, label) == [f"{metrics[p][key]:.4f}" for p in phases]
    classes, counts = class_counts(trained_repo / "data/split")
    for c in classes:
        per_class = _row(card, f"`{c}`")  # first: the class table, then the per-class metrics
        assert per_class[:3] == [str(counts[s][c]) for s in ("train", "val", "test")]
        metric_row = [line for line in card.splitlines() if line.startswith(f"| `{c}` |")][1]
        assert metric_row.rstrip(" |").endswith(
            f"{metrics['finetune']['per_class'][c]['f1']:.4f} | "
            f"{metrics['finetune']['per_class'][c]['support']}"
        )
    assert f"Gain from fine-tuning (accuracy): {metrics['finetune_gain']:+.4f};" in card
    source = json.loads((trained_repo / "reports/data_source.json").read_text())
    assert f"seed {source['seed']}" in _section(card, "Data")
    export = json.loads((trained_repo / "reports/export.json").read_text())
    tflite = _row(card, "tflite")
    assert tflite[1] == f"{export['tflite']['size_bytes'] / 1e6:.2f} MB"
    leakage = _section(card, "Data leakage")
    assert ("Not checked" in leakage) != (trained_repo / "reports/leakage.json").is_file()


@pytest.mark.slow
def test_gallery_shows_the_misclassified_test_images(trained_repo: Path):
    rows = read_csv(trained_repo / "reports/predictions.csv")
    wrong = sum(r["actual"] != r["finetune"] for r in rows)
    card = (trained_repo / "reports/model_card.md").read_text()
    assert f"{wrong} of {len(rows)} test images are misclassified" in card
    with Image.open(trained_repo / "reports/misclassified.png") as im:
        assert im.format == "PNG"
    assert ("](misclassified.png)" in card) == (wrong > 0)
