"""GitHub Actions workflows: actionlint (with shellcheck) and the commands their steps run."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

WORKFLOWS = ROOT / ".github" / "workflows"
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name
    found = str(path) if path.is_file() else shutil.which(name)
    assert found, f"{name} not found: it comes with the dev dependencies (requirements.lock)"
    return found


def actionlint(*files: Path) -> subprocess.CompletedProcess:
    cmd = [_tool("actionlint"), "-no-color", "-shellcheck", _tool("shellcheck"), *map(str, files)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)


def load(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def triggers(workflow: dict) -> dict:
    on = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as True
    return {on: None} if isinstance(on, str) else dict(on)


def run_lines(workflow: dict) -> list[str]:
    """Every command line of every ``run:`` step, comments and blank lines dropped."""
    lines = []
    for job in workflow["jobs"].values():
        for step in job["steps"]:
            for line in str(step.get("run", "")).splitlines():
                if line.strip() and not line.strip().startswith("#"):
                    lines.append(line.strip())
    return lines


def make_dry_run(*args: str) -> str:
    """``make -n`` of the project's Makefile with the venv taken as installed."""
    venv = BIN.parent
    cmd = ["make", "-n", "-f", str(ROOT / "Makefile"), f"VENV={venv}"]
    cmd += ["-o", str(venv / ".installed"), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_actionlint_passes():
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert [f.name for f in files] == ["pr.yml", "retrain.yml", "test.yml"]
    proc = actionlint(*files)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_catches_mistakes(tmp_path: Path):
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - if: ${{ secret.TOKEN != '' }}\n        run: echo $(ls *.csv)\n"
    )
    out = actionlint(bad).stdout
    assert 'undefined variable "secret"' in out  # expression check
    assert "SC2046" in out  # shellcheck of the run: script


def test_tests_run_on_pushes_to_main_and_pull_requests_with_make_test():
    wf = load("test.yml")
    on = triggers(wf)
    assert set(on) == {"push", "pull_request", "workflow_dispatch"}
    assert on["push"]["branches"] == ["main"]  # a pull request's commits are tested once
    assert "bash .ci/run" in run_lines(wf)
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert "make lint" in ci and "make test" in ci and "make repro" in ci
    assert ci.index("make test") < ci.index("make repro")


@pytest.mark.parametrize(("name", "events"), [("test.yml", ("push", "pull_request")),
                                              ("pr.yml", ("pull_request",))])  # fmt: skip
def test_documentation_changes_skip_the_heavy_workflows(name: str, events: tuple[str, ...]):
    on = triggers(load(name))
    for event in events:
        assert {"**.md", "docs/**"} <= set(on[event]["paths-ignore"]), event


@pytest.mark.parametrize("name", ["pr.yml", "retrain.yml", "test.yml"])
def test_every_workflow_has_a_concurrency_group(name: str):
    concurrency = load(name)["concurrency"]
    assert concurrency["group"] and "cancel-in-progress" in concurrency


def _caches(workflow: dict) -> dict[str, dict]:
    """``{cached path: with}`` of the workflow's ``actions/cache`` steps."""
    return {
        step["with"]["path"]: step["with"]
        for job in workflow["jobs"].values()
        for step in job["steps"]
        if str(step.get("uses", "")).startswith("actions/cache@")
    }


@pytest.mark.parametrize("name", ["pr.yml", "retrain.yml", "test.yml"])
def test_pip_cache_is_keyed_on_the_lock_file(name: str):
    caches = _caches(load(name))
    assert "hashFiles('requirements.lock')" in caches["~/.cache/pip"]["key"]


