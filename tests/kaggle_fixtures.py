"""Pytest fixtures for the Kaggle tests: the local Kaggle server and an isolated client setup.

``kaggle_env`` points the real kagglehub client at a :class:`~tests.kaggle_server.KaggleTestServer`
(see :meth:`~tests.kaggle_server.KaggleTestServer.client_env`), with its cache, home folder and
Kaggle config folder in the test's tmp dir and a sentinel API token that must never be written
anywhere. Import the fixtures into a test module with ``from tests.kaggle_fixtures import *``.
"""

from __future__ import annotations

import functools
import io
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.kaggle_server import KaggleTestServer

# Fake credentials: the server accepts them; no file, log or report may ever contain them.
TOKEN = "KGAT_sentinel_token_0b5e1c7d9a"
USERNAME = "pipeline-test-user"
KEY = "sentinel_key_4f2a8c61e3"
SECRETS = (TOKEN, KEY)

DATASET_REF = "balabaskar/tom-and-jerry-image-classification"
DATASET_HANDLE = f"{DATASET_REF}/versions/1"
CLASS_ROOT = "tom_and_jerry/tom_and_jerry"
IMAGES_PER_CLASS = 12

# Environment variables that would change where kagglehub sends requests or whose credentials
# it uses; the fixtures remove them so that only what a test sets is seen.
_CLIENT_VARS = (
    "KAGGLE_API_TOKEN",
    "KAGGLE_USERNAME",
    "KAGGLE_KEY",
    "KAGGLE_CONFIG_DIR",
    "KAGGLE_API_ENVIRONMENT",
    "KAGGLE_KERNEL_RUN_TYPE",
    "KAGGLE_DATA_PROXY_URL",
    "TBE_RUNTIME_ADDR",
    "COLAB_RELEASE_TAG",
    "KAGGLEHUB_CACHE",
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
)


@functools.cache
def tom_and_jerry_files() -> dict[str, bytes]:
    """A small dataset laid out like the Kaggle one: 4 class folders of JPEGs plus a CSV file."""
    from pipeline.synthetic import SCENE_CLASSES, draw_scene

    files: dict[str, bytes] = {}
    rows = ["filename,tom,jerry"]
    for k, cls in enumerate(SCENE_CLASSES):
        rng = np.random.default_rng([123, k])
        for i in range(IMAGES_PER_CLASS):
            buf = io.BytesIO()
            draw_scene(rng, cls, 64, 48).save(buf, format="JPEG", quality=85)
            name = f"frame{k}{i:04d}.jpg"
            files[f"{CLASS_ROOT}/{cls}/{name}"] = buf.getvalue()
            rows.append(f"{name},{int('tom' in cls)},{int('jerry' in cls)}")
    files["ground_truth.csv"] = ("\n".join(rows) + "\n").encode()
    files["challenges.csv"] = b"filename,detail\n"
    return files


# A KerasHub preset served under the Kaggle owner "keras", as the official presets are: a tiny
# MobileNetV3 with random weights (9 layers, ~3k parameters), built with keras-hub itself.
KERAS_HUB_REF = "keras/mobilenetv3/keras/tiny_mobilenet_v3_test"
KERAS_HUB_HANDLE = f"{KERAS_HUB_REF}/1"
KERAS_HUB_LAYERS = 9
# ImageNet mean and standard deviation as the image converter's per-channel scale and offset,
# as in keras-hub's MobileNetV3 presets (converted from timm).
_MEAN, _STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
KERAS_HUB_SCALE = [1 / 255 / s for s in _STD]
KERAS_HUB_OFFSET = [-m / s for m, s in zip(_MEAN, _STD, strict=True)]
# A text model's preset (no image converter), for the error it must give.
TEXT_PRESET_REF = "keras/bert/keras/tiny_bert_test"


def _preset_files(save: Callable[[Path], None]) -> dict[str, bytes]:
    with tempfile.TemporaryDirectory() as tmp:
        save(Path(tmp))
        return {p.name: p.read_bytes() for p in sorted(Path(tmp).iterdir()) if p.is_file()}


@functools.cache
def tiny_keras_hub_preset() -> dict[str, bytes]:
    """The files of a tiny KerasHub MobileNetV3 image preset (random weights).

    ``config.json``, ``image_converter.json``, ``metadata.json`` and ``model.weights.h5``, as
    ``keras_hub``'s ``save_to_preset`` writes them.
    """
    import keras
    import keras_hub

    keras.utils.set_random_seed(3)
    backbone = keras_hub.models.MobileNetBackbone(
        stackwise_expansion=[[16], [24]],
        stackwise_num_blocks=[1, 1],
        stackwise_num_filters=[[8], [16]],
        stackwise_kernel_size=[[3], [3]],
        stackwise_num_strides=[[2], [2]],
        stackwise_se_ratio=[[None], [0.25]],
        stackwise_activation=[["relu"], ["hard_swish"]],
        stackwise_padding=[[1], [1]],
        output_num_filters=32,
        depthwise_filters=8,
        depthwise_stride=2,
        depthwise_residual=False,
        last_layer_filter=32,
        squeeze_and_excite=0.5,
        image_shape=(224, 224, 3),
        input_num_filters=8,
    )
    return _image_preset_files(backbone, keras_hub.layers.MobileNetImageConverter)


