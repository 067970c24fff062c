"""The whole-pipeline benchmarks of ``python -m pipeline.tools.bench repro`` and ``quality``.

:func:`bench_repro` times ``dvc repro`` (then a no-op one) of a throw-away copy of the project
(:func:`pipeline.workspace.make_project`) on generated frames with random base weights;
:func:`bench_quality` runs the pipeline with real data and weights and collects what each phase
reached, beside the plain Keras recipe (:mod:`pipeline.tools.reference`).
"""

from __future__ import annotations

import json
import re
import resource
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import paths
from pipeline.architectures import backbone
from pipeline.params import Params, parse_params
from pipeline.tools import experiment
from pipeline.tools.bench_steps import draw_frames, peak_rss_mb
from pipeline.utils import PipelineError, log, subprocess_env
from pipeline.workspace import make_project


def dataset_for(work: Path, images_per_class: int, side: int, seed: int) -> Path:
    """The generated dataset for a repro benchmark, drawn once and reused from ``work``."""
    spec = {"images_per_class": images_per_class, "side": side, "seed": seed}
    data = work / "dataset"
    stamp = work / "dataset.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == spec and data.is_dir():
        log.info("reusing the generated dataset in %s", data)
        return data
    shutil.rmtree(data, ignore_errors=True)
    start = time.perf_counter()
    log.info("drawing %d frames per class (short side %d px)", images_per_class, side)
    draw_frames(data, images_per_class * 4, side, seed)
    log.info("drew the dataset in %.0f s", time.perf_counter() - start)
    stamp.write_text(json.dumps(spec))
    return data


def save_random_base(params: Params, data: Path, path: Path) -> None:
    """Random base weights with BatchNorm statistics of 32 of the frames in ``data``.

    Speed does not depend on the weights' values, but a purely random base computes with
    vanishing, denormal activations, which CPUs handle slowly.
    """
    import tensorflow as tf

    from pipeline.data import decode_image
    from pipeline.models import build_base, calibrate_batchnorm, preprocessing

    m, size = params.model, params.data.image_size
    files = sorted(str(f) for f in data.rglob("*.jpg"))[::50][:32]
    images = tf.stack([decode_image(tf.constant(f), size) for f in files])
    base = build_base(m.architecture, m.alpha, None)
    calibrate_batchnorm(base, preprocessing(m.architecture)(images))
    base.save_weights(path)


STAGE_LOG = re.compile(r"pipeline: (\w+) finished in ([\d.]+) s, peak RSS ([\d.]+) MiB")


