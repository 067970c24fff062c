from __future__ import annotations

import pytest

from pipeline.architectures import ARCHITECTURES
from pipeline.params import (
    Params,
    ParamsError,
    base_layer_count,
    load_params,
    main,
    parse_params,
    read_yaml,
)
from tests.conftest import ROOT


def test_defaults_and_repo_params_are_valid():
    assert parse_params({}) == Params()
    defaults = Params()
    assert defaults.data.source == "sample" and defaults.model.weights == "sample"
    # linear probing, then fine-tuning: the head starts as the probe, both phases at a low rate
    assert defaults.transfer.head_init == "probe" and defaults.model.dense_units == 0
    assert defaults.finetune.learning_rate == pytest.approx(defaults.transfer.learning_rate)
    repo = load_params(ROOT / "params.yaml")
    # params.yaml spells out every key (DVC needs each key a stage lists) ...
    raw = read_yaml(ROOT / "params.yaml")
    for section, value in defaults.model_dump().items():
        assert section in raw
        if isinstance(value, dict):
            assert set(raw[section]) == set(value), section
    # ... and, apart from the data and weights sources, holds the documented defaults.
    sections = ("split", "pretrain", "augmentation", "transfer", "finetune", "train", "diagnosis")
    for section in sections:
        assert getattr(repo, section) == getattr(defaults, section), section


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"split": {"train": 0.6, "val": 0.2, "test": 0.1}}, "must be 1"),
        ({"data": {"image_size": 16}}, "data.image_size = 16"),
        ({"data": {"image_size": "96"}}, "data.image_size = '96'"),
        ({"data": {"image_size": "[160, 288]"}}, "or [height, width]"),
        ({"data": {"image_size": [160, 288, 3]}}, "data.image_size = [160, 288, 3]: expected"),
        ({"data": {"image_size": [160, 16]}}, "data.image_size = [160, 16]: each side"),
        ({"data": {"image_size": [160.0, 288]}}, "data.image_size = [160.0, 288]"),
        ({"data": {"resize": "stretch"}}, "data.resize = 'stretch'"),
        ({"evaluate": {"tta": "flips"}}, "evaluate.tta = 'flips'"),
        ({"data": {"source": "local"}}, "data.path is empty"),
        ({"data": {"source": "ftp"}}, "data.source = 'ftp'"),
        ({"model": {"architecture": "resnet9"}}, "model.architecture = 'resnet9'"),
        ({"model": {"alpha": 0.4}}, "model.alpha = 0.4 is not available"),
        ({"model": {"weights": "file"}}, "model.weights_path is empty"),
        ({"finetune": {"unfreeze_layers": 999}}, "has only 154 layers"),
        ({"finetune": {"unfreeze_layers": 0}}, "finetune.unfreeze_layers = 0"),
        ({"transfer": {"epochs": 2.5}}, "transfer.epochs = 2.5"),
        ({"transfer": {"epochs": True}}, "transfer.epochs = True"),
        ({"transfer": {"learning_rate": -1.0}}, "transfer.learning_rate = -1.0"),
        ({"finetune": {"unfreez_layers": 3}}, "did you mean 'finetune.unfreeze_layers'"),
        ({"tranfer": {"epochs": 3}}, "did you mean 'transfer'"),
        ({"split": {"train": 1.0, "val": 0.0, "test": 0.0}}, "split.train = 1.0"),
        ({"augmentation": {"rotation": 0.9}}, "augmentation.rotation = 0.9"),
        ({"data": {"sample": {"min_side": 500, "max_side": 100}}}, "must not exceed"),
        ({"seed": -1}, "seed = -1"),
        ({"train": {"distribution": "horovod"}}, "train.distribution = 'horovod'"),
        ({"train": {"mixed_precision": "float16"}}, "train.mixed_precision = 'float16'"),
        ({"train": {"deterministic_ops": "yes"}}, "train.deterministic_ops = 'yes'"),
        ({"train": {"learning_rate_scaling": "sqrt"}}, "train.learning_rate_scaling = 'sqrt'"),
        ({"train": {"distributon": "none"}}, "did you mean 'train.distribution'"),
        ({"train": {"class_weight": "auto"}}, "train.class_weight = 'auto'"),
        ({"train": {"class_weights": "balanced"}}, "did you mean 'train.class_weight'"),
        ({"split": {"label_conflicts": "fix"}}, "split.label_conflicts = 'fix'"),
        ({"split": {"label_conflicts": False}}, "split.label_conflicts = False"),
        ({"data": []}, "data = []"),
        ({"model": {"dense_units": 128}}, "the probe is a linear head"),
        ({"transfer": {"head_init": "zeros"}}, "transfer.head_init = 'zeros'"),
        ({"data": {"source": "kaggle"}}, "sample weights are pretrained on generated shapes"),
        ({"model": {"dense_units": -1}}, "model.dense_units = -1"),
    ],
)
def test_invalid_values_are_refused_with_the_key(raw, expected):
    with pytest.raises(ParamsError) as info:
        parse_params(raw)
    assert expected in str(info.value)


