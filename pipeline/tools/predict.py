"""Classify image files with the trained model: ``python -m pipeline.tools.predict PATH...``.

PATHs are image files or folders (searched recursively for image files). Every image goes through
the same decoding as in training and evaluation (:func:`pipeline.data.decode_image`: RGB,
bilinear antialiased resize to the model's input shape, float32 pixels in ``[0, 255]``; the model
rescales them itself), in batches. Output, on stdout: a table (default), JSON or CSV with one
row per file: the predicted class, its probability (``confidence``) and the ``--top-k`` most
probable classes. A file that cannot be read or decoded gets an error row (and a line on stderr)
instead of stopping the run. A progress line goes to stderr for more than one batch of files.

Exit status: 0 when at least one file was classified, 1 when none could be, 2 for usage errors
(no model, no class names, a model that does not match the class names).

Images are resized as ``data.resize`` of ``--params`` says, and averaged with their mirror
images when its ``evaluate.tta`` is ``flip``: the settings the model was trained and evaluated
with.

Usage: ``python -m pipeline.tools.predict [--model models/finetune/model.keras]
[--classes data/split/classes.json] [--params params.yaml] [--format table|json|csv]
[--top-k 3] PATH...``
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import numpy as np

if TYPE_CHECKING:
    import keras

from pipeline.paths import CLASSES, FINETUNED_MODEL, PARAMS

DEFAULT_MODEL = FINETUNED_MODEL
DEFAULT_CLASSES = CLASSES
FORMATS = ("table", "json", "csv")
EXIT_OK, EXIT_NOTHING_PREDICTED, EXIT_USAGE = 0, 1, 2
_TF_FUNCTION_PREFIX = re.compile(r"\{\{function_node [^}]*\}\}\s*")


class UsageError(Exception):
    """A problem with the command line or the model files (exit status 2)."""


@dataclass
class Prediction:
    """One input file's result: ``top_k`` as ``(class, probability)``, most probable first."""

    file: str
    top_k: list[tuple[str, float]] = field(default_factory=list)
    error: str | None = None

    @property
    def predicted(self) -> str | None:
        return self.top_k[0][0] if self.top_k else None

    @property
    def confidence(self) -> float | None:
        return self.top_k[0][1] if self.top_k else None

    def to_dict(self) -> dict:
        return {
            "file": self.file,
            "predicted": self.predicted,
            "confidence": self.confidence,
            "top_k": [{"class": c, "probability": p} for c, p in self.top_k],
            "error": self.error,
        }


def expand_paths(paths: Sequence[str]) -> list[tuple[str, str | None]]:
    """Files to classify, in argument order: ``(path, error)``, ``error`` ``None`` when it exists.

    A folder contributes its image files (recursively, sorted; hidden entries and symlinks
    skipped); a file is taken as given, whatever its extension.
    """
    from pipeline.sources import image_files

    out: list[tuple[str, str | None]] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            files = image_files(p)
            if not files:
                out.append((raw, "folder holds no image files"))
            out.extend((str(f), None) for f in files)
        elif p.is_file():
            out.append((raw, None))
        elif p.exists():
            out.append((raw, "not a regular file"))
        else:
            out.append((raw, "no such file or folder"))
    return out


def top_k(proba: np.ndarray, classes: Sequence[str], k: int) -> list[tuple[str, float]]:
    """The ``k`` most probable classes of one ``(n_classes,)`` probability vector, rounded."""
    order = np.argsort(-proba, kind="stable")[:k]
    return [(classes[i], round(float(proba[i]), 4)) for i in order]


