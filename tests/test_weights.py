from __future__ import annotations

import numpy as np
import pytest

from pipeline.models import build_base
from pipeline.params import parse_params
from pipeline.utils import PipelineError
from pipeline.weights import base_from_file, pretrained_base
from tests.conftest import tiny_params_dict


def test_sample_weights_are_pretrained_size_free_and_deterministic(tmp_path):
    from pipeline.utils import seed_everything

    params = parse_params(tiny_params_dict())
    seed_everything(params.pretrain.seed)
    base, info = pretrained_base(params)
    assert info["source"] == "sample" and info["images"] == 64 and info["epochs"] == 1
    assert 0.0 <= info["source_task_val_accuracy"] <= 1.0
    assert base.input_shape == (None, None, None, 3)
    fresh = build_base("mobilenet_v2", 0.35, None)
    assert not np.array_equal(base.weights[0].numpy(), fresh.weights[0].numpy())
    path = tmp_path / "base.weights.h5"
    base.save_weights(path)
    loaded = build_base("mobilenet_v2", 0.35, 48, weights=path)
    np.testing.assert_array_equal(loaded.weights[-1].numpy(), base.weights[-1].numpy())

    seed_everything(params.pretrain.seed)  # what the download_weights stage does
    again, _ = pretrained_base(params)
    for a, b in zip(base.weights, again.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_weights_file_source(tmp_path):
    path = tmp_path / "w.weights.h5"
    build_base("mobilenet_v2", 0.35, None).save_weights(path)
    params = parse_params(tiny_params_dict(model={"weights": "file", "weights_path": str(path)}))
    base, info = pretrained_base(params)
    assert info == {"source": "file", "path": "w.weights.h5"}
    assert base.count_params() > 0


def test_weights_file_errors_say_what_to_check(tmp_path):
    params = parse_params(tiny_params_dict())
    with pytest.raises(PipelineError, match="not found"):
        base_from_file(params, tmp_path / "missing.h5")
    other = tmp_path / "alpha1.weights.h5"
    build_base("mobilenet_v2", 1.0, None).save_weights(other)
    with pytest.raises(PipelineError, match="does not hold weights of a headless mobilenet_v2"):
        base_from_file(params, other)
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not an hdf5 file")
    with pytest.raises(PipelineError, match="_no_top"):
        base_from_file(params, junk)
