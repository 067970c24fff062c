"""Run the pipeline as a DVC experiment: a profile's values, then ``--set`` overrides.

A *profile* is a committed file ``profiles/<name>.yaml`` that holds, nested as in
``params.yaml``, only the values that differ from ``params.yaml`` for one real target (e.g.
``tom-and-jerry``: the Kaggle frames with ImageNet weights, sized for a CPU). This command
validates the profile and the overrides against the typed params (an unknown profile, key or bad
value fails before anything runs, with the valid choices listed), then runs
``dvc exp run -S profile=<name> -S <key>=<value> ...`` with the profile's values first and the
overrides after (the later value wins), so ``dvc params diff`` and ``dvc exp show`` show every
value the run used.

Usage::

    make experiment PROFILE=tom-and-jerry SET="data.image_size=224 finetune.epochs=5"
    python -m pipeline.tools.experiment --profile tom-and-jerry --set data.image_size=224
    python -m pipeline.tools.experiment --profile tom-and-jerry -- --queue
    python -m pipeline.tools.experiment --list
"""

from __future__ import annotations

import argparse
import difflib
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from pipeline import paths
from pipeline.params import PARAMS_FILE, Params, ParamsError, parse_params, parse_yaml, read_yaml

PROFILES_DIR = paths.PROFILES


class ExperimentError(ValueError):
    """A profile, an override or the params they produce is invalid."""


def profile_names(folder: str | Path = PROFILES_DIR) -> list[str]:
    """Names of the profiles in ``folder`` (``<name>.yaml``), sorted."""
    return sorted(p.stem for p in Path(folder).glob("*.yaml"))


def leaf_keys(model: type[BaseModel] = Params, prefix: str = "") -> dict[str, list[str]]:
    """``{section: [dotted leaf keys]}`` of the params (``""``: top-level leaves)."""
    out: dict[str, list[str]] = {}
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            for section, keys in leaf_keys(ann, f"{prefix}{name}.").items():
                out.setdefault(section or f"{prefix}{name}", []).extend(keys)
        else:
            out.setdefault(prefix.rstrip("."), []).append(f"{prefix}{name}")
    return out


def _all_leaves() -> list[str]:
    return [k for keys in leaf_keys().values() for k in keys]


def check_key(key: str, where: str) -> None:
    """Raise :class:`ExperimentError` unless ``key`` is a leaf param, listing the valid ones."""
    leaves = _all_leaves()
    if key in leaves:
        return
    sections = leaf_keys()
    close = difflib.get_close_matches(key, leaves, n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close and key not in sections else ""
    if key in sections:
        valid = f"'{key}' is a section: set its keys, one of {', '.join(sections[key])}"
    else:
        section = key.rpartition(".")[0]
        if section in sections:
            valid = f"valid keys of {section}: {', '.join(sections[section])}"
        else:
            tops = sorted({k.split(".")[0] for k in leaves})
            valid = f"valid top-level keys: {', '.join(tops)}"
    raise ExperimentError(f"{where}: unknown param '{key}'{hint} ({valid})")


def flatten(mapping: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{full}."))
        else:
            out[full] = value
    return out


def load_profile(name: str, folder: str | Path = PROFILES_DIR) -> dict[str, Any]:
    """The profile ``name`` as ``{dotted key: value}``; every key checked against the params."""
    names = profile_names(folder)
    path = Path(folder) / f"{name}.yaml"
    if not path.is_file():
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ExperimentError(
            f"unknown profile '{name}': {hint}the profiles in {folder}/ are "
            f"{', '.join(names) or 'none'}"
        )
    try:
        raw = read_yaml(path)
    except yaml.YAMLError as exc:
        raise ExperimentError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict) or not raw:
        raise ExperimentError(f"{path} must hold a mapping of params, nested as in params.yaml")
    values = flatten(raw)
    for key in values:
        check_key(key, str(path))
    return values


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """``["key=value", ...]`` (values read as YAML, as ``dvc exp run -S`` reads them)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ExperimentError(f"SET {item!r}: expected key=value, e.g. data.image_size=224")
        key = key.strip()
        check_key(key, f"SET {item!r}")
        out[key] = parse_yaml(value) if value.strip() else ""
    return out


def apply(raw: dict, values: dict[str, Any]) -> dict:
    """A deep copy of the params mapping ``raw`` with dotted ``values`` set."""
    raw = json.loads(json.dumps(raw))
    for key, value in values.items():
        *parents, leaf = key.split(".")
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return raw


def resolve(
    profile: str | None,
    sets: list[str],
    params_file: str | Path = PARAMS_FILE,
    folder: str | Path = PROFILES_DIR,
) -> tuple[dict[str, Any], Params]:
    """The values to set (profile first, then ``sets``; later wins) and the params they give."""
    values: dict[str, Any] = {}
    if profile:
        values["profile"] = profile
        values.update(load_profile(profile, folder))
    values.update(parse_assignments(sets))
    merged = apply(read_yaml(params_file) or {}, values)
    what = f"{params_file} with profile '{profile}'" if profile else f"{params_file}"
    try:
        params = parse_params(merged, what + (" and SET" if sets else ""))
    except ParamsError as exc:
        raise ExperimentError(str(exc)) from None
    return values, params


def dvc_value(value: Any) -> str:
    """``value`` as ``dvc exp run -S key=<value>`` reads it back (YAML)."""
    if isinstance(value, str):
        plain = value != "" and parse_yaml(value) == value and "," not in value
        return value if plain else json.dumps(value)
    return json.dumps(value)


def command(values: dict[str, Any], extra: list[str], present: set[str] | None = None) -> list[str]:
    """The ``dvc exp run`` command line for ``values`` and extra ``dvc exp run`` arguments.

    Keys that ``params.yaml`` lacks (``present``: the dotted keys it has; ``None``: all) get
    DVC's ``+`` prefix, which adds a key instead of overriding one.
    """
    cmd = ["dvc", "exp", "run"]
    for key, value in values.items():
        plus = "+" if present is not None and key not in present else ""
        cmd += ["-S", f"{plus}{key}={dvc_value(value)}"]
    return cmd + extra


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Arguments after -- go to dvc exp run (e.g. -- --queue --name big-images).",
    )
    parser.add_argument("--profile", default="", help="a file profiles/<name>.yaml, by name")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a param"
    )
    parser.add_argument("--params", default=str(PARAMS_FILE))
    parser.add_argument("--profiles", default=str(PROFILES_DIR), help="the profiles folder")
    parser.add_argument("--list", action="store_true", help="list the profiles and exit")
    parser.add_argument("--dry-run", action="store_true", help="print the command, run nothing")
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    if args.list:
        for name in profile_names(args.profiles):
            print(name)
        return 0
    try:
        values, _ = resolve(args.profile or None, args.set, args.params, args.profiles)
    except (ExperimentError, ParamsError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cmd = command(values, extra, set(flatten(read_yaml(args.params) or {})))
    print(shlex.join(cmd), flush=True)
    if args.dry_run:
        return 0
    return subprocess.run(cmd).returncode


if __name__ == "__main__":
    sys.exit(main())