@functools.cache
def tiny_efficientnet_preset() -> dict[str, bytes]:
    """The files of a tiny KerasHub EfficientNet image preset (random weights, 33 layers).

    EfficientNet's backbone takes ``input_shape`` where MobileNet's takes ``image_shape``.
    """
    import keras
    import keras_hub

    keras.utils.set_random_seed(4)
    backbone = keras_hub.models.EfficientNetBackbone(
        stackwise_width_coefficients=[1.0, 1.0],
        stackwise_depth_coefficients=[1.0, 1.0],
        stackwise_kernel_sizes=[3, 3],
        stackwise_num_repeats=[1, 1],
        stackwise_input_filters=[8, 8],
        stackwise_output_filters=[8, 16],
        stackwise_expansion_ratios=[1, 2],
        stackwise_squeeze_and_excite_ratios=[0.25, 0.25],
        stackwise_strides=[2, 2],
        stackwise_block_types=["v1", "v1"],
        stackwise_force_input_filters=[0, 0],
        stackwise_nores_option=[False, False],
        min_depth=None,
        use_depth_divisor_as_min_depth=True,
        cap_round_filter_decrease=True,
        dropout=0,
        input_shape=(224, 224, 3),  # num_features stays 1280: keras-hub does not save it
    )
    return _image_preset_files(backbone, keras_hub.layers.EfficientNetImageConverter)


def _image_preset_files(backbone: object, converter_class: type) -> dict[str, bytes]:
    """The files of an image preset: ``backbone`` and a 224 px ``converter_class`` converter."""
    converter = converter_class(
        image_size=(224, 224), scale=KERAS_HUB_SCALE, offset=KERAS_HUB_OFFSET
    )

    def save(folder: Path) -> None:
        backbone.save_to_preset(str(folder))
        converter.save_to_preset(str(folder))

    return _preset_files(save)


@functools.cache
def tiny_text_preset() -> dict[str, bytes]:
    """The files of a tiny KerasHub BERT preset: a text model, no image converter."""
    import keras_hub

    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=16,
        num_layers=1,
        num_heads=1,
        hidden_dim=4,
        intermediate_dim=8,
        max_sequence_length=8,
    )
    return _preset_files(lambda folder: backbone.save_to_preset(str(folder)))


def client_env(server: KaggleTestServer, root: Path) -> dict[str, str]:
    """Environment for a kagglehub client (in this process or a subprocess) of ``server``."""
    return {
        **server.client_env(),
        "KAGGLEHUB_CACHE": str(root / "kagglehub-cache"),
        "HOME": str(root / "home"),
        "KAGGLE_CONFIG_DIR": str(root / "home" / ".kaggle"),
        "KAGGLE_API_TOKEN": TOKEN,
    }


def scrubbed(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without the variables that steer kagglehub (see ``_CLIENT_VARS``)."""
    return {k: v for k, v in env.items() if k not in _CLIENT_VARS}


def find_secrets(*roots: Path) -> list[str]:
    """Files below ``roots`` whose bytes contain one of the fake credentials."""
    hits = []
    for root in roots:
        for path in Path(root).rglob("*"):
            if path.is_file() and not path.is_symlink():
                data = path.read_bytes()
                hits += [f"{path}: {s[:8]}..." for s in SECRETS if s.encode() in data]
    return hits


@dataclass
class KaggleClient:
    """What a test needs to know about the client side set up by ``kaggle_env``."""

    server: KaggleTestServer
    root: Path
    monkeypatch: pytest.MonkeyPatch

    @property
    def cache(self) -> Path:
        return self.root / "kagglehub-cache"

    @property
    def home(self) -> Path:
        return self.root / "home"

    def without_credentials(self) -> None:
        self.monkeypatch.delenv("KAGGLE_API_TOKEN", raising=False)

    def use(self, **env: str) -> None:
        for k, v in env.items():
            self.monkeypatch.setenv(k, v)


@pytest.fixture
def kaggle_server() -> Iterator[KaggleTestServer]:
    """A running server that requires the fake credentials and serves the Tom and Jerry set."""
    server = KaggleTestServer(token=TOKEN, username=USERNAME, key=KEY, require_auth=True)
    server.add_dataset(DATASET_REF, 1, tom_and_jerry_files())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def kaggle_env(
    kaggle_server: KaggleTestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> KaggleClient:
    """Point kagglehub at ``kaggle_server`` with the fake token, a tmp cache and a tmp home."""
    import kagglehub.config

    root = tmp_path / "client"
    for var in _CLIENT_VARS:
        monkeypatch.delenv(var, raising=False)
    for k, v in client_env(kaggle_server, root).items():
        monkeypatch.setenv(k, v)
    (root / "home").mkdir(parents=True)
    kagglehub.config.clear_kaggle_credentials()
    return KaggleClient(kaggle_server, root, monkeypatch)
