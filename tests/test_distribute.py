"""Distribution: TF_CONFIG, chief, strategy choice, batch and learning-rate rules, the
``strategy.run`` loop against ``Model.fit``, MirroredStrategy on one device, mixed precision."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipeline import distribute
from pipeline.params import TrainParams
from pipeline.training import fit_distributed, fit_phase, open_live
from pipeline.utils import PipelineError

CLUSTER = {"worker": ["host1:2222", "host2:2222"]}


def _tf_config(**kw: object) -> str:
    return json.dumps({"cluster": CLUSTER, "task": {"type": "worker", "index": 1}} | kw)


def test_tf_config_is_read_and_checked():
    assert distribute.read_tf_config("") is None and distribute.read_tf_config("  ") is None
    config = distribute.read_tf_config(_tf_config())
    assert config["task"] == {"type": "worker", "index": 1}
    assert distribute.n_workers(config) == 2 and distribute.n_workers(None) == 1
    with_chief = {"chief": ["a:1"], "worker": ["b:1", "c:1"]}
    config = distribute.read_tf_config(_tf_config(cluster=with_chief))
    assert distribute.n_workers(config) == 3


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        (json.dumps({"task": {"type": "worker", "index": 0}}), "no 'cluster'"),
        (_tf_config(cluster={"worker": []}), "non-empty list of 'host:port'"),
        (_tf_config(cluster={"worker": ["host1"]}), "non-empty list of 'host:port'"),
        (_tf_config(cluster={"worker": ["a:1"], "ps": ["b:1"]}), "task type 'ps'"),
        (_tf_config(cluster={"chief": ["a:1", "b:1"]}), "exactly one host"),
        (json.dumps({"cluster": CLUSTER}), "no 'task'"),
        (_tf_config(task={"type": "chief", "index": 0}), "'chief' is not in the cluster"),
        (_tf_config(task={"type": "worker", "index": 2}), "index 2 is out of range"),
        (_tf_config(task={"type": "worker", "index": "0"}), "index '0' is out of range"),
    ],
)
def test_bad_tf_config_is_refused_with_the_reason(raw, expected):
    with pytest.raises(PipelineError, match="TF_CONFIG") as info:
        distribute.read_tf_config(raw)
    assert expected in str(info.value)


@pytest.mark.parametrize(
    ("task_type", "index", "cluster", "chief"),
    [
        (None, None, None, True),  # not in a cluster
        ("worker", 0, CLUSTER, True),
        ("worker", 1, CLUSTER, False),
        ("chief", 0, {"chief": ["a:1"], "worker": ["b:1"]}, True),
        ("worker", 0, {"chief": ["a:1"], "worker": ["b:1"]}, False),
    ],
)
def test_chief_is_the_chief_task_or_worker_0(task_type, index, cluster, chief):
    assert distribute.is_chief_task(task_type, index, cluster) is chief


def test_auto_picks_mirrored_with_more_than_one_gpu():
    assert distribute.resolve_distribution("auto", 0) == "none"
    assert distribute.resolve_distribution("auto", 1) == "none"
    assert distribute.resolve_distribution("auto", 2) == "mirrored"
    for kind in ("none", "mirrored", "multi_worker"):
        assert distribute.resolve_distribution(kind, 4) == kind


def test_global_batch_and_learning_rate_rules():
    four = SimpleNamespace(num_replicas_in_sync=4)
    assert distribute.global_batch_size(16, four) == 64
    assert distribute.global_batch_size(16) == 16
    fixed, linear = TrainParams(), TrainParams(learning_rate_scaling="linear")
    assert distribute.learning_rate(1e-3, fixed, four) == 1e-3
    assert distribute.learning_rate(1e-3, linear, four) == pytest.approx(4e-3)
    assert distribute.learning_rate(1e-3, linear) == 1e-3


def test_multi_worker_without_tf_config_stops_with_an_example(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(PipelineError, match="TF_CONFIG is not set") as info:
        distribute.setup(TrainParams(distribution="multi_worker"), seed=1)
    assert '"cluster"' in str(info.value)
    monkeypatch.setenv("TF_CONFIG", "{oops")
    with pytest.raises(PipelineError, match="not valid JSON"):
        distribute.setup(TrainParams(distribution="none"), seed=1)


def test_setup_none_is_the_default_strategy(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    strategy = distribute.setup(TrainParams(distribution="none"), seed=1)
    assert strategy is tf.distribute.get_strategy()
    assert distribute.is_chief(strategy) and not distribute.is_multi_worker(strategy)
    from tensorflow.python.framework import config as tf_config  # no public getter

    assert tf_config.is_op_determinism_enabled()


def test_other_workers_write_into_a_scratch_folder_that_is_removed(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(distribute.tempfile, "tempdir", None)  # re-read TMPDIR
    monkeypatch.setattr(distribute, "is_chief", lambda strategy=None: False)
    target = tmp_path / "models" / "transfer"
    with distribute.output_dirs(object(), target, tmp_path / "logs") as (out, logs):
        (out / "model.keras").write_text("x")
        assert out.is_dir() and logs.is_dir() and (tmp_path / "tmp") in out.parents
    assert not target.exists() and not (tmp_path / "logs").exists()
    assert list((tmp_path / "tmp").iterdir()) == []
    monkeypatch.setattr(distribute, "is_chief", lambda strategy=None: True)
    with distribute.output_dirs(object(), target) as (out,):
        (out / "model.keras").write_text("x")
    assert (target / "model.keras").read_text() == "x"


def _data(n: int = 37, seed: int = 0) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    y = ((x[:, 0] > 0).astype("int32") + (x[:, 1] > 1)).astype("int32")
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)  # last batch short (5)
    return train, tf.data.Dataset.from_tensor_slices((x[:13], y[:13])).batch(8)


def _tiny_model(learning_rate: float = 0.05) -> keras.Model:
    from pipeline.models import compile_model

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    compile_model(model, learning_rate)
    return model


def test_strategy_run_loop_matches_model_fit_with_callbacks(tmp_path):
    """Same history, same early stop, same restored best weights, same checkpoint."""
    train, val = _data()

    def callbacks(name: str) -> list[keras.callbacks.Callback]:
        return [
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=1, min_delta=0.02, restore_best_weights=True
            ),
            keras.callbacks.ModelCheckpoint(
                tmp_path / f"{name}.weights.h5", save_best_only=True, save_weights_only=True
            ),
        ]

    fitted = _tiny_model(0.5)
    want = fitted.fit(
        train, validation_data=val, epochs=12, initial_epoch=2, callbacks=callbacks("fit"),
        verbose=0,
    ).history  # fmt: skip
    looped = _tiny_model(0.5)
    got = fit_distributed(
        looped,
        tf.distribute.get_strategy(),
        train,
        val,
        epochs=12,
        initial_epoch=2,
        callbacks=callbacks("loop"),
        verbose=0,
    ).history
    assert 1 < len(want["loss"]) < 10  # stopped early: the comparison covers EarlyStopping
    assert set(got) == set(want)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], atol=1e-6, err_msg=key)
    for a, b in zip(looped.get_weights(), fitted.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert (tmp_path / "loop.weights.h5").is_file()
    assert int(looped.optimizer.iterations) == int(fitted.optimizer.iterations)


def test_strategy_run_loop_takes_a_loss_given_by_name():
    train, val = _data()
    models = []
    for loss in ("sparse_categorical_crossentropy", keras.losses.SparseCategoricalCrossentropy()):
        model = _tiny_model()
        model.compile(optimizer=keras.optimizers.Adam(0.05), loss=loss)
        models.append(fit_distributed(model, tf.distribute.get_strategy(), train, val, epochs=2,
                                      verbose=0).history)  # fmt: skip
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(models[0][key], models[1][key], rtol=1e-6)


def test_mirrored_strategy_on_one_device_runs_a_phase(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train, val = _data()
    strategy = tf.distribute.MirroredStrategy()  # the CPU: one replica
    assert strategy.num_replicas_in_sync == 1
    with strategy.scope():
        model = _tiny_model()
    assert model.distribute_strategy is strategy
    rows, result = fit_phase(
        model,
        train,
        val,
        phase="transfer",
        epochs=3,
        initial_epoch=0,
        patience=3,
        work_dir=tmp_path,
        log_dir=tmp_path / "logs",
        strategy=strategy,
        live=open_live(tmp_path / "live", first_step=0),
    )
    reference = _tiny_model()
    want = reference.fit(train, validation_data=val, epochs=3, verbose=0).history
    assert [r[0] for r in rows] == [1, 2, 3] and result.optimizer_steps == 3 * 5
    np.testing.assert_allclose([r[2] for r in rows], want["loss"], atol=1e-5)
    assert (tmp_path / "best.weights.h5").is_file()
    assert json.loads((tmp_path / "live/metrics.json").read_text())["step"] == 2  # epochs 0..2


def _float16_aborts_here() -> bool:
    """This CPU has native float16 and oneDNN is capped: TensorFlow aborts on float16 convs."""
    from pipeline.distribute import check_cpu_precision

    try:
        check_cpu_precision("mixed_float16", n_gpus=0)
    except PipelineError:
        return True
    return False


FLOAT16_IN_PROCESS = pytest.mark.skipif(
    _float16_aborts_here(),
    reason="native float16 CPU with oneDNN capped: run by the uncapped test below",
)


@FLOAT16_IN_PROCESS
def test_mixed_precision_keeps_a_float32_softmax_and_loads_in_safe_mode(tmp_path):
    from pipeline.models import build_base, build_classifier, float32_copy, load_model

    keras.mixed_precision.set_global_policy("mixed_float16")  # Keras runs it on CPU
    try:
        base = build_base("mobilenet_v2", 0.35, 32)
        model = build_classifier(base, "mobilenet_v2", 32, 4, seed=1, dense_units=8)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert get_compute_dtypes(model) == {"float16"}
    assert model.get_layer("predictions").compute_dtype == "float32"
    assert all(w.dtype == "float32" for w in model.weights)  # variables stay float32
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    probs = model.predict(x, verbose=0)
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    model.save(tmp_path / "m.keras")
    loaded = load_model(tmp_path / "m.keras")
    assert loaded.get_layer("dense").compute_dtype == "float16"
    np.testing.assert_allclose(loaded.predict(x, verbose=0), probs, atol=1e-6)
    # The export stage's float32 copy (TFLite runs float32): same weights, float32 ops.
    copy = float32_copy(loaded)
    assert {layer.compute_dtype for layer in copy._flatten_layers()} == {"float32"}
    for a, b in zip(copy.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(copy.predict(x, verbose=0), probs, atol=2e-2)  # float16: 3 digits
    assert float32_copy(copy) is copy


def get_compute_dtypes(model: keras.Model) -> set[str]:
    """Compute dtypes of the head's hidden layers."""
    return {model.get_layer(name).compute_dtype for name in ("pool", "dense")}


