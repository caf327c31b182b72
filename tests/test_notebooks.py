"""Notebooks: committed without outputs, parameterised for papermill, and runnable headless
(results mode on the committed results/, and a tiny train mode through the maskx API)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import subprocess_env

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# notebooks whose purpose is to train live (a class runs them): their parameters cell defaults to train
# mode; mode "results" shows their last run's results (runs/results-<scale>) without training
LIVE = ("0_paper_in_15_minutes",)
# the embedding-inputs notebook: a diagnostics record's table, UMAP panels and nearest-A tables, one mask grid
EMBEDDINGS = "6_embedding_inputs"


def test_every_ablation_has_a_notebook():
    names = " ".join(p.stem for p in NOTEBOOKS)
    for part in ("1a_", "1b_", "1c_", "1d_", "2_", "3_random_splits", "4_qualitative", "5_deeper", EMBEDDINGS):
        assert part in names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs_and_with_a_parameters_cell(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "strip outputs"
    params = code[0]
    assert "parameters" in params["metadata"].get("tags", []), "first code cell must be papermill's parameters"
    src = "".join(params["source"])
    assert ('mode = "train"' if path.stem in LIVE else 'mode = "results"') in src and "scale =" in src
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    body = "".join("".join(c["source"]) for c in code[1:])
    for banned in ("torch.nn", "build_model(", "nn.Module", "def forward"):
        assert banned not in body, f"{path.name}: model code belongs in maskx, not in notebooks"


def _papermill(path: Path, out: Path, *params: str) -> dict:
    cmd = [sys.executable, "-m", "papermill", str(path), str(out), "--cwd", str(path.parent), "--kernel", "python3"]
    for p in params:
        key, value = p.split("=", 1)
        cmd += ["-p", key, value]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(), timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    nb = json.loads(out.read_text())
    errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    return nb


def _image_heights(nb: dict) -> list[int]:
    """Heights of the PNG images a run notebook shows (the mask grids)."""
    import base64
    import io

    from PIL import Image

    return [Image.open(io.BytesIO(base64.b64decode(o["data"]["image/png"]))).height
            for c in nb["cells"] for o in c.get("outputs", []) if "image/png" in o.get("data", {})]


def _text(nb: dict) -> str:
    """Everything a run notebook printed (stream and text/plain outputs)."""
    out = []
    for c in nb["cells"]:
        for o in c.get("outputs", []):
            text = o.get("text") or o.get("data", {}).get("text/plain") or ""
            out.append("".join(text) if isinstance(text, list) else text)
    return "\n".join(out)


def _plotly(nb: dict) -> list[dict]:
    """The plotly figures a run notebook shows ({"data", "layout"})."""
    return [o["data"]["application/vnd.plotly.v1+json"] for c in nb["cells"] for o in c.get("outputs", [])
            if "application/vnd.plotly.v1+json" in o.get("data", {})]


def _markdown(nb: dict) -> str:
    """The markdown a run notebook displayed (``IPython.display.Markdown``)."""
    out = []
    for c in nb["cells"]:
        for o in c.get("outputs", []):
            text = o.get("data", {}).get("text/markdown") or ""
            out.append("".join(text) if isinstance(text, list) else text)
    return "\n".join(out)


GRID_NOTEBOOKS = ("0_paper", "1a_", "1b_", "1c_", "1d_", "2_", "3_random_splits", "5_deeper")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_runs_in_results_mode(path, tmp_path):
    if path.stem in LIVE:  # no committed results: it reads an empty folder and says to train
        nb = _papermill(path, tmp_path / path.name, "mode=results", f"results_dir={tmp_path / 'results'}",
                        f"data_dir={tmp_path / 'data'}")
        text = _text(nb)
        assert "no data in" in text and "Not every run has a result yet" in text
        assert not (tmp_path / "data").exists()  # results mode generates nothing
        return
    nb = _papermill(path, tmp_path / path.name, "mode=results")
    if path.stem.startswith(GRID_NOTEBOOKS):  # a mask grid per direction (or split)
        assert len(_image_heights(nb)) >= 2
    if path.stem == EMBEDDINGS:  # the committed design record's views; the grid, empty where masks were not kept
        assert "showing" in _text(nb) and "results/diagnostics/design_" in _text(nb)
        titles = [a["text"] for a in _plotly(nb)[0]["layout"]["annotations"]]
        assert {"randn", "GloVe", "text (MiniLM)", "w_cls", "w_box", "w_cls+box"} <= set(titles)
        md = _markdown(nb)
        assert "| w_cls+box |" in md and "(c) what knowing the class is worth" in md
        assert md.count("nearest A #1") >= 1 and "largest oracle − class-agnostic gap" in _text(nb)
        assert len(_image_heights(nb)) == 1


@pytest.mark.slow
def test_the_fifteen_minute_lesson_trains_live_and_shows_masks_and_ap(tmp_path):
    """What CI runs, and a teacher in class: the lesson notebook at its defaults (scale "lesson", train
    mode) from no data: it generates the data, trains the detector and the three mask heads, prints
    their AP on A and B and draws the mask grid (about 10 minutes on 2 CPU cores)."""
    import re

    from maskx_study.grids import CELL

    path = ROOT / "notebooks" / "0_paper_in_15_minutes.ipynb"
    nb = _papermill(path, tmp_path / path.name, f"results_dir={tmp_path / 'results'}", f"runs_dir={tmp_path / 'runs'}",
                    f"data_dir={tmp_path / 'data'}")
    heights = _image_heights(nb)
    assert len(heights) == 2  # what the models are given, and the mask grid
    assert max(heights) >= 34 + 4 * CELL  # the grid: a header and rows of instances
    text = _text(nb)
    for label in ("class-agnostic (baseline)", "Mask^X (transfer+MLP)", "fully supervised (oracle)"):
        line = next(l for l in text.splitlines() if l.startswith(label))
        assert len(re.findall(r"\d+\.\d+", line)) == 4, line  # AP on A and B, IoU on A and B
    assert re.search(r"AP on set B: class-agnostic \d+\.\d, Mask\^X \d+\.\d, oracle \d+\.\d", text)
    assert len(list((tmp_path / "results").glob("*.json"))) == 4  # detector, agnostic, Mask^X, oracle


@pytest.mark.slow
def test_all_run_in_tiny_train_mode(tmp_path):
    """Every notebook retrains its runs at the tiny scale; they share one results folder, so a
    run another notebook needs is trained once."""
    from maskx_study.grids import CELL

    for path in NOTEBOOKS:
        nb = _papermill(path, tmp_path / path.name, "mode=train", "scale=tiny", f"results_dir={tmp_path / 'results'}",
                        f"runs_dir={tmp_path / 'runs'}", f"data_dir={tmp_path / 'data'}")
        if path.stem.startswith(GRID_NOTEBOOKS) or path.stem == EMBEDDINGS:  # fresh results keep their masks:
            assert max(_image_heights(nb)) > 34 + CELL, path.stem  # grids with instance rows
    assert len(list((tmp_path / "results").glob("*.json"))) >= 40
