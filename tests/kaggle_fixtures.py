"""Pytest fixtures for the Kaggle tests: the local Kaggle server and an isolated client setup.

``kaggle_env`` points the real kagglehub client at a :class:`~tests.kaggle_server.KaggleTestServer`
(see :meth:`~tests.kaggle_server.KaggleTestServer.client_env`), with its cache, home folder and
Kaggle config folder in the test's tmp dir and a sentinel API token that must never be written
anywhere. Import the fixtures into a test module with ``from tests.kaggle_fixtures import *``.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Iterator, Mapping
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
