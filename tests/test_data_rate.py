"""benchmarks/data_rate.py runs end to end on a few tiny images and writes the JSON it documents
(no timing assertions)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_data_rate_writes_json_and_table(tmp_path):
    out = tmp_path / "res" / "data_rate.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "data_rate.py"), "--sizes", "64", "--images",
                           "3", "--load-passes", "1", "--train-steps", "3", "--out", str(out)],
                          check=True, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    res = json.loads(out.read_text())
    assert res["benchmark"] == "data_rate" and res["command"].endswith(f"--out {out}")
    [row] = res["results"]
    assert row["image_size"] == 64 and row["images"] == 3
    for key in ("generate_images_per_s_1_worker", "generate_images_per_s_2_workers", "load_images_per_s",
                "load_images_per_s_default_threads", "generate_images_per_cpu_s_1_worker", "load_images_per_cpu_s"):
        assert row[key] > 0, key
    # training timed through the real loop: 3 steps, the first 2 are warm-up
    assert row["train_steps_timed"] == 1 and row["train_images_per_s"] > 0 and row["train_batch"] == 2
    # the ratio of the unrounded rates: equal to the rounded ones' within their rounding
    assert row["load_over_train"] == pytest.approx(row["load_images_per_s"] / row["train_images_per_s"], rel=1e-2)
    assert "| load / train |" in proc.stdout
    assert "| 64 | 3 |" in proc.stdout
    assert [p.name for p in out.parent.iterdir()] == ["data_rate.json"]  # atomic write, no temp files
