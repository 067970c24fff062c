from __future__ import annotations

import json

import pytest

from pipeline.params import ParamsError
from pipeline.utils import PipelineError, atomic_dir, atomic_path, run_stage, write_json


def test_atomic_dir_replaces_only_on_success(tmp_path):
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("first")
    assert (target / "a.txt").read_text() == "first"

    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("half-written")
        raise RuntimeError("killed mid-way")
    assert (target / "a.txt").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary left over

    with atomic_dir(target) as tmp:
        (tmp / "b.txt").write_text("second")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]  # no stale files either


def test_atomic_path_and_json(tmp_path):
    target = tmp_path / "sub" / "m.json"
    write_json(target, {"b": 1, "a": [1, 2]})
    assert target.read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
    with pytest.raises(ValueError), atomic_path(target) as tmp:
        tmp.write_text("partial")
        raise ValueError
    assert json.loads(target.read_text()) == {"a": [1, 2], "b": 1}
    assert sorted(p.name for p in target.parent.iterdir()) == ["m.json"]


@pytest.mark.parametrize("exc", [PipelineError("bad folder"), ParamsError("bad value")])
def test_run_stage_turns_user_errors_into_a_message(exc, capsys):
    def main():
        raise exc

    with pytest.raises(SystemExit) as info:
        run_stage(main)
    assert info.value.code == 1
    assert capsys.readouterr().err.strip() == f"error: {exc}"


def test_run_stage_lets_bugs_raise():
    def main():
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        run_stage(main)