class Progress:
    """A minimal progress line on stderr: rewritten in place on a terminal, else every 10%."""

    def __init__(self, total: int, enabled: bool, stream: TextIO | None = None) -> None:
        stream = sys.stderr if stream is None else stream
        self.total, self.enabled, self.stream = total, enabled and total > 0, stream
        self.done, self._last_decile = 0, 0
        self._tty = stream.isatty()

    def update(self, n: int) -> None:
        if not self.enabled:
            return
        self.done += n
        line = f"predict: {self.done}/{self.total} files ({100 * self.done // self.total}%)"
        if self._tty:
            self.stream.write(f"\r{line}")
            self.stream.flush()
        elif (decile := 10 * self.done // self.total) > self._last_decile:
            self._last_decile = decile
            self.stream.write(line + "\n")

    def close(self) -> None:
        if self.enabled and self._tty:
            self.stream.write("\n")


def _batches(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def predict_files(
    model: keras.Model,
    classes: Sequence[str],
    files: list[tuple[str, str | None]],
    *,
    k: int = 3,
    batch_size: int = 32,
    progress: bool = True,
    resize: str = "squash",
    tta: str = "none",
) -> list[Prediction]:
    """Classify ``files`` (from :func:`expand_paths`) in batches; one :class:`Prediction` each.

    Decoding is :func:`pipeline.data.decode_image` at the model's input size with the policy
    ``resize`` (``data.resize``), exactly as the prepare stage resizes; ``tta``: the test-time
    augmentation (``evaluate.tta``, :func:`pipeline.models.with_tta`). A file it cannot read or
    decode gets ``error`` set and no ``top_k``.
    """
    import tensorflow as tf

    from pipeline.data import decode_image
    from pipeline.models import input_hw, with_tta

    size, model = input_hw(model), with_tta(model, tta)
    decode = tf.function(
        lambda p: decode_image(p, size, resize), input_signature=[tf.TensorSpec([], tf.string)]
    )
    results = [Prediction(f, error=err) for f, err in files]
    todo = [r for r in results if r.error is None]
    bar = Progress(len(todo), progress and len(todo) > batch_size)
    for batch in _batches(todo, batch_size):
        images, ok = [], []
        for r in batch:
            try:
                images.append(decode(tf.constant(r.file)).numpy())
                ok.append(r)
            except tf.errors.OpError as exc:
                message = _TF_FUNCTION_PREFIX.sub("", exc.message or "").strip()
                r.error = message.splitlines()[0] if message else type(exc).__name__
        if images:
            proba = np.asarray(model.predict_on_batch(np.stack(images)))
            for r, p in zip(ok, proba, strict=True):
                r.top_k = top_k(p, classes, k)
        bar.update(len(batch))
    bar.close()
    return results


def format_results(results: Sequence[Prediction], fmt: str, k: int) -> str:
    """Render ``results`` as ``table``, ``json`` or ``csv`` text (ends with a newline)."""
    if fmt == "json":
        return json.dumps([r.to_dict() for r in results], indent=2) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["file", "predicted", "confidence", "top_k", "error"])
        for r in results:
            writer.writerow(
                [
                    r.file,
                    r.predicted or "",
                    "" if r.confidence is None else f"{r.confidence:.4f}",
                    ";".join(f"{c}:{p:.4f}" for c, p in r.top_k),
                    r.error or "",
                ]
            )
        return buf.getvalue()
    header = ["file", "predicted", "confidence", f"top-{k}"]
    rows = [
        [r.file, "ERROR", "", r.error or ""]
        if r.error
        else [
            r.file,
            r.predicted or "",
            f"{r.confidence:.4f}",
            ", ".join(f"{c} {p:.4f}" for c, p in r.top_k),
        ]
        for r in results
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n"


def load_classes(path: Path) -> list[str]:
    """Class names in the model's output order (``classes.json``: a JSON list of strings)."""
    if not path.is_file():
        raise UsageError(
            f"{path} not found: run the pipeline first (`dvc repro`) or pass --classes with a "
            "JSON list of the class names in the model's output order"
        )
    try:
        classes = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise UsageError(f"{path} must hold a JSON list of class names")
    return classes


def load_resize_tta(path: Path) -> tuple[str, str]:
    """``data.resize`` and ``evaluate.tta`` of the params file ``path`` (the defaults when
    there is none); an invalid file is a :class:`UsageError`."""
    from pipeline.params import Params, ParamsError, load_params

    if not path.is_file():
        defaults = Params()
        return defaults.data.resize, defaults.evaluate.tta
    try:
        params = load_params(path)
    except ParamsError as exc:
        raise UsageError(str(exc)) from None
    return params.data.resize, params.evaluate.tta


def load_classifier(path: Path, n_classes: int) -> keras.Model:
    """Load the Keras classifier (safe mode) and check it has ``n_classes`` outputs."""
    if not path.is_file():
        raise UsageError(
            f"{path} not found: train the model first (`dvc repro`) or pass --model with a "
            "saved .keras classifier"
        )
    from pipeline.models import load_model

    try:
        model = load_model(path)
    except Exception as exc:  # Keras raises ValueError/OSError/zipfile errors for bad files
        raise UsageError(f"{path} is not a loadable Keras model: {exc}") from None
    if int(model.output_shape[-1]) != n_classes:
        raise UsageError(
            f"{path} predicts {model.output_shape[-1]} classes but the class names list "
            f"{n_classes}: pass the matching --classes"
        )
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.tools.predict",
        description="Classify image files or folders with the trained model.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="a .keras classifier")
    parser.add_argument(
        "--classes", type=Path, default=DEFAULT_CLASSES, help="JSON list of class names"
    )
    parser.add_argument("--format", choices=FORMATS, default="table")
    parser.add_argument("--top-k", type=int, default=3, help="most probable classes to list")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    parser.add_argument(
        "--params",
        type=Path,
        default=Path(PARAMS),
        help="the params the model was trained with: data.resize and evaluate.tta are read "
        "from it (absent: squash, no test-time augmentation)",
    )
    args = parser.parse_args(argv)
    if args.top_k < 1 or args.batch_size < 1:
        parser.error("--top-k and --batch-size must be at least 1")

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        classes = load_classes(args.classes)
        model = load_classifier(args.model, len(classes))
        resize, tta = load_resize_tta(args.params)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    k = min(args.top_k, len(classes))
    results = predict_files(
        model,
        classes,
        expand_paths(args.paths),
        k=k,
        batch_size=args.batch_size,
        progress=not args.no_progress,
        resize=resize,
        tta=tta,
    )
    sys.stdout.write(format_results(results, args.format, k))
    for r in results:
        if r.error:
            print(f"error: {r.file}: {r.error}", file=sys.stderr)
    n_ok = sum(r.error is None for r in results)
    if n_ok == 0:
        print(f"error: none of {len(results)} file(s) could be classified", file=sys.stderr)
        return EXIT_NOTHING_PREDICTED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
