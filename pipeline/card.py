"""The model card: ``reports/model_card.md`` rendered from the pipeline's reports.

:func:`render_card` writes the Markdown from the params, the metrics, the provenance of data and
weights, the export checks, the class counts (:func:`class_counts`) and the training histories;
:func:`load_gallery_items` picks the misclassified test images for the gallery. The
``model_card`` stage (:mod:`pipeline.stages.model_card`) reads the reports and writes the card.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

from pipeline.architectures import title
from pipeline.balance import describe, weights_from_counts
from pipeline.params import RESIZE_TEXT, AugmentationParams, Params, format_hw
from pipeline.utils import (
    PipelineError,
    markdown_table,
    read_csv,
    read_json,
)

SPLITS = ("train", "val", "test")
PHASES = {"transfer": "transfer only", "finetune": "fine-tuned"}


def _markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    return "\n".join(markdown_table(header, rows))


def _flat(prefix: str, value: Any) -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        return [kv for k, v in value.items() for kv in _flat(f"{prefix}.{k}", v)]
    return [(prefix, value)]


def relevant_params(params: Params) -> list[tuple[str, Any]]:
    """``(key, value)`` of the params that shaped the model; settings of unused sources left out."""
    p = params.model_dump()
    m = params.model
    skip = {
        "profile": not params.profile,
        "data.sample": params.data.source != "sample",
        "data.kaggle": params.data.source != "kaggle",
        "data.path": params.data.source != "local",
        "pretrain": m.weights != "sample",
        "model.weights_path": m.weights != "file",
        "model.kaggle_handle": m.weights != "kaggle",
        "model.kaggle_file": m.weights != "kaggle",
        "model.alpha": not title(m.architecture).startswith("MobileNet"),
    }
    sections = (
        "profile",
        "seed",
        "data",
        "split",
        "model",
        "pretrain",
        "augmentation",
        "transfer",
        "finetune",
        "train",
        "export",
    )
    return [
        (key, value)
        for section in sections
        if section in p
        for key, value in _flat(section, p[section])
        if not any(on and (key == s or key.startswith(f"{s}.")) for s, on in skip.items())
    ]


def _augmentation_text(aug: AugmentationParams) -> str:
    """The enabled augmentations in words, e.g. ``horizontal flip, rotation ±0.05 turn``."""
    parts = ["horizontal flip"] if aug.flip else []
    for name, unit in (
        ("rotation", " turn"),
        ("zoom", ""),
        ("translation", ""),
        ("contrast", ""),
        ("brightness", ""),
    ):
        if getattr(aug, name):
            parts.append(f"{name} ±{getattr(aug, name):g}{unit}")
    if aug.rotation or aug.zoom or aug.translation:
        parts.append(f"{aug.interpolation} resampling")
    return ", ".join(parts) or "none"


def class_counts(split_dir: Path) -> tuple[list[str], dict[str, Counter]]:
    """Class names (output order) and ``{split: Counter(class -> images)}`` from the manifests."""
    classes = read_json(split_dir / "classes.json")
    return classes, {
        s: Counter(r["label"] for r in read_csv(split_dir / f"{s}.csv")) for s in SPLITS
    }


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (e.g. test accuracy) from ``n`` trials."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _provenance(info: dict, skip: tuple[str, ...] = ()) -> str:
    rows = []
    for key, value in info.items():
        if key in skip:
            continue
        shown = ", ".join(map(str, value)) if isinstance(value, list) else value
        rows.append(
            f"- {key}: `{shown}`" if key in ("path", "handle", "file") else f"- {key}: {shown}"
        )
    return "\n".join(rows)


def data_version(info: dict) -> str:
    source = info.get("source")
    if source == "sample":
        return f"generated offline dataset, seed {info.get('seed')} (same seed, same bytes)"
    if source == "kaggle":
        return f"Kaggle dataset `{info.get('handle')}`, version {info.get('version')}"
    if source == "local":
        return f"snapshot of the local folder `{info.get('path')}`"
    return str(source)


def weights_version(info: dict) -> str:
    source = info.get("source")
    if source == "sample":
        task = ", ".join(info.get("task", []))
        return (
            f"pretrained from scratch on a generated source task ({task}): "
            f"{info.get('images')} images of {info.get('image_size')} px, {info.get('epochs')} "
            f"epochs, source-task val accuracy {info.get('source_task_val_accuracy')}"
        )
    if source == "kaggle":
        return (
            f"Kaggle `{info.get('handle')}`, version {info.get('version')}, file "
            f"`{info.get('file')}`"
        )
    if source == "file":
        return f"weights file `{info.get('path')}`"
    if source == "imagenet":
        return "ImageNet weights downloaded by keras.applications"
    return str(source)


def _history_summary(rows: list[dict]) -> str:
    if not rows:
        return "no epochs recorded"
    best = min(rows, key=lambda r: float(r["val_loss"]))
    return (
        f"epochs {rows[0]['epoch']}–{rows[-1]['epoch']}, best epoch {best['epoch']} "
        f"(val loss {float(best['val_loss']):.4f}, val accuracy {float(best['val_accuracy']):.4f})"
    )


def _demote(markdown: str) -> str:
    """Headings two levels down, so an included report nests under the card's sections."""
    return "\n".join(
        f"##{line}" if line.startswith("#") else line for line in markdown.strip().splitlines()
    )


