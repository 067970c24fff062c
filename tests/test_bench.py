"""The benchmark command: real measurements on a tiny model (numbers are not asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipeline.tools.bench import PRESETS, main
from pipeline.tools.bench_steps import STEP_ROWS
from pipeline.tools.experiment import resolve
from tests.conftest import tiny_params_dict


def test_presets_apply_their_profile():
    for preset in PRESETS.values():
        values, params = resolve(preset["profile"], [])
        assert values["profile"] == preset["profile"]
        assert params.model.weights == "imagenet"  # bench repro swaps in random weights


def test_bad_override_is_one_line_error(tmp_path: Path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_params_dict()))
    assert main(["steps", "--params", str(params), "--set", "data.image_sise=64"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'data.image_size'" in err


@pytest.mark.slow
def test_steps_measures_every_row(tmp_path: Path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_params_dict()))
    out = tmp_path / "bench.json"
    argv = [
        "steps",
        "--params",
        str(params),
        "--images",
        "40",
        "--frame-side",
        "64",
        "--rounds",
        "1",
    ]
    assert main([*argv, "--work", str(tmp_path / "work"), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["images"] == 40 and result["machine"]["cpus"] >= 1
    for key, *_ in STEP_ROWS:
        assert result[key] > 0, key
    assert result["peak_rss_mb"] > 100
    printed = capsys.readouterr().out
    assert "mobilenet_v2 0.35 at 32×56 px" in printed
    assert printed.count("x transfer_step") == 2  # its epochs, without and with augmentation
    assert printed.count("x finetune_step") == 3  # the same, and on the frozen activations once
    assert "prepared images, augmented" in printed
    assert list((tmp_path / "work").iterdir()) == []  # the frames and arrays are removed


def test_quality_table_puts_every_phase_beside_the_reference():
    from pipeline.tools.bench_runs import format_quality

    phase = {"val_accuracy": 0.8, "test_accuracy": 0.75, "val_macro_f1": 0.7,
             "test_macro_f1": 0.65, "s": 30.0, "rss_mb": 900.0}  # fmt: skip
    result = {
        "images": {"train": 70, "val": 20, "test": 10},
        "classes": 4,
        "phases": {
            "baseline": phase,
            "transfer": {**phase, "test_accuracy": 0.7},
            "finetune": {**phase, "s": 90.0},
            "reference": {
                "val_accuracy": 0.78,
                "test_accuracy": 0.74,
                "s": 150.0,
                "recipe": "plain",
            },
        },
        "below_baseline": ["transfer"],
        "stages": {"split": {"s": 2.0, "rss_mb": 200.0}, "transfer": {"s": 30.0, "rss_mb": 1.0}},
        "repro_s": 200.0,
    }
    text = format_quality(result, "setup")
    assert "70 / 20 / 10 train / val / test images, 4 classes" in text
    assert "transfer     0.8000   0.7000   0.7000   0.6500     30.0       900" in text
    assert "reference    0.7800   0.7400        -        -    150.0         -" in text
    assert "transfer + finetune stages: 120 s; reference training: 150 s (plain)" in text
    assert "other stages: split 2 s" in text
    assert "below the baseline on test accuracy: transfer" in text


@pytest.mark.slow
def test_reference_recipe_runs_on_the_pipelines_split(trained_repo: Path):
    from pipeline.tools.reference import reference_run

    weights = str(trained_repo / "models/base.weights.h5")
    result = reference_run(trained_repo, 32, 0.35, weights, seed=7)
    assert 0 <= result["val_accuracy"] <= 1 and 0 <= result["test_accuracy"] <= 1
    assert result["train_s"] > 0 and "flip" in result["recipe"]
    again = reference_run(trained_repo, 32, 0.35, weights, seed=7)  # seeded: the same figures
    assert (again["val_accuracy"], again["test_accuracy"]) == (
        result["val_accuracy"],
        result["test_accuracy"],
    )
