"""The Kaggle sources through the real kagglehub client, against a local Kaggle server.

The server (``tests/kaggle_server.py``) speaks the API calls kagglehub 1.0.3 makes; faults are
switched on per test. Nothing here reaches the internet or the user's kagglehub cache.
"""

from __future__ import annotations

import json
from pathlib import Path

import kagglehub
import numpy as np
import pytest

from pipeline.architectures import weights_file_pattern
from pipeline.params import parse_params, read_yaml
from pipeline.sources import get_data_source
from pipeline.sources.kaggle import (
    KaggleSource,
    download_weights_file,
    parse_handle,
)
from pipeline.synthetic import SCENE_CLASSES
from pipeline.utils import PipelineError
from tests import kaggle_fixtures
from tests.conftest import ROOT, tiny_params_dict
from tests.kaggle_fixtures import (
    CLASS_ROOT,
    DATASET_HANDLE,
    DATASET_REF,
    IMAGES_PER_CLASS,
    KEY,
    SECRETS,
    TOKEN,
    USERNAME,
    KaggleClient,
    client_env,
    find_secrets,
    scrubbed,
    tom_and_jerry_files,
)
from tests.kaggle_server import KaggleTestServer

# The fixtures (a running server; kagglehub pointed at it with a tmp cache and a fake token).
kaggle_server = kaggle_fixtures.kaggle_server
kaggle_env = kaggle_fixtures.kaggle_env

CREDENTIAL_OPTIONS = ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY", "kaggle.json")
WEIGHTS_MODEL = "keras-apps/mobilenet-v2/keras/035-no-top"
LEGACY_NAME = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"


def _data_params(handle: str = DATASET_HANDLE):
    # real data needs real weights: imagenet stands in (this test downloads data only)
    return parse_params(
        tiny_params_dict(
            data={"source": "kaggle", "kaggle": {"handle": handle}}, model={"weights": "imagenet"}
        )
    )


def _weights_params(handle: str, file: str = ""):
    return parse_params(
        tiny_params_dict(model={"weights": "kaggle", "kaggle_handle": handle, "kaggle_file": file})
    )


def _fetch(tmp_path: Path, name: str = "out", handle: str = DATASET_HANDLE) -> tuple[Path, dict]:
    out = tmp_path / name
    out.mkdir()
    return out, KaggleSource(_data_params(handle)).fetch(out)


def _fail(fn, *args) -> str:
    with pytest.raises(PipelineError) as err:
        fn(*args)
    message = str(err.value)
    assert not any(s in message for s in SECRETS)
    return message


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _complete_markers(cache: Path) -> list[str]:
    return sorted(p.relative_to(cache).as_posix() for p in cache.rglob("*.complete"))


# -- the dataset ----------------------------------------------------------------------------


def test_versioned_dataset_download_gives_the_class_tree(
    kaggle_env: KaggleClient, tmp_path, capsys
):
    assert isinstance(get_data_source(_data_params()), KaggleSource)
    out, info = _fetch(tmp_path)
    served = tom_and_jerry_files()
    assert _tree(out) == {
        k.removeprefix(CLASS_ROOT + "/"): v for k, v in served.items() if k.endswith(".jpg")
    }
    assert info == {
        "source": "kaggle",
        "handle": DATASET_HANDLE,
        "version": 1,
        "class_root": CLASS_ROOT,
        "images": dict.fromkeys(SCENE_CLASSES, IMAGES_PER_CLASS),
        "kagglehub": kagglehub.__version__,
    }
    json.dumps(info)
    (call,) = kaggle_env.server.calls("DownloadDataset")
    assert call.body == {
        "ownerSlug": "balabaskar",
        "datasetSlug": "tom-and-jerry-image-classification",
        "datasetVersionNumber": 1,
    }
    assert (call.auth, call.auth_ok) == ("Bearer", True)
    assert not kaggle_env.server.calls("GetDataset")  # pinned: no "latest version" lookup
    captured = capsys.readouterr()
    assert not any(s in captured.out + captured.err for s in SECRETS)
    assert not find_secrets(kaggle_env.cache, out)


def test_second_run_reads_the_cache_without_network(kaggle_env: KaggleClient, tmp_path):
    first, _ = _fetch(tmp_path, "first")
    kaggle_env.server.stop()  # no server, no network: the port refuses connections
    second, info = _fetch(tmp_path, "second")
    assert _tree(second) == _tree(first)
    assert info["images"] == dict.fromkeys(SCENE_CLASSES, IMAGES_PER_CLASS)
    # A version that is not in the cache needs the network, and says so.
    message = _fail(_fetch, tmp_path, "third", f"{DATASET_REF}/versions/2")
    assert "could not reach Kaggle" in message and "kagglehub cache" in message


