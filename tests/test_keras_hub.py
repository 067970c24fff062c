"""KerasHub presets from Kaggle as bases (``model.architecture: keras_hub``).

The real kagglehub client downloads a tiny MobileNetV3 preset, made with keras-hub and served by
the local Kaggle server (``tests/kaggle_server.py``) under a ``keras/...`` handle as the official
presets are; nothing here reaches the internet or the user's kagglehub cache.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
import yaml

from pipeline.architectures import KERAS_HUB_LAYER_COUNTS
from pipeline.models import (
    build_base,
    classifier_from_params,
    get_base,
    keras_hub_base_from_preset,
    load_model,
    preprocessing,
    read_keras_hub_base,
    save_base,
    split_at_frozen,
    unfreeze_last,
)
from pipeline.params import parse_params, read_yaml
from pipeline.utils import PipelineError
from tests import kaggle_fixtures
from tests.conftest import ROOT, tiny_params_dict
from tests.kaggle_fixtures import (
    KERAS_HUB_HANDLE,
    KERAS_HUB_LAYERS,
    KERAS_HUB_OFFSET,
    KERAS_HUB_REF,
    KERAS_HUB_SCALE,
    KEY,
    SECRETS,
    TEXT_PRESET_REF,
    TOKEN,
    USERNAME,
    KaggleClient,
    client_env,
    find_secrets,
    scrubbed,
    tiny_efficientnet_preset,
    tiny_keras_hub_preset,
    tiny_text_preset,
)
from tests.kaggle_server import KaggleTestServer

kaggle_server = kaggle_fixtures.kaggle_server
kaggle_env = kaggle_fixtures.kaggle_env

PRESET_FILES = ["config.json", "image_converter.json", "model.weights.h5"]


def _params(handle: str = KERAS_HUB_HANDLE, **sections: dict):
    model = {"architecture": "keras_hub", "alpha": 1.0, "weights": "kaggle"}
    return parse_params(
        tiny_params_dict(
            model={**model, "kaggle_handle": handle},
            finetune={"unfreeze_layers": 3},
            **{"data": {"image_size": 32, "resize": "squash"}, **sections},
        )
    )


@pytest.fixture
def hub(kaggle_env: KaggleClient) -> KaggleClient:
    """The local Kaggle server with the tiny preset as version 1 of ``KERAS_HUB_REF``."""
    kaggle_env.server.add_model(KERAS_HUB_REF, 1, tiny_keras_hub_preset())
    return kaggle_env


def _served_backbone(tmp_path: Path) -> keras.Model:
    """The served preset as keras-hub itself loads it, for comparison."""
    import keras_hub

    folder = tmp_path / "served"
    folder.mkdir()
    for name, data in tiny_keras_hub_preset().items():
        (folder / name).write_bytes(data)
    return keras_hub.models.Backbone.from_preset(str(folder))


def _downloads(server: KaggleTestServer) -> list[str]:
    """The files asked for, in order (``path`` of each model download request)."""
    return [r.body.get("path") for r in server.calls("DownloadModelInstanceVersion")]


def _fail(fn, *args) -> str:
    with pytest.raises(PipelineError) as err:
        fn(*args)
    message = str(err.value)
    assert not any(s in message for s in SECRETS)
    return message


def _same_weights(a: keras.Model, b: keras.Model) -> bool:
    wa, wb = a.get_weights(), b.get_weights()
    return len(wa) == len(wb) and all(np.array_equal(x, y) for x, y in zip(wa, wb, strict=True))


def test_preset_from_kaggle_is_the_base_and_a_second_run_needs_no_network(hub, tmp_path):
    from pipeline.weights import pretrained_base

    base, info = pretrained_base(_params())
    assert _downloads(hub.server) == PRESET_FILES  # file by file, the weights last; no metadata
    assert [r.name for r in hub.server.log if r.method == "POST"] == [
        "DownloadModelInstanceVersion"
    ] * 3  # pinned: no "latest version" lookup
    assert base.name == "base" and type(base).__name__ == "MobileNetBackbone"
    assert base.input_shape == (None, None, None, 3)  # size-agnostic
    assert len(base.layers) == KERAS_HUB_LAYERS
    assert _same_weights(base, _served_backbone(tmp_path))
    weights_sha = hashlib.sha256(tiny_keras_hub_preset()["model.weights.h5"]).hexdigest()
    assert info == {
        "source": "kaggle",
        "kind": "model",
        "handle": KERAS_HUB_HANDLE,
        "version": 1,
        "preset": "tiny_mobilenet_v3_test",
        "backbone": "keras_hub>MobileNetBackbone",
        "file": "model.weights.h5",
        "sha256": weights_sha,
        "kagglehub": info["kagglehub"],
        "keras_hub": info["keras_hub"],
        "layers": KERAS_HUB_LAYERS,
        "preprocessing": {"scale": KERAS_HUB_SCALE, "offset": KERAS_HUB_OFFSET},
    }
    json.dumps(info)

    # Second run: kagglehub's cache, and not one request (the server is gone, too).
    hub.server.stop()
    requests = len(hub.server.log)
    again, info_again = pretrained_base(_params())
    assert len(hub.server.log) == requests
    assert info_again == info and _same_weights(again, base)
    assert not find_secrets(hub.cache)


@pytest.fixture(scope="module")
def base_file(tmp_path_factory) -> Path:
    """``models/base.weights.h5`` as download_weights writes it for the tiny preset."""
    folder = tmp_path_factory.mktemp("preset")
    for name, data in tiny_keras_hub_preset().items():
        (folder / name).write_bytes(data)
    base, spec = keras_hub_base_from_preset(folder)
    path = folder / "base.weights.h5"
    save_base(base, path, {"scale": spec.scale, "offset": spec.offset})
    return path


def test_saved_base_rebuilds_the_classifier_with_the_presets_preprocessing(base_file, tmp_path):
    params = _params()
    spec = read_keras_hub_base(base_file)
    assert spec.class_name == "keras_hub>MobileNetBackbone"
    assert (spec.scale, spec.offset) == (KERAS_HUB_SCALE, KERAS_HUB_OFFSET)

    model = classifier_from_params(params, 4, weights=base_file)
    pre = model.get_layer("preprocessing")
    assert type(pre) is keras.layers.Rescaling
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    expected = x * np.asarray(KERAS_HUB_SCALE) + np.asarray(KERAS_HUB_OFFSET)
    np.testing.assert_allclose(pre(x).numpy(), expected, rtol=1e-5, atol=1e-5)
    assert model.input_shape == (None, 32, 32, 3) and model.output_shape == (None, 4)
    assert _same_weights(get_base(model), _served_backbone(tmp_path))
    assert not get_base(model).trainable
    assert not any(isinstance(la, keras.layers.Lambda) for la in model._flatten_layers())

    model.save(tmp_path / "m.keras")
    loaded = load_model(tmp_path / "m.keras")  # safe mode
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-6, atol=1e-7)

    # What a KerasHub base cannot be built without, with errors that say so.
    with pytest.raises(ValueError, match="rebuilt from the weights file"):
        build_base("keras_hub", 1.0, 32)
    with pytest.raises(ValueError, match="comes from its preset"):
        preprocessing("keras_hub")
    plain = tmp_path / "plain.weights.h5"
    keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]).save_weights(plain)
    with pytest.raises(ValueError, match=r"holds no KerasHub backbone config.*download_weights"):
        classifier_from_params(params, 4, weights=plain)


def test_efficientnet_preset_with_its_own_input_shape_argument(tmp_path):
    """EfficientNet's backbone (the profile's family) takes ``input_shape``, not ``image_shape``."""
    folder = tmp_path / "preset"
    folder.mkdir()
    for name, data in tiny_efficientnet_preset().items():
        (folder / name).write_bytes(data)
    base, spec = keras_hub_base_from_preset(folder)
    assert spec.class_name == "keras_hub>EfficientNetBackbone"
    assert base.input_shape == (None, None, None, 3) and len(base.layers) == 33
    path = tmp_path / "base.weights.h5"
    save_base(base, path, {"scale": spec.scale, "offset": spec.offset})
    model = classifier_from_params(_params(), 4, weights=path)
    assert get_base(model).input_shape == (None, 32, 32, 3)
    assert _same_weights(get_base(model), base)


def test_unfreezing_a_keras_hub_base_keeps_every_batchnorm_frozen(base_file):
    import tensorflow as tf

    model = classifier_from_params(_params(), 4, weights=base_file)
    base = get_base(model)
    n_with_weights = unfreeze_last(model, 3)
    tail, head = base.layers[-3:], base.layers[:-3]
    assert [type(la).__name__ for la in tail] == [
        "InvertedResidualBlock",
        "InvertedResidualBlock",
        "ConvBnActBlock",
    ]
    assert n_with_weights == 3
    norms = [
        sub
        for layer in base.layers
        for sub in layer._flatten_layers()
        if isinstance(sub, keras.layers.BatchNormalization)
    ]
    assert len(norms) == 10 and not any(n.trainable for n in norms)  # 8 of them inside blocks
    assert not any(w.trainable for layer in head for w in layer.weights)
    norm_weights = {w.path for n in norms for w in n.weights}
    tail_weights = {w.path for layer in tail for w in layer.weights} - norm_weights
    assert {w.path for w in base.trainable_weights} == tail_weights

    # One training step (eager: no tracing): only the unfrozen blocks' own weights move, and no
    # BatchNorm statistic does, though the whole model runs in training mode.
    before = {w.path: w.numpy().copy() for w in base.weights}
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 4, 8)
    optimizer = keras.optimizers.SGD(0.1)
    with tf.GradientTape() as tape:
        loss = keras.losses.sparse_categorical_crossentropy(y, model(x, training=True))
    optimizer.apply(tape.gradient(loss, model.trainable_weights), model.trainable_weights)
    changed = {w.path for w in base.weights if not np.array_equal(w.numpy(), before[w.path])}
    assert changed and changed <= tail_weights


def test_frozen_activations_of_a_keras_hub_base_are_cut_between_blocks(base_file):
    """A KerasHub block is one layer of its backbone: the cut falls between blocks, and the
    top on the frozen activations is the whole classifier."""
    model = classifier_from_params(_params(), 4, weights=base_file)
    unfreeze_last(model, 3)
    bottom, top, name = split_at_frozen(model)
    assert name == get_base(model).layers[-4].name
    x = np.random.default_rng(2).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(top(bottom(x)), model(x, training=False), atol=1e-6)
    assert {w.path for w in top.trainable_weights} == {w.path for w in model.trainable_weights}


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("wrong handle", ["HTTP 404", "check model.kaggle_handle", "config.json"]),
        ("wrong version", ["HTTP 404", "version 7", "check model.kaggle_handle"]),
        ("text model", ["BertBackbone, which is not an image model", "image preset"]),
        ("weights file", ["HTTP 404", "A KerasHub preset holds config.json"]),
        ("no converter", ["HTTP 404", "image_converter.json", "has no image converter"]),
    ],
)
def test_wrong_handle_version_or_preset_fails_clearly(hub, case, expected):
    from pipeline.weights import pretrained_base

    server = hub.server
    server.add_model(TEXT_PRESET_REF, 1, tiny_text_preset())
    server.add_model("someone/mobilenet-v2/keras/035-no-top", 1, {"base.weights.h5": b"\x89HDF"})
    files = {k: v for k, v in tiny_keras_hub_preset().items() if k != "image_converter.json"}
    server.add_model(f"{KERAS_HUB_REF}_no_converter", 1, files)
    handle = {
        "wrong handle": "keras/mobilenetv3/keras/no_such_preset/1",
        "wrong version": f"{KERAS_HUB_REF}/7",
        "text model": f"{TEXT_PRESET_REF}/1",
        "weights file": "someone/mobilenet-v2/keras/035-no-top/1",
        "no converter": f"{KERAS_HUB_REF}_no_converter/1",
    }[case]
    message = _fail(pretrained_base, _params(handle))
    assert all(part in message for part in expected), message
    assert "model.weights.h5" not in _downloads(hub.server)  # refused before the weights download


def test_failed_download_keeps_the_previous_base(hub, tmp_path):
    from pipeline.stages import download_weights

    params_file, out, info = tmp_path / "params.yaml", tmp_path / "base.weights.h5", tmp_path / "i"
    model = {"architecture": "keras_hub", "alpha": 1.0, "weights": "kaggle"}
    raw = tiny_params_dict(model={**model, "kaggle_handle": KERAS_HUB_HANDLE})
    params_file.write_text(json.dumps(raw))
    args = ["--params", str(params_file), "--out", str(out), "--info", str(info)]
    download_weights.main(args)
    assert read_keras_hub_base(out).class_name == "keras_hub>MobileNetBackbone"
    written, provenance = out.read_bytes(), info.read_text()
    assert json.loads(provenance)["handle"] == KERAS_HUB_HANDLE

    raw["model"]["kaggle_handle"] = f"{KERAS_HUB_REF}/2"
    params_file.write_text(json.dumps(raw))
    with pytest.raises(PipelineError, match="HTTP 404"):
        download_weights.main(args)
    assert out.read_bytes() == written and info.read_text() == provenance


def test_layer_count_table_matches_keras_hubs_presets():
    """The table that validates finetune.unfreeze_layers, against keras-hub's own presets."""
    import keras_hub
    from keras_hub.src.models.mobilenet.mobilenet_presets import backbone_presets
    from keras_hub.src.utils.timm.convert_mobilenet import convert_backbone_config

    timm_names = {
        "mobilenet_v3_small_050_imagenet": "mobilenetv3_small_050",
        "mobilenet_v3_small_100_imagenet": "mobilenetv3_small_100",
        "mobilenet_v3_large_100_imagenet": "mobilenetv3_large_100",
        "mobilenet_v3_large_100_imagenet_21k": "mobilenetv3_large_100",
    }
    assert set(KERAS_HUB_LAYER_COUNTS) == set(timm_names) == set(backbone_presets)
    built: dict[str, tuple[int, int]] = {}  # timm architecture -> (layers, parameters)
    for preset, n_layers in KERAS_HUB_LAYER_COUNTS.items():
        entry = backbone_presets[preset]
        assert entry["kaggle_handle"] == f"kaggle://keras/mobilenetv3/keras/{preset}/1"
        arch = timm_names[preset]
        if arch not in built:
            config = convert_backbone_config({"architecture": arch})
            backbone = keras_hub.models.MobileNetBackbone(**config, image_shape=(None, None, 3))
            built[arch] = len(backbone.layers), backbone.count_params()
        assert built[arch] == (n_layers, entry["metadata"]["params"]), preset


