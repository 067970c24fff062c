"""Review report: what a change does to params, metrics and plots, as one Markdown file.

Compares a base revision (a branch, tag or commit; default ``main``) with the workspace through
DVC's own diff commands: ``dvc params diff``, ``dvc metrics diff`` (the headline, the top-level
``metrics:`` of ``dvc.yaml``, and the tracked detail files of :data:`REVIEW_METRICS`) and
``dvc plots diff`` (the learning curves and confusion matrices of both
revisions, as images side by side, and as interactive plots in ``plots/index.html``). The fit
diagnosis of the workspace (``reports/diagnosis.md``) is included when it exists.

Usage: ``python -m pipeline.tools.report [--base main] [--out reports/review/report.md]``

The output folder holds the report, its images and the HTML plots; it is not a pipeline output
(``reports/review/`` is git-ignored). CI posts the report as a pull-request comment.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pipeline import paths
from pipeline.params import parse_yaml
from pipeline.utils import (
    PipelineError,
    atomic_file,
    log,
    markdown_table,
    run_stage,
    subprocess_env,
)

WORKSPACE = "workspace"  # DVC's name for the working tree in its diff output
PARAMS = paths.PARAMS.as_posix()
PROFILES = paths.PROFILES.as_posix()
BASE_RUN_REF = "refs/review/base"  # the base's run with the head's profile (run_base)
DIAGNOSIS = paths.DIAGNOSIS
DATA_SOURCE = paths.DATA_SOURCE.as_posix()
METRICS = paths.METRICS.as_posix()
# Compared in this order: the headline (dvc.yaml `metrics:`), then the details, which are tracked
# outputs but not DVC metrics, so that `dvc exp show` stays readable.
REVIEW_METRICS = (
    paths.SUMMARY.as_posix(),
    METRICS,
    paths.EXPORT_REPORT.as_posix(),
    paths.LEAKAGE.as_posix(),
)
IMAGE_TITLES = {
    paths.LEARNING_CURVES.as_posix(): "Learning curves",
    paths.CONFUSION_FIGURE.as_posix(): "Confusion matrices",
}
BASELINE_ROWS = (
    ("baseline", "linear-probe baseline"),
    ("transfer", "transfer only"),
    ("finetune", "fine-tuned"),
)
METRIC_KEYS = ("val_accuracy", "accuracy", "macro_f1")
# Keys nested deeper than this (e.g. ``finetune.per_class.tom.f1``) go to a collapsed table.
HEADLINE_DEPTH = 2


@dataclass(frozen=True)
class Change:
    """One param or metric: its value at the base and in the workspace (None: absent)."""

    name: str
    old: object
    new: object

    @property
    def delta(self) -> float | None:
        if _is_number(self.old) and _is_number(self.new):
            return float(self.new) - float(self.old)  # type: ignore[arg-type]
        return None

    @property
    def changed(self) -> bool:
        return self.old != self.new


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def fmt_value(value: object) -> str:
    """A table cell for a param or metric value; ``—`` when it is absent."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, str):
        return f"`{value}`" if value else '`""`'
    return str(value)


def fmt_delta(change: Change) -> str:
    """The signed change of a number (``+0.012``, ``-1``, ``0``), or what happened otherwise."""
    if change.old is None and change.new is not None:
        return "new"
    if change.new is None and change.old is not None:
        return "removed"
    delta = change.delta
    if delta is None:
        return "changed" if change.changed else ""
    if abs(delta) < 1e-12:
        return "0"
    if isinstance(change.old, int) and isinstance(change.new, int):
        return f"{int(delta):+d}"
    return f"{delta:+.4g}"


def _run(cmd: list[str], what: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise PipelineError(f"{what} failed: {detail[-1] if detail else proc.returncode}")
    return proc.stdout


def _dvc(*args: str) -> str:
    return _run([sys.executable, "-m", "dvc", *args], f"dvc {args[0]} {args[1]}")


def resolve_base(base: str) -> str:
    """The commit ``base`` names; a clear error when git does not know it."""
    proc = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", "--end-of-options", f"{base}^{{commit}}"],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise PipelineError(
            f"base revision {base!r} not found in this git repository; fetch it first "
            f"(e.g. `git fetch origin {base}`) or pass another --base"
        )
    return proc.stdout.strip()


