"""Stage ``prepare``: decode and resize every image of the splits once, for all epochs to read.

Reads ``data.image_size`` and ``data.resize``. For each image in
``data/split/{train,val,test}.csv`` writes ``data/prepared/<path>.npy``: the image decoded to RGB
and resized (bilinear, antialiased; squashed, padded or cropped, :func:`pipeline.data.resize_image`)
to ``(height, width, 3)`` uint8, exactly as :func:`pipeline.data.decode_image` does at prediction
time. ``data/prepared/prepared.json`` records the size, the policy, the format and, per split, the
image count and the SHA-256 of the manifest it was made from, which the training stages check.

Decoding a full-size video frame costs about as much as a training step of a small model;
doing it once here means an epoch only reads ready arrays. Images are decoded in parallel and
written as they come, so memory holds a few images, not the dataset. Changing
``data.image_size`` reruns this stage (and everything that reads its output).

Usage: ``python -m pipeline.stages.prepare [--params params.yaml] [--split data/split]
[--data data/raw] [--out data/prepared]``
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from pipeline import paths
from pipeline.params import format_hw, load_params
from pipeline.utils import PipelineError, atomic_dir, log, run_stage, write_json

SPLITS = ("train", "val", "test")


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Decode and resize the split images once.")
    parser.add_argument("--params", default=paths.PARAMS)
    parser.add_argument("--split", default=paths.SPLIT, type=Path)
    parser.add_argument("--data", default=paths.RAW, type=Path)
    parser.add_argument("--out", default=paths.PREPARED, type=Path)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)

    data = load_params(args.params).data
    size, resize = data.image_size, data.resize
    from pipeline.data import (
        PREPARED_FORMAT,
        PREPARED_INFO,
        load_split,
        manifest_digest,
        prepare_images,
    )

    splits = {name: load_split(name, args.split, args.data) for name in SPLITS}
    missing = [p for s in splits.values() for p in s.paths if not Path(p).is_file()]
    if missing:
        raise PipelineError(
            f"{len(missing)} image(s) of the split are missing, e.g. {missing[0]}: "
            "run download_data and split again (dvc repro split)"
        )
    start = time.perf_counter()
    with atomic_dir(args.out) as tmp:
        info: dict = {
            "image_size": list(data.hw),
            "resize": resize,
            "format": PREPARED_FORMAT,
            "splits": {},
        }
        for name, split in splits.items():
            prepare_images(split.paths, split.names, tmp, size, resize)
            info["splits"][name] = {
                "images": len(split),
                "sha256": manifest_digest(args.split / f"{name}.csv"),
            }
        write_json(tmp / PREPARED_INFO, info)
    n = sum(len(s) for s in splits.values())
    seconds = time.perf_counter() - start
    log.info(
        "prepared %d images at %s px (%s) in %.1f s (%.0f images/s) in %s",
        n,
        format_hw(size),
        resize,
        seconds,
        n / max(seconds, 1e-9),
        args.out,
    )


if __name__ == "__main__":
    run_stage(main)
