"""Benchmarks: where an epoch's time goes, and how long the whole pipeline takes.

``python -m pipeline.tools.bench steps`` measures, in one process, on the model and image size of
``params.yaml`` (with ``--profile`` and ``--set``, below) and on freshly drawn frames:

* the **forward** pass on an in-memory batch: the model's ceiling, images/s;
* the **input pipeline**: decoding and resizing the frames (what a naive pipeline pays every
  epoch), and reading the prepared arrays (what an epoch pays here);
* the **transfer** phase: a training step of the whole model without augmentation on an
  in-memory batch (the model's own step throughput) against an epoch over the prepared images,
  without augmentation and with the configured augmentation; the base features computed once,
  and (with augmentation) those of augmented images, one view of ``transfer.augmented_views``;
  then a head epoch on the features and one on augmented views;
* the **fine-tune** phase: its step throughput against epochs over the prepared images, without
  and with augmentation; then, with the frozen activations computed once
  (``finetune.frozen_activations``), the frozen bottom's pass over the images (per view) and an
  epoch of the unfrozen top on those activations (each image's own and, with the flip on, its
  mirror's, one drawn per epoch);
* the peak resident memory of the process.

Each rate is printed with its ratio to the forward ceiling; each epoch also as a ratio to its
own step throughput (``>= 0.9`` without augmentation means the input pipeline is not the
bottleneck; ``>= 0.8`` is the target with augmentation). Weights are
random, with the BatchNorm statistics of the frames: speed does not depend on the weights'
values, but a purely random network's vanishing activations would compute on slow denormal
floats.

``python -m pipeline.tools.bench repro`` times a whole ``dvc repro`` in a throw-away copy of the
project on a generated dataset of a given size (``--preset tom-and-jerry``: 5,480 frames with a
720 px short side and the CPU profile ``profiles/tom-and-jerry.yaml``), the peak memory of any
stage, and then the no-op ``dvc repro``.

``python -m pipeline.tools.bench quality --profile tom-and-jerry --data DIR --weights FILE`` is the
real-data check: the whole pipeline with a profile on a local folder of class sub-folders, in a
throw-away copy, printing the val/test accuracy and macro F1 of the linear-probe baseline, the
transfer-only and the fine-tuned model with each phase's wall time and peak memory, and the same
for the plain Keras guide recipe (:mod:`pipeline.tools.reference`) on the same split and weights.

``--profile NAME`` applies ``profiles/NAME.yaml`` and ``--set key=value`` any param, validated
as ``make experiment`` validates them.

Results go to stdout and, with ``--out``, to a JSON file. ``docs/benchmarks.md`` has the numbers
of this machine and how to reproduce them.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from pipeline import paths
from pipeline.architectures import backbone
from pipeline.params import Params, format_hw, read_yaml
from pipeline.tools import experiment
from pipeline.tools.bench_runs import bench_quality, bench_repro, format_quality, format_repro
from pipeline.tools.bench_steps import bench_steps, format_steps
from pipeline.utils import PipelineError, setup_logging, write_json

# The Kaggle "Tom and Jerry image classification" set: 5,478 frames, mostly 1280x720, with the
# params of the CPU profile (profiles/tom-and-jerry.yaml).
PRESETS: dict[str, dict[str, Any]] = {
    "tom-and-jerry": {"images_per_class": 1370, "frame_side": 720, "profile": "tom-and-jerry"},
}


def machine() -> dict[str, Any]:
    import tensorflow as tf

    return {
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "gpus": len(tf.config.list_physical_devices("GPU")),
    }


def describe(params: Params) -> str:
    m = params.model
    alpha = f" {m.alpha}" if backbone(m.architecture).is_mobilenet else ""
    return (
        f"{m.architecture}{alpha} at {format_hw(params.data.image_size)} px, batch "
        f"{params.transfer.batch_size}/{params.finetune.batch_size}, last "
        f"{params.finetune.unfreeze_layers} layers fine-tuned"
    )


def _absolute(values: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """``values`` with the paths under ``keys`` made absolute (the copy runs elsewhere)."""
    return {
        k: str(Path(v).resolve()) if k in keys and isinstance(v, str) and v else v
        for k, v in values.items()
    }


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("steps", "repro", "quality"))
    parser.add_argument("--params", default=paths.PARAMS)
    parser.add_argument("--preset", choices=sorted(PRESETS))
    parser.add_argument("--profile", help="apply profiles/<name>.yaml (after the preset's)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a param"
    )
    parser.add_argument("--data", type=Path, help="quality: a folder of class sub-folders")
    parser.add_argument("--weights", type=Path, help="quality: a Keras weights file of the base")
    parser.add_argument(
        "--no-reference", action="store_true", help="quality: skip the plain Keras reference"
    )
    parser.add_argument("--images", type=int, help="steps: frames to draw (default 256)")
    parser.add_argument("--images-per-class", type=int, help="repro: frames per class (4 classes)")
    parser.add_argument("--frame-side", type=int, help="short side of the frames, px")
    parser.add_argument(
        "--rounds", type=int, default=3, help="steps: turns of step and epoch measurements"
    )
    parser.add_argument(
        "--work", type=Path, help="working folder (repro: reused for the dataset; default: temp)"
    )
    parser.add_argument("--out", type=Path, help="also write the results to this JSON file")
    return parser


def resolve_params(args: argparse.Namespace, preset: dict[str, Any]) -> tuple[dict, Params]:
    """The raw params (params.yaml with the preset's profile, ``--profile``, ``--data``,
    ``--weights`` and ``--set`` applied, paths made absolute) and their validated form."""
    sets = list(args.set)
    if args.data:
        sets += ["data.source=local", f"data.path={args.data.resolve()}"]
    if args.weights:
        sets += ["model.weights=file", f"model.weights_path={args.weights.resolve()}"]
    values, params = experiment.resolve(args.profile or preset.get("profile"), sets, args.params)
    values = _absolute(values, ("data.path", "model.weights_path"))
    return experiment.apply(read_yaml(args.params) or {}, values), params


def run_benchmark(
    args: argparse.Namespace, preset: dict[str, Any], raw: dict, params: Params, work: Path
) -> tuple[dict[str, Any], str]:
    """Run the benchmark ``args.what``; return its results and their printed table."""
    setup = describe(params)
    side = args.frame_side or preset.get("frame_side", 720)
    if args.what == "steps":
        with tempfile.TemporaryDirectory(dir=work) as tmp:
            result = bench_steps(params, args.images or 256, side, Path(tmp), args.rounds)
        return result, format_steps(result, setup)
    if args.what == "repro":
        per_class = args.images_per_class or preset.get("images_per_class", 250)
        result = bench_repro(raw, per_class, side, work, Path.cwd())
        return result, format_repro(result, setup)
    result = bench_quality(raw, work, Path.cwd(), reference=not args.no_reference)
    return result, format_quality(result, setup)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    setup_logging()
    preset = PRESETS.get(args.preset or "", {})
    try:
        raw, params = resolve_params(args, preset)
    except (experiment.ExperimentError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        result, text = run_benchmark(args, preset, raw, params, work)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.work is None and args.what == "steps":
            shutil.rmtree(work, ignore_errors=True)
    result = {"benchmark": args.what, "setup": describe(params), "machine": machine(), **result}
    print(text)
    if args.out:
        write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
