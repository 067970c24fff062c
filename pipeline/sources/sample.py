"""``data.source: sample``: the generated offline dataset (no network needed).

Four classes in the layout of the Kaggle Tom and Jerry set (see
:data:`pipeline.synthetic.SCENE_CLASSES`), written as JPEG files of mixed sizes, shapes and
qualities. The same ``seed`` and ``data.sample`` params give byte-identical files, however many
processes draw them.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.params import SampleDataParams
from pipeline.sources import DataSource
from pipeline.synthetic import SCENE_CLASSES, draw_scene

# Frame shapes of the generated images (width / height), like frames of different videos.
ASPECTS = (16 / 9, 4 / 3, 1.0, 3 / 4)
# Below this many pixels in all, drawing in one process beats starting a pool.
PARALLEL_MIN_PIXELS = 50_000_000


def write_class(seed: int, k: int, cls: str, cfg: SampleDataParams, out: Path) -> int:
    """Draw class number ``k`` (``cls``) into ``out/cls/``; return the number of images.

    Each class has its own random stream, so classes can be drawn in any order or in parallel,
    and changing the class count does not reshuffle the others.
    """
    rng = np.random.default_rng([seed, k])
    (out / cls).mkdir(parents=True)
    for i in range(cfg.images_per_class):
        short = int(rng.integers(cfg.min_side, cfg.max_side + 1))
        aspect = ASPECTS[int(rng.integers(0, len(ASPECTS)))]
        width, height = (
            (round(short * aspect), short) if aspect >= 1 else (short, round(short / aspect))
        )
        img = draw_scene(rng, cls, width, height)
        img.save(out / cls / f"frame{i:05d}.jpg", quality=int(rng.integers(80, 96)))
    return cfg.images_per_class


class SampleSource(DataSource):
    """Draws ``data.sample.images_per_class`` images of each class."""

    name = "sample"

    def fetch(self, out: Path) -> dict[str, Any]:
        cfg = self.params.data.sample
        seed = self.params.seed
        jobs = [(seed, k, cls, cfg, out) for k, cls in enumerate(SCENE_CLASSES)]
        # mean area of a frame (short side squared, times the mean aspect ratio of ASPECTS)
        pixels = len(jobs) * cfg.images_per_class * ((cfg.min_side + cfg.max_side) / 2) ** 2 * 1.3
        workers = min(len(jobs), os.cpu_count() or 1)
        if workers > 1 and pixels >= PARALLEL_MIN_PIXELS:
            ctx = multiprocessing.get_context("spawn")  # no fork after threads have started
            with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
                counts = list(pool.map(write_class, *zip(*jobs, strict=True)))
        else:
            counts = [write_class(*job) for job in jobs]
        return {
            "source": "sample",
            "seed": seed,
            "images": dict(zip(SCENE_CLASSES, counts, strict=True)),
        }
