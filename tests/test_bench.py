"""The benchmark command: real measurements on a tiny model (numbers are not asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipeline.bench import PRESETS, STEP_ROWS, main
from pipeline.experiment import resolve
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
    assert "mobilenet_v2 0.35 at 32 px" in printed
    assert printed.count("x transfer_step") == printed.count("x finetune_step") == 2
    assert "prepared images, augmented" in printed
    assert list((tmp_path / "work").iterdir()) == []  # the frames and arrays are removed
