"""dvc.yaml and the code agree on paths: every path of dvc.yaml is one of :mod:`pipeline.paths`
(or inside one of its folders), and each stage's command-line defaults are its dvc.yaml paths."""

from __future__ import annotations

import importlib
from pathlib import Path, PurePosixPath

import pytest

from pipeline import paths
from tests.test_dvc_deps import load_dvc_yaml, stage_modules

DVC_YAML = load_dvc_yaml()
STAGES = stage_modules(DVC_YAML)


def _posix(path: str | Path) -> PurePosixPath:
    return PurePosixPath(Path(path).as_posix())


def module_paths() -> set[PurePosixPath]:
    """Every path constant of :mod:`pipeline.paths`."""
    return {_posix(v) for v in vars(paths).values() if isinstance(v, Path)}


def _names(entries: list) -> list[str]:
    """Paths of a deps/outs/metrics/plots list: plain strings or ``{path: options}``."""
    return [e if isinstance(e, str) else next(iter(e)) for e in entries]


def stage_paths(stage: str, keys: tuple[str, ...] = ("deps", "outs", "metrics", "plots")) -> set:
    spec = DVC_YAML["stages"][stage]
    return {_posix(p) for key in keys for p in _names(spec.get(key, []))}


def top_level_paths() -> set[PurePosixPath]:
    """The files named by the top-level ``plots`` and the ``artifacts`` of dvc.yaml."""
    found = set()
    for plot in DVC_YAML.get("plots", []):
        if isinstance(plot, str):
            found.add(_posix(plot))
            continue
        (spec,) = plot.values()
        y = spec.get("y", {})
        found.update(_posix(p) for p in (y if isinstance(y, dict) else []))
    found.update(_posix(a["path"]) for a in DVC_YAML.get("artifacts", {}).values())
    return found


def _covered(path: PurePosixPath, known: set[PurePosixPath]) -> bool:
    return path in known or any(parent in known for parent in path.parents)


def test_every_dvc_yaml_path_is_a_path_of_the_paths_module():
    known = module_paths()
    every = set().union(*(stage_paths(s) for s in STAGES), top_level_paths())
    missing = sorted(str(p) for p in every if not _covered(p, known))
    assert not missing, f"dvc.yaml paths that pipeline/paths.py does not hold: {missing}"
    assert _posix(paths.CODE) == PurePosixPath("pipeline")  # the code deps' folder


def _default_paths(module: str) -> dict[str, PurePosixPath]:
    """The stage's command-line options whose default is a path, except params and logs."""
    args = importlib.import_module(module).parser().parse_args([])
    return {
        name: _posix(value)
        for name, value in vars(args).items()
        if isinstance(value, Path)
        and _posix(value) != _posix(paths.PARAMS)
        and paths.LOGS not in Path(value).parents
    }


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_defaults_are_its_dvc_yaml_paths(stage: str):
    defaults = _default_paths(STAGES[stage])
    assert defaults, f"{STAGES[stage]}.parser() has no path options"
    declared = stage_paths(stage)
    for name, path in defaults.items():
        # a declared path, a folder of declared paths (--reports), or a file inside one
        related = _covered(path, declared) or any(path in p.parents for p in declared)
        assert related, f"{stage}: --{name} defaults to {path}, which dvc.yaml does not name"
    for out in stage_paths(stage, ("outs", "metrics", "plots")):
        assert _covered(out, set(defaults.values())), f"{stage}: no option writes {out}"


def test_stage_params_option_defaults_to_params_yaml():
    for module in STAGES.values():
        args = importlib.import_module(module).parser().parse_args([])
        assert _posix(args.params) == _posix(paths.PARAMS), module