def _changes(diff: dict) -> dict[str, list[Change]]:
    """``{file: [Change, ...]}`` from the JSON of ``dvc params/metrics diff``.

    The files of :data:`REVIEW_METRICS` first, in its order, then the others in name order.
    """

    def order(path: str) -> tuple[int, str]:
        rank = REVIEW_METRICS.index(path) if path in REVIEW_METRICS else len(REVIEW_METRICS)
        return rank, path

    return {
        path: [Change(name, v.get("old"), v.get("new")) for name, v in sorted(entries.items())]
        for path, entries in sorted(diff.items(), key=lambda kv: order(kv[0]))
    }


def params_diff(base: str) -> dict[str, list[Change]]:
    """Changed params per params file (``dvc params diff <base> --json``)."""
    return _changes(json.loads(_dvc("params", "diff", base, "--json") or "{}"))


def metrics_diff(base: str) -> dict[str, list[Change]]:
    """All metrics per file of :data:`REVIEW_METRICS`, changed or not (``dvc metrics diff``)."""
    out = _dvc("metrics", "diff", base, "--all", "--json", "--targets", *REVIEW_METRICS)
    return _changes(json.loads(out or "{}"))


def plot_images(base: str, out_dir: Path) -> dict[str, dict[str, Path]]:
    """``{image plot: {"base"|"head": file}}``: the image plots of both revisions, in out_dir.

    ``dvc plots diff`` takes the base's files from git or the DVC cache, the workspace's from
    the working tree; a revision that lacks an image is missing from its entry.
    """
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    images: dict[str, dict[str, Path]] = {}
    with tempfile.TemporaryDirectory(dir=out_dir.parent) as tmp:
        data = json.loads(_dvc("plots", "diff", base, "--json", "-o", tmp) or "{}")
        for name, entries in data.get("data", {}).items():
            for entry in entries:
                if entry.get("type") != "image":
                    continue
                for rev in entry.get("revisions", []):
                    side = "head" if rev == WORKSPACE else "base" if rev == base else None
                    if side:
                        target = out_dir / f"{side}_{re.sub(r'[^A-Za-z0-9._-]', '_', name)}"
                        shutil.copyfile(entry["url"], target)
                        images.setdefault(name, {})[side] = target
    return images


