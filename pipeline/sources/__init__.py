"""Where the images come from: one small interface, one module per source.

A data source writes a folder of class sub-folders (``<out>/<class>/<image files>``) and returns a
small provenance record (JSON-serialisable; never credentials). :func:`get_data_source` picks the
source named by ``data.source``:

* ``sample`` – :mod:`pipeline.sources.sample`, the generated offline dataset (default);
* ``local`` – :mod:`pipeline.sources.local`, any folder of class sub-folders (``data.path``);
* ``kaggle`` – :mod:`pipeline.sources.kaggle`, a pinned Kaggle dataset through kagglehub.
"""

from __future__ import annotations

import importlib
import os
import shutil
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from pipeline.params import Params
from pipeline.utils import PipelineError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


class DataSource(ABC):
    """Produces ``<out>/<class>/<image>`` for the pipeline's first stage."""

    name: ClassVar[str]

    def __init__(self, params: Params) -> None:
        self.params = params

    @abstractmethod
    def fetch(self, out: Path) -> dict[str, Any]:
        """Write class sub-folders of images into the empty folder ``out``; return provenance."""


_SOURCES = {
    "sample": ("pipeline.sources.sample", "SampleSource"),
    "local": ("pipeline.sources.local", "LocalSource"),
    "kaggle": ("pipeline.sources.kaggle", "KaggleSource"),
}


def get_data_source(params: Params) -> DataSource:
    """Return the data source named by ``params.data.source``."""
    module, cls = _SOURCES[params.data.source]
    return getattr(importlib.import_module(module), cls)(params)


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def image_files(folder: Path, ignored: list[dict[str, str]] | None = None) -> list[Path]:
    """Image files below ``folder`` (recursively), sorted.

    Hidden entries, symlinks (never followed: they could point outside the data folder) and
    files without an image extension are left out; with ``ignored``, each is appended to it as
    ``{"path", "reason"}``.
    """

    def skip(p: Path, reason: str) -> None:
        if ignored is not None:
            ignored.append({"path": p.relative_to(folder.parent).as_posix(), "reason": reason})

    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        for d in sorted(dirnames):
            if d.startswith(".") or (Path(dirpath) / d).is_symlink():
                skip(Path(dirpath) / d, "hidden folder" if d.startswith(".") else "symlink")
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and not (Path(dirpath) / d).is_symlink()
        )
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if name.startswith("."):
                skip(p, "hidden file")
            elif p.is_symlink():
                skip(p, "symlink (not followed)")
            elif not _is_image(p):
                skip(p, "not an image file name")
            elif p.is_file():
                found.append(p)
    return found


def _class_dirs(folder: Path) -> list[Path]:
    """Visible sub-folders of ``folder`` that directly hold at least one image file."""
    out = []
    for d in sorted(folder.iterdir()):
        visible = d.is_dir() and not d.is_symlink() and not d.name.startswith(".")
        if visible and any(_is_image(f) and f.is_file() for f in d.iterdir()):
            out.append(d)
    return out


def find_class_root(root: str | Path, max_depth: int = 6) -> Path:
    """Find the folder whose sub-folders are the classes, searching below ``root``.

    The class root is the shallowest folder with at least two sub-folders that hold images
    directly, so nested layouts such as ``tom_and_jerry/tom_and_jerry/<class>/`` (next to CSV
    files) are found. Raises :class:`PipelineError` when there is none or the choice is ambiguous.
    """
    root = Path(root)
    if not root.is_dir():
        raise PipelineError(f"data folder {root} does not exist or is not a folder")
    level = [root]
    for _ in range(max_depth + 1):
        hits = [d for d in level if len(_class_dirs(d)) >= 2]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            listed = ", ".join(str(h) for h in hits)
            raise PipelineError(
                f"found several folders of class sub-folders under {root}: {listed}; "
                "point data.path at the one to use"
            )
        level = [
            d
            for parent in level
            for d in sorted(parent.iterdir())
            if d.is_dir() and not d.is_symlink() and not d.name.startswith(".")
        ]
        if not level:
            break
    raise PipelineError(
        f"no class folders found under {root}: expected a folder holding at least two "
        "sub-folders of images, one per class (e.g. cats/*.jpg, dogs/*.jpg)"
    )


def copy_class_tree(
    class_root: Path, out: Path, ignored: list[dict[str, str]] | None = None
) -> dict[str, int]:
    """Copy the images of each class folder of ``class_root`` into ``out/<class>/``.

    Files in nested sub-folders of a class keep their relative path. Returns images per class;
    entries left out (see :func:`image_files`) are appended to ``ignored`` when given.
    """
    counts: dict[str, int] = {}
    for cdir in _class_dirs(class_root):
        files = image_files(cdir, ignored)
        for src in files:
            dst = out / cdir.name / src.relative_to(cdir)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
        counts[cdir.name] = len(files)
    return counts