def _label_conflicts(lc: dict, examples: int = 5) -> list[str]:
    """Card lines for the ``label_conflicts`` section of ``reports/leakage.json``."""
    if not lc.get("groups"):
        return ["- label conflicts: none (no near-duplicates under different labels)"]
    where = (
        f"all {lc['dropped']} dropped from the splits"
        if lc.get("dropped")
        else "kept, "
        + ", ".join(f"{s} {n}" for s, n in lc.get("by_split", {}).items())
        + " (split.label_conflicts: keep)"
    )
    out = [
        f"- label conflicts: {lc['pairs']} near-duplicate pair(s) with different labels, in "
        f"{lc['groups']} group(s) of {lc['images']} image(s); {where}. Every group is listed "
        "under `label_conflicts` in `reports/leakage.json`; e.g.:"
    ]
    for group in lc.get("list", [])[:examples]:
        images = group["images"]
        # an image of every label first, then the others, 4 at least
        picked = [im for i, im in enumerate(images) if im["label"] not in
                  {x["label"] for x in images[:i]}]  # fmt: skip
        picked += [im for im in images if im not in picked][: max(0, 4 - len(picked))]
        shown = ", ".join(f"`{im['path']}` ({im['label']})" for im in picked)
        more = len(images) - len(picked) + group.get("more_images", 0)
        out.append(f"  - {shown}{f' and {more} more' if more > 0 else ''} ({group['split']})")
    return out


def _intended_use(data_info: dict, classes: list[str]) -> str:
    listed = ", ".join(f"`{c}`" for c in classes)
    source = data_info.get("source")
    if source == "sample":
        what = (
            "Demonstrating and testing the pipeline. The model was trained on a generated "
            "dataset of drawn cartoon scenes: it is meant for such generated images only, not "
            "for frames of the real cartoon or any other real images"
        )
    elif source == "kaggle":
        what = (
            f"Classifying cartoon frames like those of the Kaggle dataset "
            f"`{data_info.get('handle')}`"
        )
    else:
        what = "Classifying images like those of the training folder"
    return f"{what}. Classes ({len(classes)}): {listed}."


def _limits(params: Params, metrics: dict, classes: list[str], weights_info: dict) -> list[str]:
    ft = metrics["finetune"]
    n = int(metrics.get("test_images", 0))
    low, high = wilson_interval(round(ft["accuracy"] * n), n)
    weakest = min(classes, key=lambda c: ft["per_class"][c]["f1"])
    size = params.data.image_size
    limits = [
        f"Closed set: every input gets one of the {len(classes)} classes, also an image that "
        "shows none of them; there is no 'unknown' answer.",
        "The confidence is the softmax probability of the predicted class. Its calibration "
        "was not measured: a confidence of 0.8 need not mean right 4 times out of 5.",
        f"The test split has {n} images: the fine-tuned accuracy {ft['accuracy']:.4f} has a "
        f"95% confidence interval of about {low:.2f}–{high:.2f} (Wilson).",
        f"Weakest class on the test split: `{weakest}` (F1 {ft['per_class'][weakest]['f1']:.4f}).",
        f"Inputs are resized to {format_hw(size)} px (height × width), "
        f"{RESIZE_TEXT[params.data.resize]} (bilinear, antialiased); small details of large "
        "images are lost.",
        "Performance on images from other sources (other cartoons, photos, other resolutions "
        "or compressions) was not measured.",
    ]
    if weights_info.get("source") == "sample":
        limits.append(
            "The pretrained base comes from a small generated source task "
            f"({weights_info.get('images')} images, {weights_info.get('epochs')} epochs), "
            "not from ImageNet."
        )
    return limits


