"""End to end: review, experiments and the DVC remote, in a temporary git repo.

One repo for the module: a committed run on ``main``, then a ``feature`` branch that changes a
param, reruns and commits (a pull request in miniature). The tests read DVC's diffs, write the
review report, run an experiment and do a push / clone / pull round trip through a local remote.
The workflow commands are run through the project's Makefile, as CI runs them.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.tools.report import Change, fmt_delta, fmt_value
from tests.conftest import ROOT
from tests.e2e import run, stages_run

pytestmark = pytest.mark.slow
LR = "transfer.learning_rate"
NEW_LR = 0.01  # on the feature branch
DATA_STAGES = {"download_data", "download_weights", "split"}
PROFILE, PROFILE_LR = "tiny-finetune", 0.0005  # a profile committed on main


def make(repo: Path, *args: str) -> subprocess.CompletedProcess:
    """A target of the project's Makefile, run in ``repo`` with this venv taken as installed."""
    venv = Path(sys.executable).parent.parent
    cmd = ["make", "-s", "-f", str(ROOT / "Makefile"), f"VENV={venv}"]
    return run([*cmd, "-o", str(venv / ".installed"), *args], repo)


def git_show(repo: Path, rev: str, path: str) -> bytes:
    """``path`` at ``rev``: from git, or from the DVC cache for an output that DVC tracks."""
    proc = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=repo, capture_output=True)
    if proc.returncode == 0:
        return proc.stdout
    import dvc.api

    return dvc.api.read(path, repo=str(repo), rev=rev, mode="rb")


def flat(data: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def exp_show(repo: Path) -> list[dict]:
    return json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)


