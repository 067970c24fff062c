"""Small shared helpers: atomic outputs, JSON/CSV writing, seeding, stage entry points."""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import random
import resource
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("pipeline")


class PipelineError(RuntimeError):
    """A failure the user can fix; the stage prints the message and exits with status 1."""


def subprocess_env() -> dict[str, str]:
    """The environment for ``dvc`` and stage subprocesses: this interpreter's bin first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def setup_logging() -> None:
    logging.basicConfig(
        level=os.environ.get("PIPELINE_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def _remove_leftovers(target: Path) -> None:
    """Remove temporaries of ``target`` left by a run that was killed (SIGKILL, power loss)."""
    name = target.name
    for pattern in (f".{name}.tmp-*", f".tmp-*-{name}", f".{name}.old-*"):
        for stale in target.parent.glob(pattern):
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; on success replace ``target`` with it.

    On any exception the temporary folder is removed and ``target`` is left as it was, so a
    failed or interrupted stage never leaves a half-written output behind.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; outputs are ordinary folders
    try:
        yield tmp
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(target: str | Path, mode: str = "w") -> Iterator[Any]:
    """Open a temporary file beside ``target`` and move it into place when the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
            yield fh
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path (same folder, same suffixes) that replaces ``target`` on success.

    For writers that need a file name rather than a file object (e.g. ``model.save``).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(target)
    tmp = target.with_name(f".tmp-{os.getpid()}-{target.name}")
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """A Markdown table as lines; cells are ``str()``-ed and their ``|`` escaped."""

    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return lines


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented, key-sorted JSON (stable diffs), atomically."""
    with atomic_file(path) as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.write("\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_csv(path: str | Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Write a CSV file atomically."""
    with atomic_file(path) as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def read_csv(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def seed_everything(seed: int, *, deterministic: bool = True) -> None:
    """Seed Python, NumPy and (if imported) TensorFlow/Keras; TF op determinism if requested."""
    random.seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    import numpy as np

    np.random.seed(seed)
    if "tensorflow" in sys.modules or "keras" in sys.modules:
        import keras
        import tensorflow as tf

        keras.utils.set_random_seed(seed)
        if deterministic:
            tf.config.experimental.enable_op_determinism()


class Terminated(BaseException):
    """Raised in the main thread when the process receives SIGTERM."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated


def _stage_name(main: Callable[[], None]) -> str:
    module = main.__module__
    if module == "__main__":  # python -m pipeline.<stage>
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        module = spec.name if spec else Path(sys.argv[0]).stem
    return module.rpartition(".")[2]


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's ``main`` and turn expected failures into a one-line message and exit 1.

    SIGINT and SIGTERM unwind the stage like an error, so the temporary outputs are removed and
    the previous outputs stay; exit status 130 / 143 as a shell reports them.
    """
    from pipeline.params import ParamsError

    setup_logging()
    signal.signal(signal.SIGTERM, _on_sigterm)
    start = time.perf_counter()
    try:
        main()
        log.info(
            "%s finished in %.1f s, peak RSS %.0f MiB",
            _stage_name(main),
            time.perf_counter() - start,
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        )
    except (PipelineError, ParamsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted: the previous outputs are unchanged", file=sys.stderr)
        sys.exit(130)
    except Terminated:
        print("terminated: the previous outputs are unchanged", file=sys.stderr)
        sys.exit(143)
