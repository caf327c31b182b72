"""Shipped models by name: ``maskx.load("maskx-3k")``.

A shipped model is a folder holding one model-only checkpoint (``ckpt_*.json`` +
``ckpt_*.safetensors``), its ``eval.json`` (the metrics of those weights) and ``examples.json``.
A name resolves to the first of these that holds a folder of that name:

1. ``$MASKX_MODELS/<name>``: a models folder of your own;
2. ``models/<name>`` of the source checkout this package was imported from;
3. ``maskx/_models/<name>`` inside an installed package (``pip install .`` copies the
   checkout's ``models/`` there, see ``pyproject.toml``).
"""
from __future__ import annotations

import os
from pathlib import Path

SHIPPED_NAMES = ("maskx-3k",)
MODELS_ENV = "MASKX_MODELS"
CHECKOUT_MODELS = Path(__file__).resolve().parents[1] / "models"
PACKAGED_MODELS = Path(__file__).resolve().parent / "_models"


class ShippedModelError(FileNotFoundError):
    """A shipped model's name whose folder is in none of the places searched."""


def model_dirs() -> list[Path]:
    """The folders searched for shipped models, in order."""
    dirs = [Path(os.environ[MODELS_ENV])] if os.environ.get(MODELS_ENV) else []
    return dirs + [CHECKOUT_MODELS, PACKAGED_MODELS]


def shipped_dir(name: str) -> Path:
    """The folder of the shipped model ``name`` (one of ``SHIPPED_NAMES``); ``ShippedModelError``
    naming every folder searched when none holds it."""
    if name not in SHIPPED_NAMES:
        raise ShippedModelError(f"{name!r} is not a shipped model; shipped: {', '.join(SHIPPED_NAMES)}")
    searched = [d / name for d in model_dirs()]
    for folder in searched:
        if any(folder.glob("ckpt_*.json")):
            return folder
    raise ShippedModelError(
        f"shipped model {name!r} not found in {', '.join(map(str, searched))}: set {MODELS_ENV} to a folder "
        f"holding {name}/ (e.g. the models/ folder of a maskx checkout), or reinstall maskx from a checkout "
        f"(`pip install .` packages models/)")


def resolve(path) -> Path:
    """A shipped model's name → its folder (``shipped_dir``); any other path unchanged."""
    return shipped_dir(str(path)) if str(path) in SHIPPED_NAMES else Path(path)