def html_plots(base: str, out_dir: Path) -> Path:
    """All plots of both revisions as one interactive page (``dvc plots diff -o``)."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    _dvc("plots", "diff", base, "-o", str(out_dir))
    return out_dir / "index.html"


def _read(path: str) -> str | None:
    return Path(path).read_text(encoding="utf-8") if Path(path).is_file() else None


def _git_show(rev: str, path: str) -> str | None:
    proc = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True)
    return proc.stdout if proc.returncode == 0 else None


def _show(rev: str, path: str) -> str | None:
    """``path`` at ``rev``: from git, or from the DVC cache for an output DVC tracks."""
    text = _git_show(rev, path)
    if text is not None:
        return text
    import dvc.api

    try:
        return dvc.api.read(path, repo=".", rev=rev)
    except Exception:  # not tracked at that revision, or not in the local cache
        return None


def _data_source(text: str | None) -> str | None:
    if not text:
        return None
    try:
        info = json.loads(text)
    except json.JSONDecodeError:
        return None
    source = str(info.get("source", "?"))
    detail = info.get("handle") or info.get("path")
    return f"{source} ({detail})" if detail else source


def _change_rows(changes: list[Change]) -> list[list[str]]:
    return [[f"`{c.name}`", fmt_value(c.old), fmt_value(c.new), fmt_delta(c)] for c in changes]


def _nest(markdown: str) -> str:
    """An included file under a ``##`` section: its title dropped, its headings one level down.

    Lines in fenced code blocks are left as they are.
    """
    lines = markdown.strip().splitlines()
    if lines and re.match(r"# ", lines[0]):
        lines = lines[1:]
    out, fenced = [], False
    for line in lines:
        if line.lstrip().startswith("```"):
            fenced = not fenced
        out.append("#" + line if not fenced and re.match(r"#{1,5} ", line) else line)
    return "\n".join(out).strip()


def _header_notes(rerun_note: str | None, profiles: tuple, data_sources: tuple) -> list[str]:
    """The notes under the title: the base's rerun, the profiles and the data of both runs."""
    lines: list[str] = []
    if rerun_note:
        lines += ["", rerun_note]
    if any(p is not None for p in profiles):
        shown = [f"`{p}`" if p else "default (params.yaml)" for p in profiles]
        lines += ["", f"Profile: base {shown[0]}, head {shown[1]}."]
        if profiles[0] is not None and profiles[1] is not None and profiles[0] != profiles[1]:
            lines += [
                "",
                "> **Different profiles.** Base and head are runs of different profiles: their "
                "metrics are not directly comparable.",
            ]
    old_src, new_src = data_sources
    if old_src or new_src:
        lines += ["", f"Data: base {old_src or '—'}, head {new_src or '—'}."]
        if old_src and new_src and old_src != new_src:
            lines += [
                "",
                "> **Different data.** Base and head were trained and tested on different data: "
                "their metrics are not directly comparable.",
            ]
    return lines


def _params_section(params: dict[str, list[Change]]) -> list[str]:
    """The changed params."""
    lines = ["", "## Params", ""]
    changed = [(path, c) for path, cs in params.items() for c in cs if c.changed]
    if changed:
        multi = len(params) > 1
        rows = [
            [f"`{path}:{c.name}`" if multi else f"`{c.name}`", fmt_value(c.old), fmt_value(c.new)]
            for path, c in changed
        ]
        lines += markdown_table(["param", "base", "head"], rows)
    else:
        lines.append("No param changed.")
    return lines


def _baseline_section(head_metrics: dict | None) -> list[str]:
    """The head's models against the linear-probe baseline (when it has one)."""
    lines: list[str] = []
    if head_metrics and "baseline" in head_metrics:
        probe = head_metrics["baseline"]["accuracy"]

        def beats(key: str) -> str:
            return (
                "—"
                if key == "baseline"
                else "yes"
                if head_metrics[key]["accuracy"] > probe
                else "no"
            )

        lines += ["", "## Against the linear-probe baseline (head)", ""]
        lines += markdown_table(
            ["model", "val accuracy", "test accuracy", "test macro F1", "beats the baseline"],
            [
                [name, *(fmt_value(head_metrics[key].get(m)) for m in METRIC_KEYS), beats(key)]
                for key, name in BASELINE_ROWS
                if key in head_metrics
            ],
        )
    return lines


def _metrics_section(metrics: dict[str, list[Change]]) -> list[str]:
    """The changed metrics of each metrics file, the headline first."""
    lines = ["", "## Metrics", ""]
    if not metrics:
        lines.append("No metrics in either revision.")
    for path, changes in metrics.items():
        headline = [c for c in changes if c.name.count(".") < HEADLINE_DEPTH]
        detail = [c for c in changes if c.name.count(".") >= HEADLINE_DEPTH and c.changed]
        lines += [f"### `{path}`", ""]
        if headline:
            lines += markdown_table(["metric", "base", "head", "change"], _change_rows(headline))
        if detail:
            lines += [
                "",
                f"<details><summary>{len(detail)} more changed metric(s)</summary>",
                "",
                *markdown_table(["metric", "base", "head", "change"], _change_rows(detail)),
                "",
                "</details>",
            ]
        if not headline and not detail:
            lines.append("No change.")
        lines.append("")
    return lines


