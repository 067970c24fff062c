"""dvc.yaml lists every project module that a stage's command imports, directly or not.

The import graph is read from the source with ``ast``: ``import pipeline.x``, ``from pipeline
import x``, ``from pipeline.x import y`` (also inside functions, where stages import TensorFlow
code lazily), relative imports, and module names given as strings (``importlib.import_module``,
as :mod:`pipeline.sources` picks a data source). Importing ``pipeline.a.b`` also runs
``pipeline/__init__.py`` and ``pipeline/a/__init__.py``. A listed folder (``pipeline/sources``)
covers every file below it.
"""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

PACKAGE = "pipeline"


def module_file(root: Path, name: str) -> Path | None:
    """The file of project module ``name`` (``pipeline.x`` or ``pipeline.x.y``), if it exists."""
    base = root.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _parents(name: str) -> list[str]:
    """``pipeline.a.b`` -> ``["pipeline", "pipeline.a"]``: packages that importing it runs."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def direct_imports(root: Path, name: str) -> set[str]:
    """Project modules that module ``name`` imports anywhere in its source (not transitively)."""
    path = module_file(root, name)
    assert path is not None, name
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def add(candidate: str) -> None:
        if candidate.split(".")[0] == PACKAGE and module_file(root, candidate):
            found.add(candidate)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
                for parent in _parents(alias.name):
                    add(parent)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(anchor + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            add(target)
            for parent in _parents(target):
                add(parent)
            for alias in node.names:  # `from pipeline import data`: a module, not a name
                add(f"{target}.{alias.name}")
        elif (  # a module named by a string: importlib.import_module("pipeline.sources.sample")
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and re.fullmatch(rf"{PACKAGE}(\.\w+)+", node.value)
        ):
            add(node.value)
            for parent in _parents(node.value):
                add(parent)
    found.discard(name)
    return found


def imported_modules(root: Path, start: str) -> set[str]:
    """``start`` and every project module it imports, transitively (packages included)."""
    seen: set[str] = set()
    todo = [start, *_parents(start)]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(direct_imports(root, name) - seen)
    return seen


def stage_modules(dvc_yaml: dict) -> dict[str, str]:
    """Stage name -> the module its command runs (``python -m pipeline.<x>``)."""
    out = {}
    for stage, spec in dvc_yaml["stages"].items():
        match = re.fullmatch(r"python -m ([\w.]+)(\s.*)?", spec["cmd"].strip())
        assert match, f"stage {stage}: command {spec['cmd']!r} is not `python -m <module>`"
        out[stage] = match.group(1)
    return out


def missing_deps(root: Path, dvc_yaml: dict) -> dict[str, list[str]]:
    """Per stage, the project source files it imports that its ``deps`` do not cover."""
    missing = {}
    for stage, module in stage_modules(dvc_yaml).items():
        deps = [Path(d) for d in dvc_yaml["stages"][stage].get("deps", [])]
        files = sorted(
            module_file(root, m).relative_to(root) for m in imported_modules(root, module)
        )
        uncovered = [f.as_posix() for f in files if not any(f == d or d in f.parents for d in deps)]
        if uncovered:
            missing[stage] = uncovered
    return missing


def load_dvc_yaml(root: Path = ROOT) -> dict:
    return yaml.safe_load((root / "dvc.yaml").read_text())


def test_every_stage_lists_every_module_it_imports():
    missing = missing_deps(ROOT, load_dvc_yaml())
    assert not missing, "dvc.yaml deps miss modules that the stage command imports: " + "; ".join(
        f"{stage}: {', '.join(files)}" for stage, files in missing.items()
    )


def test_import_graph_follows_lazy_string_and_package_imports():
    evaluate = imported_modules(ROOT, "pipeline.stages.evaluate")
    # lazy import inside main(), and what it imports in turn
    assert {"pipeline.models", "pipeline.plots", "pipeline.data", "pipeline.params"} <= evaluate
    assert "pipeline" in evaluate  # pipeline/__init__.py runs first
    data = imported_modules(ROOT, "pipeline.stages.download_data")
    # importlib.import_module("pipeline.sources.sample") and its package
    assert {"pipeline.sources", "pipeline.sources.sample", "pipeline.sources.kaggle"} <= data
    assert (
        "pipeline.tools.bench" not in evaluate and "pipeline.workspace" not in evaluate
    )  # only what is imported


@pytest.mark.parametrize(
    ("stage", "dep", "module_path"),
    [
        ("evaluate", "pipeline/models.py", "pipeline/models.py"),
        ("split", "pipeline/sources", "pipeline/sources/__init__.py"),
        ("export", "pipeline/params.py", "pipeline/params.py"),
    ],
)
def test_a_removed_dependency_is_reported(tmp_path: Path, stage: str, dep: str, module_path: str):
    shutil.copytree(ROOT / PACKAGE, tmp_path / PACKAGE)
    dvc_yaml = load_dvc_yaml()
    assert dep in dvc_yaml["stages"][stage]["deps"]
    dvc_yaml["stages"][stage]["deps"].remove(dep)
    missing = missing_deps(tmp_path, dvc_yaml)
    assert module_path in missing[stage]
    assert set(missing) == {stage}
