"""Class embeddings of a trained model and their 2-d UMAP projections (the app's Embeddings page).

``embedding_matrices(predictor)`` gives, per class (row k = class label k + 1), every input the
paper compares for T (``w_cls``, ``w_box``, ``w_cls+box``, GloVe, text, randn) and the model's own
``w_seg``; ``umap_2d`` projects one with a fixed random_state and caches the result on disk.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from maskx.diagnostics import class_embedding_matrix, mask_weight_rows

INPUTS = ("w_cls", "w_box", "w_cls+box", "glove", "text", "randn", "w_seg")


@torch.inference_mode()
def embedding_matrices(predictor, kinds=INPUTS) -> dict[str, np.ndarray]:
    """{kind: float32 [K, D]} for the model's K classes (background excluded).

    ``w_seg`` is the model's mask weights per class: T(w_det) for a transfer model, the learned
    rows for an oracle, one shared row for a class-agnostic head. GloVe gives zero rows for names
    without known words; text needs the ``text`` extra (a kind that cannot be built is left out).
    The matrices are ``maskx.diagnostics``' (the transfer diagnostics measure the same rows).
    """
    model, names = predictor.model, predictor.class_names
    out: dict[str, np.ndarray] = {}
    for kind in kinds:
        if kind == "w_seg":
            if getattr(model.roi_heads, "mask_predictor", None) is None:
                continue
            w = mask_weight_rows(model)[:, :-1]
        else:
            try:
                w = class_embedding_matrix(model, names, kind[2:] if kind.startswith("w_") else kind)
            except ImportError:
                continue
        out[kind] = np.ascontiguousarray(w, dtype=np.float32)
    return out


def umap_2d(matrix: np.ndarray, cache_dir: Optional[Path] = None, random_state: int = 0, n_neighbors: int = 15,
            metric: str = "cosine") -> np.ndarray:
    """UMAP of the rows of ``matrix`` [K, D] → [K, 2] float32, cached under ``cache_dir`` by the
    SHA-256 of the matrix and the parameters (the same inputs never recompute)."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    key = hashlib.sha256(matrix.tobytes() + f"{matrix.shape}{random_state}{n_neighbors}{metric}".encode()).hexdigest()[:20]
    path = Path(cache_dir) / f"umap-{key}.npy" if cache_dir else None
    if path is not None and path.is_file():
        return np.load(path)
    if len(matrix) < 4:
        xy = np.zeros((len(matrix), 2), np.float32)
        xy[:, 0] = np.arange(len(matrix))
    elif not np.any(matrix.std(axis=0) > 0):  # every row equal (a class-agnostic w_seg): one point
        xy = np.zeros((len(matrix), 2), np.float32)
    else:
        import umap

        reducer = umap.UMAP(n_components=2, n_neighbors=min(n_neighbors, len(matrix) - 1), metric=metric,
                            random_state=random_state, n_jobs=1)
        xy = reducer.fit_transform(matrix).astype(np.float32)
    if path is not None:
        from maskx.atomic import atomic_write

        path.parent.mkdir(parents=True, exist_ok=True)
        def save(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.save(f, xy)

        atomic_write(path, save)
    return xy