@pytest.mark.parametrize(
    ("handle", "expected"),
    [
        (DATASET_REF, "is not pinned to a version"),
        ("owner/slug/versions/latest", "is not a pinned Kaggle handle"),
        ("owner/slug/versions/0", "is not a pinned Kaggle handle"),
        ("https://www.kaggle.com/datasets/owner/slug", "is not a pinned Kaggle handle"),
        ("owner/model/keras/variation/1", "is not a pinned Kaggle handle"),
    ],
)
def test_unpinned_or_malformed_dataset_handle_is_refused(
    kaggle_env: KaggleClient, tmp_path, handle, expected
):
    message = _fail(_fetch, tmp_path, "out", handle)
    assert expected in message and "data.kaggle.handle" in message
    if "not pinned" in message:
        assert "reproducib" in message and f"{DATASET_REF}/versions/N" in message
    assert kaggle_env.server.log == []  # refused before any request


def test_handle_forms():
    d = parse_handle(f" {DATASET_HANDLE} ", "k")
    assert (d.kind, d.handle, d.ref, d.version) == ("dataset", DATASET_HANDLE, DATASET_REF, 1)
    m = parse_handle(f"{WEIGHTS_MODEL}/3", "k", kinds=("dataset", "model"))
    assert (m.kind, m.ref, m.version) == ("model", WEIGHTS_MODEL, 3)
    with pytest.raises(PipelineError, match=r"not pinned.*'keras-apps/mobilenet-v2/keras/035-no"):
        parse_handle(WEIGHTS_MODEL, "model.kaggle_handle", kinds=("dataset", "model"))


@pytest.mark.parametrize("route", ["token", "username_key", "kaggle_json", "token_wins"])
def test_credentials_in_kagglehubs_order(kaggle_env: KaggleClient, tmp_path, route):
    kaggle_env.without_credentials()
    if route == "token":
        kaggle_env.use(KAGGLE_API_TOKEN=TOKEN)
    elif route == "username_key":
        kaggle_env.use(KAGGLE_USERNAME=USERNAME, KAGGLE_KEY=KEY)
    elif route == "kaggle_json":
        folder = kaggle_env.home / ".kaggle"
        folder.mkdir()
        (folder / "kaggle.json").write_text(json.dumps({"username": USERNAME, "key": KEY}))
    else:  # the token comes first, even when a (wrong) username and key are set too
        kaggle_env.use(KAGGLE_API_TOKEN=TOKEN, KAGGLE_USERNAME=USERNAME, KAGGLE_KEY="wrong")
    out, _ = _fetch(tmp_path)
    (call,) = kaggle_env.server.calls("DownloadDataset")
    assert call.auth == ("Basic" if route in ("username_key", "kaggle_json") else "Bearer")
    assert call.auth_ok
    assert not find_secrets(kaggle_env.cache, out)


def test_401_without_credentials_names_the_ways_to_give_them(kaggle_env: KaggleClient, tmp_path):
    kaggle_env.without_credentials()
    message = _fail(_fetch, tmp_path)
    assert "HTTP 401" in message and "no Kaggle credentials were found" in message
    assert all(option in message for option in CREDENTIAL_OPTIONS)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert _complete_markers(kaggle_env.cache) == []


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials(kaggle_env: KaggleClient, tmp_path, status):
    if status == 401:
        kaggle_env.use(KAGGLE_API_TOKEN="KGAT_a_revoked_token")
    else:
        kaggle_env.server.api_fault = 403  # e.g. terms not accepted
    message = _fail(_fetch, tmp_path)
    assert f"HTTP {status}" in message
    assert "the credentials from KAGGLE_API_TOKEN were refused" in message
    assert all(option in message for option in CREDENTIAL_OPTIONS)
    assert "KGAT_a_revoked_token" not in message


@pytest.mark.parametrize(
    "handle",
    [f"{DATASET_REF}/versions/7", "balabaskar/tom-and-jery-image-classification/versions/1"],
)
def test_404_for_a_wrong_handle_or_version(kaggle_env: KaggleClient, tmp_path, handle):
    message = _fail(_fetch, tmp_path, "out", handle)
    assert "HTTP 404" in message and "check data.kaggle.handle" in message
    assert _complete_markers(kaggle_env.cache) == []