def test_profile_takes_the_tom_and_jerry_data_and_an_official_preset():
    from keras_hub.src.models.efficientnet.efficientnet_presets import backbone_presets

    profile = read_yaml(ROOT / "profiles" / "tom-and-jerry-kaggle.yaml")
    params = parse_params(_merge(read_yaml(ROOT / "params.yaml"), profile))
    assert params.data.source == "kaggle" and params.model.architecture == "keras_hub"
    handles = {e["kaggle_handle"].removeprefix("kaggle://") for e in backbone_presets.values()}
    assert params.model.kaggle_handle in handles
    # params.yaml's values are not repeated: the profile holds only what differs
    defaults = read_yaml(ROOT / "params.yaml")
    for section, values in profile.items():
        assert all(defaults[section][k] != v for k, v in values.items()), section


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out.get(k) or {}, v) if isinstance(v, dict) else v
    return out


# -- end to end -----------------------------------------------------------------------------

# A fresh process: plain Keras loads a saved model with a KerasHub base in safe mode, importing
# keras_hub by itself (the saved config names each class's module); nothing needs registering.
LOAD_CHECK = """
import sys, keras
assert "keras_hub" not in sys.modules
model = keras.saving.load_model(sys.argv[1], safe_mode=True)
base = type(model.get_layer("base")).__name__
print("loaded", base, model.output_shape, "keras_hub" in sys.modules)
"""


