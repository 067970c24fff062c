"""``data.source: local``: any folder of class sub-folders, found below ``data.path``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.sources import DataSource, copy_class_tree, find_class_root


class LocalSource(DataSource):
    """Copies the class folders found below ``data.path`` (see :func:`find_class_root`)."""

    name = "local"

    def fetch(self, out: Path) -> dict[str, Any]:
        class_root = find_class_root(Path(self.params.data.path).expanduser())
        ignored: list[dict[str, str]] = []
        counts = copy_class_tree(class_root, out, ignored)
        return {
            "source": "local",
            "path": str(class_root.resolve()),
            "images": counts,
            "ignored": ignored,
        }