def test_image_size_is_a_side_or_height_and_width():
    assert parse_params({"data": {"image_size": 160}}).data.hw == (160, 160)
    wide = parse_params({"data": {"image_size": [160, 288], "resize": "pad"}})
    assert wide.data.image_size == (160, 288) and wide.data.hw == (160, 288)
    assert wide.model_dump(mode="json")["data"]["image_size"] == [160, 288]


def test_every_problem_is_listed():
    with pytest.raises(ParamsError) as info:
        parse_params({"seed": "x", "transfer": {"epochs": 0}})
    msg = str(info.value)
    assert "2 invalid" in msg and "seed = 'x'" in msg and "transfer.epochs = 0" in msg


def test_unfreeze_limit_follows_architecture():
    n = ARCHITECTURES["efficientnet_b0"].layers
    ok = {
        "model": {"architecture": "efficientnet_b0", "alpha": 1.0},
        "finetune": {"unfreeze_layers": n},
    }
    assert parse_params(ok).finetune.unfreeze_layers == n
    ok["finetune"]["unfreeze_layers"] = n + 1
    with pytest.raises(ParamsError, match="efficientnet_b0 has only"):
        parse_params(ok)


HUB = "keras/mobilenetv3/keras/mobilenet_v3_large_100_imagenet"


def _hub(**model) -> dict:
    return {"model": {"architecture": "keras_hub", "alpha": 1.0, "weights": "kaggle", **model}}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"model": {"architecture": "keras_hub"}}, "preset fixes its own width"),
        ({"model": {"architecture": "keras_hub", "alpha": 1.0}}, "set model.weights to 'kaggle'"),
        (_hub(), "model.kaggle_handle is empty"),
        (_hub(kaggle_handle=HUB), "is not pinned to a version"),
        (_hub(kaggle_handle="owner/slug/versions/1"), "is not a KerasHub preset handle"),
        (_hub(kaggle_handle="owner/model/tensorflow2/x/1"), "is not a KerasHub preset handle"),
        (_hub(kaggle_handle=f"{HUB}/1", kaggle_file="a.h5"), "model.kaggle_file = 'a.h5' must"),
        ({**_hub(kaggle_handle=f"{HUB}/1"), "finetune": {"unfreeze_layers": 22}}, "only 21"),
        (
            {"model": {"weights": "kaggle", "kaggle_handle": f"{HUB}/1"}},
            "set model.architecture to 'keras_hub'",
        ),
    ],
)
def test_keras_hub_presets_are_validated(raw, expected):
    with pytest.raises(ParamsError) as info:
        parse_params(raw)
    assert expected in str(info.value)


def test_keras_hub_unfreeze_limit_is_known_for_official_presets_only():
    ok = {**_hub(kaggle_handle=f"{HUB}/1"), "finetune": {"unfreeze_layers": 21}}
    assert base_layer_count(parse_params(ok).model) == 21
    # Another owner's preset: only its downloaded backbone can tell (the finetune stage checks).
    other = {
        **_hub(kaggle_handle="someone/net/Keras/net_v1/3"),
        "finetune": {"unfreeze_layers": 80},
    }
    assert base_layer_count(parse_params(other).model) is None
    # A keras.applications weights file published as a Kaggle model of the Keras framework.
    plain = {"model": {"weights": "kaggle", "kaggle_handle": "someone/mobilenet-v2/keras/035/1"}}
    assert parse_params(plain).model.architecture == "mobilenet_v2"


def test_yaml_1_2_floats_written_by_dvc_are_numbers(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("finetune:\n  learning_rate: 1e-05\ntransfer:\n  learning_rate: 2E-3\n")
    p = load_params(path)
    assert p.finetune.learning_rate == 1e-5
    assert p.transfer.learning_rate == 2e-3


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1,\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ParamsError, match="expected a mapping"):
        load_params(listy)


def test_cli_checks_a_file(tmp_path, capsys):
    good = tmp_path / "p.yaml"
    good.write_text("seed: 3\n")
    assert main([str(good)]) == 0
    assert "seed: 3" in capsys.readouterr().out
    good.write_text("data:\n  image_size: [64, 112]\n")
    assert main([str(good)]) == 0
    assert "image_size:\n  - 64\n  - 112\n" in capsys.readouterr().out
    good.write_text("data:\n  image_size: [64, 112, 3]\n")
    assert main([str(good)]) == 2
    assert "data.image_size = [64, 112, 3]: expected" in capsys.readouterr().err
    good.write_text("seed: 3\nsplit:\n  train: 0.9\n")
    assert main([str(good)]) == 2
    assert "must be 1" in capsys.readouterr().err
