"""Input pipelines: split manifests to batched ``tf.data`` datasets.

A dataset yields ``(images, labels)``: float32 ``(batch, size, size, 3)`` pixels in ``[0, 255]``
(whole numbers) and int32 ``(batch,)`` class indices into ``classes.json``.

Training and evaluation read the **prepared** images of the ``prepare`` stage
(:mod:`pipeline.prepare`): every image of the splits decoded and resized once to
``data.image_size`` and stored as an uncompressed ``uint8`` ``(size, size, 3)`` ``.npy`` array, so
an epoch reads small, ready images (a file read and a copy) instead of decoding full-size
frames. :func:`decode_image` is the one decoding path; the ``prepare`` stage and
:mod:`pipeline.predict` both use it, so prepared pixels and the pixels of a new image at
prediction time are identical. Files are streamed from disk in a deterministic order for a given
seed, read in parallel and prefetched: memory holds a few batches, never the dataset.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import tensorflow as tf

from pipeline.utils import PipelineError, read_csv, read_json

PREPARED_DIR = Path("data/prepared")
PREPARED_INFO = "prepared.json"
PREPARED_SUFFIX = ".npy"


@dataclass(frozen=True)
class Split:
    """One split's manifest: the files to read, integer labels and the class names.

    ``paths`` are raw image files, or prepared ``.npy`` arrays when ``prepared`` is true;
    ``names`` are the manifest's paths (relative to ``data/raw``), in the same order.
    """

    paths: list[str]
    labels: list[int]
    classes: list[str]
    names: list[str] = field(default_factory=list)
    prepared: bool = False

    def __len__(self) -> int:
        return len(self.paths)


def _manifest(name: str, split_dir: Path) -> tuple[Path, list[dict[str, str]], list[str]]:
    manifest = split_dir / f"{name}.csv"
    if not manifest.is_file():
        raise PipelineError(f"{manifest} not found: run the split stage first (dvc repro split)")
    classes = read_json(split_dir / "classes.json")
    rows = read_csv(manifest)
    unknown = sorted({r["label"] for r in rows} - set(classes))
    if unknown:
        raise PipelineError(f"{manifest} has labels not in classes.json: {unknown}")
    return manifest, rows, list(classes)


def load_split(
    name: str, split_dir: str | Path = "data/split", data_dir: str | Path = "data/raw"
) -> Split:
    """Read ``<split_dir>/<name>.csv`` and ``classes.json``; resolve paths under ``data_dir``."""
    split_dir, data_dir = Path(split_dir), Path(data_dir)
    _, rows, classes = _manifest(name, split_dir)
    index = {c: i for i, c in enumerate(classes)}
    return Split(
        paths=[str(data_dir / r["path"]) for r in rows],
        labels=[index[r["label"]] for r in rows],
        classes=classes,
        names=[r["path"] for r in rows],
    )


def manifest_digest(path: str | Path) -> str:
    """SHA-256 of a split manifest: ties prepared images to the split they were made from."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def prepared_path(prepared_dir: str | Path, name: str) -> Path:
    """Where the prepared array of manifest path ``name`` lives (``<dir>/<name>.npy``)."""
    return Path(prepared_dir) / f"{name}{PREPARED_SUFFIX}"


def load_prepared(
    name: str,
    prepared_dir: str | Path = PREPARED_DIR,
    split_dir: str | Path = "data/split",
    image_size: int | None = None,
) -> Split:
    """The split ``name`` as prepared images; checks they match the split and ``image_size``.

    Raises :class:`PipelineError` saying which stage to run when ``prepared_dir`` is missing, was
    made from another version of the split, or holds images of another size.
    """
    prepared_dir, split_dir = Path(prepared_dir), Path(split_dir)
    manifest, rows, classes = _manifest(name, split_dir)
    info_file = prepared_dir / PREPARED_INFO
    if not info_file.is_file():
        raise PipelineError(f"{info_file} not found: run the prepare stage (dvc repro prepare)")
    info = read_json(info_file)
    if image_size is not None and info["image_size"] != image_size:
        raise PipelineError(
            f"{prepared_dir} holds {info['image_size']} px images but {image_size} px are "
            "needed: run the prepare stage for the current data.image_size (dvc repro prepare)"
        )
    if info["splits"].get(name, {}).get("sha256") != manifest_digest(manifest):
        raise PipelineError(
            f"{prepared_dir} was prepared from another version of {manifest}: run the prepare "
            "stage again (dvc repro prepare)"
        )
    index = {c: i for i, c in enumerate(classes)}
    return Split(
        paths=[str(prepared_path(prepared_dir, r["path"])) for r in rows],
        labels=[index[r["label"]] for r in rows],
        classes=classes,
        names=[r["path"] for r in rows],
        prepared=True,
    )


def decode_image(path: tf.Tensor, image_size: int) -> tf.Tensor:
    """Read an image file into float32 ``(size, size, 3)`` whole-number pixels in ``[0, 255]``.

    RGB, resized (bilinear, antialiased) to a square, rounded: exactly the values that
    :func:`prepare_image` stores as ``uint8``.
    """
    raw = tf.io.read_file(path)
    img = tf.io.decode_image(raw, channels=3, expand_animations=False)
    img = tf.image.resize(img, (image_size, image_size), method="bilinear", antialias=True)
    return tf.clip_by_value(tf.round(img), 0.0, 255.0)


def prepare_image(path: tf.Tensor, image_size: int) -> tf.Tensor:
    """:func:`decode_image` as uint8 ``(size, size, 3)``: what the prepare stage stores."""
    return tf.cast(decode_image(path, image_size), tf.uint8)


def read_prepared(path: tf.Tensor, image_size: int) -> tf.Tensor:
    """Read a prepared ``.npy`` (uint8 ``(size, size, 3)``) into float32 pixels in ``[0, 255]``.

    The array is the file's last ``size * size * 3`` bytes (after the ``.npy`` header).
    """
    raw = tf.io.read_file(path)
    n = image_size * image_size * 3
    pixels = tf.io.decode_raw(tf.strings.substr(raw, tf.strings.length(raw) - n, n), tf.uint8)
    return tf.cast(tf.reshape(pixels, (image_size, image_size, 3)), tf.float32)


def make_dataset(
    split: Split,
    image_size: int,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
) -> tf.data.Dataset:
    """Batched ``(images, labels)`` dataset for ``split``; reshuffled each epoch if ``shuffle``.

    Reads prepared arrays when ``split.prepared``, else decodes the image files. Only file
    names are shuffled, so memory holds the prefetched batches, not the dataset.
    """
    read = read_prepared if split.prepared else decode_image
    ds = tf.data.Dataset.from_tensor_slices(
        (tf.constant(split.paths, tf.string), tf.constant(split.labels, tf.int32))
    )
    if shuffle:
        ds = ds.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(
        lambda p, y: (read(p, image_size), y),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
