"""Hand-made study result records (no training), shared by tests/study/test_report.py and test_cost.py."""
from __future__ import annotations

from maskx_study.runner import SCALES, Run, table_runs

SCALE = SCALES["tiny"]


def record(run: Run, b: float, a: float = 30.0, **extra) -> dict:
    per = {"A": {"segm_AP": a, "bbox_AP": a + 1}, "B": {"segm_AP": b, "bbox_AP": b + 1}}
    config = run.config(SCALE, "det")
    return {"run": run.key, "preset": run.preset, "split": run.split, "seed": run.seed, "backbone": run.backbone,
            "stage": config.stage, "config": config.to_json(), "generator_version": 1,
            "metrics": {d: per for d in run.eval_splits}, "train_seconds": 60.0, "eval_seconds": 30.0, **extra}


def gate_results(agnostic_b: float, oracle_b: float) -> dict:
    _, agn, ora = table_runs("gate", SCALE)
    return {agn.key: record(agn, agnostic_b), ora.key: record(ora, oracle_b)}
