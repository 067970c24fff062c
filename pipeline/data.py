"""Input pipelines: split manifests to batched ``tf.data`` datasets.

A dataset yields ``(images, labels)``: float32 ``(batch, height, width, 3)`` pixels in ``[0, 255]``
(whole numbers, unless augmented) and int32 ``(batch,)`` class indices into ``classes.json``.

Training and evaluation read the **prepared** images of the ``prepare`` stage
(:mod:`pipeline.stages.prepare`): every image of the splits decoded and resized once to
``data.image_size`` as ``data.resize`` says and stored as an uncompressed ``uint8``
``(height, width, 3)`` ``.npy`` array, so
an epoch reads small, ready images (a file read and a copy) instead of decoding full-size
frames. :func:`decode_image` is the one decoding path; the ``prepare`` stage and
:mod:`pipeline.tools.predict` both use it, so prepared pixels and the pixels of a new image at
prediction time are identical. Files are streamed from disk in a deterministic order for a given
seed, read in parallel and prefetched: memory holds a few batches, never the dataset.

**Augmentation** (training only) is part of the input pipeline, not of the model: a parallel,
seeded ``tf.data`` map over whole batches (:func:`augment_batch`), so that its cost overlaps the
model's steps and saved models hold no random layers. Flip, rotation, zoom and translation are
folded into one affine transform per image (one resampling instead of three, nearest-neighbour
by default), contrast and brightness are one affine map of the pixels.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf

from pipeline.params import RESIZE_TEXT, AugmentationParams, ImageSize, format_hw, image_hw
from pipeline.paths import PREPARED, RAW, SPLIT
from pipeline.utils import PipelineError, read_csv, read_json

PREPARED_DIR = PREPARED
PREPARED_INFO = "prepared.json"
PREPARED_SUFFIX = ".npy"
PREPARED_FORMAT = (
    "one .npy per image: uint8 (height, width, 3), RGB, resized bilinear with antialiasing"
)


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


def load_split(name: str, split_dir: str | Path = SPLIT, data_dir: str | Path = RAW) -> Split:
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
    split_dir: str | Path = SPLIT,
    image_size: ImageSize | None = None,
    resize: str | None = None,
) -> Split:
    """The split ``name`` as prepared images; checks they match the split, ``image_size`` and
    ``resize`` (when given).

    Raises :class:`PipelineError` saying which stage to run when ``prepared_dir`` is missing, was
    made from another version of the split, or holds images of another size or resize policy.
    """
    prepared_dir, split_dir = Path(prepared_dir), Path(split_dir)
    manifest, rows, classes = _manifest(name, split_dir)
    info_file = prepared_dir / PREPARED_INFO
    if not info_file.is_file():
        raise PipelineError(f"{info_file} not found: run the prepare stage (dvc repro prepare)")
    info = read_json(info_file)
    if image_size is not None and image_hw(info["image_size"]) != image_hw(image_size):
        raise PipelineError(
            f"{prepared_dir} holds {format_hw(info['image_size'])} px images but "
            f"{format_hw(image_size)} px are needed: run the prepare stage for the current "
            "data.image_size (dvc repro prepare)"
        )
    if resize is not None and info.get("resize", "squash") != resize:
        raise PipelineError(
            f"{prepared_dir} holds images resized by {info.get('resize', 'squash')!r}, but "
            f"data.resize is {resize!r}: run the prepare stage again (dvc repro prepare)"
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


def resize_image(img: tf.Tensor, image_size: ImageSize, resize: str = "squash") -> tf.Tensor:
    """Resize ``(h, w, 3)`` pixels to ``image_size`` as the policy ``resize`` says.

    ``squash``: to ``(height, width)`` directly. ``pad``: scaled by the largest factor that
    fits the image inside, then centred on black. ``crop``: scaled by the smallest factor that
    covers the output, then its centre cut out. Bilinear with antialiasing (every policy), then
    rounded: float32 whole-number pixels in ``[0, 255]``, ``(height, width, 3)``.
    """
    height, width = image_hw(image_size)
    if resize not in RESIZE_TEXT:
        raise ValueError(f"resize must be one of {tuple(RESIZE_TEXT)}, got {resize!r}")
    if resize == "squash":
        img = tf.image.resize(img, (height, width), method="bilinear", antialias=True)
        return tf.clip_by_value(tf.round(img), 0.0, 255.0)
    shape = tf.cast(tf.shape(img)[:2], tf.float64)
    ratios = tf.constant([height, width], tf.float64) / shape
    scale = tf.reduce_min(ratios) if resize == "pad" else tf.reduce_max(ratios)
    target = tf.cast(tf.round(shape * scale), tf.int32)
    if resize == "pad":  # round-off never overshoots the output, never below 1 pixel
        new = tf.clip_by_value(target, 1, tf.constant([height, width]))
    else:
        new = tf.maximum(target, tf.constant([height, width]))
    img = tf.image.resize(img, new, method="bilinear", antialias=True)
    img = tf.clip_by_value(tf.round(img), 0.0, 255.0)
    # centred: the extra row or column of an odd difference goes to the bottom / right
    return tf.image.resize_with_crop_or_pad(img, height, width)


def decode_image(path: tf.Tensor, image_size: ImageSize, resize: str = "squash") -> tf.Tensor:
    """Read an image file into float32 ``(height, width, 3)`` whole-number pixels in
    ``[0, 255]``: RGB, :func:`resize_image` by ``resize``, exactly the values that
    :func:`prepare_image` stores as ``uint8``."""
    raw = tf.io.read_file(path)
    img = tf.io.decode_image(raw, channels=3, expand_animations=False)
    return resize_image(img, image_size, resize)


def prepare_image(path: tf.Tensor, image_size: ImageSize, resize: str = "squash") -> tf.Tensor:
    """:func:`decode_image` as uint8 ``(height, width, 3)``: what the prepare stage stores."""
    return tf.cast(decode_image(path, image_size, resize), tf.uint8)


def prepare_images(
    paths: list[str], names: list[str], out: Path, image_size: ImageSize, resize: str = "squash"
) -> None:
    """Decode ``paths`` in parallel and save each as ``<out>/<name>.npy``, in order."""
    ds = (
        tf.data.Dataset.from_tensor_slices(tf.constant(paths, tf.string))
        .map(
            lambda p: prepare_image(p, image_size, resize),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        .prefetch(tf.data.AUTOTUNE)
    )
    done = 0
    try:
        for name, pixels in zip(names, ds.as_numpy_iterator(), strict=True):
            dest = prepared_path(out, name)
            dest.parent.mkdir(parents=True, exist_ok=True)
            np.save(dest, pixels, allow_pickle=False)
            done += 1
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as exc:
        raise PipelineError(
            f"cannot decode {paths[done]}: {exc.message.splitlines()[0]}; rerun download_data "
            "(dvc repro -f download_data), which checks and normalises every image"
        ) from None


def load_prepared_array(path: str | bytes | np.ndarray, image_size: ImageSize) -> np.ndarray:
    """The uint8 ``(height, width, 3)`` array of a prepared ``.npy`` file (NumPy's reader).

    Raises :class:`PipelineError` when the file holds another dtype or shape.
    """
    name = os.fsdecode(np.asarray(path).item())  # tf.numpy_function passes a 0-d array
    pixels = np.load(name, allow_pickle=False)
    expected = (*image_hw(image_size), 3)
    if pixels.dtype != np.uint8 or pixels.shape != expected:
        raise PipelineError(
            f"{name} holds a {pixels.dtype} array of shape {pixels.shape}, not the uint8 "
            f"{expected} that data.image_size asks for: re-run the prepare stage "
            "(dvc repro prepare)"
        )
    return pixels


def read_prepared(path: tf.Tensor, image_size: ImageSize) -> tf.Tensor:
    """Read a prepared ``.npy`` file into its uint8 ``(height, width, 3)`` pixels."""
    pixels = tf.numpy_function(
        lambda p: load_prepared_array(p, image_size), [path], tf.uint8, stateful=False
    )
    return tf.ensure_shape(pixels, (*image_hw(image_size), 3))


# Columns of the per-image uniform draws in [0, 1) that :func:`augment_batch` uses.
_FLIP, _ANGLE, _ZOOM, _SHIFT_X, _SHIFT_Y, _CONTRAST, _BRIGHTNESS = range(7)


def _affine(cfg: AugmentationParams, u: tf.Tensor, height: int, width: int) -> tf.Tensor:
    """Per image, the ``(batch, 8)`` output-to-input transforms of ImageProjectiveTransformV3.

    The composition of Keras' RandomFlip("horizontal"), RandomRotation(rotation),
    RandomZoom(zoom) and RandomTranslation(translation, translation), applied in that order:
    angle uniform in ``±rotation`` of a full turn, zoom factor uniform in ``1 ± zoom`` (> 1
    zooms out), shifts uniform in ``±translation`` of the width and height, a mirror with
    probability 1/2 (a draw below 1/2); rotation and zoom about the image centre. ``u``:
    ``(batch, 7)`` uniform draws in ``[0, 1]``, columns ``_FLIP`` ... ``_BRIGHTNESS``.
    """
    sym = 2.0 * u - 1.0  # uniform in [-1, 1)
    angle = sym[:, _ANGLE] * (cfg.rotation * 2.0 * math.pi)
    zoom = 1.0 + sym[:, _ZOOM] * cfg.zoom
    dx = sym[:, _SHIFT_X] * (cfg.translation * width)
    dy = sym[:, _SHIFT_Y] * (cfg.translation * height)
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    # input = A @ (output - shift - centre) + centre, A = zoom * rotation
    a0, a1 = zoom * tf.cos(angle), -zoom * tf.sin(angle)
    b0, b1 = zoom * tf.sin(angle), zoom * tf.cos(angle)
    px, py = -dx - cx, -dy - cy
    a2, b2 = a0 * px + a1 * py + cx, b0 * px + b1 * py + cy
    if cfg.flip:  # mirror the input column: x -> width - 1 - x
        sign = tf.where(u[:, _FLIP] < 0.5, -1.0, 1.0)
        a0, a1 = sign * a0, sign * a1
        a2 = tf.where(sign < 0, (width - 1.0) - a2, a2)
    zeros = tf.zeros_like(a0)
    return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)


def augment_batch(images: tf.Tensor, cfg: AugmentationParams, seed: tf.Tensor) -> tf.Tensor:
    """Randomly augment a batch as ``cfg`` says; the same ``seed``, the same result.

    ``images``: uint8 or float32 ``(batch, height, width, 3)`` pixels in ``[0, 255]``;
    ``seed``: a ``(2,)`` integer seed of TensorFlow's stateless random ops. Returns float32
    pixels of the same shape in ``[0, 255]``: :func:`augment_images` with ``(batch, 7)``
    uniform draws from ``seed``.
    """
    draws = tf.random.stateless_uniform(tf.stack([tf.shape(images)[0], 7]), seed)
    return augment_images(images, cfg, draws)


def augment_images(images: tf.Tensor, cfg: AugmentationParams, draws: tf.Tensor) -> tf.Tensor:
    """Augment each image of a batch by its row of ``draws`` (``(batch, 7)``, in ``[0, 1]``).

    ``images``: uint8 or float32 ``(batch, height, width, 3)`` pixels in ``[0, 255]``; returns
    float32 pixels of the same shape in ``[0, 255]``. The geometric factors of :func:`_affine`
    are one resampling (``cfg.interpolation``: nearest or bilinear) with reflected borders, in
    the images' dtype (uint8 is the cheaper), or a plain mirror when flip is the only geometric
    change. Then contrast and brightness as one affine map of each image's pixels, clipped to
    ``[0, 255]`` once: each channel's distance from its mean scaled by a factor uniform in
    ``1 ± contrast`` (Keras' RandomContrast), plus a shift uniform in ``± brightness`` of 255
    (Keras' RandomBrightness, which clips between the two). Factors of 0 (and ``flip: false``)
    leave the images untouched.
    """
    u = tf.convert_to_tensor(draws, tf.float32)
    if cfg.rotation or cfg.zoom or cfg.translation:
        height, width = int(images.shape[1]), int(images.shape[2])
        images = tf.raw_ops.ImageProjectiveTransformV3(
            images=images,
            transforms=_affine(cfg, u, height, width),
            output_shape=tf.constant([height, width]),
            fill_value=0.0,
            interpolation=cfg.interpolation.upper(),
            fill_mode="REFLECT",
        )
    elif cfg.flip:
        mirror = tf.reshape(u[:, _FLIP] < 0.5, (-1, 1, 1, 1))
        images = tf.where(mirror, tf.reverse(images, axis=[2]), images)
    x = tf.cast(images, tf.float32)
    if not (cfg.contrast or cfg.brightness):
        return x
    # x * factor + offset, per image and channel: (x - mean) * factor + mean + delta
    factor = tf.reshape(1.0 + (2.0 * u[:, _CONTRAST] - 1.0) * cfg.contrast, (-1, 1, 1, 1))
    delta = tf.reshape((2.0 * u[:, _BRIGHTNESS] - 1.0) * (cfg.brightness * 255.0), (-1, 1, 1, 1))
    offset = delta
    if cfg.contrast:
        offset = tf.reduce_mean(x, axis=(1, 2), keepdims=True) * (1.0 - factor) + delta
        x = x * factor
    return tf.clip_by_value(x + offset, 0.0, 255.0)


def make_dataset(
    split: Split,
    image_size: ImageSize,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    augment: AugmentationParams | None = None,
    resize: str = "squash",
) -> tf.data.Dataset:
    """Batched ``(images, labels)`` dataset for ``split``; reshuffled each epoch if ``shuffle``.

    Reads prepared arrays when ``split.prepared``, else decodes the image files (resized by
    ``resize``, :func:`resize_image`). Only file
    names are shuffled, so memory holds the prefetched batches, not the dataset. With
    ``augment`` (enabled), every batch is augmented by :func:`augment_batch` in a parallel map,
    with random draws that depend on ``seed`` and differ from epoch to epoch (deterministically:
    the same seed gives the same epochs).
    """

    def load(path: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        if split.prepared:
            return read_prepared(path, image_size), label
        return decode_image(path, image_size, resize), label

    def augmented(batch: tuple[tf.Tensor, tf.Tensor], seed_: tf.Tensor) -> tuple:
        return augment_batch(batch[0], augment, seed_), batch[1]

    def as_float(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return tf.cast(images, tf.float32), labels

    ds = tf.data.Dataset.from_tensor_slices(
        (tf.constant(split.paths, tf.string), tf.constant(split.labels, tf.int32))
    )
    if shuffle:
        ds = ds.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(batch_size)
    if augment is not None and augment.enabled:
        # one (2,) stateless seed per batch, new ones every epoch
        seeds = tf.data.Dataset.random(seed=seed + 1, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip(ds, seeds).map(
            augmented, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )
    else:
        ds = ds.map(as_float)
    return ds.prefetch(tf.data.AUTOTUNE)
