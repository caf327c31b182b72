"""Class embeddings of a trained model, their 2-d UMAP projections and nearest set-A classes (the
app's Embeddings page).

``embedding_matrices(predictor)`` gives, per class (row k = class label k + 1), every input the
paper compares for T (``w_cls``, ``w_box``, ``w_cls+box``, GloVe, text, randn) and the model's own
``w_seg``; ``umap_2d`` projects one with a fixed random_state and caches the result on disk;
``nearest_a`` ranks the set-A classes by cosine similarity to each class; ``class_families`` names
each class's family (its look group in the embedded worlds).

Computed ahead: ``build_projections(model)`` writes all of it for every kind into
``<model dir>/projections.npz`` (``PROJECTIONS_FILE``; ``scripts/projections.py`` and
``python -m maskx ship`` call it), keyed by the weights' SHA-256 and a digest of the class list,
so the page draws its first view from the file without torch, UMAP or the model;
``read_projections`` returns it only when it matches the checkpoint, else ``None`` and why.
"""
from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

INPUTS = ("w_cls", "w_box", "w_cls+box", "glove", "text", "randn", "w_seg")
PROJECTIONS_FILE = "projections.npz"
FORMAT = "maskx-projections-1"
NEAREST = 5  # nearest set-A classes kept per class
UMAP_PARAMS = {"random_state": 0, "n_neighbors": 15, "metric": "cosine"}  # one random_state for every kind
MAX_FAMILIES = 40  # a last-word grouping with more groups than this is no family structure


def embedding_matrices(predictor, kinds=INPUTS) -> dict[str, np.ndarray]:
    """{kind: float32 [K, D]} for the model's K classes (background excluded).

    ``w_seg`` is the model's mask weights per class: T(w_det) for a transfer model, the learned
    rows for an oracle, one shared row for a class-agnostic head. GloVe gives zero rows for names
    without known words; text needs the ``text`` extra (a kind that cannot be built is left out).
    The matrices are ``maskx.diagnostics``' (the transfer diagnostics measure the same rows).
    """
    import torch

    from maskx.diagnostics import class_embedding_matrix, mask_weight_rows

    model, names = predictor.model, predictor.class_names
    out: dict[str, np.ndarray] = {}
    with torch.inference_mode():
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