@pytest.mark.parametrize("name", ["pr.yml", "retrain.yml"])
def test_dvc_and_kagglehub_caches_are_keyed_on_the_lock_and_the_handles(name: str):
    wf = load(name)
    caches = _caches(wf)
    dvc, kaggle = caches[".dvc/cache"], caches["~/.cache/kagglehub"]
    assert "hashFiles('requirements.lock')" in dvc["key"]
    assert (
        "steps.keys.outputs.kaggle" in dvc["key"] and "steps.keys.outputs.kaggle" in kaggle["key"]
    )
    assert dvc["restore-keys"]  # the newest cache of the same lock when the handles change
    keys = next(s for j in wf["jobs"].values() for s in j["steps"] if s.get("id") == "keys")
    assert "params.yaml profiles/*.yaml" in keys["run"] and "handle" in keys["run"]


def test_the_reproducibility_check_computes_every_stage():
    """test.yml restores no DVC cache: `make repro` in .ci/run must really run the stages."""
    assert ".dvc/cache" not in _caches(load("test.yml"))


def test_pull_request_runs_the_pipeline_and_comments_the_report():
    wf = load("pr.yml")
    assert set(triggers(wf)) == {"pull_request"}
    lines = run_lines(wf)
    assert 'make experiment PROFILE="$PROFILE"' in lines
    # make report runs the base with the head's profile when its committed results differ
    assert 'make report BASE="origin/$BASE_REF"' in lines
    assert any(
        re.match(r"cml comment (create|update) .*reports/review/report\.md$", x) for x in lines
    )
    env = wf["jobs"]["review"]["env"]
    # The real profile only when Kaggle secrets exist; the offline default otherwise.
    assert "secrets.KAGGLE_API_TOKEN != ''" in env["PROFILE"]
    assert "'tom-and-jerry' || ''" in env["PROFILE"]
    assert "DATA_SOURCE" not in env and not any("data.source" in x for x in lines)


def test_retrain_is_scheduled_pushes_and_opens_a_pull_request():
    wf = load("retrain.yml")
    on = triggers(wf)
    assert "workflow_dispatch" in on
    assert re.fullmatch(r"(\S+ ){4}\S+", on["schedule"][0]["cron"])
    lines = run_lines(wf)
    assert 'make experiment PROFILE="$PROFILE" SET="$SET"' in lines
    # the profile is a visible input, default tom-and-jerry also for scheduled runs
    profile = on["workflow_dispatch"]["inputs"]["profile"]
    assert profile["default"] == "tom-and-jerry" and profile["type"] == "string"
    env = wf["jobs"]["retrain"]["env"]
    assert env["PROFILE"].startswith("${{ inputs.profile || 'tom-and-jerry' }}")
    assert "vars." not in (WORKFLOWS / "retrain.yml").read_text()  # no hidden settings
    assert "dvc pull --allow-missing" in lines
    assert "dvc push" in lines
    assert 'make report BASE="origin/$GITHUB_REF_NAME"' in lines
    assert "git add dvc.lock params.yaml reports" in lines
    assert any(x.startswith("url=$(gh pr create") for x in lines)
    env = wf["jobs"]["retrain"]["env"]
    for secret in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY", "AWS_ACCESS_KEY_ID"):
        assert env[secret] == f"${{{{ secrets.{secret} }}}}"


@pytest.mark.parametrize("name", ["pr.yml", "retrain.yml"])
def test_make_targets_of_the_workflows_exist(name: str):
    targets = {m.group(1) for x in run_lines(load(name)) for m in re.finditer(r"\bmake (\S+)", x)}
    assert {"experiment", "report"} <= targets
    for target in targets:
        make_dry_run(target)  # fails on an unknown target


def test_make_targets_expand_to_the_tested_commands():
    exp = make_dry_run("experiment", "PROFILE=tom-and-jerry", "SET=data.path=x finetune.epochs=3")
    assert "-m pipeline.tools.experiment --profile tom-and-jerry" in exp
    assert "--set data.path=x --set finetune.epochs=3" in exp
    assert "--profile" not in make_dry_run("experiment", "PROFILE=", "SET=seed=1")
    report = make_dry_run("report", "BASE=origin/main")
    assert "python -m pipeline.tools.report --base origin/main" in report
