"""All figures, in one place (matplotlib, Agg backend, PNG)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from pipeline.utils import atomic_path

PHASE_COLORS = {"transfer": "tab:blue", "finetune": "tab:orange"}


def _save(fig: plt.Figure, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png", metadata={"Software": None})
    plt.close(fig)


def learning_curves(
    history: Sequence[dict],
    path: str | Path,
    *,
    best_epochs: Mapping[str, int] | None = None,
    shaded: Mapping[str, tuple[int, int, str]] | None = None,
) -> None:
    """Loss and accuracy, train (solid) and val (dashed), both phases on one epoch axis.

    ``history`` rows hold ``epoch``, ``phase``, ``loss``, ``accuracy``, ``val_loss`` and
    ``val_accuracy``. A vertical line marks where fine-tuning starts. ``best_epochs`` (phase to
    epoch) puts a star on that epoch's val curves; ``shaded`` (phase to ``(first epoch, last
    epoch, label)``, inclusive) shades that range of epochs, e.g. the one a fit verdict points at.
    """
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    phases = list(dict.fromkeys(r["phase"] for r in history))
    for ax, metric in zip(axes, ("accuracy", "loss"), strict=True):
        for phase in phases:
            rows = [r for r in history if r["phase"] == phase]
            best = (best_epochs or {}).get(phase)
            _phase_curves(ax, metric, phase, rows, best, (shaded or {}).get(phase))
        if "finetune" in phases:
            start = min(int(r["epoch"]) for r in history if r["phase"] == "finetune")
            _mark_finetune_start(ax, start)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_title(metric.capitalize())
        ax.grid(alpha=0.3)
    axes[0].set_ylim(0, 1.02)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle("Learning curves")
    _save(fig, path)


def _phase_curves(
    ax: plt.Axes,
    metric: str,
    phase: str,
    rows: Sequence[dict],
    best: int | None,
    shade: tuple[int, int, str] | None,
) -> None:
    """One phase's train and val curves of ``metric``, its best epoch starred and, with
    ``shade``, the range ``(first epoch, last epoch, label)`` shaded."""
    ep = [int(r["epoch"]) for r in rows]
    color = PHASE_COLORS.get(phase)
    ax.plot(ep, [float(r[metric]) for r in rows], "-o", ms=3, color=color, label=f"{phase} train")
    ax.plot(
        ep,
        [float(r[f"val_{metric}"]) for r in rows],
        "--s",
        ms=3,
        color=color,
        label=f"{phase} val",
    )
    if best in ep:
        ax.plot(
            best,
            float(rows[ep.index(best)][f"val_{metric}"]),
            "*",
            ms=13,
            color=color,
            mec="black",
            mew=0.6,
            zorder=5,
            label=f"{phase} best epoch",
        )
    if shade is not None:
        first, last, label = shade
        ax.axvspan(first - 0.5, last + 0.5, color=color, alpha=0.12, lw=0, label=label)


def _mark_finetune_start(ax: plt.Axes, start: int) -> None:
    """A vertical line where fine-tuning starts (epoch ``start``)."""
    ax.axvline(start - 0.5, color="gray", lw=1, ls=":")
    ax.annotate(
        "fine-tuning starts",
        (start - 0.5, 0.98),
        xycoords=("data", "axes fraction"),
        ha="right",
        va="top",
        fontsize=8,
        color="gray",
        rotation=90,
    )


def confusion_matrices(
    matrices: dict[str, np.ndarray], classes: Sequence[str], path: str | Path
) -> None:
    """One panel per model: counts ``(n_classes, n_classes)``, rows actual, columns predicted."""
    n = len(matrices)
    fig, axes = plt.subplots(1, n, figsize=(4.8 * n, 4.4), squeeze=False)
    for ax, (title, cm) in zip(axes[0], matrices.items(), strict=True):
        ax.imshow(cm, cmap="Blues", vmin=0)
        ticks = range(len(classes))
        ax.set_xticks(ticks, classes, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(ticks, classes, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("actual")
        acc = np.trace(cm) / max(1, cm.sum())
        ax.set_title(f"{title} (accuracy {acc:.1%})")
        high = cm.max() / 2 if cm.size else 0
        for i in ticks:
            for j in ticks:
                ax.text(
                    j,
                    i,
                    int(cm[i, j]),
                    ha="center",
                    va="center",
                    fontsize=9,
                    color="white" if cm[i, j] > high else "black",
                )
    fig.tight_layout()
    _save(fig, path)


def misclassified_gallery(
    items: Sequence[dict], path: str | Path, *, total: int | None = None, columns: int = 6
) -> None:
    """A grid of misclassified images, each titled with true and predicted class and confidence.

    ``items`` rows hold ``image`` (a ``(height, width, 3)`` uint8 array), ``actual``,
    ``predicted`` and ``confidence`` (the predicted class's probability, 0..1). ``total`` is
    the number of misclassified images when ``items`` shows only some of them.
    """
    n = len(items)
    total = n if total is None else total
    cols = max(1, min(columns, n))
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols, 2.6 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, item in zip(axes.flat, items, strict=False):
        ax.imshow(item["image"])
        ax.set_title(
            f"true: {item['actual']}\npred: {item['predicted']} ({item['confidence']:.0%})",
            fontsize=8,
            color="tab:red",
        )
    if n == 0:
        axes[0, 0].text(0.5, 0.5, "no misclassified test images", ha="center", va="center")
        title = "Misclassified test images: none"
    elif n < total:
        title = f"Misclassified test images: the {n} most confident of {total}"
    else:
        title = f"Misclassified test images ({total})"
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)
