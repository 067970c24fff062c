"""The benchmark command: real measurements on a tiny model (numbers are not asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipeline.bench import PRESETS, STEP_ROWS, apply_overrides, main
from pipeline.params import parse_params
from pipeline.utils import PipelineError
from tests.conftest import tiny_params_dict


def test_overrides_are_yaml_values_in_nested_sections():
    raw = {"data": {"image_size": 96}, "model": {"alpha": 0.35}}
    out = apply_overrides(
        raw, ["data.image_size=224", "model.alpha=1.0", "augmentation.flip=false"]
    )
    assert out == {
        "data": {"image_size": 224},
        "model": {"alpha": 1.0},
        "augmentation": {"flip": False},
    }
    assert raw["data"]["image_size"] == 96  # the input is left alone
    with pytest.raises(PipelineError, match="expected key=value"):
        apply_overrides(raw, ["data.image_size"])
    with pytest.raises(PipelineError, match="image_size is not a section"):
        apply_overrides(raw, ["data.image_size.x=1"])


def test_presets_are_valid_params():
    base = yaml.safe_load(Path("params.yaml").read_text())
    for preset in PRESETS.values():
        params = parse_params(apply_overrides(base, preset["set"]))
        assert not params.augmentation.enabled  # the base features are computed once
        assert params.transfer.features_once(params.augmentation)


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
    argv = ["steps", "--params", str(params), "--images", "40", "--frame-side", "64"]
    assert main([*argv, "--work", str(tmp_path / "work"), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["images"] == 40 and result["machine"]["cpus"] >= 1
    for key, _, _ in STEP_ROWS:
        assert result[key] > 0, key
    assert result["peak_rss_mb"] > 100
    printed = capsys.readouterr().out
    assert "mobilenet_v2 0.35 at 32 px" in printed
    assert printed.count("x transfer_step") == printed.count("x finetune_step") == 1
    assert list((tmp_path / "work").iterdir()) == []  # the frames and arrays are removed
