"""The registry of architectures is the only place that names a base."""

from __future__ import annotations

import re

import pytest

from pipeline.architectures import (
    ARCHITECTURES,
    KERAS_HUB,
    KERAS_HUB_EXAMPLE,
    KERAS_HUB_LAYER_COUNTS,
    WEIGHTS_FILE_EXAMPLE,
    keras_hub_preset,
    title,
    weights_file,
    weights_file_pattern,
)
from pipeline.params import ModelParams
from tests.conftest import ROOT

REGISTRY = ROOT / "pipeline" / "architectures.py"


@pytest.mark.parametrize("name", sorted(set(ARCHITECTURES) - {KERAS_HUB}))
def test_only_the_registry_names_a_base(name: str):
    # keras_hub is also the package's name, so only the keras.applications keys are searched
    holders = [
        p.relative_to(ROOT).as_posix()
        for p in sorted((ROOT / "pipeline").rglob("*.py"))
        if re.search(rf"\b{name}", p.read_text())
    ]
    assert holders == [REGISTRY.relative_to(ROOT).as_posix()]


def test_params_accept_exactly_the_registry():
    assert ModelParams().architecture in ARCHITECTURES
    for name, spec in ARCHITECTURES.items():
        kwargs = (
            {"weights": "kaggle", "kaggle_handle": KERAS_HUB_EXAMPLE} if name == KERAS_HUB else {}
        )
        assert ModelParams(architecture=name, alpha=spec.alphas[0], **kwargs).architecture == name


def test_weights_file_names_match_their_patterns():
    for name, spec in ARCHITECTURES.items():
        if spec.constructor is None:
            continue
        for alpha in spec.alphas:
            assert weights_file_pattern(name, alpha).fullmatch(weights_file(name, alpha))
    assert weights_file_pattern("mobilenet_v2", 1.0).fullmatch(WEIGHTS_FILE_EXAMPLE)


def test_keras_hub_example_is_an_official_preset():
    owner, preset, version = keras_hub_preset(KERAS_HUB_EXAMPLE)
    assert owner == "keras" and preset in KERAS_HUB_LAYER_COUNTS and version == 1
    assert title(KERAS_HUB) == "KerasHub preset" and title("unknown") == "unknown"
