"""Checkpoints: safetensors tensors + a JSON of metadata, written atomically, loaded without pickle.

A run folder holds ``ckpt_0000200.safetensors`` + ``ckpt_0000200.json`` pairs (the last
``keep`` of them). The tensors file carries the model (``model.*``) and the optimizer's state (SGD's
momentum buffers, AdamW's moments: ``optim.*``); the JSON carries the config, class names, category ids, set A, the iteration and
the tensors file's size and SHA-256, so a truncated or altered file is detected on load and the
previous checkpoint is used instead. Nothing is unpickled: safetensors and JSON only.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import warnings
from pathlib import Path
from typing import Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .atomic import atomic_write

FORMAT = "maskx-checkpoint-1"
_NAME = re.compile(r"^ckpt_(\d{7})\.json$")


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt, or does not fit the model; the message says which and what to do."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(run_dir, iteration: int, model: torch.nn.Module, meta: dict,
                    optimizer: Optional[torch.optim.Optimizer] = None, keep: int = 2,
                    dtype: Optional[torch.dtype] = None) -> Path:
    """Write checkpoint ``iteration`` into ``run_dir``; returns the JSON path. ``dtype`` (e.g.
    float16) converts floating model weights for shipping; optimizer state is always float32."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for k, v in model.state_dict().items():
        v = v.detach()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        tensors[f"model.{k}"] = v.contiguous().clone()
    if optimizer is not None:
        names = {id(p): n for n, p in model.named_parameters()}
        for group in optimizer.param_groups:
            for p in group["params"]:
                for key, buf in optimizer.state.get(p, {}).items():  # SGD: momentum_buffer; AdamW: step, exp_avg(_sq)
                    if torch.is_tensor(buf):
                        tensors[f"optim.{names[id(p)]}.{key}"] = buf.detach().contiguous().clone()
    stem = f"ckpt_{iteration:07d}"
    weights = run_dir / f"{stem}.safetensors"
    atomic_write(weights, lambda tmp: save_file(tensors, tmp, metadata={"format": FORMAT}), private_dir=True)
    info = {"format": FORMAT, "iteration": iteration, "weights": weights.name,
            "bytes": weights.stat().st_size, "sha256": _sha256(weights), **meta}
    path = run_dir / f"{stem}.json"
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(info, indent=1)))
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        for f in (old.with_suffix(".safetensors"), old):  # JSON last: a kill in between leaves no orphan
            f.unlink(missing_ok=True)
    for tmp in run_dir.glob(".ckpt_*"):  # what atomic_write left of a write cut off by a kill (tensors: a folder)
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
    return path


def list_checkpoints(run_dir) -> list[Path]:
    """The checkpoint JSONs in ``run_dir``, oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    return sorted(p for p in run_dir.iterdir() if _NAME.match(p.name))


def read_checkpoint(json_path) -> tuple[dict, dict[str, torch.Tensor]]:
    """Load and verify one checkpoint: (metadata, tensors). Raises CheckpointError if unusable."""
    json_path = Path(json_path)
    try:
        meta = json.loads(json_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{json_path}: checkpoint not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{json_path}: corrupt checkpoint metadata ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{json_path}: not a maskx checkpoint (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    name = meta.get("weights")
    # the tensors file must sit beside the JSON: a path elsewhere ("../..", "/abs") is never followed
    if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name or "\\" in name:
        raise CheckpointError(f"{json_path}: 'weights' must be the name of a file in the same folder, got {name!r}; "
                              "refusing to read a file elsewhere")
    weights = json_path.parent / name
    if not weights.is_file():
        raise CheckpointError(f"{weights}: weights file of {json_path.name} is missing")
    if weights.stat().st_size != meta.get("bytes") or _sha256(weights) != meta.get("sha256"):
        raise CheckpointError(f"{weights}: size or SHA-256 differs from {json_path.name}: the file is truncated "
                              "or was changed; use an earlier checkpoint or retrain")
    try:
        tensors = load_file(weights)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights}: cannot read tensors ({e})") from None
    return meta, tensors


def find_checkpoint(path) -> tuple[dict, dict[str, torch.Tensor]]:
    """The newest valid checkpoint of a run folder (falling back past corrupt ones, with a
    warning), or the one a ``ckpt_*.json`` path names."""
    path = Path(path)
    if path.is_file():
        return read_checkpoint(path)
    candidates = list_checkpoints(path)
    if not candidates:
        raise CheckpointError(f"{path}: no checkpoint here (expected ckpt_NNNNNNN.json files from `maskx train`)")
    errors = []
    for c in reversed(candidates):
        try:
            found = read_checkpoint(c)
        except CheckpointError as e:
            errors.append(str(e))
            continue
        for e in errors:
            warnings.warn(f"skipping unusable checkpoint: {e}", stacklevel=2)
        return found
    raise CheckpointError(f"{path}: every checkpoint is unusable: " + "; ".join(errors))


def model_state(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model's state dict from a checkpoint's tensors (the ``model.*`` keys, prefix dropped)."""
    return {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}


