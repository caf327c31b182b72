"""What every page of the app shares: settings (command line, environment, sidebar), cached
loaders of models, images, datasets and study results, and small drawing helpers.

No model logic lives here: everything is a call into ``maskx``. Every loader returns
``(value, error message)`` or shows the message with ``st.error`` and stops the page, so a
missing file, a bad checkpoint or a bad upload never ends in a traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import streamlit as st

from maskx_app.samples import DEFAULT_SCORE, SAMPLE_IMAGES, SAMPLE_SIZE, saved_sample_ids

ROOT = Path(__file__).resolve().parents[1]
# setting: (command-line flag, environment variable, default, help)
OPTIONS = {
    "model": ("--model", "MASKX_MODEL", "models/maskx-3k", "run folder or ckpt_*.json of the main model"),
    "results": ("--results", "MASKX_RESULTS", "results", "folder of the study's result JSON files"),
    "runs": ("--runs", "MASKX_RUNS", "runs/study", "folder of the study's run checkpoints"),
    "data": ("--data", "MASKX_DATA", "data/synth3k/val", "embedded val data: samples and examples (the "
             "3000-class world's, for the shipped model)"),
    "cache": ("--cache", "MASKX_APP_CACHE", "runs/app-cache", "where UMAP projections are cached"),
    "score": ("--score", "MASKX_SCORE", str(DEFAULT_SCORE), "default score threshold"),
}
GREEN_HEX, RED_HEX = "#28c846", "#eb322d"  # maskx_app.visualize.GREEN / RED


@dataclass(frozen=True)
class Settings:
    model: Path
    results: Path
    runs: Path
    data: Path
    cache: Path
    score: float


def _resolve(value: str) -> Path:
    """A relative path is taken from the current folder if it exists there, else from the repository."""
    p = Path(value).expanduser()
    if p.is_absolute() or (Path.cwd() / p).exists():
        return p.absolute()
    return ROOT / p


def settings(argv: Optional[list[str]] = None) -> Settings:
    """``streamlit run app/streamlit_app.py -- --model PATH`` beats ``MASKX_MODEL`` beats the default
    (likewise for every option); the sidebar's model field (session state) beats them all."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for key, (flag, _, _, text) in OPTIONS.items():
        parser.add_argument(flag, dest=key, help=text)
    try:
        args, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    except SystemExit:  # e.g. a flag without its value: fall back to the environment
        args = argparse.Namespace(**{k: None for k in OPTIONS})
    values = {k: getattr(args, k) or os.environ.get(env) or default for k, (_, env, default, _) in OPTIONS.items()}
    try:
        score = min(max(float(values["score"]), 0.0), 1.0)
    except ValueError:
        score = DEFAULT_SCORE
    return Settings(*(_resolve(values[k]) for k in ("model", "results", "runs", "data", "cache")), score=score)


def model_path() -> Path:
    typed = st.session_state.get("model_path")
    return _resolve(typed.strip()) if isinstance(typed, str) and typed.strip() else settings().model


# Chips of a multiselect hold the whole class name: Streamlit cuts a chip at the widget's width with an
# ellipsis (and, in a column, keeps every chip on one scrolling row); here a long name wraps inside its
# chip instead. `[data-tag]` is the chip of Streamlit's own multiselect, `[data-baseweb="tag"]` that of
# BaseWeb-based versions.
CHIP_CSS = """<style>
[data-testid="stMultiSelect"] [data-tag], [data-baseweb="tag"] {
  max-width: 100% !important; height: auto !important; min-height: 1.5rem; white-space: normal !important;
}
[data-testid="stMultiSelect"] [data-tag] > span:first-child, [data-baseweb="tag"] span[title] {
  overflow: visible !important; text-overflow: clip !important; white-space: normal !important;
  overflow-wrap: anywhere; max-width: none !important;
}
</style>"""


def page_style() -> None:
    """The app's CSS, once per page run (``guard`` calls it for every page). A style-only ``st.html``
    takes no room on the page."""
    st.html(CHIP_CSS)


