"""The kind of CPU that the committed results were computed on, and checks that use it.

TensorFlow's CPU kernels (oneDNN's, and Eigen's) choose how to split a matrix product by the
CPU's cache sizes, so even with the instruction set and the thread count pinned
(:data:`pipeline.REPRODUCIBLE_ENV`), two CPU models can add the same floats in another order, and
a few epochs of training turn that rounding into other weights (docs/reproducibility.md). A
commit's results reproduce exactly on the same kind of CPU only. ``make repro`` records the
machine it ran on in ``reports/machine.json``; ``.ci/run`` compares the results exactly when it
runs on the same kind of CPU, and otherwise checks what does not depend on the CPU.

Usage::

    python -m pipeline.tools.machine                                # this machine, as JSON
    python -m pipeline.tools.machine --write reports/machine.json   # record it
    python -m pipeline.tools.machine --same-as reports/machine.json # exit 0 same kind, 3 other
    python -m pipeline.tools.machine --same-inputs COMMITTED_LOCK dvc.lock  # exit 0 or 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import pipeline  # sets the pinned environment, which is part of the description
from pipeline.distribute import cpuinfo
from pipeline.utils import atomic_file

OTHER_CPU = 3  # exit status of --same-as on another kind of CPU
CPUINFO_KEYS = ("vendor_id", "model name", "cpu family", "model")  # of /proc/cpuinfo


def _caches(root: Path = Path("/sys/devices/system/cpu/cpu0/cache")) -> dict[str, str]:
    """The first core's caches, e.g. ``{"L1d": "48K", "L2": "2048K", ...}`` (empty elsewhere)."""
    out = {}
    for index in sorted(root.glob("index*")):
        try:
            level = (index / "level").read_text().strip()
            kind = (index / "type").read_text().strip()
            size = (index / "size").read_text().strip()
        except OSError:
            continue
        suffix = {"Data": "d", "Instruction": "i"}.get(kind, "")
        out[f"L{level}{suffix}"] = size
    return out


def describe() -> dict[str, Any]:
    """What TensorFlow's CPU numbers depend on: the CPU model, its caches and the pins."""
    return {
        "machine": platform.machine(),
        "cpu": {k: v for k, v in cpuinfo().items() if k in CPUINFO_KEYS}
        or {"processor": platform.processor()},
        "caches": _caches(),
        "pinned": {key: os.environ.get(key, "") for key in pipeline.REPRODUCIBLE_ENV},
    }


def differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``key: recorded -> current`` for every value that differs (nested keys joined by ``.``)."""
    out = []
    for key in sorted(set(recorded) | set(current)):
        a, b = recorded.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{key}.{d}" for d in differences(a, b)]
        elif a != b:
            out.append(f"{key}: {a!r} -> {b!r}")
    return out


def _inputs(lock: dict[str, Any]) -> dict[str, Any]:
    """Per stage of a ``dvc.lock``, what does not depend on the CPU: its command, its params and
    the hashes of its code (``.py`` dependencies)."""
    out = {}
    for name, stage in (lock.get("stages") or {}).items():
        code = {d["path"]: d.get("md5") for d in stage.get("deps", []) if d["path"].endswith(".py")}
        out[name] = {"cmd": stage.get("cmd"), "params": stage.get("params"), "code": code}
    return out


def same_inputs(committed: Path, current: Path) -> list[str]:
    """The stages whose command, params or code differ between two ``dvc.lock`` files."""
    import yaml

    a, b = (_inputs(yaml.safe_load(p.read_text()) or {}) for p in (committed, current))
    return [f"{name}: {', '.join(differences(a.get(name) or {}, b.get(name) or {})) or 'missing'}"
            for name in sorted(set(a) | set(b)) if a.get(name) != b.get(name)]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", type=Path, help="write this machine's description here")
    group.add_argument("--same-as", type=Path, help="compare with a recorded description")
    group.add_argument("--same-inputs", nargs=2, type=Path, metavar=("COMMITTED", "CURRENT"))
    args = parser.parse_args(argv)
    current = describe()
    if args.write:
        with atomic_file(args.write) as fh:
            fh.write(json.dumps(current, indent=2, sort_keys=True) + "\n")
        return 0
    if args.same_as:
        if not args.same_as.is_file():
            print(f"{args.same_as} not found: no record of the machine of the committed results")
            return OTHER_CPU
        diff = differences(json.loads(args.same_as.read_text()), current)
        for line in diff:
            print(line)
        return OTHER_CPU if diff else 0
    if args.same_inputs:
        stale = same_inputs(*args.same_inputs)
        for line in stale:
            print(line)
        return 1 if stale else 0
    print(json.dumps(current, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
