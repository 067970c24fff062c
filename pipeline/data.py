"""Input pipelines: split manifests to batched ``tf.data`` datasets.

A dataset yields ``(images, labels)``: float32 ``(batch, size, size, 3)`` pixels in ``[0, 255]``
and int32 ``(batch,)`` class indices into ``classes.json``. Images are decoded and resized in
parallel, in a deterministic order for a given seed, and streamed from disk.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

from pipeline.utils import PipelineError, read_csv, read_json


@dataclass(frozen=True)
class Split:
    """One split's manifest: image paths (absolute) and integer labels."""

    paths: list[str]
    labels: list[int]
    classes: list[str]

    def __len__(self) -> int:
        return len(self.paths)


def load_split(
    name: str, split_dir: str | Path = "data/split", data_dir: str | Path = "data/raw"
) -> Split:
    """Read ``<split_dir>/<name>.csv`` and ``classes.json``; resolve paths under ``data_dir``."""
    split_dir, data_dir = Path(split_dir), Path(data_dir)
    manifest = split_dir / f"{name}.csv"
    if not manifest.is_file():
        raise PipelineError(f"{manifest} not found: run the split stage first (dvc repro split)")
    classes = read_json(split_dir / "classes.json")
    index = {c: i for i, c in enumerate(classes)}
    rows = read_csv(manifest)
    unknown = sorted({r["label"] for r in rows} - set(index))
    if unknown:
        raise PipelineError(f"{manifest} has labels not in classes.json: {unknown}")
    return Split(
        paths=[str(data_dir / r["path"]) for r in rows],
        labels=[index[r["label"]] for r in rows],
        classes=list(classes),
    )


def decode_image(path: tf.Tensor, image_size: int) -> tf.Tensor:
    """Read an image file into float32 ``(size, size, 3)`` pixels in ``[0, 255]``."""
    raw = tf.io.read_file(path)
    img = tf.io.decode_image(raw, channels=3, expand_animations=False)
    img = tf.image.resize(img, (image_size, image_size), method="bilinear", antialias=True)
    return tf.clip_by_value(img, 0.0, 255.0)


def make_dataset(
    split: Split,
    image_size: int,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
) -> tf.data.Dataset:
    """Batched ``(images, labels)`` dataset for ``split``; reshuffled each epoch if ``shuffle``."""
    ds = tf.data.Dataset.from_tensor_slices(
        (tf.constant(split.paths, tf.string), tf.constant(split.labels, tf.int32))
    )
    if shuffle:
        ds = ds.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(
        lambda p, y: (decode_image(p, image_size), y),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
