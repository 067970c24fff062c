"""Fit diagnosis: an underfitting / overfitting verdict for each phase from its learning curves.

Pure Python and NumPy (no TensorFlow). The ``evaluate`` stage calls :func:`diagnose_phase` once
per phase with the phase's history rows (``reports/history/<phase>.csv``), whether early stopping
fired (``models/<phase>/state.json``), the majority-class baseline of the train split and the
test accuracy; the thresholds are ``diagnosis.*`` in ``params.yaml``.

End-of-phase values are means over the last ``diagnosis.window`` epochs. Train accuracy and loss
are measured with augmentation and dropout active, so a well regularised model can sit below its
val accuracy: no rule treats a negative train - val gap as a problem, and underfitting is judged on
the better of train and val accuracy. The rules, first match wins:

1. ``inconclusive``: fewer than ``min_epochs`` epochs, or a non-finite loss.
2. ``overfitting``: train - val accuracy above ``max_gap``; or val loss, after its best epoch,
   rose by more than ``max_val_loss_rise`` (a fraction of the best) while train loss fell.
3. ``underfitting``: the better of train and val accuracy gets less than ``min_skill`` of the way
   from the majority-class baseline to 1; or val loss was still falling (by more than
   ``min_improvement`` over the last ``window`` epochs) when the phase ran out of epochs.
4. ``good fit``: none of the above.

The test accuracy is reported beside the verdict but does not decide it, so that it stays an
untouched estimate of the kept (best-epoch) model.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from pipeline.architectures import backbone
from pipeline.params import Params, base_layer_count, format_hw

VERDICTS = ("underfitting", "overfitting", "good fit", "inconclusive")
PHASE_TITLES = {"transfer": "Transfer learning", "finetune": "Fine-tuning"}
AUGMENTATION_FACTORS = ("rotation", "zoom", "translation", "contrast", "brightness")

Number = float | int | bool


@dataclass(frozen=True)
class Diagnosis:
    """The verdict on one phase.

    ``evidence`` holds numbers only (accuracies and gaps as fractions of the images, loss changes
    as fractions of a loss, epochs global and 1-based). ``reasons`` says in words what decided
    the verdict, ``remedies`` what to change in ``params.yaml``. ``region`` is the inclusive
    range of epochs the verdict points at, or ``None``.
    """

    phase: str
    verdict: str
    evidence: dict[str, Number]
    reasons: tuple[str, ...]
    remedies: tuple[str, ...]
    region: tuple[int, int] | None = None
    below_baseline: bool = (
        False  # test accuracy not above the linear probe's (see compare_to_probe)
    )

    @property
    def label(self) -> str:
        """The verdict, with the linear-probe flag when it is raised."""
        return self.verdict + (", below the linear-probe baseline" if self.below_baseline else "")

    @property
    def best_epoch(self) -> int | None:
        """Epoch of the lowest val loss (the kept weights), or ``None`` without epochs."""
        best = self.evidence.get("best_epoch")
        return None if best is None else int(best)

    def to_metrics(self) -> dict[str, str | Number]:
        """``{"verdict": ..., <evidence>...}`` for ``reports/metrics.json``.

        Leaves out ``window`` (a param) and ``first_epoch`` (the previous phase's end + 1).
        """
        skip = ("window", "first_epoch")
        return {
            "verdict": self.verdict,
            "below_baseline": self.below_baseline,
            **{k: v for k, v in self.evidence.items() if k not in skip},
        }

    def to_markdown(self) -> str:
        """One paragraph: verdict, what decided it, the evidence and the remedies."""
        ev = self.evidence
        title = PHASE_TITLES.get(self.phase, self.phase)
        span = f" (epochs {ev['first_epoch']}-{ev['last_epoch']})" if "first_epoch" in ev else ""
        parts = [f"**{title}{span}: {self.label}.**"]
        parts += [_sentence(r) for r in self.reasons]
        if "train_accuracy" in ev:
            w = min(int(ev["window"]), int(ev["epochs"]))
            parts.append(
                f"Over the last {w} epoch(s) train accuracy averaged "
                f"{ev['train_accuracy']:.2f} and val accuracy {ev['val_accuracy']:.2f} "
                f"(gap {ev['train_val_gap']:+.2f}); the better of the two is "
                f"{ev['skill']:.0%} of the way from the majority-class baseline to 1."
            )
            best = f"Val loss was lowest at epoch {ev['best_epoch']} ({ev['best_val_loss']:.3f})"
            if ev["epochs_after_best"]:
                best += (
                    f"; in the last {min(w, int(ev['epochs_after_best']))} epoch(s) after it, "
                    "val loss averaged "
                    f"{ev['val_loss_rise']:+.0%} and train loss {ev['train_loss_change']:+.0%} "
                    "relative to that epoch"
                )
            parts.append(best + ".")
        if ev["stopped_early"] and "epochs_after_best" in ev:
            parts.append(
                f"Early stopping fired at epoch {ev['last_epoch']}, "
                f"{ev['epochs_after_best']} epochs after the best."
            )
        elif ev["stopped_early"]:
            parts.append("Early stopping fired.")
        elif ev.get("epochs"):
            parts.append(f"Early stopping did not fire: the phase ran all {ev['epochs']} epochs.")
        if "test_accuracy" in ev:
            probe = ev.get("probe_test_accuracy")
            parts.append(
                f"Test accuracy of the kept model: {ev['test_accuracy']:.2f} (majority-class "
                f"baseline {ev['baseline_accuracy']:.2f}"
                + (f", linear-probe baseline {probe:.2f}" if probe is not None else "")
                + ")."
            )
        if self.remedies:
            parts.append("Remedies: " + "; ".join(self.remedies) + ".")
        elif self.verdict == "good fit":
            parts.append("No change needed.")
        return " ".join(parts)


def _sentence(text: str) -> str:
    return text[0].upper() + text[1:] + ("" if text.endswith(".") else ".")


def majority_baseline(labels: Iterable[Hashable]) -> float:
    """Accuracy of always predicting the most frequent label, in ``[0, 1]`` (0 without labels)."""
    counts = Counter(labels)
    total = sum(counts.values())
    return max(counts.values()) / total if total else 0.0


def _column(history: Sequence[Mapping[str, object]], key: str) -> np.ndarray:
    return np.array([float(r[key]) for r in history], dtype=float)


def _frac(change: float, ref: float) -> float:
    """``change / ref`` for a positive reference such as a loss (0 when ``ref`` is 0)."""
    return float(change / ref) if ref > 0 else 0.0


def _curve_evidence(
    history: Sequence[Mapping[str, object]], baseline: float, window: int
) -> tuple[dict[str, Number], int, int]:
    """The numbers the rules read from a finite ``history``: the evidence, the index of the
    best epoch (lowest val loss) and the window of end epochs (``window``, at most all)."""
    n = len(history)
    epochs = [int(r["epoch"]) for r in history]
    loss, acc = _column(history, "loss"), _column(history, "accuracy")
    vloss, vacc = _column(history, "val_loss"), _column(history, "val_accuracy")
    # The rules compare the rounded numbers that metrics.json reports.
    w = min(window, n)
    best = int(np.argmin(vloss))  # first minimum, as EarlyStopping and fit_phase pick it
    tail = np.arange(max(best + 1, n - w), n)  # the last `window` epochs after the best
    train_acc, val_acc = round(float(acc[-w:].mean()), 4), round(float(vacc[-w:].mean()), 4)
    gap = round(train_acc - val_acc, 4)
    rise = round(_frac(vloss[tail].mean() - vloss[best], vloss[best]), 4) if tail.size else 0.0
    train_change = round(_frac(loss[tail].mean() - loss[best], loss[best]), 4) if tail.size else 0.0
    before = float(vloss[: n - w].min()) if n > w else 0.0
    drop = round(_frac(before - vloss[n - w :].min(), before), 4) if n > w else 0.0
    better = max(train_acc, val_acc)
    skill = round((better - baseline) / (1 - baseline), 4) if baseline < 1 else 0.0
    ev: dict[str, Number] = dict(
        best_epoch=epochs[best],
        epochs_after_best=n - 1 - best,
        best_val_loss=round(float(vloss[best]), 4),
        train_accuracy=train_acc,
        val_accuracy=val_acc,
        train_val_gap=gap,
        val_loss_rise=rise,
        train_loss_change=train_change,
        val_loss_recent_drop=drop,
        skill=skill,
    )
    return ev, best, w


def _diverged(
    history: Sequence[Mapping[str, object]], phase: str, ev: dict[str, Number], params: Params
) -> Diagnosis | None:
    """The verdict for a history whose losses or accuracies are not all finite, else ``None``."""
    epochs = [int(r["epoch"]) for r in history]
    loss, acc = _column(history, "loss"), _column(history, "accuracy")
    vloss, vacc = _column(history, "val_loss"), _column(history, "val_accuracy")
    bad = ~(np.isfinite(loss) & np.isfinite(vloss) & np.isfinite(acc) & np.isfinite(vacc))
    if not bad.any():
        return None
    first_bad = epochs[int(np.argmax(bad))]
    reasons = (f"the loss is not finite from epoch {first_bad} on: training diverged",)
    cfg = getattr(params, phase)
    remedies = (f"lower `{phase}.learning_rate` (now {cfg.learning_rate:g})",)
    return Diagnosis(phase, "inconclusive", ev, reasons, remedies)


def _overfitting_verdict(
    phase: str,
    ev: dict[str, Number],
    params: Params,
    epochs: list[int],
    best: int,
    w: int,
    stopped_early: bool,
) -> Diagnosis | None:
    """``overfitting`` when the train-val gap or the val loss rise is over its threshold."""
    t, n = params.diagnosis, len(epochs)
    gap, rise, train_change = ev["train_val_gap"], ev["val_loss_rise"], ev["train_loss_change"]
    over_gap = gap > t.max_gap
    over_rise = rise > t.max_val_loss_rise and train_change < 0
    if not (over_gap or over_rise):
        return None
    reasons = []
    if over_gap:
        reasons.append(
            f"train accuracy is {gap:.2f} above val accuracy at the end (`diagnosis.max_gap` "
            f"= {t.max_gap:g})"
        )
    if over_rise:
        reasons.append(
            f"after epoch {epochs[best]} val loss rose {rise:.0%} above its best "
            f"(`diagnosis.max_val_loss_rise` = {t.max_val_loss_rise:g}) while train loss "
            f"fell {-train_change:.0%}"
        )
    end = epochs[-1]
    region = (epochs[best], end) if best < n - 1 else (epochs[n - w], end)
    remedies = _overfitting(phase, ev, params, too_long=over_rise and not stopped_early)
    return Diagnosis(phase, "overfitting", ev, tuple(reasons), remedies, region)


def _underfitting_verdict(
    phase: str,
    ev: dict[str, Number],
    params: Params,
    epochs: list[int],
    w: int,
    stopped_early: bool,
    baseline: float,
) -> Diagnosis | None:
    """``underfitting`` when the skill is low or val loss was still falling, else ``None``."""
    t, n = params.diagnosis, len(epochs)
    skill, drop = ev["skill"], ev["val_loss_recent_drop"]
    better = max(ev["train_accuracy"], ev["val_accuracy"])
    low_skill = skill < t.min_skill
    improving = not stopped_early and drop > t.min_improvement
    if not (low_skill or improving):
        return None
    reasons = []
    if low_skill:
        reasons.append(
            f"the better of train and val accuracy ({better:.2f}) is only {skill:.0%} of the "
            f"way from the majority-class baseline ({baseline:.2f}) to 1 "
            f"(`diagnosis.min_skill` = {t.min_skill:g})"
        )
    if improving:
        reasons.append(
            f"val loss was still falling: {drop:.0%} lower in the last {w} epochs "
            f"(`diagnosis.min_improvement` = {t.min_improvement:g}) and early stopping did "
            "not fire"
        )
    region = (epochs[0], epochs[-1]) if low_skill else (epochs[n - w], epochs[-1])
    remedies = _underfitting(phase, ev, params, low_skill=low_skill, improving=improving)
    return Diagnosis(phase, "underfitting", ev, tuple(reasons), remedies, region)


def diagnose_phase(
    history: Sequence[Mapping[str, object]],
    *,
    phase: str,
    stopped_early: bool,
    baseline: float,
    params: Params,
    test_accuracy: float | None = None,
) -> Diagnosis:
    """Diagnose one phase from its per-epoch ``history``.

    Parameters
    ----------
    history : rows of ``reports/history/<phase>.csv`` (``epoch``, ``loss``, ``accuracy``,
        ``val_loss``, ``val_accuracy``; strings or numbers), one per epoch, in order.
    phase : ``"transfer"`` or ``"finetune"``; names the params the remedies cite.
    stopped_early : whether EarlyStopping ended the phase (``state.json``).
    baseline : majority-class accuracy of the train split, in ``[0, 1]``.
    params : the validated params; thresholds are ``params.diagnosis``.
    test_accuracy : test accuracy of the phase's kept model, reported only.
    """
    t = params.diagnosis
    n = len(history)
    ev: dict[str, Number] = {
        "epochs": n,
        "stopped_early": bool(stopped_early),
        "baseline_accuracy": round(float(baseline), 4),
        "window": t.window,
    }
    if test_accuracy is not None:
        ev["test_accuracy"] = round(float(test_accuracy), 4)
    if n == 0:
        reasons = ("no epochs were recorded",)
        return Diagnosis(phase, "inconclusive", ev, reasons, _too_short(phase, ev, params))
    epochs = [int(r["epoch"]) for r in history]
    ev.update(first_epoch=epochs[0], last_epoch=epochs[-1])
    diverged = _diverged(history, phase, ev, params)
    if diverged is not None:
        return diverged
    numbers, best, w = _curve_evidence(history, baseline, t.window)
    ev.update(numbers)
    if n < t.min_epochs:
        reasons = (
            f"only {n} epoch(s), fewer than `diagnosis.min_epochs` = {t.min_epochs}: too few to "
            "read a trend",
        )
        return Diagnosis(phase, "inconclusive", ev, reasons, _too_short(phase, ev, params))
    verdict = _overfitting_verdict(phase, ev, params, epochs, best, w, stopped_early)
    if verdict is None:
        verdict = _underfitting_verdict(phase, ev, params, epochs, w, stopped_early, baseline)
    if verdict is not None:
        return verdict
    reasons = (
        "no sign of over- or underfitting: every number below is within its `diagnosis.*` "
        "threshold",
    )
    return Diagnosis(phase, "good fit", ev, reasons, ())


def _too_short(phase: str, ev: Mapping[str, Number], params: Params) -> tuple[str, ...]:
    cfg = getattr(params, phase)
    t = params.diagnosis
    if ev["stopped_early"]:
        first = (
            f"raise `{phase}.patience` (now {cfg.patience}): early stopping ended the phase "
            f"after {ev['epochs']} epochs"
        )
    else:
        first = f"raise `{phase}.epochs` (now {cfg.epochs}) to at least {t.min_epochs}"
    return (first, f"or lower `diagnosis.min_epochs` (now {t.min_epochs})")


def _augmentation(params: Params, *, nonzero_only: bool) -> str:
    aug = params.augmentation
    return ", ".join(
        f"`augmentation.{name}` (now {getattr(aug, name):g})"
        for name in AUGMENTATION_FACTORS
        if getattr(aug, name) > 0 or not nonzero_only
    )


def _underfitting(
    phase: str, ev: Mapping[str, Number], params: Params, *, low_skill: bool, improving: bool
) -> tuple[str, ...]:
    cfg, m = getattr(params, phase), params.model
    out = []
    if improving:
        out.append(f"raise `{phase}.epochs` (now {cfg.epochs}): val loss was still falling")
    if not low_skill:
        return tuple(out)
    if phase == "finetune":
        n_layers = base_layer_count(m)
        if n_layers is None or params.finetune.unfreeze_layers < n_layers:
            out.append(
                f"raise `finetune.unfreeze_layers` (now {params.finetune.unfreeze_layers}) to "
                "adapt more of the base"
            )
        out.append(f"raise `finetune.learning_rate` (now {params.finetune.learning_rate:g})")
    if m.dropout > 0:
        out.append(f"lower `model.dropout` (now {m.dropout:g})")
    lowered = _augmentation(params, nonzero_only=True)
    if lowered:
        out.append(f"lower augmentation: {lowered}")
    if phase == "transfer":
        out.append(
            f"raise `model.dense_units` (now {m.dense_units}) for a larger head"
            if m.dense_units
            else "a hidden layer in the head: set `model.dense_units` (now 0), e.g. to 128"
        )
        if m.alpha < max(backbone(m.architecture).alphas):
            out.append(f"raise `model.alpha` (now {m.alpha:g}) for a wider base")
    out.append(
        f"raise `data.image_size` (now {format_hw(params.data.image_size)}) to keep more detail"
    )
    return tuple(out)


def _overfitting(
    phase: str, ev: Mapping[str, Number], params: Params, *, too_long: bool
) -> tuple[str, ...]:
    cfg, m = getattr(params, phase), params.model
    out = []
    if too_long:
        out.append(
            f"lower `{phase}.patience` (now {cfg.patience}) or `{phase}.epochs` (now "
            f"{cfg.epochs}): the best epoch's weights are kept, the {ev['epochs_after_best']} "
            "epochs after it only cost time"
        )
    if phase == "finetune":
        out.append(f"lower `finetune.unfreeze_layers` (now {params.finetune.unfreeze_layers})")
        out.append(f"lower `finetune.learning_rate` (now {params.finetune.learning_rate:g})")
    else:
        if m.dense_units:
            out.append(f"lower `model.dense_units` (now {m.dense_units}) for a smaller head")
    out.append(f"raise `model.dropout` (now {m.dropout:g})")
    more = "more augmentation: raise " + _augmentation(params, nonzero_only=False)
    if not params.augmentation.flip:
        more += " and set `augmentation.flip` to true"
    out.append(more)
    if params.data.source == "sample":
        n = params.data.sample.images_per_class
        out.append(f"more training images: raise `data.sample.images_per_class` (now {n})")
    else:
        out.append(
            f"more training images: add to the dataset or raise `split.train` (now "
            f"{params.split.train:g})"
        )
    return tuple(out)


def compare_to_probe(d: Diagnosis, probe_accuracy: float, params: Params) -> Diagnosis:
    """``d`` with the linear-probe check: a phase must beat the ``baseline`` stage on test.

    ``probe_accuracy`` is the test accuracy of the logistic regression on the same frozen
    features. A phase whose test accuracy is not above it is flagged (``below_baseline``), with
    the likely causes added to its reasons and remedies; the fit verdict itself is kept.
    """
    ev = {**d.evidence, "probe_test_accuracy": round(float(probe_accuracy), 4)}
    test = ev.get("test_accuracy")
    if test is None or test > probe_accuracy:
        return replace(d, evidence=ev)
    ev["probe_margin"] = round(float(test - probe_accuracy), 4)
    reason = (
        f"test accuracy {test:.4f} does not beat the linear-probe baseline ({probe_accuracy:.4f}"
        ", a logistic regression on the same frozen features): "
        + (
            "the trained head is worse than a linear model on the features it sees"
            if d.phase == "transfer"
            else "fine-tuning did not pay for itself"
        )
    )
    return replace(
        d,
        evidence=ev,
        reasons=(*d.reasons, reason),
        remedies=(*d.remedies, *_below_probe(d.phase, params)),
        below_baseline=True,
    )


def _below_probe(phase: str, params: Params) -> tuple[str, ...]:
    """Likely causes of a phase that loses to the linear probe, as remedies."""
    m, cfg, aug = params.model, getattr(params, phase), params.augmentation
    out = []
    if phase == "transfer":
        if m.dense_units:
            out.append(
                f"a linear head: set `model.dense_units` to 0 (now {m.dense_units}), without "
                "the hidden layer and its second dropout"
            )
        if m.dropout > 0.2:
            out.append(f"lower `model.dropout` (now {m.dropout:g}), e.g. to 0.2")
        out.append(
            f"train the head longer or faster: `transfer.epochs` (now {cfg.epochs}), "
            f"`transfer.patience` (now {cfg.patience}), `transfer.learning_rate` (now "
            f"{cfg.learning_rate:g})"
        )
        if aug.enabled and (not cfg.features_once(aug) or cfg.views(aug)):
            out.append(
                "milder augmentation: the probe sees the images as they are, the head sees "
                "distorted ones"
            )
    else:
        out.append(
            f"a fine-tuning rate that adapts without erasing the features: "
            f"`finetune.learning_rate` (now {cfg.learning_rate:g}) and "
            f"`finetune.unfreeze_layers` (now {cfg.unfreeze_layers})"
        )
        out.append(f"more fine-tuning epochs: `finetune.epochs` (now {cfg.epochs})")
        out.append("first make the transfer phase beat the probe: fine-tuning starts from it")
    return tuple(out)


def render_markdown(diagnoses: Iterable[Diagnosis], params: Params) -> str:
    """``reports/diagnosis.md``: one paragraph per phase, no heading (ready to include)."""
    t = params.diagnosis
    intro = (
        "Fit diagnosis of each training phase from its learning curves (thresholds: "
        f"`diagnosis.*` in params.yaml; gap > {t.max_gap:g} or val loss rise > "
        f"{t.max_val_loss_rise:g} with falling train loss: overfitting; skill < "
        f"{t.min_skill:g} or val loss still falling: underfitting)."
    )
    return "\n\n".join([intro, *(d.to_markdown() for d in diagnoses)]) + "\n"


def plot_marks(
    diagnoses: Iterable[Diagnosis],
) -> tuple[dict[str, int], dict[str, tuple[int, int, str]]]:
    """Arguments for :func:`pipeline.plots.learning_curves`: best epochs and shaded regions.

    Returns ``({phase: best epoch}, {phase: (first epoch, last epoch, label)})``.
    """
    best, shaded = {}, {}
    for d in diagnoses:
        if d.best_epoch is not None:
            best[d.phase] = d.best_epoch
        if d.region is not None:
            shaded[d.phase] = (*d.region, f"{d.phase}: {d.label}")
    return best, shaded
