"""End to end: DVC's run-cache and queued experiments, as a user runs them.

One repo for the module: a copy of the session's tiny run, committed. Running every stage again
reproduces every committed file; a queued sweep runs only the stages its param changes and
reuses the rest; going to params that already ran (in one of its experiments) and back restores
every stage from the run-cache instead of running it; ``dvc exp show`` and the readable view
(``make exp-show``) list it.
Times are printed (``-s``), never asserted.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import time
from pathlib import Path

import pytest
import yaml

from tests.e2e import run, stages_run
from tests.test_pipeline_e2e import ALL_STAGES
from tests.test_review_e2e import make

pytestmark = pytest.mark.slow
SWEEP = (2.0e-5, 3.0e-5, 5.0e-5)  # finetune.learning_rate; the tiny params use 1e-5
RERUN = ("model_card",)  # no run-cache: reports/model_card.md is git-tracked
SWEPT = ALL_STAGES[ALL_STAGES.index("finetune") :]  # what a finetune.learning_rate change reruns


def restored(output: str) -> list[str]:
    """Stages that ``dvc repro`` / ``dvc exp run`` restored from the run-cache."""
    return re.findall(r"Stage '([^']+)' is cached - skipping run", output)


@pytest.fixture(scope="module")
def repo(trained_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("runcache") / "repo"
    shutil.copytree(trained_repo, path, symlinks=True)
    run(["git", "add", "-A"], path)
    run(["git", "commit", "-qm", "Tiny run"], path)
    return path


def test_forced_rerun_reproduces_every_output_byte_for_byte(repo: Path):
    """What .ci/run checks on the demo: running the stages again changes no committed file.

    Models, exports and reports hold no save times, memory addresses, random ids or wall times,
    so dvc.lock records the same hashes. Every stage but ``download_weights``, whose pretraining
    is checked in-process (tests/test_weights.py) and from scratch by .ci/run's ``make repro``.
    """
    ran = stages_run(run(["dvc", "repro", "-f", "-s", "download_data"], repo).stdout)
    ran += stages_run(run(["dvc", "repro", "-f", "--downstream", "split"], repo).stdout)
    assert ran == [s for s in ALL_STAGES if s != "download_weights"]
    assert run(["git", "status", "--porcelain"], repo).stdout == ""  # metrics included
    assert "up to date" in run(["dvc", "status"], repo).stdout


def _wait_for_queue(repo: Path, timeout: float = 1500) -> str:
    deadline = time.monotonic() + timeout
    while True:
        status = run(["dvc", "queue", "status"], repo).stdout
        if not re.search(r"\b(Queued|Running)\b", status):
            return status
        assert time.monotonic() < deadline, status
        time.sleep(5)


@pytest.fixture(scope="module")
def swept(repo: Path) -> str:
    """A 3-value sweep of ``finetune.learning_rate``: queued, then run; ``dvc queue status``."""
    for lr in SWEEP:
        run(["dvc", "exp", "run", "--queue", "-S", f"finetune.learning_rate={lr}"], repo)
    start = time.perf_counter()
    run(["dvc", "queue", "start", "-j", "1"], repo)
    status = _wait_for_queue(repo)
    print(f"\nqueued sweep of {len(SWEEP)} (tiny params): {time.perf_counter() - start:.0f} s")
    return status


def _experiments(repo: Path) -> tuple[dict, list[dict]]:
    """The committed baseline's row of ``dvc exp show --json`` and its experiments' rows."""
    (baseline,) = [r for r in json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
                   if r["rev"] != "workspace"]  # fmt: skip
    return baseline, [exp["revs"][0] for exp in baseline["experiments"]]


def _summary(row: dict) -> dict:
    return row["data"]["metrics"]["reports/summary.json"]["data"]


def _learning_rate(row: dict) -> float:
    return row["data"]["params"]["params.yaml"]["data"]["finetune"]["learning_rate"]


def test_queued_sweep_reuses_the_shared_stages(repo: Path, swept: str):
    assert swept.count("Success") == len(SWEEP), swept
    baseline, exps = _experiments(repo)
    assert sorted(_learning_rate(e) for e in exps) == sorted(SWEEP)
    for exp in exps:
        summary = _summary(exp)
        assert 0 <= summary["finetune"]["accuracy"] <= 1
        # the head and the probe were reused: the committed run's figures
        assert summary["transfer"] == _summary(baseline)["transfer"]
        assert summary["baseline"] == _summary(baseline)["baseline"]
        log = run(["dvc", "queue", "logs", exp["name"]], repo).stdout
        # fine-tuning and what follows ran; the stages before it were reused, not run again
        assert stages_run(log) == SWEPT, log[-3000:]
    # the workspace is untouched by queued runs
    assert run(["git", "status", "--porcelain"], repo).stdout == ""


def test_param_round_trip_restores_every_stage_without_training(repo: Path, swept: str):
    """Params that already ran, here in a queued experiment of the sweep, and back: every stage
    they rerun is restored from the run-cache that experiments and the workspace share."""
    original = (repo / "params.yaml").read_text()
    _, exps = _experiments(repo)
    (exp,) = [e for e in exps if _learning_rate(e) == SWEEP[-1]]
    params = yaml.safe_load(original)
    params["finetune"]["learning_rate"] = SWEEP[-1]
    to_exp = yaml.safe_dump(params, sort_keys=False)
    # model_card keeps a document in git that is neither a metric nor a plot, which DVC does
    # not store in its run-cache: it runs (no training); every other stage is restored
    for step, text in (("to the experiment's value", to_exp), ("back", original)):
        (repo / "params.yaml").write_text(text)
        start = time.perf_counter()
        out = run(["dvc", "repro"], repo).stdout
        seconds = time.perf_counter() - start
        print(f"\nrun-cache, {step} (tiny params): {seconds:.1f} s for {len(SWEPT)} stages")
        assert restored(out) == [s for s in SWEPT if s not in RERUN], out
        assert stages_run(out) == list(RERUN), out
        if text == to_exp:  # the experiment's results, restored into the workspace
            summary = json.loads((repo / "reports/summary.json").read_text())
            assert summary == _summary(exp)
    # outputs, dvc.lock and the committed reports are exactly those of the first run
    assert run(["git", "status", "--porcelain"], repo).stdout == ""
    assert "up to date" in run(["dvc", "status"], repo).stdout


def _columns(csv_text: str) -> list[str]:
    return next(csv.reader(io.StringIO(csv_text)))


def test_exp_show_columns(repo: Path):
    """The headline: 6 metric columns; ``make exp-show``: at most 20 columns in all."""
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    data = next(r for r in shown if r["rev"] != "workspace")["data"]
    assert list(data["metrics"]) == ["reports/summary.json"]
    summary = data["metrics"]["reports/summary.json"]["data"]
    assert sum(len(v) if isinstance(v, dict) else 1 for v in summary.values()) == 6
    every = _columns(run(["dvc", "exp", "show", "--no-pager", "--csv"], repo).stdout)
    view = _columns(make(repo, "exp-show", "ARGS=--csv").stdout)
    print(f"\ndvc exp show: {len(every)} CSV columns; make exp-show: {len(view)}")
    assert len(view) <= 20
    assert view[:2] == ["Experiment", "Created"]
    for column in ("baseline.accuracy", "finetune.accuracy", "seed", "finetune.learning_rate"):
        assert column in view
    assert set(view) <= set(every)
