"""``data.source: sample``: the generated offline dataset (no network needed).

Four classes in the layout of the Kaggle Tom and Jerry set (see
:data:`pipeline.synthetic.SCENE_CLASSES`), written as JPEG files of mixed sizes, shapes and
qualities. The same ``seed`` and ``data.sample`` params give byte-identical files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.sources import DataSource
from pipeline.synthetic import SCENE_CLASSES, draw_scene

# Frame shapes of the generated images (width / height), like frames of different videos.
ASPECTS = (16 / 9, 4 / 3, 1.0, 3 / 4)


class SampleSource(DataSource):
    """Draws ``data.sample.images_per_class`` images of each class."""

    name = "sample"

    def fetch(self, out: Path) -> dict[str, Any]:
        cfg = self.params.data.sample
        counts = {}
        for k, cls in enumerate(SCENE_CLASSES):
            # One stream per class, so changing the class count does not reshuffle the others.
            rng = np.random.default_rng([self.params.seed, k])
            (out / cls).mkdir(parents=True)
            for i in range(cfg.images_per_class):
                short = int(rng.integers(cfg.min_side, cfg.max_side + 1))
                aspect = ASPECTS[int(rng.integers(0, len(ASPECTS)))]
                width, height = (
                    (round(short * aspect), short)
                    if aspect >= 1
                    else (short, round(short / aspect))
                )
                img = draw_scene(rng, cls, width, height)
                img.save(out / cls / f"frame{i:05d}.jpg", quality=int(rng.integers(80, 96)))
            counts[cls] = cfg.images_per_class
        return {"source": "sample", "seed": self.params.seed, "images": counts}
