"""What makes the numbers machine-independent is set before any stage imports TensorFlow."""

from __future__ import annotations

import json
import subprocess
import sys

from pipeline import REPRODUCIBLE_ENV
from tests.conftest import ROOT
from tests.e2e import venv_env

PROBE = (
    "import json, os, sys; import pipeline.stages.evaluate; "
    "print(json.dumps({k: os.environ.get(k) for k in sys.argv[1:]}))"
)


def _env_seen_by_a_stage(**env: str) -> dict[str, str]:
    base = {k: v for k, v in venv_env().items() if k not in REPRODUCIBLE_ENV}
    cmd = [sys.executable, "-c", PROBE, *REPRODUCIBLE_ENV]
    out = subprocess.run(cmd, env=base | env, cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_stage_modules_pin_the_cpu_kernels_and_threads():
    assert REPRODUCIBLE_ENV == {"ONEDNN_MAX_CPU_ISA": "AVX2", "TF_NUM_INTRAOP_THREADS": "2"}
    assert _env_seen_by_a_stage() == REPRODUCIBLE_ENV


def test_a_value_from_the_environment_wins():
    seen = _env_seen_by_a_stage(TF_NUM_INTRAOP_THREADS="0")
    assert seen == {"ONEDNN_MAX_CPU_ISA": "AVX2", "TF_NUM_INTRAOP_THREADS": "0"}
