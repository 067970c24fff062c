"""The review report's Markdown, from given diffs (the real diffs: tests/test_review_e2e.py)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from pipeline.tools.report import Change, _changes, fmt_delta, fmt_value, main, profile_of, render
from pipeline.utils import PipelineError


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (0.5, 0.625, "+0.125"),
        (0.7, 0.65, "-0.05"),
        (3, 5, "+2"),
        (4, 4, "0"),
        (None, 0.9, "new"),
        (0.9, None, "removed"),
        ("sample", "kaggle", "changed"),
        ("sample", "sample", ""),
    ],
)
def test_delta_has_a_sign(old: object, new: object, expected: str):
    assert fmt_delta(Change("m", old, new)) == expected


def test_values():
    assert fmt_value(None) == "—"
    assert fmt_value(0.1234567) == "0.123457"
    assert fmt_value(1e-05) == "1e-05"
    assert fmt_value(7) == "7"
    assert fmt_value("kaggle") == "`kaggle`"
    assert fmt_value("") == '`""`'


def _render(tmp_path: Path, **kwargs: object) -> str:
    defaults: dict = {
        "base": "main",
        "base_commit": "a" * 40,
        "head_commit": "b" * 40,
        "params": {},
        "metrics": {},
        "images": {},
        "report_dir": tmp_path,
    }
    return render(**{**defaults, **kwargs})


def test_tables_of_params_and_metrics(tmp_path: Path):
    text = _render(
        tmp_path,
        params={
            "params.yaml": [
                Change("finetune.learning_rate", 1e-05, 0.0001),
                Change("seed", 42, 42),
            ]
        },
        metrics={
            "reports/metrics.json": [
                Change("finetune.accuracy", 0.6, 0.65),
                Change("finetune.per_class.tom.f1", 0.5, 0.5),
                Change("finetune.per_class.jerry.f1", 0.5, 0.7),
                Change("finetune_gain", None, 0.12),
            ]
        },
    )
    lines = text.splitlines()
    assert lines[0] == "# Review: `main` → workspace"
    assert "| `finetune.learning_rate` | 1e-05 | 0.0001 |" in lines
    assert not any(line.startswith("| `seed`") for line in lines)  # unchanged params are left out
    assert "| `finetune.accuracy` | 0.6 | 0.65 | +0.05 |" in lines
    assert "| `finetune_gain` | — | 0.12 | new |" in lines  # a metric the base did not have
    # Per-class metrics: only the changed ones, in a collapsed table.
    assert "<details><summary>1 more changed metric(s)</summary>" in lines
    assert "| `finetune.per_class.jerry.f1` | 0.5 | 0.7 | +0.2 |" in lines
    assert not any("per_class.tom" in line for line in lines)


def test_no_changes_and_no_images(tmp_path: Path):
    text = _render(tmp_path, params={"params.yaml": [Change("seed", 1, 1)]})
    assert "No param changed." in text
    assert "No metrics in either revision." in text
    assert "No image plots in either revision." in text


def test_images_side_by_side_with_relative_links(tmp_path: Path):
    report_dir = tmp_path / "review"
    images = {
        "reports/figures/learning_curves.png": {
            "base": report_dir / "images" / "base_curves.png",
            "head": report_dir / "images" / "head_curves.png",
        },
        "reports/figures/new.png": {"head": report_dir / "images" / "head_new.png"},
    }
    text = _render(tmp_path, images=images, report_dir=report_dir)
    assert "|  | base (`main`) | head (workspace) |" in text
    base, head = "![base](images/base_curves.png)", "![head](images/head_curves.png)"
    assert f"| **Learning curves** | {base} | {head} |" in text
    assert "| **reports/figures/new.png** | — | ![head](images/head_new.png) |" in text


def test_data_sources_and_diagnosis(tmp_path: Path):
    diagnosis = "# Fit diagnosis\n\nAll fine.\n\n## Transfer\n\n```\n# not a heading\n```\n"
    text = _render(
        tmp_path, data_sources=("sample", "kaggle (owner/data/versions/1)"), diagnosis=diagnosis
    )
    assert "Data: base sample, head kaggle (owner/data/versions/1)." in text
    assert "**Different data.**" in text
    # Nested in the report: its title dropped, its headings one level down.
    assert "## Fit diagnosis (head)\n\nAll fine.\n\n### Transfer\n" in text
    assert "```\n# not a heading\n```" in text  # code blocks are left as they are
    same = _render(tmp_path, data_sources=("sample", "sample"))
    assert "Different data" not in same and "Fit diagnosis" not in same


def test_profiles_of_both_sides(tmp_path: Path):
    assert profile_of("profile: tom-and-jerry\nseed: 1\n") == "tom-and-jerry"
    assert profile_of("profile: ''\n") == profile_of("seed: 1\n") == ""
    assert profile_of(None) is None and profile_of(": : :") is None
    same = _render(tmp_path, profiles=("tom-and-jerry", "tom-and-jerry"))
    assert "Profile: base `tom-and-jerry`, head `tom-and-jerry`." in same
    assert "Different profiles" not in same
    text = _render(tmp_path, profiles=("", "tom-and-jerry"))
    assert "Profile: base default (params.yaml), head `tom-and-jerry`." in text
    assert "**Different profiles.**" in text
    rerun = _render(tmp_path, profiles=("tom-and-jerry",) * 2, rerun_note="`main` was rerun.")
    assert "`main` was rerun." in rerun and "Different profiles" not in rerun


def test_head_against_the_baseline(tmp_path: Path):
    head = {
        "baseline": {"accuracy": 0.8, "val_accuracy": 0.78, "macro_f1": 0.79},
        "transfer": {"accuracy": 0.8, "val_accuracy": 0.77, "macro_f1": 0.75},
        "finetune": {"accuracy": 0.85, "val_accuracy": 0.82, "macro_f1": 0.84},
    }
    text = _render(tmp_path, head_metrics=head)
    section = text.split("## Against the linear-probe baseline (head)\n", 1)[1]
    assert "| linear-probe baseline | 0.78 | 0.8 | 0.79 | — |" in section
    assert "| transfer only | 0.77 | 0.8 | 0.75 | no |" in section  # a tie does not beat it
    assert "| fine-tuned | 0.82 | 0.85 | 0.84 | yes |" in section
    assert "against the linear-probe" not in _render(tmp_path, head_metrics={}).lower()


def test_unknown_base_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for cmd in (["git", "init", "-q"], ["git", "commit", "-q", "--allow-empty", "-m", "x"]):
        subprocess.run(
            cmd,
            cwd=tmp_path,
            check=True,
            env={
                **os.environ,
                "GIT_AUTHOR_NAME": "t",
                "GIT_AUTHOR_EMAIL": "t@example.com",
                "GIT_COMMITTER_NAME": "t",
                "GIT_COMMITTER_EMAIL": "t@example.com",
            },
        )
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PipelineError, match="base revision 'no-such-branch' not found"):
        main(["--base", "no-such-branch"])
    assert not (tmp_path / "reports").exists()


def test_headline_then_details_then_other_files():
    diff = {
        "reports/export.json": {"size": {"old": 1, "new": 2}},
        "reports/metrics.json": {"accuracy": {"old": 0.5, "new": 0.6}},
        "other/a.json": {"epoch": {"old": None, "new": 3}},
        "reports/summary.json": {"finetune.accuracy": {"old": 0.5, "new": 0.6}},
    }
    changes = _changes(diff)
    assert list(changes) == [
        "reports/summary.json",
        "reports/metrics.json",
        "reports/export.json",
        "other/a.json",
    ]
    assert changes["other/a.json"] == [Change("epoch", None, 3)]