def class_filter(label: str, options, key: str, where=None, **kwargs) -> list:
    """A multiselect of class names, as every page's class filter: typing part of a name and pressing
    Enter adds the first match only (Streamlit's "Select all" / "Select N matches" row, first in the
    list and so Enter's target, would add every match), and chosen chips wrap onto more rows instead
    of scrolling out of sight. ``where``: the container (a column), default the page."""
    return (where or st).multiselect(label, options, key=key, select_all=False, wrap=True, **kwargs)


def guard(page: Callable[[], None]) -> None:
    """Run a page with the app's CSS; an unexpected error becomes a message (its traceback goes to
    the console only)."""
    try:
        page_style()
        page()
    except Exception as e:  # st.stop / st.rerun are BaseExceptions and pass through
        traceback.print_exc()
        st.error(f"Something went wrong on this page: {type(e).__name__}: {e}. Try other inputs; if it "
                 "persists, please report it with the console log.")


# ---------------------------------------------------------------- models

def checkpoint_stamp(path: Path) -> str:
    """Changes when a newer checkpoint appears, so a retrained model is reloaded."""
    from maskx.checkpoint import list_checkpoints

    ckpts = [path] if path.is_file() else list_checkpoints(path)
    return ";".join(f"{c.name}:{c.stat().st_mtime_ns}" for c in ckpts[-1:])


@st.cache_resource(max_entries=4, show_spinner="Loading the model ...")
def _load_model(path: str, stamp: str):
    import maskx

    return maskx.load(path, roi_align_forward="sparse")  # faster on CPU, same masks up to rounding


def load_model(path: Optional[Path] = None):
    """→ (Predictor, None) or (None, what went wrong and what to do)."""
    from maskx.checkpoint import CheckpointError

    path = Path(path) if path is not None else model_path()
    how = ("Start the app with `streamlit run app/serve.py -- --model RUN_FOLDER` (or set "
           "`MASKX_MODEL`), or type a run folder into **Model** in the sidebar. Train one with "
           "`python -m maskx train --preset transfer_clsbox_2lrelu_mlp_e2e --data DATA --out RUN_FOLDER`.")
    if not path.exists():
        return None, f"No model at `{path}`. {how}"
    try:
        return _load_model(str(path), checkpoint_stamp(path)), None
    except CheckpointError as e:
        return None, f"The model at `{path}` cannot be used: {e}. {how}"
    except Exception as e:  # a config from another version, unreadable files, ...
        traceback.print_exc()
        return None, f"The model at `{path}` cannot be loaded ({type(e).__name__}: {e}). {how}"


EMBEDDED_WORLD_NOTE = (
    "The shipped model knows only the embedded 3000-class world (procedural shapes), not real photos: on a "
    "photo it finds little or nothing. To segment real objects, train on COCO or Visual Genome "
    "(README, \"Train, predict, evaluate\"; docs/visual_genome.md) and open the app on that run "
    "(--model RUN).")


def is_shipped_model() -> bool:
    """Whether the app shows the shipped 3000-class model (``maskx.hub``), which knows only its world."""
    from maskx.hub import SHIPPED_NAMES, ShippedModelError, shipped_dir

    model = settings().model
    for name in SHIPPED_NAMES:
        try:
            shipped = shipped_dir(name)
        except ShippedModelError:
            continue
        if model.resolve() == shipped.resolve() or model.resolve().parent == shipped.resolve():
            return True
    return False


def require_model():
    predictor, error = load_model()
    if error:
        st.error(error)
        st.stop()
    return predictor


def model_key(predictor) -> str:
    """Identifies the weights (their SHA-256), whatever path they were loaded from."""
    return f"{predictor.meta.get('sha256', id(predictor))}:{predictor.meta.get('iteration')}"


@st.cache_resource(max_entries=64, show_spinner=False)
def _predict(key: str, image_key: str, _predictor, _image):
    return _predictor.predict(_image, score_thresh=0.0)


def image_key(image: np.ndarray) -> str:
    from maskx.instances import image_key as key

    return key(image)


def newest_checkpoint_json(path: Path) -> Optional[Path]:
    """The checkpoint JSON a model path names (itself, or a run folder's newest), without torch."""
    if path.is_file():
        return path
    found = sorted(path.glob("ckpt_*.json")) if path.is_dir() else []
    return found[-1] if found else None


