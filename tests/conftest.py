"""Shared fixtures: tiny params and small generated datasets (real code, real files)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]


def tiny_params_dict(**overrides: dict) -> dict:
    """Params for a pipeline that runs in seconds: 32 px images, a few epochs, few images."""
    raw = {
        "seed": 7,
        "data": {
            "source": "sample",
            "image_size": 32,
            "sample": {"images_per_class": 12, "min_side": 40, "max_side": 72},
        },
        "model": {
            "architecture": "mobilenet_v2",
            "alpha": 0.35,
            "weights": "sample",
            "dense_units": 16,
        },
        "pretrain": {"image_size": 32, "images": 64, "epochs": 1, "batch_size": 16},
        "transfer": {"epochs": 2, "batch_size": 8, "learning_rate": 0.001, "patience": 2},
        "finetune": {
            "epochs": 2,
            "batch_size": 8,
            "learning_rate": 1.0e-05,
            "unfreeze_layers": 10,
            "patience": 2,
        },
    }
    for section, values in overrides.items():
        if isinstance(values, dict):
            raw.setdefault(section, {}).update(values)
        else:
            raw[section] = values
    return raw


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
