"""Helpers for end-to-end tests: a throw-away copy of the project in its own git + DVC repo."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from pipeline.utils import subprocess_env
from pipeline.workspace import make_project
from tests.conftest import ROOT


def venv_env(**extra: str) -> dict[str, str]:
    """The environment for subprocesses: this interpreter's bin folder first on PATH."""
    env = subprocess_env()
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env.update(extra)
    return env


def run(
    cmd: list[str],
    cwd: Path,
    timeout: int = 900,
    check: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        cmd, cwd=cwd, env=env or venv_env(), capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}"
            f"\n--- stderr\n{proc.stderr[-4000:]}"
        )
    return proc


def make_repo(path: Path, params: dict) -> Path:
    """Copy the project into ``path`` (a new git + DVC repo) with ``params`` as params.yaml."""
    return make_project(path, params, ROOT)


def stages_run(output: str) -> list[str]:
    """Names of the stages that ``dvc repro`` output says it ran."""
    return re.findall(r"Running stage '([^']+)'", output)