@st.cache_data(max_entries=8, show_spinner=False)
def _checkpoint_meta(ckpt: str, stamp: int) -> dict:
    return json.loads(Path(ckpt).read_text())


def checkpoint_meta(ckpt: Path) -> dict:
    """A checkpoint JSON, parsed once per file version (the sidebar and the Segment page both read it)."""
    return _checkpoint_meta(str(ckpt), ckpt.stat().st_mtime_ns)


def model_summary(path: Optional[Path] = None) -> tuple[Optional[dict], Optional[str]]:
    """What the sidebar says about the model, read from its checkpoint JSON without importing torch
    (so it never waits for the model to load): ({classes, set_A, split, iteration}, None) or (None, why)."""
    path = Path(path) if path is not None else model_path()
    ckpt = newest_checkpoint_json(path)
    if ckpt is None:
        return None, f"no checkpoint at `{path}`"
    try:
        meta = checkpoint_meta(ckpt)
        return {"classes": len(meta["class_names"]), "set_A": len(meta["set_A"]),
                "split": (meta.get("split") or {}).get("name", "?"), "iteration": meta.get("iteration")}, None
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as e:
        return None, f"`{ckpt}` is unreadable ({type(e).__name__})"


@st.cache_resource(max_entries=4, show_spinner=False)
def _saved(path: str, stamp: str, sha256: str) -> dict:
    from maskx.instances import SavedPredictionsError, read_saved

    try:
        return read_saved(json.loads(Path(path).read_text()), path, sha256)
    except (OSError, ValueError, SavedPredictionsError):  # then the model predicts, as for any image
        traceback.print_exc()
        return {}