def _plots_section(
    images: dict[str, dict[str, Path]], report_dir: Path, base: str, html: Path | None
) -> list[str]:
    """The image plots of both revisions side by side, and the interactive plots' file."""
    lines = ["## Plots", ""]
    if images:
        rows = []
        for name, revs in images.items():
            cells = []
            for side in ("base", "head"):
                path = revs.get(side)
                rel = Path(os.path.relpath(path, report_dir)).as_posix() if path else None
                cells.append(f"![{side}]({rel})" if rel else "—")
            rows.append([f"**{IMAGE_TITLES.get(name, name)}**", *cells])
        lines += markdown_table(["", f"base (`{base}`)", "head (workspace)"], rows)
    else:
        lines.append("No image plots in either revision.")
    if html is not None:
        rel = Path(os.path.relpath(html, report_dir)).as_posix()
        lines += [
            "",
            f"Interactive learning curves and confusion matrices of both revisions: `{rel}` "
            "beside this report (in CI: the workflow run's `review-report` artifact).",
        ]
    return lines


def render(
    *,
    base: str,
    base_commit: str,
    head_commit: str,
    params: dict[str, list[Change]],
    metrics: dict[str, list[Change]],
    images: dict[str, dict[str, Path]],
    report_dir: Path,
    data_sources: tuple[str | None, str | None] = (None, None),
    profiles: tuple[str | None, str | None] = (None, None),
    rerun_note: str | None = None,
    head_metrics: dict | None = None,
    diagnosis: str | None = None,
    html: Path | None = None,
) -> str:
    """The report as Markdown; image links are relative to ``report_dir``."""
    lines = [
        f"# Review: `{base}` → workspace",
        "",
        f"Base: `{base}` (`{base_commit[:9]}`). Head: the workspace of `{head_commit[:9]}`, "
        "as the pipeline left it.",
        *_header_notes(rerun_note, profiles, data_sources),
        *_params_section(params),
        *_baseline_section(head_metrics),
        *_metrics_section(metrics),
        *_plots_section(images, report_dir, base, html),
    ]
    if diagnosis:
        lines += ["", "## Fit diagnosis (head)", "", _nest(diagnosis)]
    return "\n".join(lines).rstrip() + "\n"


def profile_of(params_text: str | None) -> str | None:
    """The ``profile`` in a ``params.yaml`` text (``""``: none); ``None`` without the file."""
    if params_text is None:
        return None
    try:
        raw = parse_yaml(params_text)
    except Exception:  # a broken params.yaml at some revision: no profile to name
        return None
    return str(raw.get("profile") or "") if isinstance(raw, dict) else None


def run_base(base_commit: str, profile: str, ref: str = BASE_RUN_REF) -> str:
    """Run ``base_commit`` with ``profile`` in a throw-away clone; return a ref to its results.

    The clone shares this repository's DVC cache, so the base's committed outputs are checked
    out and only the stages the profile changes run (``make experiment PROFILE=...`` there).
    Its params, ``dvc.lock`` and reports are committed in the clone and fetched here as ``ref``,
    a revision DVC's diffs read like any other.
    """
    root = Path(_run(["git", "rev-parse", "--show-toplevel"], "git rev-parse").strip())
    env = subprocess_env()
    with tempfile.TemporaryDirectory(prefix="review-base-") as tmp:
        clone = Path(tmp) / "base"

        def in_clone(cmd: list[str], what: str, check: bool = True) -> str:
            proc = subprocess.run(cmd, cwd=clone, env=env, capture_output=True, text=True)
            if check and proc.returncode != 0:
                tail = (proc.stderr or proc.stdout).strip()[-2000:]
                raise PipelineError(f"the base run failed at {what}:\n{tail}")
            return proc.stdout

        _run(["git", "clone", "-q", "--no-checkout", str(root), str(clone)], "git clone")
        in_clone(["git", "checkout", "-q", base_commit], "git checkout")
        if not (clone / PROFILES / f"{profile}.yaml").is_file():
            raise PipelineError(
                f"the base revision has no profile '{profile}' ({PROFILES}/{profile}.yaml), so "
                "it cannot be run like the head: compare by hand, or land the profile first"
            )
        cache = _dvc("cache", "dir").strip()  # this repository's, wherever it is configured
        in_clone(["dvc", "cache", "dir", "--local", cache], "dvc cache dir")
        in_clone(["dvc", "checkout"], "dvc checkout", check=False)  # what the cache has
        log.info("running the base (%s) with profile '%s' in %s", base_commit[:9], profile, clone)
        in_clone(
            [sys.executable, "-m", "pipeline.tools.experiment", "--profile", profile],
            f"make experiment PROFILE={profile}",
        )
        in_clone(["git", "add", "-A"], "git add")
        in_clone(
            [
                "git",
                "-c",
                "user.name=review",
                "-c",
                "user.email=review@localhost",
                "commit",
                "-qm",
                f"{base_commit[:9]} run with profile {profile}",
            ],
            "git commit",
        )
        _run(["git", "fetch", "-q", str(clone), f"+HEAD:{ref}"], "git fetch")
    return ref