def load_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str,
                     skip_prefixes: tuple[str, ...] = ()) -> None:
    """Copy ``state`` into ``model``; every key and shape must match (apart from ``skip_prefixes``)."""
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(skip_prefixes)}
    state = {k: v for k, v in state.items() if not k.startswith(skip_prefixes)}
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    # float16/bfloat16 weights (shipping) are cast; integers or bools for float weights are not
    kind = sorted(k for k in set(own) & set(state) if own[k].is_floating_point() != state[k].is_floating_point())
    if missing or unexpected or wrong or kind:
        detail = "; ".join(f"{name}: {keys[:4]}{' ...' if len(keys) > 4 else ''}"
                           for name, keys in (("missing", missing), ("unexpected", unexpected),
                                              ("shape differs", wrong), ("dtype differs", kind)) if keys)
        raise CheckpointError(f"{source}: checkpoint does not fit this model ({detail}); was it trained "
                              "with another preset, backbone or class list?")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=False)


def load_optimizer_state(optimizer: torch.optim.Optimizer, model: torch.nn.Module,
                         tensors: dict[str, torch.Tensor]) -> None:
    """Restore the optimizer's per-parameter state (``optim.<param>.<key>``: SGD's momentum_buffer,
    AdamW's step, exp_avg and exp_avg_sq) for ``model``'s parameters."""
    for name, p in model.named_parameters():
        prefix = f"optim.{name}."
        for key in [k[len(prefix):] for k in tensors if k.startswith(prefix) and "." not in k[len(prefix):]]:
            buf = tensors[prefix + key]
            if key != "step" and (buf.shape != p.shape or buf.dtype != p.dtype):
                raise CheckpointError(f"{key.replace('_', ' ')} of {name} is {buf.dtype} {tuple(buf.shape)}, the parameter "
                                      f"{p.dtype} {tuple(p.shape)}: the checkpoint does not fit this model")
            optimizer.state[p][key] = buf.to(p.device).clone()


def check_classes(meta: dict, class_names: list[str], category_ids: list[int], source: str) -> None:
    """Refuse a checkpoint trained on another class list (K or names or ids differ)."""
    names, ids = meta.get("class_names"), meta.get("category_ids")
    if names != list(class_names) or ids != list(category_ids):
        k = len(names) if isinstance(names, list) else "?"
        diff = ""
        if isinstance(names, list) and len(names) == len(class_names):
            first = next((i for i, (a, b) in enumerate(zip(names, class_names)) if a != b), None)
            diff = f"; first difference at label {first + 1}: {names[first]!r} vs {class_names[first]!r}" \
                if first is not None else "; category ids differ"
        raise CheckpointError(f"{source}: checkpoint has {k} classes, the data has {len(class_names)}{diff}. "
                              "Use the dataset the model was trained on, or retrain")
