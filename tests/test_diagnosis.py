"""Fit diagnosis on synthetic learning curves: one test per verdict, borderlines, remedies."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from pipeline import plots
from pipeline.diagnosis import (
    VERDICTS,
    Diagnosis,
    compare_to_probe,
    diagnose_phase,
    majority_baseline,
    plot_marks,
    render_markdown,
)
from pipeline.params import Params, ParamsError, _known_keys, parse_params
from tests.conftest import tiny_params_dict

# The values the remedies below quote, spelt out so that the tests do not follow params.yaml.
PARAMS = parse_params(
    {
        "model": {"dropout": 0.5, "dense_units": 128},
        "augmentation": {"rotation": 0.05},
        "transfer": {"epochs": 10, "learning_rate": 0.001, "head_init": "random"},
        "finetune": {"unfreeze_layers": 80},
    }
)
UNFREEZE = PARAMS.finetune.unfreeze_layers


def history(
    train_acc,
    val_acc,
    loss,
    val_loss,
    *,
    start: int = 1,
    phase: str = "transfer",
) -> list[dict[str, str]]:
    """Rows as ``read_csv`` returns them from ``reports/history/<phase>.csv`` (strings)."""
    cols = [np.broadcast_to(np.asarray(c, float), (len(val_loss),)) for c in (train_acc, val_acc)]
    return [
        {
            "epoch": str(start + i),
            "phase": phase,
            "loss": str(loss[i]),
            "accuracy": str(cols[0][i]),
            "val_loss": str(val_loss[i]),
            "val_accuracy": str(cols[1][i]),
            "learning_rate": "0.001",
        }
        for i in range(len(val_loss))
    ]


def falling(n: int, start: float = 1.2, end: float = 0.4) -> list[float]:
    return list(np.linspace(start, end, n))


def plateau(n: int, best_at: int, low: float = 0.5, high: float = 0.52) -> list[float]:
    """A val loss that falls to ``low`` at index ``best_at`` then hovers at ``high``."""
    return list(np.linspace(1.2, low, best_at + 1)) + [high] * (n - best_at - 1)


def diagnose(rows, *, stopped_early=True, baseline=0.25, params=PARAMS, phase="transfer", **kw):
    return diagnose_phase(
        rows, phase=phase, stopped_early=stopped_early, baseline=baseline, params=params, **kw
    )


# --- good fit --------------------------------------------------------------------------------


def test_good_fit():
    # val loss lowest at epoch 7, then within 4% while training stopped early; accuracies close
    val_loss = [1.2, 1.0, 0.8, 0.7, 0.6, 0.55, 0.5, 0.51, 0.52, 0.52]
    rows = history(0.9, 0.88, falling(10, 1.3, 0.45), val_loss)
    d = diagnose(rows, test_accuracy=0.87)
    assert d.verdict == "good fit"
    assert d.remedies == () and d.region is None
    assert d.best_epoch == 7 and d.evidence["epochs_after_best"] == 3
    assert d.evidence["train_val_gap"] == pytest.approx(0.02)
    assert d.evidence["val_loss_rise"] == pytest.approx(
        (0.51 + 0.52 + 0.52) / 3 / 0.5 - 1, abs=1e-4
    )
    assert "No change needed." in d.to_markdown()


def test_train_accuracy_below_val_is_not_a_problem():
    # Augmentation and dropout are active when train accuracy is measured: it may sit below val.
    rows = history(0.62, 0.86, falling(8, 1.4, 0.9), plateau(8, 4, 0.4, 0.41))
    d = diagnose(rows)
    assert d.evidence["train_val_gap"] == pytest.approx(-0.24)
    assert d.verdict == "good fit"  # val accuracy is far above the baseline: no underfitting


# --- overfitting -----------------------------------------------------------------------------


def test_overfitting_val_loss_rises_while_train_loss_falls():
    val_loss = [1.2, 0.9, 0.7, 0.6, 0.65, 0.72, 0.8, 0.9, 1.0, 1.1]
    train_acc = np.linspace(0.5, 0.84, 10)
    val_acc = [0.5, 0.6, 0.7, 0.74, 0.74, 0.73, 0.72, 0.72, 0.71, 0.7]
    rows = history(train_acc, val_acc, falling(10, 1.3, 0.3), val_loss)
    d = diagnose(rows, stopped_early=False, test_accuracy=0.7)
    assert d.verdict == "overfitting"
    assert d.best_epoch == 4 and d.region == (4, 10)
    assert d.evidence["val_loss_rise"] == pytest.approx(1.0 / 0.6 - 1, abs=1e-3)
    assert d.evidence["train_loss_change"] < 0
    assert d.evidence["train_val_gap"] <= PARAMS.diagnosis.max_gap  # the rise alone decided
    assert any("val loss rose" in r for r in d.reasons)
    # it ran all its epochs with val loss rising: stopping sooner is a remedy
    assert "`transfer.patience`" in d.remedies[0]
    assert any("raise `model.dropout` (now 0.5)" in r for r in d.remedies)
    assert any("lower `model.dense_units` (now 128)" in r for r in d.remedies)
    # when early stopping ended the phase, patience is not blamed
    stopped = diagnose(rows, stopped_early=True)
    assert stopped.verdict == "overfitting"
    assert not any("patience" in r for r in stopped.remedies)


def test_overfitting_by_accuracy_gap_alone():
    # val loss still (slowly) improving, but train accuracy far above val accuracy
    rows = history(0.99, 0.7, falling(8, 1.0, 0.05), falling(8, 1.0, 0.7))
    d = diagnose(rows, stopped_early=False, phase="finetune", params=PARAMS)
    assert d.verdict == "overfitting"
    assert d.evidence["train_val_gap"] == pytest.approx(0.29)
    assert d.region == (6, 8)  # best epoch is the last: the end window is shaded
    assert any(f"lower `finetune.unfreeze_layers` (now {UNFREEZE})" in r for r in d.remedies)
    assert any("lower `finetune.learning_rate`" in r for r in d.remedies)


@pytest.mark.parametrize(
    ("val_acc", "verdict"),
    [(0.75, "good fit"), (0.7499, "overfitting")],  # gap 0.15 is allowed, 0.1501 is not
)
def test_gap_borderline(val_acc, verdict):
    rows = history(0.9, val_acc, falling(8), [1.2, 1.1, 1.0, 0.9, 0.5, 0.5, 0.5, 0.5])
    d = diagnose(rows)
    assert d.evidence["val_loss_rise"] == 0
    assert d.verdict == verdict


@pytest.mark.parametrize(
    ("after", "verdict"),
    [(0.575, "good fit"), (0.5751, "overfitting")],  # rise 0.15 of the best is allowed
)
def test_val_loss_rise_borderline(after, verdict):
    val_loss = [1.2, 0.9, 0.7, 0.5, after, after, after]
    rows = history(0.8, 0.78, falling(7), val_loss)
    d = diagnose(rows)
    assert d.verdict == verdict


def test_val_loss_rise_with_train_loss_rising_is_not_overfitting():
    # both losses rose after the best epoch: that is not the overfitting pattern
    loss = [1.3, 1.0, 0.8, 0.7, 0.75, 0.8, 0.85, 0.9]
    val_loss = [1.2, 0.9, 0.7, 0.6, 0.75, 0.8, 0.9, 0.95]
    d = diagnose(history(0.8, 0.78, loss, val_loss))
    assert d.evidence["val_loss_rise"] > PARAMS.diagnosis.max_val_loss_rise
    assert d.evidence["train_loss_change"] > 0
    assert d.verdict != "overfitting"


def test_overfitting_wins_over_low_accuracy():
    # poor accuracy, but memorising: val loss rising while train loss falls
    val_loss = [1.4, 1.3, 1.25, 1.4, 1.6, 1.8]
    rows = history(0.4, 0.3, falling(6, 1.4, 0.9), val_loss)
    d = diagnose(rows)
    assert d.evidence["skill"] < PARAMS.diagnosis.min_skill
    assert d.verdict == "overfitting"


# --- underfitting ----------------------------------------------------------------------------


def test_underfitting_near_majority_baseline():
    rows = history(0.33, 0.36, falling(10, 1.39, 1.3), plateau(10, 5, 1.3, 1.31))
    d = diagnose(rows, test_accuracy=0.3)
    assert d.verdict == "underfitting"
    assert d.evidence["skill"] == pytest.approx((0.36 - 0.25) / 0.75, abs=1e-4)
    assert d.region == (1, 10)
    remedies = " ".join(d.remedies)
    assert "lower `model.dropout` (now 0.5)" in remedies
    assert "`augmentation.rotation` (now 0.05)" in remedies
    assert "raise `model.dense_units` (now 128)" in remedies
    assert "unfreeze_layers" not in remedies  # a transfer-phase diagnosis


def test_underfitting_finetune_suggests_unfreezing_more():
    rows = history(0.45, 0.5, falling(10, 1.0, 0.95), plateau(10, 5, 0.9, 0.91), start=12)
    d = diagnose(rows, phase="finetune")
    assert d.verdict == "underfitting" and d.region == (12, 21)
    assert d.remedies[0].startswith(f"raise `finetune.unfreeze_layers` (now {UNFREEZE})")


def test_no_regularisation_left_to_lower():
    params = parse_params(
        tiny_params_dict(
            model={"dropout": 0.0},
            augmentation={
                "rotation": 0.0,
                "zoom": 0.0,
                "translation": 0.0,
                "contrast": 0.0,
                "brightness": 0.0,
            },
        )
    )
    rows = history(0.3, 0.3, falling(6, 1.39, 1.38), plateau(6, 2, 1.37, 1.38))
    d = diagnose(rows, params=params)
    assert d.verdict == "underfitting"
    assert not any("dropout" in r or "augmentation" in r for r in d.remedies)


def test_skill_is_relative_to_the_majority_baseline():
    # 0.8 accuracy: good on 4 balanced classes, barely better than always "majority" at 0.75
    rows = history(0.8, 0.8, falling(8), plateau(8, 4))
    assert diagnose(rows, baseline=0.25).verdict == "good fit"
    d = diagnose(rows, baseline=0.75)
    assert d.verdict == "underfitting" and d.evidence["skill"] == pytest.approx(0.2)


@pytest.mark.parametrize(("skill_acc", "verdict"), [(0.625, "good fit"), (0.6249, "underfitting")])
def test_skill_borderline(skill_acc, verdict):
    # (0.625 - 0.25) / 0.75 = 0.5 = diagnosis.min_skill
    rows = history(skill_acc, skill_acc, falling(8), plateau(8, 4))
    assert diagnose(rows).verdict == verdict


def test_underfitting_still_improving_when_epochs_ran_out():
    rows = history(0.9, 0.88, falling(10), falling(10, 1.0, 0.3))
    d = diagnose(rows, stopped_early=False)
    assert d.verdict == "underfitting"
    assert d.evidence["val_loss_recent_drop"] > PARAMS.diagnosis.min_improvement
    assert d.region == (8, 10)
    assert d.remedies == ("raise `transfer.epochs` (now 10): val loss was still falling",)


@pytest.mark.parametrize(("last", "verdict"), [(0.49, "good fit"), (0.4899, "underfitting")])
def test_still_improving_borderline(last, verdict):
    # the last window's best (last) against the best before it (0.5): drop 0.02 is allowed
    val_loss = [1.2, 1.0, 0.8, 0.6, 0.5, 0.52, 0.51, last]
    d = diagnose(history(0.9, 0.88, falling(8), val_loss), stopped_early=False)
    assert d.verdict == verdict


def test_early_stopping_means_not_still_improving():
    rows = history(0.9, 0.88, falling(10), falling(10, 1.0, 0.3))
    assert diagnose(rows, stopped_early=True).verdict == "good fit"


# --- inconclusive ----------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 3])
def test_too_few_epochs_is_inconclusive(n):
    rows = history(0.99, 0.3, falling(n), falling(n, 1.0, 1.5))
    d = diagnose(rows, stopped_early=False)
    assert d.verdict == "inconclusive" and d.region is None
    assert d.remedies[0] == "raise `transfer.epochs` (now 10) to at least 4"


def test_four_epochs_are_enough():
    rows = history(0.99, 0.3, falling(4), [1.0, 0.9, 1.2, 1.5])
    assert diagnose(rows, stopped_early=False).verdict == "overfitting"


def test_too_short_because_early_stopping_suggests_patience():
    params = parse_params({"finetune": {"patience": 1}})
    rows = history(0.5, 0.5, falling(3), [0.7, 0.8, 0.9], phase="finetune")
    d = diagnose(rows, phase="finetune", stopped_early=True, params=params)
    assert d.verdict == "inconclusive"
    assert d.remedies[0].startswith("raise `finetune.patience` (now 1)")


def test_diverged_training_is_inconclusive():
    rows = history(0.5, 0.4, [1.0, 2.0, float("nan"), float("nan")], [1.0, 3.0, 9.0, float("inf")])
    d = diagnose(rows)
    assert d.verdict == "inconclusive"
    assert "epoch 3" in d.reasons[0]
    assert d.remedies == ("lower `transfer.learning_rate` (now 0.001)",)
    json.dumps(d.to_metrics(), allow_nan=False)  # no NaN reaches metrics.json


def test_min_epochs_is_a_param():
    rows = history(0.99, 0.3, falling(3), [1.0, 0.9, 1.5])
    params = parse_params({"diagnosis": {"min_epochs": 3, "window": 2}})
    assert diagnose(rows, params=params).verdict == "overfitting"


# --- output, params, figure ------------------------------------------------------------------


def _all_diagnoses() -> list[Diagnosis]:
    cases = [
        history(0.9, 0.88, falling(10), plateau(10, 6)),
        history(0.99, 0.5, falling(10), [1, 0.8, 0.7, 0.8, 0.9, 1, 1.1, 1.2, 1.3, 1.4]),
        history(0.3, 0.3, falling(10), plateau(10, 5)),
        history(0.9, 0.9, falling(10), falling(10)),
        history(0.5, 0.5, falling(2), falling(2)),
        history(0.5, 0.5, [1.0] * 5, [1.0, float("nan"), 1.0, 1.0, 1.0]),
    ]
    out = []
    for params in (
        PARAMS,
        parse_params({"data": {"source": "local", "path": "x"}, "augmentation": {"flip": False}}),
    ):
        for phase in ("transfer", "finetune"):
            for stopped in (True, False):
                out += [
                    diagnose(
                        r, phase=phase, stopped_early=stopped, params=params, test_accuracy=0.5
                    )
                    for r in cases
                ]
    return out


def test_every_verdict_is_reachable_and_known():
    assert {d.verdict for d in _all_diagnoses()} == set(VERDICTS)


def test_remedies_cite_real_params():
    known = set(_known_keys(Params))
    cited = {k for d in _all_diagnoses() for r in d.remedies for k in re.findall(r"`([^`]+)`", r)}
    assert cited, "no remedy cites a param"
    assert cited <= known, cited - known
    # every remedy names at least one param
    assert all(re.search(r"`[a-z_.]+`", r) for d in _all_diagnoses() for r in d.remedies)


def test_metrics_are_json_numbers_and_markdown_has_the_paragraph():
    for d in _all_diagnoses():
        m = d.to_metrics()
        assert m["verdict"] == d.verdict
        assert all(isinstance(v, (int, float)) for k, v in m.items() if k != "verdict")
        json.dumps(m, allow_nan=False)
        text = d.to_markdown()
        assert f": {d.verdict}.**" in text
        assert all(r in text for r in d.remedies)
    md = render_markdown(_all_diagnoses()[:2], PARAMS)
    assert md.count("**Transfer learning (epochs ") == 2 and md.endswith("\n")
    assert not md.startswith("#")  # ready to include under another document's heading


def test_majority_baseline():
    assert majority_baseline([0, 0, 1, 2]) == 0.5
    assert majority_baseline(["a", "b"]) == 0.5
    assert majority_baseline([]) == 0.0


def test_diagnosis_params_are_validated():
    assert PARAMS.diagnosis.min_epochs == 4 and PARAMS.diagnosis.max_gap == 0.15
    with pytest.raises(ParamsError, match=r"diagnosis\.window"):
        parse_params({"diagnosis": {"window": 4, "min_epochs": 4}})
    with pytest.raises(ParamsError, match=r"diagnosis\.max_gap = 0"):
        parse_params({"diagnosis": {"max_gap": 0}})
    with pytest.raises(ParamsError, match=r"did you mean 'diagnosis\.min_skill'"):
        parse_params({"diagnosis": {"min_skil": 0.4}})


def _tinted(path, rgb: tuple[int, int, int], alpha: float = 0.12) -> int:
    """Pixels of ``path`` within 3 levels of ``rgb`` blended at ``alpha`` over white."""
    target = np.array([255 - alpha * (255 - c) for c in rgb])
    with Image.open(path) as im:
        px = np.asarray(im.convert("RGB"), float)
    return int((np.abs(px - target).max(axis=-1) <= 3).sum())


def test_learning_curves_mark_best_epochs_and_shade_the_verdict(tmp_path):
    transfer = history(0.99, 0.6, falling(6), [1.0, 0.8, 0.9, 1.0, 1.1, 1.2])
    finetune = history(0.99, 0.6, falling(4, 0.5, 0.2), [0.9, 0.7, 0.8, 0.9], start=7)
    finetune = [dict(r, phase="finetune") for r in finetune]
    ds = [
        diagnose(transfer, stopped_early=False),
        diagnose(finetune, phase="finetune", stopped_early=False),
    ]
    best, shaded = plot_marks(ds)
    assert best == {"transfer": 2, "finetune": 8}
    assert shaded == {
        "transfer": (2, 6, "transfer: overfitting"),
        "finetune": (8, 10, "finetune: overfitting"),
    }
    rows = transfer + finetune
    plain, marked = tmp_path / "plain.png", tmp_path / "marked.png"
    plots.learning_curves(rows, plain)
    plots.learning_curves(rows, marked, best_epochs=best, shaded=shaded)
    blue = (31, 119, 180)  # tab:blue, the transfer phase's colour
    assert _tinted(marked, blue) > _tinted(plain, blue) + 10_000  # shaded epochs, both panels
    # a best epoch outside the history is ignored, not an error
    plots.learning_curves(rows, tmp_path / "x.png", best_epochs={"transfer": 99})


# --- the linear-probe baseline ---------------------------------------------------------------


def _good(phase="transfer", test=0.87):
    val_loss = [1.2, 1.0, 0.8, 0.7, 0.6, 0.55, 0.5, 0.51, 0.52, 0.52]
    rows = history(0.9, 0.88, falling(10, 1.3, 0.45), val_loss, phase=phase)
    return diagnose(rows, phase=phase, test_accuracy=test)


def test_a_phase_above_the_probe_is_not_flagged():
    d = compare_to_probe(_good(test=0.87), 0.86, PARAMS)
    assert not d.below_baseline and d.verdict == "good fit" and d.remedies == ()
    assert d.evidence["probe_test_accuracy"] == 0.86 and "probe_margin" not in d.evidence
    assert d.to_metrics()["below_baseline"] is False
    assert "linear-probe baseline 0.86" in d.to_markdown()


@pytest.mark.parametrize("probe", [0.87, 0.9])  # a tie does not beat the probe either
def test_a_phase_not_above_the_probe_is_flagged_with_causes(probe):
    d = compare_to_probe(_good(test=0.87), probe, PARAMS)
    assert d.below_baseline and d.verdict == "good fit"  # the fit verdict stands
    assert d.label == "good fit, below the linear-probe baseline"
    assert d.evidence["probe_margin"] == pytest.approx(0.87 - probe)
    assert any("does not beat the linear-probe baseline" in r for r in d.reasons)
    remedies = " ".join(d.remedies)
    assert "set `model.dense_units` to 0 (now 128)" in remedies
    assert "lower `model.dropout` (now 0.5)" in remedies
    text = d.to_markdown()
    assert ": good fit, below the linear-probe baseline.**" in text
    assert d.to_metrics()["below_baseline"] is True
    json.dumps(d.to_metrics(), allow_nan=False)


def test_finetune_below_the_probe_points_at_its_rate_and_depth():
    d = compare_to_probe(_good("finetune", test=0.8), 0.85, PARAMS)
    remedies = " ".join(d.remedies)
    assert "`finetune.learning_rate` (now 0.0001)" in remedies
    assert f"`finetune.unfreeze_layers` (now {UNFREEZE})" in remedies
    assert "fine-tuning did not pay" in " ".join(d.reasons)
    cited = {k for r in d.remedies for k in re.findall(r"`([^`]+)`", r)}
    assert cited <= set(_known_keys(Params))