def test_bfloat16_on_a_capped_cpu_is_a_clear_error():
    """oneDNN capped at AVX2 has no bfloat16 kernels: TensorFlow would abort the process."""
    from pipeline.distribute import check_cpu_precision

    with pytest.raises(PipelineError, match="ONEDNN_MAX_CPU_ISA=ALL"):
        check_cpu_precision("mixed_bfloat16", n_gpus=0, env={"ONEDNN_MAX_CPU_ISA": "AVX2"})
    check_cpu_precision("mixed_bfloat16", n_gpus=1, env={"ONEDNN_MAX_CPU_ISA": "AVX2"})
    check_cpu_precision("mixed_bfloat16", n_gpus=0, env={"ONEDNN_MAX_CPU_ISA": "ALL"})
    capped, fp16 = {"ONEDNN_MAX_CPU_ISA": "AVX2"}, {"avx2", "avx512f", "avx512_fp16"}
    check_cpu_precision("mixed_float16", n_gpus=0, env=capped, cpu_flags={"avx2", "avx512f"})
    with pytest.raises(PipelineError, match=r"'mixed_float16'.*avx512_fp16.*ISA=ALL"):
        check_cpu_precision("mixed_float16", n_gpus=0, env=capped, cpu_flags=fp16)
    check_cpu_precision(
        "mixed_float16", n_gpus=0, env={"ONEDNN_MAX_CPU_ISA": "ALL"}, cpu_flags=fp16
    )
    check_cpu_precision("mixed_float16", n_gpus=1, env=capped, cpu_flags=fp16)