def run_repro(project: Path, raw: dict, root: Path) -> tuple[float, dict[str, dict[str, float]]]:
    """``dvc repro`` of a fresh copy of the project at ``root`` in ``project`` with ``raw`` params.

    Returns the wall time (s) and, per stage, ``{"s": wall time, "rss_mb": peak memory}`` as
    the stage logged them.
    """
    parse_params(raw, "the benchmark's params")
    shutil.rmtree(project, ignore_errors=True)
    make_project(project, raw, root)
    log.info("dvc repro in %s", project)
    start = time.perf_counter()
    proc = subprocess.run(
        ["dvc", "repro"], cwd=project, env=subprocess_env(), capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise PipelineError(f"dvc repro failed in {project}:\n{proc.stderr[-3000:]}")
    stages = {
        name: {"s": float(sec), "rss_mb": float(rss)}
        for name, sec, rss in STAGE_LOG.findall(proc.stdout + proc.stderr)
    }
    return wall, stages


def bench_repro(
    raw: dict, images_per_class: int, frame_side: int, work: Path, root: Path
) -> dict[str, Any]:
    """Time ``dvc repro`` (then a no-op one) of the project at ``root`` on generated frames."""
    params = parse_params(raw)
    data = dataset_for(work, images_per_class, frame_side, params.seed)
    m = params.model
    weights = work / f"base-{m.architecture}-{m.alpha}-random.weights.h5"
    if not weights.is_file():
        save_random_base(params, data, weights)
    raw = experiment.apply(
        raw,
        {
            "data.source": "local",
            "data.path": str(data),
            "model.weights": "file",
            "model.weights_path": str(weights),
        },
    )
    project = work / "project"
    wall, stages = run_repro(project, raw, root)
    rss = peak_rss_mb(resource.RUSAGE_CHILDREN)
    noop = []
    for _ in range(3):
        start = time.perf_counter()
        again = subprocess.run(
            ["dvc", "repro"],
            cwd=project,
            env=subprocess_env(),
            capture_output=True,
            text=True,
            check=True,
        )
        noop.append(time.perf_counter() - start)
        if "Running stage" in again.stdout:
            raise PipelineError(f"the second dvc repro ran stages:\n{again.stdout[-2000:]}")
    metrics = json.loads((project / paths.METRICS).read_text())
    return {
        "images": sum(1 for _ in (project / paths.PREPARED).rglob("*.npy")),
        "frame_side": frame_side,
        "repro_s": round(wall, 1),
        "stages": stages,
        "peak_rss_mb": rss,
        "noop_repro_s": round(float(np.median(noop)), 2),
        "test_accuracy": metrics["finetune"]["accuracy"],
    }


def format_repro(r: dict[str, Any], setup: str) -> str:
    lines = [f"{setup}; {r['images']} frames, short side {r['frame_side']} px"]
    lines.append(f"dvc repro: {r['repro_s']:.0f} s ({r['repro_s'] / 60:.1f} min)")
    for name, stage in r["stages"].items():
        lines.append(f"  {name:<18} {stage['s']:>7.1f} s {stage['rss_mb']:>7.0f} MiB")
    lines.append(f"peak RSS of any stage: {r['peak_rss_mb']:.0f} MiB")
    lines.append(f"no-op dvc repro: {r['noop_repro_s']:.2f} s")
    return "\n".join(lines)


QUALITY_PHASES = ("baseline", "transfer", "finetune")


def bench_quality(raw: dict, work: Path, root: Path, reference: bool = True) -> dict[str, Any]:
    """Run the whole pipeline with ``raw`` params in a throw-away copy; collect what it reached.

    Returns val/test accuracy and macro F1 of the linear-probe baseline, the transfer-only and
    the fine-tuned model, each phase's stage wall time (s) and peak memory (MiB), the data
    stages' time and the whole ``dvc repro``'s; with ``reference``, also what the plain Keras
    guide recipe (:mod:`pipeline.tools.reference`) reaches on the same split and base weights, and
    its training time.
    """
    project = work / "project"
    wall, stages = run_repro(project, raw, root)
    metrics = json.loads((project / paths.METRICS).read_text())
    train = (project / paths.SPLIT / "train.csv").read_text().count("\n") - 1
    phases = {
        phase: {
            "val_accuracy": metrics[phase]["val_accuracy"],
            "test_accuracy": metrics[phase]["accuracy"],
            "val_macro_f1": metrics[phase]["val_macro_f1"],
            "test_macro_f1": metrics[phase]["macro_f1"],
            **stages.get(phase, {}),
        }
        for phase in QUALITY_PHASES
    }
    for way, scores in metrics["finetune"].get("tta", {}).items():  # with and without flips
        phases[f"tta {way}"] = {
            "val_accuracy": scores["val_accuracy"],
            "test_accuracy": scores["accuracy"],
            "val_macro_f1": scores["val_macro_f1"],
            "test_macro_f1": scores["macro_f1"],
        }
    params = parse_params(raw)
    if reference and backbone(params.model.architecture).reference_recipe:
        from pipeline.tools.reference import reference_run

        ref = reference_run(
            project,
            params.data.image_size,
            params.model.alpha,
            str(project / paths.BASE_WEIGHTS),
            params.seed,
        )
        phases["reference"] = {**ref, "s": ref["train_s"]}
    return {
        "images": {"train": train, "val": metrics["val_images"], "test": metrics["test_images"]},
        "classes": len(json.loads((project / paths.CLASSES).read_text())),
        "phases": phases,
        "verdicts": {p: metrics["diagnosis"][p]["verdict"] for p in ("transfer", "finetune")},
        "below_baseline": [
            p for p in ("transfer", "finetune") if metrics["diagnosis"][p]["below_baseline"]
        ],
        "stages": stages,
        "repro_s": round(wall, 1),
        "project": str(project),
    }


def format_quality(r: dict[str, Any], setup: str) -> str:
    n = r["images"]
    lines = [
        f"{setup}; {n['train']} / {n['val']} / {n['test']} train / val / test images, "
        f"{r['classes']} classes",
        f"{'phase':<10} {'val acc':>8} {'test acc':>8} {'val F1':>8} {'test F1':>8} "
        f"{'wall s':>8} {'peak MiB':>9}",
    ]

    def cell(m: dict, key: str, width: int, fmt: str) -> str:
        return f"{m[key]:>{width}{fmt}}" if key in m else f"{'-':>{width}}"

    for phase, m in r["phases"].items():
        lines.append(
            f"{phase:<10} "
            + " ".join(
                cell(m, k, 8, ".4f")
                for k in ("val_accuracy", "test_accuracy", "val_macro_f1", "test_macro_f1")
            )
            + f" {cell(m, 's', 8, '.1f')} {cell(m, 'rss_mb', 9, '.0f')}"
        )
    if "reference" in r["phases"]:
        ours = r["phases"]["transfer"]["s"] + r["phases"]["finetune"]["s"]
        lines.append(
            f"transfer + finetune stages: {ours:.0f} s; reference training: "
            f"{r['phases']['reference']['s']:.0f} s ({r['phases']['reference']['recipe']})"
        )
    other = {k: v["s"] for k, v in r["stages"].items() if k not in r["phases"]}
    lines.append("other stages: " + ", ".join(f"{k} {v:.0f} s" for k, v in other.items()))
    lines.append(f"dvc repro: {r['repro_s']:.0f} s ({r['repro_s'] / 60:.1f} min)")
    below = r["below_baseline"]
    lines.append("below the baseline on test accuracy: " + (", ".join(below) if below else "none"))
    return "\n".join(lines)
