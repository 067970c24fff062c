"""End to end on a hostile dataset: bad files, interrupted stages and secrets in the environment."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import tiny_params_dict
from tests.e2e import make_repo, run, stages_run, venv_env
from tests.hostile import make_hostile_dataset

pytestmark = pytest.mark.slow

# Credentials that must never reach a file, a log or a report, whatever the stage does.
SENTINELS = {
    "KAGGLE_API_TOKEN": "KGAT_sentinel_faults_5c1e9b",
    "KAGGLE_USERNAME": "sentinel-user-83f0",
    "KAGGLE_KEY": "sentinel_key_faults_d41d8c",
}


def _env() -> dict[str, str]:
    return venv_env(PYTHONUNBUFFERED="1", **SENTINELS)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("faults")
    fate = make_hostile_dataset(base / "photos", base / "outside")
    # Phases long enough (a few seconds) for a signal to land in the middle of training: the
    # transfer head trains on features computed once, milliseconds an epoch, so 25 epochs could
    # end within the 0.3 s between its "Epoch 3/" and the signal.
    params = tiny_params_dict(
        data={"source": "local", "path": str(base / "photos")},
        transfer={"epochs": 200, "patience": 200},
        finetune={"epochs": 25, "patience": 25},
    )
    path = make_repo(base / "repo", params)
    (path / "fate.json").write_text(json.dumps(fate))
    proc = run(["dvc", "repro"], path, env=_env())
    (path / "repro.log").write_text(proc.stdout + proc.stderr)
    run(["git", "add", "-A"], path)
    run(["git", "commit", "-qm", "first run"], path)
    return path


def test_hostile_dataset_runs_end_to_end(repo: Path):
    fate = json.loads((repo / "fate.json").read_text())
    report = json.loads((repo / "reports/data_validation.json").read_text())
    assert {s["path"] for s in report["skipped_files"]} == {
        p for p, f in fate.items() if f == "skip"
    }
    assert {i["path"] for i in report["ignored"]} == {p for p, f in fate.items() if f == "ignore"}
    assert report["converted"] == sum(f == "convert" for f in fate.values())
    kept = sum(f in ("keep", "convert") for f in fate.values())
    assert report["images"] == kept
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    assert metrics["test_images"] >= 2 and set(metrics["finetune"]["per_class"]) == {"cats", "dogs"}
    assert not (repo / "data/raw/dogs/link.jpg").exists()
    assert not (repo / "data/raw/dogs/linked_dir").exists()
    assert "skipped 5 unusable file(s)" in (repo / "repro.log").read_text()


def _start(repo: Path, args: list[str]) -> tuple[subprocess.Popen, list[str], threading.Event]:
    proc = subprocess.Popen(
        ["dvc", *args],
        cwd=repo,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    done = threading.Event()

    def pump() -> None:
        for line in proc.stdout:
            lines.append(line)
        done.set()

    threading.Thread(target=pump, daemon=True).start()
    return proc, lines, done


def _interrupt_when(proc, lines, marker: str, sig: int, delay: float = 0.3) -> None:
    deadline = time.monotonic() + 300
    while not any(marker in line for line in lines):
        assert proc.poll() is None, "".join(lines)[-3000:]
        assert time.monotonic() < deadline, "never reached " + marker
        time.sleep(0.1)
    time.sleep(delay)
    os.killpg(proc.pid, sig)
    proc.wait(timeout=120)
    # DVC may exit before the stage it started has finished unwinding: wait for the whole group.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise AssertionError("the interrupted stage did not exit")


def _leftovers(repo: Path) -> list[str]:
    return sorted(
        p.relative_to(repo).as_posix()
        for top in ("data", "models", "reports", "logs")
        for p in (repo / top).rglob(".*")
        if ".tmp-" in p.name or ".old-" in p.name
    )


def _restored(output: str) -> list[str]:
    """Stages that ``dvc repro`` restored from the run-cache instead of running them."""
    return re.findall(r"Stage '([^']+)' is cached - skipping run", output)


@pytest.mark.parametrize(
    ("sig", "stage", "marker", "kept"),
    [
        (signal.SIGINT, "transfer", "Epoch 3/", "models/base.weights.h5"),
        (signal.SIGTERM, "finetune", "Epoch 205/", "models/transfer/model.keras"),
        (signal.SIGTERM, "download_weights", "source-task images", "data/raw"),
    ],
)
def test_interrupted_stage_is_restored_from_the_run_cache(repo: Path, sig, stage, marker, kept):
    """DVC removes a stage's outputs before running it (no `persist`); the stage writes to a
    temporary path, so an interrupted one leaves no half-written output, and the next
    `dvc repro` restores its last run from the run-cache without running it."""
    metrics = (repo / "reports/metrics.json").read_text()
    proc, lines, _ = _start(repo, ["repro", "-f", "-s", stage])
    _interrupt_when(proc, lines, marker, sig)
    assert proc.returncode != 0
    assert _leftovers(repo) == [], "".join(lines)[-2000:]
    assert (repo / kept).exists()  # what came before the stage is untouched
    out = run(["dvc", "repro"], repo, env=_env()).stdout
    assert stages_run(out) == [], out  # nothing trained again
    assert _restored(out) == [stage], out
    assert _leftovers(repo) == []
    assert (repo / "reports/metrics.json").read_text() == metrics
    assert "up to date" in run(["dvc", "status"], repo, env=_env()).stdout


def test_killed_rerun_completes_on_the_next_repro(repo: Path):
    """SIGKILL (no cleanup possible) while fine-tuning with changed params; then back."""
    params_file = repo / "params.yaml"
    original = params_file.read_text()
    metrics = (repo / "reports/metrics.json").read_text()
    params = yaml.safe_load(original)
    params["finetune"]["learning_rate"] = 3.0e-5
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        proc, lines, _ = _start(repo, ["repro"])
        _interrupt_when(proc, lines, "Epoch 205/", signal.SIGKILL)
        assert (repo / "models/transfer/model.keras").is_file()  # earlier stages are intact
        assert not (repo / "models/finetune/model.keras").exists()  # never a partial model
        out = run(["dvc", "repro"], repo, env=_env()).stdout
        ran = stages_run(out)
        assert ran[:2] == ["finetune", "evaluate"]  # and the stages after them, nothing before
        assert not {"download_data", "download_weights", "split", "prepare", "transfer"} & set(ran)
        assert _leftovers(repo) == []  # the killed run's temporaries are gone
        assert "up to date" in run(["dvc", "status"], repo, env=_env()).stdout
    finally:
        params_file.write_text(original)
    out = run(["dvc", "repro"], repo, env=_env()).stdout
    # Back to the first params: training restored from the run-cache, the first run's metrics.
    assert set(_restored(out)) == {"finetune", "evaluate", "export"}, out
    assert stages_run(out) == ["model_card"], out  # no run-cache for a git-tracked model card
    assert (repo / "reports/metrics.json").read_text() == metrics


def test_secrets_never_reach_a_file(repo: Path):
    hits = []
    for path in repo.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            hits += [f"{path}: {k}" for k, v in SENTINELS.items() if v.encode() in data]
    assert hits == []