def _model_section(
    params: Params, classes: list[str], counts: dict[str, Counter], history: dict[str, list[dict]]
) -> list[str]:
    m = params.model
    arch = title(m.architecture)
    alpha = f" (alpha {m.alpha})" if arch.startswith("MobileNet") else ""
    size = params.data.image_size
    return [
        "## Model",
        "",
        f"- Base: {arch}{alpha}, pretrained weights below; the last "
        f"{params.finetune.unfreeze_layers} layers fine-tuned (BatchNorm layers frozen).",
        f"- Head: GlobalAveragePooling2D → Dropout {m.dropout} → "
        + (f"Dense {m.dense_units} relu → Dropout {m.dropout} → " if m.dense_units else "")
        + f"Dense {len(classes)} softmax.",
        f"- Input: RGB image of any size, decoded and resized to {format_hw(size)} px (height × "
        f"width; `data.resize: {params.data.resize}`: {RESIZE_TEXT[params.data.resize]}; "
        "bilinear, antialiased), float32 pixels in [0, 255]; the model rescales them itself.",
        "- Test-time augmentation (`evaluate.tta`): "
        + (
            "flip: the probabilities are the mean of the image's and its mirror image's, in "
            "the evaluation, `predict` and the exported models."
            if params.evaluate.tta == "flip"
            else "none."
        ),
        f"- Output: {len(classes)} class probabilities, in the order of the class table below.",
        f"- Training augmentation (train batches only, applied by the input pipeline; not part "
        f"of the saved model): {_augmentation_text(params.augmentation)}.",
        "- Class weights in the training loss of both phases (`train.class_weight`): "
        + describe(
            weights_from_counts([counts["train"][c] for c in classes], params.train.class_weight),
            classes,
        )
        + (
            " (n_train / (n_classes × n_train_of_class), from the train split)."
            if params.train.class_weight == "balanced"
            else "."
        ),
        f"- Transfer learning (frozen base): {_history_summary(history['transfer'])}.",
        f"- Fine-tuning: {_history_summary(history['finetune'])}.",
        "",
    ]


def _data_section(data_info: dict, classes: list[str], counts: dict[str, Counter]) -> list[str]:
    return [
        "## Data",
        "",
        f"- Source and version: {data_version(data_info)}.",
        _provenance(data_info, skip=("images",)),
        "",
        _markdown_table(
            ["class", *SPLITS, "total"],
            [
                [f"`{c}`", *(counts[s][c] for s in SPLITS), sum(counts[s][c] for s in SPLITS)]
                for c in classes
            ]
            + [
                [
                    "**all**",
                    *(sum(counts[s].values()) for s in SPLITS),
                    sum(sum(counts[s].values()) for s in SPLITS),
                ]
            ],
        ),
        "",
    ]


def _weights_and_params_sections(params: Params, weights_info: dict) -> list[str]:
    return [
        "## Pretrained weights",
        "",
        f"- Source and version: {weights_version(weights_info)}.",
        _provenance(weights_info, skip=("task",)),
        "",
        "## Parameters",
        "",
        _markdown_table(
            ["key", "value"], [[f"`{k}`", f"`{v}`"] for k, v in relevant_params(params)]
        ),
        "",
    ]


def _metrics_section(metrics: dict, classes: list[str]) -> list[str]:
    return [
        "## Test metrics",
        "",
        f"On the {metrics['test_images']} images of the test split and the "
        f"{metrics['val_images']} of the val split (`reports/metrics.json`). The linear-probe "
        "baseline is a logistic regression on the frozen base's pooled features of the same "
        f"split (`reports/baseline.json`, C = {metrics['baseline']['C']:g}, chosen on val): "
        "every trained model must beat it.",
        "",
        _markdown_table(
            ["metric", "linear-probe baseline", *PHASES.values()],
            [
                [name, *(f"{metrics[p][key]:.4f}" for p in ("baseline", *PHASES))]
                for key, name in (
                    ("accuracy", "test accuracy"),
                    ("macro_f1", "test macro F1"),
                    ("loss", "test loss (cross-entropy, nats)"),
                    ("val_accuracy", "val accuracy"),
                    ("val_macro_f1", "val macro F1"),
                )
            ],
        ),
        "",
        f"Gain from fine-tuning (accuracy): {metrics['finetune_gain']:+.4f}; over the baseline: "
        + ", ".join(
            f"{name} {metrics[p]['accuracy'] - metrics['baseline']['accuracy']:+.4f}"
            for p, name in PHASES.items()
        )
        + ".",
        "",
        _markdown_table(
            [
                "class",
                *(
                    f"{metric} ({name})"
                    for metric in ("precision", "recall", "F1")
                    for name in PHASES.values()
                ),
                "support",
            ],
            [
                [
                    f"`{c}`",
                    *(
                        f"{metrics[p]['per_class'][c][key]:.4f}"
                        for key in ("precision", "recall", "f1")
                        for p in PHASES
                    ),
                    metrics["finetune"]["per_class"][c]["support"],
                ]
                for c in classes
            ],
        ),
        "",
    ]