def test_server_errors_fail_clearly_and_the_next_run_recovers(kaggle_env: KaggleClient, tmp_path):
    kaggle_env.server.api_fault = 500
    message = _fail(_fetch, tmp_path, "api")
    assert "HTTP 500" in message and "run the stage again" in message
    kaggle_env.server.api_fault = None
    kaggle_env.server.blob_fault = 503  # the storage behind the redirect fails
    assert "HTTP 503" in _fail(_fetch, tmp_path, "blob")
    assert _complete_markers(kaggle_env.cache) == []
    kaggle_env.server.blob_fault = None
    _, info = _fetch(tmp_path, "ok")
    assert info["images"] == dict.fromkeys(SCENE_CLASSES, IMAGES_PER_CLASS)


def _big_dataset(server: KaggleTestServer, seed: int = 0) -> str:
    """A dataset whose archive is over 2 MiB, so a cut at half leaves a partial file on disk."""
    files = {k: v for k, v in tom_and_jerry_files().items() if k.endswith(".jpg")}
    files["extra/noise.bin"] = np.random.default_rng(seed).bytes(3 << 20)
    server.add_dataset("owner/big", 1, files)
    return "owner/big/versions/1"


def test_cut_off_download_is_never_trusted_and_is_resumed(kaggle_env: KaggleClient, tmp_path):
    from kagglehub.cache import Cache
    from kagglehub.handle import parse_dataset_handle

    server, handle = kaggle_env.server, _big_dataset(kaggle_env.server)
    server.blob_fault = "truncate"
    message = _fail(_fetch, tmp_path, "cut", handle)
    assert "was cut off" in message and "run the stage again" in message
    # What the cut leaves: a partial archive, no completion marker, so it is never used as is.
    archive = kaggle_env.cache / "datasets/owner/big/1.archive"
    assert 0 < archive.stat().st_size < 3 << 20
    assert Cache().load_from_cache(parse_dataset_handle(handle)) is None
    assert _complete_markers(kaggle_env.cache) == []

    partial = archive.stat().st_size

    server.blob_fault = None
    _, info = _fetch(tmp_path, "resumed", handle)
    assert info["images"] == dict.fromkeys(SCENE_CLASSES, IMAGES_PER_CLASS)
    resumed = [r for r in server.log if r.method == "GET"][-1]
    assert resumed.range == f"bytes={partial}-"  # only the missing part was fetched
    assert not archive.exists()  # extracted, then removed by kagglehub
    assert (kaggle_env.cache / "datasets/owner/big/versions/1/extra/noise.bin").stat().st_size == (
        3 << 20
    )


def test_resumed_download_that_fails_its_checksum_is_discarded(kaggle_env: KaggleClient, tmp_path):
    server, handle = kaggle_env.server, _big_dataset(kaggle_env.server)
    server.blob_fault = "truncate"
    _fail(_fetch, tmp_path, "cut", handle)
    # The object changes before the resume: the stitched file cannot match the new MD5.
    server.blob_fault = None
    _big_dataset(server, seed=1)
    message = _fail(_fetch, tmp_path, "stitched", handle)
    assert "MD5" in message and "run the stage again" in message
    assert not (kaggle_env.cache / "datasets/owner/big/1.archive").exists()
    _, info = _fetch(tmp_path, "fresh", handle)
    assert info["images"] == dict.fromkeys(SCENE_CLASSES, IMAGES_PER_CLASS)


def test_damaged_archive_is_removed_so_the_next_run_recovers(kaggle_env: KaggleClient, tmp_path):
    kaggle_env.server.blob_fault = "damaged"  # a consistent object that is not a whole zip
    message = _fail(_fetch, tmp_path, "bad")
    assert "damaged" in message
    assert list(kaggle_env.cache.rglob("*.archive")) == []
    kaggle_env.server.blob_fault = None
    _, info = _fetch(tmp_path, "good")
    assert info["images"] == dict.fromkeys(SCENE_CLASSES, IMAGES_PER_CLASS)


