"""Two-worker ``MultiWorkerMirroredStrategy`` run of the transfer stage, as two local processes.

The chief and the other worker each run ``python -m pipeline.stages.transfer`` in their own
copy of a tiny workspace, with a ``TF_CONFIG`` that lists both on free localhost ports;
collective ops go over gRPC on localhost. The run is compared with a one-process run of the
same global batch.
Both use balanced class weights (the train split is one image short of balanced), so the loop's
weighting of the per-image losses is checked against ``Model.fit(class_weight=...)`` too.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import tiny_params_dict
from tests.e2e import venv_env

pytestmark = pytest.mark.slow

# Images per class: 9 train, 2 val, 1 test. 35 train images in all, one global batch of up to
# 2 x 20 per epoch: each step sees the same images in both runs whatever the shuffle order (the
# order in which Model.fit and the strategy.run loop meet the shuffled batches differs after the
# first epoch), and the batch is split unevenly between the workers.
TRAIN_PER_CLASS, VAL_PER_CLASS, DROP_ONE_TRAIN = 9, 2, True
PER_REPLICA_BATCH, WORKERS, EPOCHS = 20, 2, 6
TIMEOUT_S = 240
# Both runs take the same steps on the same global batches from the same initial weights, with
# augmentation and dropout off, so they compute the same function; only float32 summation order
# differs (per-worker partial sums, then an all-reduce). Measured: the histories agree to all 6
# rounded digits while the train loss falls from 1.86 to 0.77. 1e-4 leaves room for other CPUs'
# kernels yet fails on a real mistake: each worker averaging its loss over its own share of the
# batch instead of the global batch puts epoch 1's val_loss 0.07 off (measured).
LOSS_TOLERANCE = 1e-4


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("localhost", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _workspace(path: Path, raw: Path, params: dict, base_weights: Path) -> Path:
    """A folder with params.yaml, data/raw, data/split, data/prepared, models/base.weights.h5."""
    shutil.copytree(raw, path / "data" / "raw")
    split = path / "data" / "split"
    split.mkdir(parents=True)
    classes = sorted(p.name for p in raw.iterdir() if p.is_dir())
    rows = {"train": [], "val": [], "test": []}
    for c in classes:
        files = sorted(p.name for p in (raw / c).iterdir())
        rows["train"] += [(f"{c}/{f}", c) for f in files[:TRAIN_PER_CLASS]]
        rows["val"] += [(f"{c}/{f}", c) for f in files[TRAIN_PER_CLASS:][:VAL_PER_CLASS]]
        rows["test"] += [(f"{c}/{f}", c) for f in files[TRAIN_PER_CLASS + VAL_PER_CLASS :]]
    if DROP_ONE_TRAIN:
        rows["train"].pop()
    for name, items in rows.items():
        lines = ["path,label"] + [f"{p},{label}" for p, label in items]
        (split / f"{name}.csv").write_text("\n".join(lines) + "\n")
    (split / "classes.json").write_text(json.dumps(classes))
    (path / "models").mkdir()
    shutil.copy2(base_weights, path / "models" / "base.weights.h5")
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    from pipeline.stages.prepare import main as prepare

    prepare(
        [f"--{k}={path / v}" for k, v in
         (("params", "params.yaml"), ("split", "data/split"), ("data", "data/raw"),
          ("out", "data/prepared"))]
    )  # fmt: skip
    return path


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _start(cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline.stages.transfer"],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killed as one on failure
        )


def _wait_all(procs: list[subprocess.Popen], logs: list[Path]) -> None:
    """Wait for every process; on a failure or timeout kill them all and show their logs."""
    try:
        for proc in procs:
            proc.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pass
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    if any(p.returncode != 0 for p in procs):
        shown = "\n".join(
            f"--- {log.name} (exit {p.returncode})\n{log.read_text()[-3000:]}"
            for p, log in zip(procs, logs, strict=True)
        )
        raise AssertionError(f"a training process failed or timed out\n{shown}")


def _history(path: Path) -> list[dict[str, float]]:
    lines = (path / "reports" / "history" / "transfer.csv").read_text().splitlines()
    header = lines[0].split(",")
    return [dict(zip(header, line.split(","), strict=True)) for line in lines[1:]]


@pytest.fixture(scope="module")
def base_weights(tmp_path_factory: pytest.TempPathFactory, sample_dataset: Path) -> Path:
    """Size-agnostic MobileNetV2 0.35 base weights, as the download_weights stage writes them.

    Random weights with the BatchNorm statistics of one batch of the sample images: a purely
    random base gives near-constant features (~1e-12), on which no head learns and two runs
    agree whatever the training loop does.
    """
    import keras
    import numpy as np
    from PIL import Image

    from pipeline.models import build_base, calibrate_batchnorm, preprocessing

    keras.utils.set_random_seed(3)
    base = build_base("mobilenet_v2", 0.35, None)
    files = sorted(sample_dataset.rglob("*.jpg"))[::2]
    images = np.stack(
        [np.asarray(Image.open(f).convert("RGB").resize((32, 32)), "float32") for f in files]
    )
    calibrate_batchnorm(base, preprocessing("mobilenet_v2")(images))
    path = tmp_path_factory.mktemp("weights") / "base.weights.h5"
    base.save_weights(path)
    return path


def test_two_workers_train_like_one_process_and_only_the_chief_writes(
    tmp_path: Path, sample_dataset: Path, base_weights: Path
):
    def params(distribution: str, batch_size: int) -> dict:
        off = {"flip": False, "rotation": 0, "zoom": 0, "translation": 0, "contrast": 0}
        return tiny_params_dict(
            augmentation={**off, "brightness": 0},
            model={"dropout": 0.0},
            transfer={
                "epochs": EPOCHS,
                "batch_size": batch_size,
                "learning_rate": 0.01,
                "patience": EPOCHS,
            },
            train={"distribution": distribution, "class_weight": "balanced"},
        )

    multi = params("multi_worker", PER_REPLICA_BATCH)  # global batch: 20 x 2 workers
    single = params("none", PER_REPLICA_BATCH * WORKERS)
    ref = _workspace(tmp_path / "single", sample_dataset, single, base_weights)
    dirs = [
        _workspace(tmp_path / f"worker{i}", sample_dataset, multi, base_weights)
        for i in range(WORKERS)
    ]
    before = _files(dirs[1])
    scratch = tmp_path / "tmp"  # the non-chief's TMPDIR: its scratch folder must be gone
    scratch.mkdir()

    _wait_all([_start(ref, venv_env(), tmp_path / "single.log")], [tmp_path / "single.log"])

    hosts = [f"localhost:{p}" for p in _free_ports(WORKERS)]
    procs, logs = [], []
    for i, cwd in enumerate(dirs):
        tf_config = {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": i}}
        env = venv_env(TF_CONFIG=json.dumps(tf_config), TMPDIR=str(scratch))
        logs.append(tmp_path / f"worker{i}.log")
        procs.append(_start(cwd, env, logs[-1]))
    _wait_all(procs, logs)

    assert "2 replica(s) in sync" in logs[0].read_text()
    assert "not the chief" in logs[1].read_text() and "not the chief" not in logs[0].read_text()
    # Only the chief (worker 0) wrote the stage's outputs ...
    chief = dirs[0]
    for out in ("models/transfer/model.keras", "models/transfer/best.weights.h5",
                "models/transfer/state.json", "reports/live/transfer/metrics.json"):  # fmt: skip
        assert (chief / out).is_file(), out
    assert any((chief / "logs" / "transfer" / "validation").iterdir())
    # ... the other worker wrote nothing in its workspace, and removed its scratch folder.
    assert _files(dirs[1]) == before
    assert list(scratch.iterdir()) == []

    got, want = _history(chief), _history(ref)
    epochs = [str(e) for e in range(1, EPOCHS + 1)]
    assert [r["epoch"] for r in got] == [r["epoch"] for r in want] == epochs
    for g, w in zip(got, want, strict=True):
        for key in ("loss", "val_loss"):
            assert float(g[key]) == pytest.approx(float(w[key]), abs=LOSS_TOLERANCE), (key, g, w)
        for key in ("accuracy", "val_accuracy"):  # counts of images: equal unless a tie flips
            assert float(g[key]) == pytest.approx(float(w[key]), abs=1.5 / 35), (key, g, w)
    state = json.loads((chief / "models/transfer/state.json").read_text())
    ref_state = json.loads((ref / "models/transfer/state.json").read_text())
    assert state["optimizer_steps"] == ref_state["optimizer_steps"] == EPOCHS
    assert state["best_epoch"] == ref_state["best_epoch"]
    classes = ("jerry", "tom", "tom_jerry_0", "tom_jerry_1")  # the last one is 1 image short
    weights = {c: 35 / (4 * (8 if c == "tom_jerry_1" else 9)) for c in classes}
    assert state["class_weight"] == ref_state["class_weight"] == pytest.approx(weights)
