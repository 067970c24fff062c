"""The shape of the code: short functions, and an import graph that follows the layout.

* No function in ``pipeline/`` is longer than :data:`MAX_LINES` lines (from ``def`` to its last
  line, docstring included) unless its docstring says why it cannot be split.
* The project modules import each other without cycles (imports inside functions included).
* Library modules (``pipeline.*`` outside ``stages`` and ``tools``) never import a stage or a
  tool; stages import the library only (never a tool or another stage); tools import the
  library and other tools, never a stage.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.test_dvc_deps import PACKAGE, direct_imports

MAX_LINES = 60
MARKER = "cannot be split"


def project_modules(root: Path = ROOT) -> list[str]:
    """Every module of the package, by dotted name (packages by their own name)."""
    names = []
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return names


def long_functions(root: Path = ROOT, max_lines: int = MAX_LINES) -> list[str]:
    """``file:line name (n lines)`` of every function over ``max_lines`` without the marker."""
    found = []
    for path in sorted((root / PACKAGE).rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            n = node.end_lineno - node.lineno + 1
            doc = ast.get_docstring(node) or ""
            if n > max_lines and MARKER not in " ".join(doc.lower().split()):
                found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({n} lines)")
    return found


def kind(module: str) -> str:
    """``stage``, ``tool`` or ``library`` (the package's ``__init__`` is library)."""
    parts = module.split(".")
    if len(parts) > 1 and parts[1] == "stages":
        return "stage" if len(parts) > 2 else "library"  # pipeline.stages itself: a docstring
    if len(parts) > 1 and parts[1] == "tools":
        return "tool" if len(parts) > 2 else "library"
    return "library"


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the project modules it imports (its parent packages left out: importing
    ``pipeline.a.b`` runs ``pipeline/__init__.py``, which is not an import of the module's)."""
    graph = {}
    for name in project_modules(root):
        parents = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        graph[name] = {m for m in direct_imports(root, name) if m not in parents}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles of ``graph`` (each found once, as a path that returns to its start)."""
    found, done, stack = [], set(), []

    def visit(node: str) -> None:
        if node in stack:
            found.append([*stack[stack.index(node) :], node])
            return
        if node in done:
            return
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            visit(nxt)
        stack.pop()
        done.add(node)

    for node in sorted(graph):
        visit(node)
    return found


ALLOWED = {"library": {"library"}, "stage": {"library"}, "tool": {"library", "tool"}}


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    return [
        f"{module} ({kind(module)}) imports {target} ({kind(target)})"
        for module, targets in sorted(graph.items())
        for target in sorted(targets)
        if kind(target) not in ALLOWED[kind(module)]
    ]


def test_no_function_is_too_long():
    found = long_functions()
    assert not found, (
        f"functions over {MAX_LINES} lines: split them by meaning, or say in the docstring why "
        f"it {MARKER}: " + "; ".join(found)
    )


def test_import_graph_has_no_cycles():
    assert not cycles(import_graph()), cycles(import_graph())


def test_layers_import_downwards_only():
    graph = import_graph()
    assert {kind(m) for m in graph} == {"library", "stage", "tool"}
    violations = layer_violations(graph)
    assert not violations, "; ".join(violations)


def test_every_stage_module_is_a_dvc_yaml_stage():
    from tests.test_dvc_deps import load_dvc_yaml, stage_modules

    stages = {m for m in project_modules() if kind(m) == "stage"}
    assert stages == set(stage_modules(load_dvc_yaml()).values())


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("def f():\n" + "    x = 1\n" * 61, 1),
        ('def f():\n    """It cannot be split: reasons."""\n' + "    x = 1\n" * 61, 0),
        ("def f():\n" + "    x = 1\n" * 58, 0),
    ],
)
def test_long_functions_are_found(tmp_path: Path, source: str, expected: int):
    (tmp_path / PACKAGE).mkdir()
    (tmp_path / PACKAGE / "m.py").write_text(source)
    assert len(long_functions(tmp_path)) == expected


def test_cycles_and_layer_violations_are_found():
    graph = {
        "pipeline.a": {"pipeline.b"},
        "pipeline.b": {"pipeline.a", "pipeline.stages.x"},
        "pipeline.stages.x": {"pipeline.tools.t"},
        "pipeline.tools.t": {"pipeline.a"},
    }
    assert cycles(graph)
    assert layer_violations(graph) == [
        "pipeline.b (library) imports pipeline.stages.x (stage)",
        "pipeline.stages.x (stage) imports pipeline.tools.t (tool)",
    ]