def write_report(base: str, out: Path, *, html: bool = True, rerun: bool = True) -> Path:
    """Run the diffs against ``base`` and write the report to ``out``; return ``out``.

    Both sides must be runs of the same profile (``profile`` in ``params.yaml``): when the
    base's committed results come from another profile and ``rerun`` is true, the base is run
    with the head's profile first (:func:`run_base`) and the report compares with that run.
    """
    base_commit = resolve_base(base)
    head_commit = _run(["git", "rev-parse", "HEAD"], "git rev-parse HEAD").strip()
    profiles = [profile_of(_git_show(base_commit, PARAMS)), profile_of(_read(PARAMS))]
    rerun_note = None
    if rerun and profiles[1] and profiles[0] != profiles[1]:
        rerun_note = (
            f"`{base}` committed results of profile `{profiles[0] or 'default'}`, so it was run "
            f"with the head's profile `{profiles[1]}` for this comparison."
        )
        base = run_base(base_commit, profiles[1])
        base_commit = resolve_base(base)
        profiles[0] = profile_of(_git_show(base_commit, PARAMS))
    report_dir = out.parent
    report_dir.mkdir(parents=True, exist_ok=True)
    params = params_diff(base)
    metrics = metrics_diff(base)
    images = plot_images(base, report_dir / "images")
    page = html_plots(base, report_dir / "plots") if html else None
    if not html:
        shutil.rmtree(report_dir / "plots", ignore_errors=True)  # not a stale page either
    head_source = _read(DATA_SOURCE)
    text = render(
        base=base,
        base_commit=base_commit,
        head_commit=head_commit,
        params=params,
        metrics=metrics,
        images=images,
        report_dir=report_dir,
        data_sources=(
            _data_source(_show(base_commit, DATA_SOURCE)),
            _data_source(head_source),
        ),
        profiles=(profiles[0], profiles[1]),
        rerun_note=rerun_note,
        head_metrics=json.loads(_read(METRICS) or "{}"),
        diagnosis=DIAGNOSIS.read_text(encoding="utf-8") if DIAGNOSIS.is_file() else None,
        html=page,
    )
    with atomic_file(out) as fh:
        fh.write(text)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Write a Markdown review report: params, metrics and plots of the workspace "
        "against a base revision."
    )
    parser.add_argument("--base", default="main", help="git revision to compare with (main)")
    parser.add_argument(
        "--out",
        default=paths.REVIEW / "report.md",
        type=Path,
        help="report file; its folder also receives images/ and plots/",
    )
    parser.add_argument(
        "--no-html", action="store_true", help="skip the interactive plots (plots/index.html)"
    )
    parser.add_argument(
        "--no-rerun",
        action="store_true",
        help="never run the base with the head's profile (the report then warns when the "
        "profiles differ)",
    )
    args = parser.parse_args(argv)
    out = write_report(args.base, args.out, html=not args.no_html, rerun=not args.no_rerun)
    print(out)


if __name__ == "__main__":
    run_stage(main)