def _has_avx512() -> bool:
    from pipeline.distribute import cpuinfo

    return "avx512f" in cpuinfo().get("flags", "").split()


@pytest.mark.skipif(not _has_avx512(), reason="oneDNN's CPU bfloat16 kernels need AVX-512")
def test_strategy_run_loop_trains_in_bfloat16_without_the_isa_cap():
    """The bfloat16 case of the test below, in a process whose oneDNN is not capped."""
    env = os.environ | {"ONEDNN_MAX_CPU_ISA": "ALL"}
    test = f"{__file__}::test_strategy_run_loop_trains_in_mixed_precision"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test, "--bf16"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.skipif(not _float16_aborts_here(), reason="only where float16 needs the cap lifted")
def test_float16_tests_pass_without_the_isa_cap_on_a_native_float16_cpu():
    """The float16 tests, in a process whose oneDNN is not capped (as the bfloat16 one)."""
    env = os.environ | {"ONEDNN_MAX_CPU_ISA": "ALL"}
    tests = [
        f"{__file__}::test_strategy_run_loop_trains_in_mixed_precision",
        f"{__file__}::test_mixed_precision_keeps_a_float32_softmax_and_loads_in_safe_mode",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0 and "2 passed" in proc.stdout, proc.stdout[-3000:]


@FLOAT16_IN_PROCESS
def test_strategy_run_loop_trains_in_mixed_precision(request: pytest.FixtureRequest):
    """mixed_float16 compiles a LossScaleOptimizer: the loop scales the loss and it unscales.

    In-process mixed_float16 only: ``--bf16`` (set by the test above, in a process without
    the oneDNN cap) runs mixed_bfloat16 instead.
    """
    policy = "mixed_bfloat16" if request.config.getoption("--bf16") else "mixed_float16"
    train, val = _data()
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = _tiny_model()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) == (
        policy == "mixed_float16"
    )
    before = [w.numpy().copy() for w in model.trainable_weights]
    hist = fit_distributed(model, tf.distribute.get_strategy(), train, val, epochs=3, verbose=0)
    loss = hist.history["loss"]
    assert all(np.isfinite(loss)) and loss[-1] < loss[0]
    assert all(w.dtype == "float32" for w in model.trainable_weights)
    assert not any(
        np.array_equal(a, w.numpy()) for a, w in zip(before, model.trainable_weights, strict=True)
    )