@pytest.mark.slow
def test_dvc_repro_with_a_keras_hub_preset_from_kaggle(trained_repo, tmp_path):
    """The session's tiny run with its base swapped for the preset: what depends on it reruns.

    download_weights fetches the preset through kagglehub from the local Kaggle server, transfer
    and finetune build, train and unfreeze it, export checks the SavedModel and TFLite copies
    against the Keras model, and the model card names the preset's handle and version.
    """
    from tests.e2e import run, stages_run, venv_env

    server = KaggleTestServer(token=TOKEN, username=USERNAME, key=KEY, require_auth=True)
    server.add_model(KERAS_HUB_REF, 1, tiny_keras_hub_preset())
    server.start()
    try:
        repo = tmp_path / "repo"
        shutil.copytree(trained_repo, repo, symlinks=True)
        params = read_yaml(repo / "params.yaml")
        params["model"].update(
            architecture="keras_hub", alpha=1.0, weights="kaggle", kaggle_handle=KERAS_HUB_HANDLE
        )
        params["transfer"]["epochs"] = params["finetune"]["epochs"] = 1
        params["finetune"]["unfreeze_layers"] = 3
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        env = {**scrubbed(venv_env()), **client_env(server, tmp_path / "client")}
        (tmp_path / "client" / "home").mkdir(parents=True)

        done = run(["dvc", "repro"], repo, env=env, timeout=600)
        assert stages_run(done.stdout) == [
            "download_weights",
            "baseline",
            "transfer",
            "finetune",
            "evaluate",
            "export",
            "model_card",
        ]
        assert _downloads(server) == PRESET_FILES
        weights_info = json.loads((repo / "reports/weights_source.json").read_text())
        assert weights_info["handle"] == KERAS_HUB_HANDLE and weights_info["version"] == 1
        export = json.loads((repo / "reports/export.json").read_text())
        for fmt in ("saved_model", "tflite"):  # the export stage fails above its tolerance
            assert export[fmt]["max_abs_diff"] <= export["tolerance"]
        card = (repo / "reports/model_card.md").read_text()
        assert f"Kaggle `{KERAS_HUB_HANDLE}`, version 1" in card
        assert "KerasHub preset" in card and "keras_hub>MobileNetBackbone" in card
        summary = (repo / "reports/model_summary.txt").read_text()
        assert "block_2_0" in summary and "InvertedResidualBlock" in summary

        model = repo / "models/finetune/model.keras"
        check = run(["python", "-c", LOAD_CHECK, str(model)], repo, env=env).stdout
        assert "loaded MobileNetBackbone (None, 4) True" in check
        logs = done.stdout + done.stderr
        assert not any(s in logs for s in SECRETS)
        assert not find_secrets(repo, tmp_path / "client")
    finally:
        server.stop()