def saved_predictions(path: Optional[Path] = None) -> dict:
    """{image_key: instances} that ``python -m maskx ship`` saved beside the model (``examples.json``)
    for its current weights (the checkpoint JSON's SHA-256), so the first page can draw a sample image's
    masks before torch is imported; {} when there are none."""
    path = Path(path) if path is not None else model_path()
    ckpt = newest_checkpoint_json(path)
    saved = ckpt.parent / "examples.json" if ckpt is not None else None
    if saved is None or not saved.is_file():
        return {}
    try:
        sha = checkpoint_meta(ckpt)["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return _saved(str(saved), f"{saved.stat().st_mtime_ns}:{ckpt.stat().st_mtime_ns}", str(sha))


def predict(predictor, image: np.ndarray, key: Optional[str] = None) -> list:
    """Every instance the model finds (its own score floor applies; filter the rest in the page)."""
    with st.spinner("Segmenting ..."):
        return _predict(model_key(predictor), key or image_key(image), predictor, image)


def warm_up() -> None:
    """Fill the caches the first page reads: render or read the sample images; unless the first
    sample's masks were saved with the model (then the page draws them and preloads the model
    afterwards, ``preload_model``), import torch and ``maskx``, load the model and segment the first
    sample. ``app/serve.py`` runs this in a thread as the server starts, so it overlaps the browser's
    connecting; a page that asks meanwhile waits for the same cache entry (Streamlit computes each
    entry once) instead of starting a second load."""
    cfg = settings()
    first = sample_image(str(cfg.data), 0) if sample_list(str(cfg.data)) else None
    if first is not None and image_key(first[2]) in saved_predictions(cfg.model):
        return  # the first page draws saved masks; it preloads the model once they are shown
    predictor, error = load_model(cfg.model)
    if error is not None:  # the page stops at the same error before it reads any sample
        return
    if first is not None:
        _predict(model_key(predictor), image_key(first[2]), predictor, first[2])


PRELOAD_DELAY_S = 2.0
_preload_lock = threading.Lock()
_preloading: set = set()  # model paths whose preload has started in this process


def preload_model(path: Optional[Path] = None, delay: float = PRELOAD_DELAY_S) -> None:
    """Load the model in a background thread (once per path and process), so that an upload or
    another image after a page drawn from saved masks finds it ready. Called at the end of a page
    run, and ``delay`` seconds later still: importing torch holds the GIL for long stretches, and
    started at once it would hold up the server sending the page's image to the browser
    (docs/code-notes.md)."""
    path = Path(path) if path is not None else model_path()
    with _preload_lock:
        if str(path) in _preloading:
            return
        _preloading.add(str(path))

    def run():
        time.sleep(delay)
        load_model(path)

    threading.Thread(target=run, name="maskx-preload", daemon=True).start()


# ---------------------------------------------------------------- images

def sample_ids(n: int = SAMPLE_IMAGES) -> tuple[int, ...]:
    """The sample image ids of the current model (``maskx_app.samples.saved_sample_ids``: the ones
    ``python -m maskx ship`` picked by its stated rule), else the first ``n`` val images; read again only
    when the model or its ``examples.json`` changes."""
    try:
        path = model_path()
    except Exception:  # no page session (the warm-up thread): the configured model
        path = settings().model
    ckpt = newest_checkpoint_json(path)
    folder = ckpt.parent if ckpt is not None else path
    saved = folder / "examples.json"
    return _sample_ids(str(folder), saved.stat().st_mtime_ns if saved.is_file() else 0, n)


@st.cache_data(show_spinner=False)
def _sample_ids(folder: str, stamp: int, n: int) -> tuple[int, ...]:
    return tuple(saved_sample_ids(folder, n))


def sample_list(data_dir: str, n: int = SAMPLE_IMAGES) -> list[tuple[str, int, str]]:
    """The val images offered as samples (``sample_ids``), as (label, image id, file path or "" when
    rendered), without reading a pixel: the files of ``data_dir`` when its annotations and images are
    there, else rendered (the 3000-class world's when the folder is under ``synth3k``, else the 80-class one's)."""
    return _sample_list(data_dir, sample_ids(n))


@st.cache_data(show_spinner=False)
def _sample_list(data_dir: str, ids: tuple[int, ...]) -> list[tuple[str, int, str]]:
    ann = Path(data_dir) / "annotations.json"
    if ann.is_file():
        try:
            by_id = {int(im["id"]): im for im in json.loads(ann.read_text())["images"]}
            images = [by_id[i] for i in ids if i in by_id]
            files = [Path(data_dir) / "images" / im["file_name"] for im in images]
            if images and all(f.is_file() for f in files):
                return [(f"val image {im['id']} ({im['file_name']})", int(im["id"]), str(f))
                        for im, f in zip(images, files)]
        except (OSError, ValueError, KeyError, TypeError):
            pass
    # the embedded val sets are seed 1; image id i is render(1, i - 1, 256)
    return [(f"val image {i} (rendered)", i, "") for i in ids]


def sample_image(data_dir: str, k: int, n: int = SAMPLE_IMAGES) -> tuple[str, int, np.ndarray]:
    """Sample ``k`` of ``sample_list`` as (label, image id, RGB uint8): read, or rendered (also when
    its file turns out unreadable). One at a time: rendering all eight costs about a second of the first page."""
    return _sample_image(data_dir, k, sample_ids(n))


@st.cache_data(show_spinner=False)
def _sample_image(data_dir: str, k: int, ids: tuple[int, ...]) -> tuple[str, int, np.ndarray]:
    from maskx.data.embedded import render
    from maskx.data.synthetic import as_stored
    from maskx.data.synthetic3k import render3k

    label, image_id, file = _sample_list(data_dir, ids)[k]
    if file:
        try:
            from PIL import Image

            return label, image_id, np.asarray(Image.open(file).convert("RGB"))
        except (OSError, ValueError):
            label = f"val image {image_id} (rendered: {Path(file).name} is unreadable)"
    draw = render3k if "synth3k" in Path(data_dir).parts else render
    return label, image_id, as_stored(draw(1, image_id - 1, SAMPLE_SIZE)[0])  # the pixels its file holds


def sample_images(data_dir: str, n: int = SAMPLE_IMAGES) -> list[tuple[str, int, np.ndarray]]:
    """Every sample of ``sample_list`` as (label, image id, RGB uint8)."""
    return [sample_image(data_dir, k, n) for k in range(len(sample_list(data_dir, n)))]


def read_upload(upload) -> tuple[Optional[np.ndarray], list[str], Optional[str]]:
    """An ``st.file_uploader`` file → (RGB uint8, notes, None) or (None, [], error message)."""
    from maskx.images import ImageError, read_image

    try:
        rgb, notes = read_image(upload.getvalue(), upload.name)
    except ImageError as e:
        return None, [], str(e)
    return rgb, notes, None


def to_uint8(image) -> np.ndarray:
    """float [3, H, W] in 0..1 (a dataset item) → uint8 [H, W, 3]."""
    return (image.permute(1, 2, 0).clamp(0, 1).mul(255).round().byte().numpy())


def drawn(instances) -> list:
    from maskx_app.visualize import Drawn

    return [Drawn(i.box, i.mask, i.class_name, i.score, i.in_A) for i in instances]


def picture(rgb: np.ndarray, items: list, min_side: int = 512, labels: bool = True,
            label_size: Optional[int] = None) -> np.ndarray:
    """``maskx_app.visualize.overlay`` drawn on the image enlarged (by a whole factor) to at least
    ``min_side`` pixels, so that small images get legible labels and crisp mask edges."""
    from dataclasses import replace

    from PIL import Image

    from maskx_app.visualize import overlay

    f = int(np.ceil(min_side / max(1, min(rgb.shape[:2]))))
    if f > 1:
        rgb = np.asarray(Image.fromarray(rgb).resize((rgb.shape[1] * f, rgb.shape[0] * f), Image.BICUBIC))
        items = [replace(d, box=[v * f for v in d.box], mask=None if d.mask is None else d.mask.repeat(f, 0).repeat(f, 1))
                 for d in items]
    return overlay(rgb, items, labels=labels, label_size=label_size)


def png_bytes(rgb: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def legend(counts: Optional[dict] = None) -> None:
    a = f" ({counts['A']})" if counts else ""
    b = f" ({counts['B']})" if counts else ""
    st.markdown(f"<span style='color:{GREEN_HEX}'>&#9632;</span> set A: trained with masks{a} &nbsp; "
                f"<span style='color:{RED_HEX}'>&#9632;</span> set B: boxes only in training, masks by "
                f"transfer{b}", unsafe_allow_html=True)


# ---------------------------------------------------------------- datasets and results

def _stamp(path: Path) -> str:
    names = ("annotations.json", "objects.json")
    files = [path] if path.is_file() else [path / n for n in names if (path / n).is_file()]
    return ";".join(f"{f}:{f.stat().st_mtime_ns}" for f in files)


@st.cache_resource(max_entries=4, show_spinner="Reading the dataset ...")
def _open_dataset(path: str, stamp: str):
    from maskx_app.browse import open_dataset

    return open_dataset(path, check_files=False)


def open_dataset(path: Path):
    """→ ((dataset, kind), None) or (None, message)."""
    from maskx.data.coco import DatasetError

    try:
        return _open_dataset(str(path), _stamp(path)), None
    except DatasetError as e:
        return None, str(e)
    except (OSError, ValueError, KeyError, TypeError) as e:
        return None, f"{path}: cannot read this dataset ({type(e).__name__}: {e})"


def read_result(path: Path) -> tuple[Optional[dict], Optional[str]]:
    """One ``results/<run>.json`` (or an eval.json): (record, None), (None, None) if absent, (None, error)."""
    if not path.is_file():
        return None, None
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, f"{path}: unreadable ({e})"
    if not isinstance(record, dict):
        return None, f"{path}: expected a JSON object"
    return record, None


def per_class_table(metrics: dict, sets=("A", "B"), classes=None):
    """``metrics['per_class']`` (maskx.evaluate output) → a DataFrame sorted by set, then AP."""
    import pandas as pd

    rows = [{"class": name, "set": v.get("set", "?"), "mask AP": v.get("segm_AP"), "box AP": v.get("bbox_AP")}
            for name, v in (metrics.get("per_class") or {}).items()
            if v.get("set") in sets and (not classes or name in classes)
            and (v.get("segm_AP") is not None or v.get("bbox_AP") is not None)]  # no ground truth: no AP
    df = pd.DataFrame(rows, columns=["class", "set", "mask AP", "box AP"])
    return df.sort_values(["set", "mask AP"], ascending=[True, False], na_position="last").reset_index(drop=True)