# -- the weights ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def weights_files(tmp_path_factory) -> dict[str, object]:
    """A headless mobilenet_v2 (alpha 0.35) saved as keras.applications' legacy .h5 and as
    ``.weights.h5``, with the weights they hold."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    from pipeline.models import build_base

    folder = tmp_path_factory.mktemp("weights")
    base = build_base("mobilenet_v2", 0.35, None, weights=None)
    legacy = folder / LEGACY_NAME
    with h5py.File(legacy, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, base)
    native = folder / "base.weights.h5"
    base.save_weights(native)
    return {
        "weights": base.get_weights(),
        "legacy": legacy.read_bytes(),
        "native": native.read_bytes(),
    }


def _assert_same_weights(model, expected) -> None:
    got = model.get_weights()
    assert len(got) == len(expected)
    assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))


def test_weights_from_a_kaggle_model_in_keras_applications_format(
    kaggle_env: KaggleClient, weights_files
):
    from pipeline.weights import pretrained_base

    server = kaggle_env.server
    server.add_model(
        WEIGHTS_MODEL, 1, {LEGACY_NAME: weights_files["legacy"], "README.md": b"weights\n"}
    )
    params = _weights_params(f"{WEIGHTS_MODEL}/1")
    base, info = pretrained_base(params)
    _assert_same_weights(base, weights_files["weights"])
    assert info["source"] == "kaggle" and info["kind"] == "model"
    assert info["handle"] == f"{WEIGHTS_MODEL}/1" and info["file"] == LEGACY_NAME
    assert len(info["sha256"]) == 64
    assert [c.name for c in server.log if c.method == "POST"] == [
        "ListModelInstanceVersionFiles",
        "DownloadModelInstanceVersion",
        "DownloadModelInstanceVersion",
    ]
    assert not server.calls("GetModelInstance")  # pinned
    # Second run: from kagglehub's cache, with the server gone.
    server.stop()
    path, again = download_weights_file(params)
    assert again == info and path.name == LEGACY_NAME
    assert not find_secrets(kaggle_env.cache)


def test_weights_file_from_a_kaggle_dataset_named_by_param(kaggle_env: KaggleClient, weights_files):
    from pipeline.weights import pretrained_base

    server = kaggle_env.server
    server.add_dataset(
        "someone/keras-weights",
        2,
        {
            "mobilenet_v2/base.weights.h5": weights_files["native"],
            "efficientnet/efficientnetb0_notop.h5": b"not used",
        },
    )
    params = _weights_params("someone/keras-weights/versions/2", "mobilenet_v2/base.weights.h5")
    base, info = pretrained_base(params)
    _assert_same_weights(base, weights_files["weights"])
    assert (info["kind"], info["file"]) == ("dataset", "mobilenet_v2/base.weights.h5")
    (call,) = server.calls("DownloadDataset")  # only that file was downloaded
    assert call.body["fileName"] == "mobilenet_v2/base.weights.h5"


def test_weights_file_choice_and_errors(kaggle_env: KaggleClient):
    server = kaggle_env.server
    v2 = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{}_224_no_top.h5"
    server.add_dataset(
        "someone/all-weights",
        1,
        {
            f"weights/{v2.format('1.0')}": b"alpha 1.0",
            f"weights/{v2.format('0.35')}": b"alpha 0.35",
            "weights/efficientnetb0_notop.h5": b"effnet",
            "labels.json": b"{}",
        },
    )
    server.add_dataset("someone/two", 1, {"a.h5": b"a", "b.weights.h5": b"b"})
    server.add_dataset("someone/none", 1, {"notes.txt": b"no weights here"})

    # Several files: the one keras.applications names for the architecture and alpha.
    path, info = download_weights_file(_weights_params("someone/all-weights/versions/1"))
    assert path.read_bytes() == b"alpha 0.35" and info["file"] == f"weights/{v2.format('0.35')}"
    assert weights_file_pattern("mobilenet_v3_small", 1.0).fullmatch(
        "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"
    )
    message = _fail(download_weights_file, _weights_params("someone/two/versions/1"))
    assert "2 weights files: a.h5, b.weights.h5" in message and "model.kaggle_file" in message
    message = _fail(download_weights_file, _weights_params("someone/none/versions/1"))
    assert "holds no Keras weights file" in message and "notes.txt" in message
    message = _fail(download_weights_file, _weights_params("someone/two/versions/1", "c.h5"))
    assert "HTTP 404" in message and "model.kaggle_file" in message
    message = _fail(download_weights_file, _weights_params("someone/two/versions/1", "a.keras"))
    assert "not a Keras weights file" in message
    message = _fail(download_weights_file, _weights_params(f"{WEIGHTS_MODEL}/9"))
    assert "HTTP 404" in message and "model.kaggle_handle" in message
    message = _fail(download_weights_file, _weights_params(WEIGHTS_MODEL))
    assert "not pinned" in message and f"{WEIGHTS_MODEL}/N" in message


# -- end to end -----------------------------------------------------------------------------


def _merged(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merged(out.get(k) or {}, v) if isinstance(v, dict) else v
    return out


@pytest.mark.slow
def test_dvc_repro_with_kaggle_data_and_weights(tmp_path, weights_files):
    from tests.e2e import make_repo, run, stages_run, venv_env
    from tests.test_pipeline_e2e import THROUGH_BASELINE

    server = KaggleTestServer(token=TOKEN, username=USERNAME, key=KEY, require_auth=True)
    server.add_dataset(DATASET_REF, 1, tom_and_jerry_files())
    server.add_model(WEIGHTS_MODEL, 1, {LEGACY_NAME: weights_files["legacy"]})
    server.start()
    try:
        # DVC wants every param a stage lists: the repo's params.yaml with the tiny ones on top.
        params = _merged(
            read_yaml(ROOT / "params.yaml"),
            tiny_params_dict(
                data={"source": "kaggle", "kaggle": {"handle": DATASET_HANDLE}},
                model={"weights": "kaggle", "kaggle_handle": f"{WEIGHTS_MODEL}/1"},
            ),
        )
        repo = make_repo(tmp_path / "repo", params)
        env = {**scrubbed(venv_env()), **client_env(server, tmp_path / "client")}
        (tmp_path / "client" / "home").mkdir(parents=True)

        # Without credentials the first stage stops with one clear message and writes nothing.
        no_token = {k: v for k, v in env.items() if k != "KAGGLE_API_TOKEN"}
        failed = run(["dvc", "repro"], repo, check=False, env=no_token, timeout=600)
        assert failed.returncode != 0
        assert "error: Kaggle refused access" in failed.stderr
        assert "no Kaggle credentials were found" in failed.stderr
        assert not (repo / "data" / "raw").exists()

        # through the first stage that builds the downloaded base and computes its features on
        # the downloaded frames; later stages read them as for any source (the session's run)
        done = run(["dvc", "repro", "baseline"], repo, env=env, timeout=600)
        ran = stages_run(done.stdout)
        assert ran == THROUGH_BASELINE
        raw = repo / "data" / "raw"
        assert sorted(p.name for p in raw.iterdir()) == sorted(SCENE_CLASSES)
        assert all(len(list((raw / c).iterdir())) == IMAGES_PER_CLASS for c in SCENE_CLASSES)
        assert (repo / "reports" / "baseline.json").is_file()
        data_info = json.loads((repo / "reports" / "data_source.json").read_text())
        assert data_info["handle"] == DATASET_HANDLE and data_info["class_root"] == CLASS_ROOT
        weights_info = json.loads((repo / "reports" / "weights_source.json").read_text())
        assert weights_info["source"] == "kaggle" and weights_info["file"] == LEGACY_NAME

        # Forced re-run of the download stage with the server gone: kagglehub's cache serves it.
        server.stop()
        again = run(["dvc", "repro", "--force", "--single-item", "download_data"], repo, env=env)
        assert stages_run(again.stdout) == ["download_data"]
        logs = failed.stdout + failed.stderr + done.stdout + done.stderr
        logs += again.stdout + again.stderr
        assert not any(s in logs for s in SECRETS)
        assert not find_secrets(repo, tmp_path / "client")
    finally:
        server.stop()


def test_archive_members_cannot_escape_the_cache(kaggle_env: KaggleClient, tmp_path):
    """A crafted archive (``../`` and absolute member names) is extracted inside the cache only."""
    files = dict(tom_and_jerry_files())
    files["../../escaped.txt"] = b"outside"
    files["/tmp/absolute_escape.txt"] = b"outside"
    kaggle_env.server.add_dataset(DATASET_REF, 3, files)
    before = set(tmp_path.parent.rglob("escaped.txt"))
    _, info = _fetch(tmp_path, handle=f"{DATASET_REF}/versions/3")
    assert info["images"] == dict.fromkeys(SCENE_CLASSES, IMAGES_PER_CLASS)
    cache_root = kaggle_env.cache.resolve()
    for found in set(tmp_path.parent.rglob("escaped.txt")) - before:
        assert found.resolve().is_relative_to(cache_root), found
    assert not Path("/tmp/absolute_escape.txt").exists()
    escaped = list(cache_root.rglob("escaped.txt")) + list(cache_root.rglob("absolute_escape.txt"))
    assert len(escaped) == 2  # kept, harmlessly, inside the download folder