def umap_2d(matrix: np.ndarray, cache_dir: Optional[Path] = None, random_state: int = UMAP_PARAMS["random_state"],
            n_neighbors: int = UMAP_PARAMS["n_neighbors"], metric: str = UMAP_PARAMS["metric"]) -> np.ndarray:
    """UMAP of the rows of ``matrix`` [K, D] → [K, 2] float32, cached under ``cache_dir`` by the
    SHA-256 of the matrix and the parameters (the same inputs never recompute). Fewer than 4 rows
    lie on a line; rows that are all equal (a class-agnostic w_seg) all lie at the origin."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    params = f"{matrix.shape}{random_state}{n_neighbors}{metric}".encode()
    key = hashlib.sha256(matrix.tobytes() + params).hexdigest()[:20]
    path = Path(cache_dir) / f"umap-{key}.npy" if cache_dir else None
    if path is not None and path.is_file():
        return np.load(path)
    if len(matrix) < 4:
        xy = np.zeros((len(matrix), 2), np.float32)
        xy[:, 0] = np.arange(len(matrix))
    elif not equal_rows(matrix):
        import umap

        reducer = umap.UMAP(n_components=2, n_neighbors=min(n_neighbors, len(matrix) - 1), metric=metric,
                            random_state=random_state, n_jobs=1)
        xy = reducer.fit_transform(matrix).astype(np.float32)
    else:
        xy = np.zeros((len(matrix), 2), np.float32)
    if path is not None:
        from maskx.atomic import atomic_write

        path.parent.mkdir(parents=True, exist_ok=True)

        def save(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.save(f, xy)

        atomic_write(path, save)
    return xy


def equal_rows(matrix: np.ndarray) -> bool:
    """Whether every row of ``matrix`` is the same (a class-agnostic head's w_seg)."""
    return not np.any(np.asarray(matrix).std(axis=0) > 0)


def nearest_a(matrix: np.ndarray, in_a: np.ndarray, k: int = NEAREST) -> tuple[np.ndarray, np.ndarray]:
    """Each class's ``k`` most similar set-A classes: (class rows int64 [K, k], cosine similarities
    float32 [K, k]), most similar first, ties broken by the lower row: ``maskx.diagnostics.
    nearest_a_classes`` (the notebooks' measure), the cosine of the rows centred on the mean row over
    all K classes, so that a component every class shares does not make every pair look alike.

    A class is never its own neighbour; with fewer than ``k`` candidates the missing places hold row
    -1 and similarity NaN. Rows that are all equal (``equal_rows``) have similarity 0 to everything.
    """
    from maskx.diagnostics import nearest_a_classes

    m = np.asarray(matrix, dtype=np.float64)
    if equal_rows(m):  # centring leaves rounding noise, whose cosines would rank at random
        m = np.zeros_like(m)
    idx, sim = nearest_a_classes(m, np.asarray(in_a, dtype=bool), k)
    return idx, sim.astype(np.float32)


def _known_categories() -> list[list[dict]]:
    """The COCO-format categories of the embedded worlds (family as ``supercategory``)."""
    out = []
    try:
        from maskx.data import attribute_world, synthetic, synthetic3k

        out += [synthetic3k.categories3k(v) for v in synthetic3k.VERSIONS] + [synthetic.categories()]
        out += [attribute_world.categories(w) for w in attribute_world.WORLDS]
    except (ImportError, AttributeError, TypeError, ValueError):  # a world that changed shape: names decide
        pass
    return out


def class_families(class_names: Sequence[str], category_ids: Sequence[int]) -> tuple[Optional[list[str]], str]:
    """Each class's family and where it came from: (families, source) or (None, why there are none).

    An embedded world's classes (same ids and names) take their category's ``supercategory``: the
    family (3000-class and version-3 worlds: the look, e.g. "star", shared by the family's shapes)
    or the body (attribute worlds). Other class lists take the name's last word ("nicked wide
    cross" → "cross") when that makes between 2 and ``MAX_FAMILIES`` groups and no more than half
    the classes are alone in theirs; else there are none.
    """
    names, ids = [str(n) for n in class_names], [int(c) for c in category_ids]
    for cats in _known_categories():
        by_id = {int(c["id"]): c for c in cats}
        if len(by_id) == len(ids) and all(by_id.get(c, {}).get("name") == n for c, n in zip(ids, names)):
            return [str(by_id[c].get("supercategory", "")) for c in ids], "the embedded world's categories"
    last = [n.split()[-1].lower() if n.split() else "" for n in names]
    counts: dict[str, int] = {}
    for w in last:
        counts[w] = counts.get(w, 0) + 1
    alone = sum(1 for w in last if counts[w] == 1)
    if 2 <= len(counts) <= MAX_FAMILIES and alone <= len(names) / 2:
        return last, "the last word of each class name"
    return None, f"the class names make {len(counts)} last-word groups: no family structure to colour by"


def classes_digest(class_names: Sequence[str], category_ids: Sequence[int], set_a) -> str:
    """SHA-256 of the class list, its ids and set A (what a projection file's rows refer to)."""
    text = json.dumps([list(map(str, class_names)), [int(c) for c in category_ids], sorted(int(c) for c in set_a)])
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Projections:
    """One model's class embeddings, ready to draw: per kind the UMAP layout and nearest set-A classes."""
    xy: dict  # kind -> float32 [K, 2]
    nearest: dict  # kind -> int64 [K, NEAREST]: rows of the nearest set-A classes (-1: none)
    similarity: dict  # kind -> float32 [K, NEAREST]: their cosine similarities (centred rows)
    families: Optional[list]  # [K] family names, or None
    meta: dict = field(default_factory=dict)  # format, weights_sha256, classes_sha256, umap, family_source, ...

    @property
    def kinds(self) -> list[str]:
        return [k for k in INPUTS if k in self.xy] + [k for k in self.xy if k not in INPUTS]


def compute_projections(matrices: dict, in_a, families: Optional[Sequence[str]] = None, family_source: str = "",
                        project: Optional[Callable[[np.ndarray], np.ndarray]] = None, k: int = NEAREST,
                        log: Callable[[str], None] = lambda _m: None) -> Projections:
    """``Projections`` of ``matrices`` ({kind: [K, D]}): ``project`` (default ``umap_2d`` with
    ``UMAP_PARAMS``) of each one's rows centred on its mean row (the rows ``nearest_a`` compares, and
    the notebooks' ``maskx.diagnostics.embedding_views`` projects) and ``nearest_a`` of each.
    ``meta`` records the parameters, the kinds whose rows are all equal (``equal_rows``) and the
    family source; the caller adds what the rows belong to (``weights_sha256``, ``classes_sha256``)."""
    project = project or umap_2d
    in_a = np.asarray(in_a, dtype=bool)
    xy, near, sim, same = {}, {}, {}, []
    for kind, matrix in matrices.items():
        log(f"{kind}: UMAP of {matrix.shape[0]} x {matrix.shape[1]}")
        m = np.asarray(matrix, dtype=np.float32)
        centred = np.zeros_like(m) if equal_rows(m) else m - m.mean(0, keepdims=True)
        xy[kind] = np.asarray(project(centred), dtype=np.float32)
        near[kind], sim[kind] = nearest_a(matrix, in_a, k)
        if equal_rows(matrix):
            same.append(kind)
    try:
        from importlib.metadata import version

        umap_version = version("umap-learn")
    except Exception:  # umap-learn absent (a test's own projection): the file says so
        umap_version = None
    meta = {"format": FORMAT, "umap": dict(UMAP_PARAMS), "umap_version": umap_version, "nearest": k,
            "equal_rows": same, "family_source": family_source,
            "similarity": "cosine of rows centred on the mean row over all classes",
            "layout": "UMAP of the rows centred on the mean row"}
    return Projections(xy, near, sim, None if families is None else [str(f) for f in families], meta)


def own_family_share(proj: Projections, kind: str, in_a) -> Optional[float]:
    """Share of set-B classes whose nearest set-A class in ``kind`` is of their own family (None
    without families or set-B classes)."""
    if proj.families is None:
        return None
    fam, b = np.array(proj.families), np.nonzero(~np.asarray(in_a, dtype=bool))[0]
    first = proj.nearest[kind][b, 0]
    ok = first >= 0
    return float(np.mean(fam[b[ok]] == fam[first[ok]])) if ok.any() else None


def chance_family_share(proj: Projections, in_a) -> Optional[float]:
    """``own_family_share`` expected of a set-A class drawn at random for each set-B class."""
    in_a = np.asarray(in_a, dtype=bool)
    if proj.families is None or not in_a.any() or in_a.all():
        return None
    fam = np.array(proj.families)
    return float(np.mean([np.mean(fam[in_a] == f) for f in fam[~in_a]]))


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def save_projections(path, proj: Projections) -> Path:
    """Write ``proj`` to ``path`` (an ``.npz`` numpy reads; atomic). The bytes depend on the data only
    (fixed member dates and order), so the same projections write the same file. Layouts are stored
    as float16 and similarities to 3 decimals: a few hundred kB for 3000 classes."""
    from maskx.atomic import atomic_write

    path = Path(path)
    fams = sorted(set(proj.families)) if proj.families is not None else []
    meta = {**proj.meta, "kinds": proj.kinds, "family_names": fams if proj.families is not None else None}
    members = {"meta": np.frombuffer(json.dumps(meta, sort_keys=True).encode(), np.uint8)}
    if proj.families is not None:
        members["family"] = np.array([fams.index(f) for f in proj.families], np.int16)
    for kind in proj.kinds:
        members[f"xy/{kind}"] = proj.xy[kind].astype(np.float16)
        members[f"nearest/{kind}"] = proj.nearest[kind].astype(np.int32)
        members[f"similarity/{kind}"] = np.round(proj.similarity[kind], 3).astype(np.float16)

    def write(tmp: str) -> None:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            for name, array in members.items():
                info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type, info.external_attr = zipfile.ZIP_DEFLATED, 0o644 << 16
                z.writestr(info, _npy(array), compresslevel=9)

    atomic_write(path, write)
    return path


class ProjectionFileError(ValueError):
    """A projection file that cannot be read (truncated, another format)."""


def load_projections(path) -> Projections:
    """``save_projections``' file back (float32 layouts). Raises ``ProjectionFileError``."""
    try:
        with np.load(Path(path), allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
        meta = json.loads(arrays.pop("meta").tobytes().decode())
        if meta.get("format") != FORMAT:
            raise ProjectionFileError(f"{path}: format {meta.get('format')!r}, expected {FORMAT!r}")
        kinds = meta["kinds"]
        fams = meta.get("family_names")
        families = [fams[i] for i in arrays["family"]] if fams is not None and "family" in arrays else None
        return Projections({k: arrays[f"xy/{k}"].astype(np.float32) for k in kinds},
                           {k: arrays[f"nearest/{k}"].astype(np.int64) for k in kinds},
                           {k: arrays[f"similarity/{k}"].astype(np.float32) for k in kinds}, families, meta)
    except ProjectionFileError:
        raise
    except (OSError, ValueError, KeyError, TypeError, IndexError, zipfile.BadZipFile, UnicodeDecodeError) as e:
        raise ProjectionFileError(f"{path}: unreadable ({type(e).__name__}: {e})") from e


def read_projections(path, weights_sha256: str, class_names, category_ids, set_a
                     ) -> tuple[Optional[Projections], str]:
    """The projections in ``path`` when they were made from these weights and this class list:
    (projections, "") or (None, why not: absent, unreadable, or made for other weights or classes)."""
    path = Path(path)
    if not path.is_file():
        return None, f"no precomputed projections (`{path}`)"
    try:
        proj = load_projections(path)
    except ProjectionFileError as e:
        return None, str(e)
    digest = classes_digest(class_names, category_ids, set_a)
    if proj.meta.get("weights_sha256") != weights_sha256 or proj.meta.get("classes_sha256") != digest:
        return None, f"`{path}` was made for other weights or another class list (stale)"
    n = len(class_names)
    if any(proj.xy[k].shape != (n, 2) for k in proj.kinds):
        return None, f"`{path}` does not hold one row per class"
    return proj, ""


def projections_of(predictor, kinds=INPUTS, project=None, log: Callable[[str], None] = lambda _m: None) -> Projections:
    """``Projections`` of a loaded ``predictor`` (``maskx.load``), keyed by its weights and classes."""
    mats = embedding_matrices(predictor, kinds)
    in_a = np.array([c in predictor.set_a for c in predictor.category_ids])
    families, source = class_families(predictor.class_names, predictor.category_ids)
    proj = compute_projections(mats, in_a, families, source, project=project, log=log)
    proj.meta.update(weights_sha256=predictor.meta.get("sha256"),
                     classes_sha256=classes_digest(predictor.class_names, predictor.category_ids, predictor.set_a),
                     iteration=predictor.meta.get("iteration"))
    return proj


def build_projections(model, out=None, kinds=INPUTS, log: Callable[[str], None] = lambda _m: None) -> Path:
    """Compute a model's projections and write them beside its checkpoint (``PROJECTIONS_FILE``), or
    to ``out``. ``model``: what ``maskx.load`` takes (a shipped model's name, a run folder — the shipped
    model's or a study detector's — or a ``ckpt_*.json``). Returns the file written."""
    from maskx.hub import resolve
    from maskx.predictor import load

    path = Path(resolve(model))
    predictor = load(path)  # a run folder: its newest valid checkpoint, whose SHA-256 the file records
    proj = projections_of(predictor, kinds, log=log)
    folder = path.parent if path.is_file() else path
    return save_projections(Path(out) if out is not None else folder / PROJECTIONS_FILE, proj)