@pytest.fixture(scope="module")
def repo(trained_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("review") / "repo"
    shutil.copytree(trained_repo, path, symlinks=True)
    (path / "profiles" / f"{PROFILE}.yaml").write_text(  # linear probing, then fine-tuning
        "model:\n  dense_units: 0\ntransfer:\n  head_init: probe\n"
        f"finetune:\n  learning_rate: {PROFILE_LR}\n"
    )
    run(["git", "add", "-A"], path)
    run(["git", "commit", "-qm", "Baseline run"], path)
    run(["git", "branch", "-M", "main"], path)
    run(["git", "switch", "-qc", "feature"], path)
    params = yaml.safe_load((path / "params.yaml").read_text())
    assert params["transfer"]["learning_rate"] != NEW_LR
    params["transfer"]["learning_rate"] = NEW_LR
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    ran = stages_run(run(["dvc", "repro"], path).stdout)
    assert {"transfer", "finetune", "evaluate"} <= set(ran) and not DATA_STAGES & set(ran)
    run(["git", "add", "-A"], path)
    run(["git", "commit", "-qm", "Raise the head's learning rate"], path)
    return path


def test_params_diff(repo: Path):
    base = yaml.safe_load(git_show(repo, "main", "params.yaml"))["transfer"]["learning_rate"]
    diff = json.loads(run(["dvc", "params", "diff", "main", "HEAD", "--json"], repo).stdout)
    assert list(diff) == ["params.yaml"]
    assert set(diff["params.yaml"]) == {LR}
    assert diff["params.yaml"][LR]["old"] == base
    assert diff["params.yaml"][LR]["new"] == NEW_LR


def test_metrics_diff_shows_the_headline_and_the_details_on_request(repo: Path):
    diff = json.loads(run(["dvc", "metrics", "diff", "main", "HEAD", "--json"], repo).stdout)
    # the only top-level metrics file (its accuracies on a few test images may not move)
    assert set(diff) <= {"reports/summary.json"}
    all_headline = ["dvc", "metrics", "diff", "main", "HEAD", "--json", "--all"]
    assert list(json.loads(run(all_headline, repo).stdout)) == ["reports/summary.json"]
    details = ["reports/metrics.json", "reports/live/training/metrics.json"]
    targeted = ["dvc", "metrics", "diff", "main", "HEAD", "--json", "--targets", *details]
    diff |= json.loads(run(targeted, repo).stdout)
    for path in ("reports/summary.json", *details):
        old = flat(json.loads(git_show(repo, "main", path)))
        new = flat(json.loads((repo / path).read_text()))
        changed = {k for k in new if old.get(k) != new[k]}
        assert changed == set(diff.get(path, {}))  # exactly what changed, with both values
        assert changed or path == "reports/summary.json"
        for key in changed:
            assert diff[path][key]["old"] == old.get(key)
            assert diff[path][key]["new"] == new[key]
    assert "transfer.loss" in diff["reports/metrics.json"]
    summary = json.loads((repo / "reports/summary.json").read_text())
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    assert summary["finetune"]["accuracy"] == metrics["finetune"]["accuracy"]
    assert summary["baseline"]["accuracy"] == metrics["baseline"]["accuracy"]


def test_plots_diff_shows_both_revisions(repo: Path, tmp_path: Path):
    out = run(["dvc", "plots", "diff", "main", "HEAD", "--json", "-o", str(tmp_path)], repo)
    plots = json.loads(out.stdout)["data"]
    for name in ("Accuracy", "Loss"):
        (vega,) = plots[name]
        assert set(vega["revisions"]) == {"main", "HEAD"}
        rows = vega["content"]["data"]["values"]
        sources = {(r["rev"], r["filename::field"].split("::")[0]) for r in rows}
        # both phases' learning curves, of both revisions
        assert sources == {
            (rev, f) for rev in ("main", "HEAD") for f in ("transfer.csv", "finetune.csv")
        }
        transfer = {
            rev: [r["loss"] for r in rows if r["rev"] == rev and r["phase"] == "transfer"]
            for rev in ("main", "HEAD")
        }
        assert transfer["main"] != transfer["HEAD"]
    for name in ("Confusion matrix, fine-tuned", "Confusion matrix, transfer only"):
        (vega,) = plots[name]
        assert set(vega["revisions"]) == {"main", "HEAD"}
    for name in ("reports/figures/learning_curves.png", "reports/figures/confusion_matrix.png"):
        assert {e["revisions"][0] for e in plots[name]} == {"main", "HEAD"}
        assert all(Path(e["url"]).is_file() for e in plots[name])


def test_review_report(repo: Path):
    make(repo, "report", "BASE=main")
    report = repo / "reports/review/report.md"
    text = report.read_text()
    lines = text.splitlines()
    assert lines[0] == "# Review: `main` → workspace"

    old_lr = yaml.safe_load(git_show(repo, "main", "params.yaml"))["transfer"]["learning_rate"]
    new_lr = yaml.safe_load((repo / "params.yaml").read_text())["transfer"]["learning_rate"]
    assert f"| `{LR}` | {fmt_value(old_lr)} | {fmt_value(new_lr)} |" in lines

    old = json.loads(git_show(repo, "main", "reports/metrics.json"))
    new = json.loads((repo / "reports/metrics.json").read_text())
    for phase in ("transfer", "finetune"):
        for key in ("accuracy", "loss", "macro_f1"):
            c = Change(f"{phase}.{key}", old[phase][key], new[phase][key])
            row = f"| `{c.name}` | {fmt_value(c.old)} | {fmt_value(c.new)} | {fmt_delta(c)} |"
            assert row in lines
    assert lines.index("### `reports/summary.json`") < lines.index("### `reports/metrics.json`")
    assert "### `reports/export.json`" in lines  # details the review compares beside the headline

    links = re.findall(r"!\[(base|head)\]\(([^)]+)\)", text)
    shown = {(side, Path(link).name) for side, link in links}
    for side in ("base", "head"):
        for name in ("learning_curves", "confusion_matrix"):
            assert (side, f"{side}_reports_figures_{name}.png") in shown
    for side, link in links:
        image = report.parent / link
        if "learning_curves" in link:
            expected = (
                git_show(repo, "main", "reports/figures/learning_curves.png")
                if side == "base"
                else (repo / "reports/figures/learning_curves.png").read_bytes()
            )
            assert image.read_bytes() == expected
        assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (report.parent / "plots/index.html").is_file()
    has_diagnosis = (repo / "reports/diagnosis.md").is_file()
    assert ("## Fit diagnosis (head)" in text) == has_diagnosis
    # The report is no pipeline output and leaves the work tree clean.
    assert run(["git", "status", "--porcelain"], repo).stdout == ""


def test_metrics_show_follows_the_dvclive_run_while_it_trains(repo: Path, monkeypatch):
    from dvclive import Live

    monkeypatch.chdir(repo)
    live_dir = repo / "reports/live/training"
    steps = len((live_dir / "plots/metrics/train/loss.tsv").read_text().splitlines()) - 1
    # what the finetune stage's callback does after each epoch
    live = Live(str(live_dir), resume=True, dvcyaml=None, save_dvc_exp=False)
    live.step = steps
    live.log_metric("train/loss", 0.5)
    live.log_metric("eval/accuracy", 0.75)
    live.next_step()
    try:
        shown = json.loads(
            run(["dvc", "metrics", "show", "--json", str(live_dir / "metrics.json")], repo).stdout
        )
        data = shown[""]["data"]["reports/live/training/metrics.json"]["data"]
        assert data["step"] == steps
        assert data["train"]["loss"] == 0.5 and data["eval"]["accuracy"] == 0.75
    finally:
        run(["dvc", "checkout", "--force", "reports/live/training"], repo)


def test_remote_round_trip(repo: Path, tmp_path: Path):
    remote = tmp_path / "remote"
    run(["dvc", "remote", "add", "-d", "local", str(remote)], repo)
    run(["git", "commit", "-qam", "A DVC remote"], repo)
    run(["dvc", "push"], repo)

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    restored = (
        "data/raw",
        "data/split/train.csv",
        "models/base.weights.h5",
        "models/transfer/model.keras",
        "models/finetune/model.keras",
    )
    assert not any((clone / p).exists() for p in restored)
    run(["dvc", "pull"], clone)
    for path in restored:
        assert (clone / path).exists(), path
    for path in ("models/finetune/model.keras", "models/base.weights.h5"):
        assert (clone / path).read_bytes() == (repo / path).read_bytes()
    assert "up to date" in run(["dvc", "status"], clone).stdout
    assert stages_run(run(["dvc", "repro"], clone).stdout) == []


def test_experiment_with_a_profile_shows_params_and_metrics(repo: Path):
    # the profile's value first, then SET's: the later value wins
    proc = make(repo, "experiment", f"PROFILE={PROFILE}", "SET=finetune.learning_rate=0.0001")
    out = proc.stdout
    assert f"dvc exp run -S profile={PROFILE} -S model.dense_units=0" in out
    assert "-S transfer.head_init=probe -S finetune.learning_rate=0.0001\n" in out
    ran = stages_run(out)
    assert {"transfer", "finetune", "evaluate"} <= set(ran)
    assert not {"baseline", *DATA_STAGES} & set(ran)
    assert "the head starts as the baseline's logistic regression" in out + proc.stderr
    rows = exp_show(repo)
    baseline = next(r for r in rows if r["rev"] != "workspace")
    assert baseline["rev"] == run(["git", "rev-parse", "HEAD"], repo).stdout.strip()
    (exp,) = baseline["experiments"]
    (data,) = [rev["data"] for rev in exp["revs"]]
    for row in (baseline["data"], data):
        assert row["params"]["params.yaml"]["data"]["transfer"]["learning_rate"] == NEW_LR
        metrics = row["metrics"]
        assert set(metrics) == {"reports/summary.json"}
        assert 0 <= metrics["reports/summary.json"]["data"]["finetune"]["accuracy"] <= 1
    assert data["params"]["params.yaml"]["data"]["finetune"]["learning_rate"] == 0.0001
    assert data["params"]["params.yaml"]["data"]["profile"] == PROFILE
    assert baseline["data"]["params"]["params.yaml"]["data"]["profile"] == ""
    committed = yaml.safe_load(git_show(repo, "HEAD", "params.yaml"))["finetune"]["learning_rate"]
    assert committed != 0.0001
    assert (
        baseline["data"]["params"]["params.yaml"]["data"]["finetune"]["learning_rate"] == committed
    )
    # The experiment's metrics are what the run wrote (its results are in the workspace).
    assert data["metrics"]["reports/summary.json"]["data"] == json.loads(
        (repo / "reports/summary.json").read_text()
    )
    history = (repo / "reports/history/finetune.csv").read_text().splitlines()
    live = json.loads((repo / "reports/live/training/metrics.json").read_text())
    assert live["step"] + 1 == int(history[-1].split(",")[0])  # 0-based step, 1-based epoch
    table = run(["dvc", "exp", "show", "--no-pager", "--md"], repo).stdout
    assert exp["name"] in table


def test_review_compares_with_a_run_of_the_same_profile(repo: Path):
    """The workspace is a run of profile PROFILE (the test above); main committed the default's.

    So the report runs main with PROFILE first and compares with that run, never with main's
    committed results of another profile.
    """
    before = {p: (repo / p).read_bytes() for p in ("params.yaml", "dvc.lock")}
    make(repo, "report", "BASE=main")
    text = (repo / "reports/review/report.md").read_text()
    assert f"so it was run with the head's profile `{PROFILE}`" in text
    assert f"Profile: base `{PROFILE}`, head `{PROFILE}`." in text
    assert "Different profiles" not in text
    base_params = yaml.safe_load(git_show(repo, "refs/review/base", "params.yaml"))
    assert base_params["profile"] == PROFILE
    assert base_params["finetune"]["learning_rate"] == PROFILE_LR  # main's params + the profile
    assert base_params["transfer"]["learning_rate"] != NEW_LR  # main's own value, not the head's
    base_metrics = json.loads(git_show(repo, "refs/review/base", "reports/metrics.json"))
    main_metrics = json.loads(git_show(repo, "main", "reports/metrics.json"))
    assert base_metrics["baseline"] == main_metrics["baseline"]  # restored, not rerun
    assert base_metrics["transfer"] != main_metrics["transfer"]  # the profile's head
    head = json.loads((repo / "reports/metrics.json").read_text())
    row = f"| `finetune.loss` | {fmt_value(base_metrics['finetune']['loss'])} | "
    assert row + f"{fmt_value(head['finetune']['loss'])} |" in text
    # the report leaves the workspace as it was
    assert {p: (repo / p).read_bytes() for p in before} == before
