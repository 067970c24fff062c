"""Shared fixtures: tiny params and small generated datasets (real code, real files)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import pipeline  # noqa: F401  pins the CPU kernels and threads before a test imports TF

ROOT = Path(__file__).resolve().parents[1]


def _merge(base: dict, overrides: dict) -> dict:
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


TINY_HEIGHT, TINY_WIDTH = 32, 56  # the tiny runs' data.image_size, px


def tiny_params_dict(**overrides: object) -> dict:
    """The repo's params.yaml with tiny values (32x56 px, padded; a few epochs; 12 images per
    class; flip averaging at test time).

    Every key of params.yaml stays present, as DVC requires for the params each stage lists.
    ``overrides`` are merged section by section, e.g. ``data={"source": "local"}``.
    """
    tiny = {
        "seed": 7,
        "data": {
            # offline sources, whatever params.yaml holds (a retraining run commits kaggle)
            "source": "sample",
            # wide input, aspect ratio kept: every stage and tool runs on non-square images
            "image_size": [TINY_HEIGHT, TINY_WIDTH],
            "resize": "pad",
            "sample": {"images_per_class": 12, "min_side": 40, "max_side": 72},
        },
        # the real profiles' fractions: the demo's large test split (0.35) would leave the
        # tiny runs a train split of 24 images
        "split": {"train": 0.7, "val": 0.2, "test": 0.1},
        "model": {
            "architecture": "mobilenet_v2",
            "alpha": 0.35,
            "weights": "sample",
            "dense_units": 16,
        },
        "pretrain": {"image_size": 32, "images": 64, "epochs": 1, "batch_size": 16},
        # a new head trained on augmented images every epoch (the demo's default is linear
        # probing on features computed once; the profile tests cover that path)
        "transfer": {
            "epochs": 2,
            "batch_size": 8,
            "learning_rate": 0.001,
            "patience": 2,
            "base_features": "auto",
            "head_init": "random",
        },
        "finetune": {
            "epochs": 2,
            "batch_size": 8,
            "learning_rate": 1.0e-05,
            "unfreeze_layers": 10,
            "patience": 2,
        },
        "evaluate": {"tta": "flip"},
    }
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    return _merge(_merge(base, tiny), overrides)


@pytest.fixture
def tiny_params():
    from pipeline.params import parse_params

    return parse_params(tiny_params_dict())


@pytest.fixture(scope="session")
def sample_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated 4-class dataset (12 JPEGs per class) in ``<tmp>/raw/<class>/``."""
    from pipeline.params import parse_params
    from pipeline.sources.sample import SampleSource

    out = tmp_path_factory.mktemp("sample") / "raw"
    out.mkdir()
    SampleSource(parse_params(tiny_params_dict())).fetch(out)
    return out


PREPARED_SIZE = 40  # image size of the `prepared` fixture, px


@pytest.fixture(scope="module")
def prepared(sample_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project folder with ``split/`` (of the sample dataset) and ``prepared/`` at
    :data:`PREPARED_SIZE` px, built by the split and prepare stages."""
    from pipeline.stages.prepare import main as prepare_main
    from pipeline.stages.split import main as split_main

    root = tmp_path_factory.mktemp("prepared")
    (root / "params.yaml").write_text(f"seed: 1\ndata:\n  image_size: {PREPARED_SIZE}\n")
    split_main(["--params", str(root / "params.yaml"), "--data", str(sample_dataset),
                "--out", str(root / "split"), "--leakage", str(root / "leakage.json")])  # fmt: skip
    prepare_main(["--params", str(root / "params.yaml"), "--split", str(root / "split"),
                  "--data", str(sample_dataset), "--out", str(root / "prepared")])  # fmt: skip
    return root


def _session_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The temporary folder of the whole test session, shared by its pytest-xdist workers."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def trained_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ``dvc repro`` of the whole pipeline in a temporary repo: run once per session.

    Every stage of dvc.yaml has run, in the file's order. The first pytest-xdist worker to ask
    runs it (under a file lock) in the session's folder; each worker gets its own copy, so that
    tests may change it. Tests that use it only read its outputs, or leave them as they found
    them (same params, same metrics).
    """
    import shutil

    from filelock import FileLock

    from tests.e2e import make_repo, run, stages_run

    shared = _session_root(tmp_path_factory) / "trained-once"
    with FileLock(f"{shared}.lock"):
        if not (shared / "done").is_file():
            shutil.rmtree(shared, ignore_errors=True)
            make_repo(shared / "repo", tiny_params_dict())
            out = run(["dvc", "repro"], shared / "repo").stdout
            stages = list(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])
            assert stages_run(out) == stages
            (shared / "done").touch()
    path = tmp_path_factory.mktemp("trained") / "repo"
    shutil.copytree(shared / "repo", path, symlinks=True)
    return path


# The order in which pytest-xdist hands out test files (`make test`: --dist loadfile
# --no-loadscope-reorder; each file runs whole on one worker): the longest end-to-end files first,
# and the first of them builds the session's tiny run (``trained_repo``) while the next ones, which
# do not need it, keep the other workers busy. Files not listed follow in their usual order.
# docs/contributing.md has the measured times.
FIRST_FILES = (
    "test_runcache_e2e.py",  # builds trained_repo, then reruns, sweeps and restores it
    "test_faults_e2e.py",
    "test_diagnosis_e2e.py",
    "test_kaggle.py",
    "test_review_e2e.py",
    "test_keras_hub.py",
    "test_pipeline_e2e.py",
    "test_bench.py",
    "test_weights.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(FIRST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(FIRST_FILES)))  # a stable sort


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--bf16",
        action="store_true",
        help="run the mixed-precision run-loop test in mixed_bfloat16 (needs a process whose "
        "oneDNN is not capped at AVX2: ONEDNN_MAX_CPU_ISA=ALL)",
    )
