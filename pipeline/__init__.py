"""Transfer-learning and fine-tuning pipeline (stages: ``python -m pipeline.stages.<stage>``).

Importing the package pins what makes TensorFlow's CPU numbers depend on the machine, before any
stage imports TensorFlow (every stage command, ``python -m pipeline.stages.<stage>``, imports
this file first). Measured on the demo (docs/reproducibility.md): oneDNN picks its kernels by
the CPU's instruction set (AVX2 or AVX-512), and TensorFlow splits an op's work into as many
pieces as it has intra-op threads (by default one per core); both change the order of float
additions, and a few epochs turn that rounding into different weights and metrics. With the
instruction set capped at AVX2 (what every x86-64 CPU of the last ten years has) and a fixed
intra-op thread count, one commit gives the same numbers on every such machine.

A value already in the environment wins: ``TF_NUM_INTRAOP_THREADS=0`` uses every core (faster
on a large machine; the numbers then depend on its core count).
"""

from __future__ import annotations

import os

REPRODUCIBLE_ENV: dict[str, str] = {
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "TF_NUM_INTRAOP_THREADS": "2",
}

for _key, _value in REPRODUCIBLE_ENV.items():
    os.environ.setdefault(_key, _value)
