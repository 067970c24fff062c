"""The record of the CPU that computed the committed results, and the checks .ci/run makes."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from pipeline.tools import machine


def test_record_round_trips_and_another_cpu_is_told_apart(tmp_path: Path, capsys):
    record = tmp_path / "machine.json"
    assert machine.main(["--write", str(record)]) == 0
    assert json.loads(record.read_text()) == machine.describe()
    assert machine.main(["--same-as", str(record)]) == 0
    other = json.loads(record.read_text())
    other["cpu"] = {"vendor_id": "NoSuchVendor", "model name": "No CPU 1"}
    other["caches"]["L2"] = "1K"  # no machine's
    record.write_text(json.dumps(other))
    capsys.readouterr()
    assert machine.main(["--same-as", str(record)]) == machine.OTHER_CPU
    printed = capsys.readouterr().out
    assert "caches.L2: '1K' -> " in printed and "cpu.vendor_id: 'NoSuchVendor'" in printed
    assert machine.main(["--same-as", str(tmp_path / "missing.json")]) == machine.OTHER_CPU


def test_pins_are_part_of_the_record():
    import os

    import pipeline

    pinned = machine.describe()["pinned"]
    assert pinned == {key: os.environ[key] for key in pipeline.REPRODUCIBLE_ENV}


def _lock(code_md5: str, lr: float, weights_md5: str) -> dict:
    return {
        "schema": "2.0",
        "stages": {
            "finetune": {
                "cmd": "python -m pipeline.stages.finetune",
                "deps": [
                    {"path": "pipeline/training.py", "hash": "md5", "md5": code_md5},
                    {"path": "models/transfer", "hash": "md5", "md5": weights_md5},
                ],
                "params": {"params.yaml": {"finetune": {"learning_rate": lr}}},
                "outs": [{"path": "models/finetune", "hash": "md5", "md5": weights_md5}],
            }
        },
    }


def test_same_inputs_ignores_outputs_but_not_code_or_params(tmp_path: Path):
    def write(name: str, lock: dict) -> Path:
        (tmp_path / name).write_text(yaml.safe_dump(lock))
        return tmp_path / name

    committed = write("committed.lock", _lock("aaa", 1e-4, "w1"))
    # another CPU: other weights everywhere, the same code and params
    assert machine.same_inputs(committed, write("cpu.lock", _lock("aaa", 1e-4, "w2"))) == []
    stale = machine.same_inputs(committed, write("code.lock", _lock("bbb", 1e-4, "w1")))
    assert stale == ["finetune: code.pipeline/training.py: 'aaa' -> 'bbb'"]
    stale = machine.same_inputs(committed, write("params.lock", _lock("aaa", 3e-4, "w1")))
    assert len(stale) == 1 and "learning_rate" in stale[0]
    assert machine.main(["--same-inputs", str(committed), str(tmp_path / "params.lock")]) == 1
