"""The scripts (scripts/): detector_probes.py compares the loss windows of training logs."""
from __future__ import annotations

import json


def test_detector_probe_script_compares_loss_windows(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    runs = []
    for name, scale in (("a", 1.0), ("b", 0.5)):
        run = tmp_path / name
        run.mkdir()
        rows = [{"iter": i, "loss": scale * (2 - i / 500), "loss_classifier": 1.0, "loss_box_reg": 0.5,
                 "loss_objectness": 0.1} for i in range(500)]
        (run / "log.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        runs.append(str(run))
    script = Path(__file__).resolve().parents[1] / "scripts" / "detector_probes.py"
    out = subprocess.run([sys.executable, str(script), "losses", *runs], capture_output=True, text=True, check=True).stdout
    lines = out.strip().splitlines()
    assert len(lines) == 3 and lines[1].startswith("0-249 | 1.751 ") and "| 0.875 " in lines[1]
