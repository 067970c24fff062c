"""A throw-away copy of the project: its code, profiles and ``dvc.yaml`` in a new git + DVC repo.

What runs the whole pipeline somewhere else with other params uses it: the benchmark
(:mod:`pipeline.tools.bench`: ``dvc repro`` of a generated dataset, the real-data quality run)
and the end-to-end tests.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from pipeline import paths
from pipeline.utils import PipelineError, subprocess_env

# What a copy of the project holds besides params.yaml: the code, profiles, dvc.yaml and the files
# that say what git and DVC ignore
PROJECT_FILES = (
    paths.CODE.as_posix(),
    paths.PROFILES.as_posix(),
    "dvc.yaml",
    "pyproject.toml",
    ".gitignore",
    ".dvcignore",
)


def make_project(dest: Path, params: dict, root: Path) -> Path:
    """Copy the project at ``root`` (code, dvc.yaml, ignore files) into a new git + DVC repo at
    ``dest``, with ``params`` as its params.yaml."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = root / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.is_file():
            shutil.copy2(src, dest / name)
    (dest / paths.PARAMS).write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (
        ["git", "init", "-q"],
        ["git", "config", "user.email", "pipeline@localhost"],
        ["git", "config", "user.name", "pipeline"],
        ["dvc", "init", "-q"],
        ["dvc", "config", "core.analytics", "false"],
        ["dvc", "config", "core.check_update", "false"],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "init"],
    ):
        proc = subprocess.run(cmd, cwd=dest, capture_output=True, text=True, env=subprocess_env())
        if proc.returncode != 0:
            raise PipelineError(f"{' '.join(cmd)} failed in {dest}:\n{proc.stderr[-2000:]}")
    return dest
