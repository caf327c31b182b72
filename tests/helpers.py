"""Plain helpers shared by test modules (fixtures live in conftest.py)."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def subprocess_env() -> dict:
    """Environment for `python -m maskx` / torchrun subprocesses: one thread, CPU only (bit-identical
    comparisons), the repository importable, no torchrun variables inherited from outside."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="")
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env
