"""Pooled features of the frozen base, computed once per base, image size and split.

The ``baseline`` stage computes them for the train, val and test splits and stores them in
``data/features/`` (``<split>.npy``: float32 ``(n_images, d)`` in manifest order, and
``features.json``: what they were computed from). The transfer phase, when it trains its head on
features (``transfer.base_features`` resolving to ``once``), reuses the stored train and val
features instead of running the base over the images again.

The features are those of :func:`pipeline.models.split_at_features`: preprocessing, the base in
inference mode and global average pooling, with no augmentation.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np

from pipeline import paths
from pipeline.params import Params
from pipeline.utils import PipelineError, atomic_dir, log, read_json, write_json

FEATURES_DIR = paths.FEATURES
FEATURES_INFO = "features.json"
PROBE_FILE = "probe.npz"
SPLITS = ("train", "val", "test")


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def spec(params: Params, weights: str | Path, split_dir: str | Path = paths.SPLIT) -> dict:
    """What a set of features depends on: base, weights file, image size and split manifests."""
    from pipeline.data import manifest_digest

    m = params.model
    return {
        "architecture": m.architecture,
        "alpha": m.alpha,
        "image_size": list(params.data.hw),
        "resize": params.data.resize,
        "weights_sha256": file_digest(weights),
        "splits": {s: manifest_digest(Path(split_dir) / f"{s}.csv") for s in SPLITS},
    }


def compute(
    params: Params,
    weights: str | Path,
    names: tuple[str, ...] = SPLITS,
    batch_size: int = 64,
) -> dict[str, np.ndarray]:
    """Pooled base features of the prepared images of each split in ``names``.

    Returns ``{split: float32 (n_images, d)}``, rows in manifest order.
    """
    from pipeline.data import load_prepared
    from pipeline.models import classifier_from_params, split_at_features
    from pipeline.training import extract_features, inference_fn

    size = params.data.image_size
    splits = {n: load_prepared(n, image_size=size) for n in names}
    model = classifier_from_params(params, len(splits[names[0]].classes), weights=weights)
    forward = inference_fn(split_at_features(model)[0])
    start = time.perf_counter()
    out = {n: extract_features(forward, s, size, batch_size) for n, s in splits.items()}
    seconds = time.perf_counter() - start
    total = sum(len(s) for s in splits.values())
    log.info(
        "base features of %d images computed in %.1f s (%.0f images/s), %d values each",
        total,
        seconds,
        total / max(seconds, 1e-9),
        next(iter(out.values())).shape[1],
    )
    return out


def save(
    features: dict[str, np.ndarray],
    info: dict,
    out: str | Path = FEATURES_DIR,
    probe: dict[str, np.ndarray] | None = None,
) -> None:
    """Write ``features``, ``info`` (:func:`spec`) and the probe's head to ``out`` atomically."""
    with atomic_dir(out) as tmp:
        for name, x in features.items():
            np.save(tmp / f"{name}.npy", x.astype(np.float32))
        if probe is not None:
            np.savez(tmp / PROBE_FILE, **probe)
        write_json(tmp / FEATURES_INFO, info)


def load_probe(folder: str | Path = FEATURES_DIR) -> dict[str, np.ndarray]:
    """The baseline's probe as a softmax layer: ``{"kernel": (d, k), "bias": (k,)}``."""
    path = Path(folder) / PROBE_FILE
    if not path.is_file():
        raise PipelineError(f"{path} not found: run the baseline stage first (dvc repro baseline)")
    with np.load(path) as data:
        return {k: data[k] for k in ("kernel", "bias")}


def load(
    expected: dict, names: tuple[str, ...], folder: str | Path = FEATURES_DIR
) -> dict[str, np.ndarray] | None:
    """The stored features of ``names`` if they were computed from ``expected`` (:func:`spec`).

    Returns ``None`` (and says why in the log) when the folder is missing or stale.
    """
    folder = Path(folder)
    info_file = folder / FEATURES_INFO
    if not info_file.is_file():
        log.info("%s not found: computing the base features", info_file)
        return None
    if read_json(info_file) != expected:
        log.warning("%s was computed from other inputs: computing the base features", folder)
        return None
    return {n: np.load(folder / f"{n}.npy") for n in names}
