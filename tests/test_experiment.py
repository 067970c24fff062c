"""Profiles and `make experiment`: validation, the order of values, the dvc command line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.params import parse_yaml, read_yaml
from pipeline.tools.experiment import (
    ExperimentError,
    command,
    dvc_value,
    flatten,
    load_profile,
    main,
    profile_names,
    resolve,
)
from tests.conftest import ROOT

PROFILES = ROOT / "profiles"


def test_committed_profiles():
    assert {"tom-and-jerry", "tom-and-jerry-gpu"} <= set(profile_names(PROFILES))


@pytest.mark.parametrize("name", profile_names(PROFILES))
def test_profile_is_valid_and_holds_only_values_that_differ(name: str):
    values, params = resolve(name, [], ROOT / "params.yaml", PROFILES)
    defaults = flatten(read_yaml(ROOT / "params.yaml"))
    profile = load_profile(name, PROFILES)
    same = {k for k, v in profile.items() if defaults.get(k) == v}
    assert not same, f"{name} repeats params.yaml values: {sorted(same)}"
    assert params.profile == name and values["profile"] == name
    # a real target: never the generated data, never the demo's generated pretraining
    assert params.data.source == "kaggle"
    assert params.model.weights != "sample"


def test_tom_and_jerry_is_the_seed_model_with_imagenet_weights():
    _, params = resolve("tom-and-jerry", [], ROOT / "params.yaml", PROFILES)
    assert params.model.architecture == "mobilenet_v2"
    assert params.model.weights == "imagenet"


def _write(folder: Path, name: str, profile: dict) -> None:
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))


def test_profile_first_then_set_and_the_later_value_wins(tmp_path: Path):
    _write(tmp_path, "p", {"transfer": {"epochs": 3, "learning_rate": 0.002}, "seed": 5})
    values, params = resolve(
        "p", ["transfer.epochs=7", "data.image_size=64"], ROOT / "params.yaml", tmp_path
    )
    assert list(values) == ["profile", "transfer.epochs", "transfer.learning_rate", "seed",
                            "data.image_size"]  # fmt: skip
    assert (params.transfer.epochs, params.transfer.learning_rate) == (7, 0.002)
    assert (params.seed, params.data.image_size, params.profile) == (5, 64, "p")
    cmd = command(values, ["--queue"])
    assert cmd[:3] == ["dvc", "exp", "run"] and cmd[-1] == "--queue"
    assert cmd[3:9] == ["-S", "profile=p", "-S", "transfer.epochs=7", "-S",
                        "transfer.learning_rate=0.002"]  # fmt: skip


def test_keys_missing_from_params_yaml_are_added():
    cmd = command({"seed": 3, "transfer.head_init": "probe"}, [], present={"seed"})
    assert cmd[3:] == ["-S", "seed=3", "-S", "+transfer.head_init=probe"]


def test_unknown_profile_lists_the_valid_ones(tmp_path: Path, capsys):
    _write(tmp_path, "tom-and-jerry", {"seed": 1})
    _write(tmp_path, "flowers", {"seed": 2})
    with pytest.raises(ExperimentError) as err:
        load_profile("tom-and-jery", tmp_path)
    assert "unknown profile 'tom-and-jery'" in str(err.value)
    assert "did you mean 'tom-and-jerry'?" in str(err.value)
    assert "flowers, tom-and-jerry" in str(err.value)
    code = main(["--profile", "nope", "--profiles", str(tmp_path), "--dry-run"])
    assert code == 2
    assert "error: unknown profile 'nope'" in capsys.readouterr().err


def test_unknown_key_in_set_or_profile_names_the_valid_keys(tmp_path: Path, capsys):
    with pytest.raises(ExperimentError) as err:
        resolve(None, ["transfer.epoch=3"], ROOT / "params.yaml", tmp_path)
    msg = str(err.value)
    assert "unknown param 'transfer.epoch'; did you mean 'transfer.epochs'?" in msg
    assert "valid keys of transfer: transfer.epochs, transfer.batch_size" in msg
    _write(tmp_path, "typo", {"modle": {"alpha": 0.5}})
    with pytest.raises(ExperimentError, match=r"typo.yaml: unknown param 'modle.alpha'.*model"):
        load_profile("typo", tmp_path)
    with pytest.raises(ExperimentError, match="'transfer' is a section: set its keys"):
        resolve(None, ["transfer=3"], ROOT / "params.yaml", tmp_path)
    with pytest.raises(ExperimentError, match="expected key=value"):
        resolve(None, ["transfer.epochs"], ROOT / "params.yaml", tmp_path)
    assert main(["--set", "data.image_sise=64", "--dry-run"]) == 2
    assert "did you mean 'data.image_size'" in capsys.readouterr().err


def test_bad_values_fail_before_anything_runs(capsys):
    assert main(["--set", "finetune.unfreeze_layers=999", "--dry-run"]) == 2
    assert "finetune.unfreeze_layers = 999" in capsys.readouterr().err
    # real data never trains on the generated pretraining
    assert main(["--set", "data.source=kaggle", "--dry-run"]) == 2
    assert "model.weights is 'sample'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "value", ["", "plain", "/a/b c", "1", "true", "null", "a: b", "x,y", 3, 0.0001, True, None]
)
def test_values_reach_dvc_as_they_were(value):
    assert parse_yaml(dvc_value(value)) == value


def test_dry_run_prints_the_command(capsys):
    assert main(["--profile", "tom-and-jerry", "--set", "data.path=/d e", "--dry-run"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("dvc exp run -S profile=tom-and-jerry -S data.source=kaggle")
    assert out.endswith("-S 'data.path=/d e'")