def _diagnosis_and_leakage_sections(diagnosis: str | None, leakage: dict | None) -> list[str]:
    out = [
        "## Fit diagnosis",
        "",
        _demote(diagnosis) if diagnosis else "Not available (no `reports/diagnosis.md`).",
        "",
        "## Data leakage",
        "",
    ]
    if leakage is None:
        out.append("Not checked (no `reports/leakage.json`).")
    else:
        out += ["Findings of the near-duplicate check (`reports/leakage.json`):", ""]
        out += [
            f"- {k}: {json.dumps(v) if isinstance(v, dict | list) else v}"
            for k, v in leakage.items()
            if k != "label_conflicts"
        ]
        if "label_conflicts" in leakage:
            out += _label_conflicts(leakage["label_conflicts"])
    return out


def _exports_section(export: dict) -> list[str]:
    return [
        "",
        "## Exported formats",
        "",
        f"Checked on the {export['test_images']} test images: each export's probabilities differ "
        f"from the Keras model's by at most `export.tolerance` = {export['tolerance']:g} "
        f"(TensorFlow {export['tensorflow']}). The per-image CPU latency depends on the machine, "
        "not on the model: the export stage logs it (`logs/export/latency.json`).",
        "",
        _markdown_table(
            ["format", "file", "size", "max abs. prob. diff.", "same class"],
            [
                [
                    name,
                    f"`{e['path']}`",
                    f"{e['size_bytes'] / 1e6:.2f} MB",
                    "reference" if name == "keras" else f"{e['max_abs_diff']:.2g}",
                    "reference" if name == "keras" else f"{e['argmax_agreement']:.1%}",
                ]
                for name, e in ((n, export[n]) for n in ("keras", "saved_model", "tflite"))
            ],
        ),
        "",
    ]


def _misclassified_section(metrics: dict, gallery: str | None, misclassified: int) -> list[str]:
    out = [
        "## Misclassified test images",
        "",
        f"{misclassified} of {metrics['test_images']} test images are misclassified by the "
        "fine-tuned model.",
    ]
    if gallery and misclassified:
        out += ["", f"![misclassified test images]({gallery})"]
    return out


def _use_and_limits_sections(
    params: Params, metrics: dict, data_info: dict, weights_info: dict, classes: list[str]
) -> list[str]:
    return [
        "",
        "## Intended use",
        "",
        _intended_use(data_info, classes),
        "Use `python -m pipeline.tools.predict` (same decoding as in training) or the exported "
        "SavedModel / TFLite file with the same input preprocessing.",
        "",
        "## Limitations",
        "",
        *(f"- {x}" for x in _limits(params, metrics, classes, weights_info)),
        "",
    ]


def render_card(
    params: Params,
    metrics: dict,
    data_info: dict,
    weights_info: dict,
    export: dict,
    classes: list[str],
    counts: dict[str, Counter],
    history: dict[str, list[dict]],
    *,
    diagnosis: str | None = None,
    leakage: dict | None = None,
    gallery: str | None = None,
    misclassified: int = 0,
) -> str:
    """The model card as Markdown, from the pipeline's reports (values as they are there)."""
    out = [
        f"# Model card: {title(params.model.architecture)} image classifier, "
        f"{len(classes)} classes",
        "",
        "Written by the `model_card` stage (`python -m pipeline.stages.model_card`) from the "
        "pipeline's reports; regenerate it with `dvc repro` rather than editing it.",
        "",
        *_model_section(params, classes, counts, history),
        *_data_section(data_info, classes, counts),
        *_weights_and_params_sections(params, weights_info),
        *_metrics_section(metrics, classes),
        *_diagnosis_and_leakage_sections(diagnosis, leakage),
        *_exports_section(export),
        *_misclassified_section(metrics, gallery, misclassified),
        *_use_and_limits_sections(params, metrics, data_info, weights_info, classes),
    ]
    return "\n".join(out)


def load_gallery_items(
    predictions: list[dict], data_dir: Path, max_images: int, thumb: int = 160
) -> tuple[list[dict], int]:
    """The fine-tuned model's misclassified test images, most confident first (at most
    ``max_images``), as items for :func:`pipeline.plots.misclassified_gallery`; and their count.
    """
    import numpy as np
    from PIL import Image

    wrong = [r for r in predictions if r["finetune"] != r["actual"]]
    wrong.sort(key=lambda r: (-float(r["finetune_confidence"]), r["path"]))
    items = []
    for r in wrong[:max_images]:
        file = data_dir / r["path"]
        if not file.is_file():
            raise PipelineError(f"{file} (from reports/predictions.csv) not found in {data_dir}")
        with Image.open(file) as im:
            im = im.convert("RGB")
            im.thumbnail((thumb, thumb))
            image = np.asarray(im)
        items.append(
            {
                "image": image,
                "actual": r["actual"],
                "predicted": r["finetune"],
                "confidence": float(r["finetune_confidence"]),
            }
        )
    return items, len(wrong)
