"""Can weight transfer work here? Four measures of the paper's premise, on one trained detector.

Mask^X predicts a class's mask weights from its detection weights, ``w_seg = T(w_det)`` (§3.1).
That can only help set B if ``w_det`` is "an appearance-based visual embedding of the class":
classes that look alike have alike detection weights, in a way that also says how their masks
differ. These measures check each link of that chain directly, without training the study:

- ``similarity_index``: do classes that share visual attributes have similar embeddings?
  Spearman rho between cos(e_i, e_j) and the number of attributes classes i and j share (over all
  pairs), and the share of B classes whose nearest A class (by cosine) shares an attribute.
- ``linear_probe``: how much of a class-specific mask head can a linear map from the embedding
  recover? Ridge regression from the embedding of A's classes to the oracle's learned mask weights
  (oracle trained with every class's masks), applied to B; scored by mask IoU on B's ground-truth
  boxes. The share of the agnostic-to-oracle gap it closes is roughly what a T could reach from
  that embedding. Ridge shrinks what it cannot explain toward A's mean row; where the oracle's rows
  share little (its mean row is no mask head), a shrunk row predicts empty masks whatever its
  direction, so the probe is also read **calibrated**: each predicted row's deviation from A's
  mean row rescaled to the mean deviation of A's rows (``calibrate_rows``). A T trained on the
  mask loss is not shrunk this way.
- the class-agnostic head trained with every class's masks (preset ``agnostic_all``): oracle minus
  it on B is what knowing the class is worth, apart from having B's masks.
- ``transfer_spread``: how class-specific are a trained T's outputs? The mean distance of each
  class's ``w_seg`` from the mean row, over the mean row's norm. Near 0, T is a class-agnostic head.

``embedding_views`` gives what a person looks at beside these numbers, from class weights alone: a
2-d layout of the classes per embedding and each B class's nearest A classes.

Embeddings are rows [K, D] over the K real classes (no background row).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from .models.transfer import detection_weights

EMBEDDING_KINDS = ("cls", "box", "cls+box", "randn", "glove", "text")
# the attributes themselves (one-hot rows of ``attribute_matrix``): the probe's upper bound for any
# embedding that reflects them, measured beside the embeddings T can be given
ATTRIBUTES = "attributes"
RIDGE_ALPHAS = tuple(10.0 ** k for k in range(-4, 5))  # searched by leave-one-out on set A
NEAREST_A = 5  # nearest set-A classes kept per set-B class (``embedding_views``)


def attribute_matrix(class_attributes: Sequence[Sequence[str]]) -> tuple[np.ndarray, list[str]]:
    """Per-class attribute names → (bool [K, M] incidence matrix, the M attribute names, sorted)."""
    names = sorted({a for attrs in class_attributes for a in attrs})
    col = {a: j for j, a in enumerate(names)}
    m = np.zeros((len(class_attributes), len(names)), bool)
    for i, attrs in enumerate(class_attributes):
        m[i, [col[a] for a in attrs]] = True
    return m, names


def cosine_matrix(emb: np.ndarray, center: bool = False) -> np.ndarray:
    """Cosine similarity of every pair of rows of ``emb`` [K, D] → [K, K]. ``center`` subtracts the
    mean row first: a softmax classifier is unchanged by adding one vector to every class's row, so
    only the centred rows of ``w_cls`` carry class identity. Zero rows have cosine 0 with all."""
    x = np.asarray(emb, np.float64)
    if center:
        x = x - x.mean(0, keepdims=True)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    x = np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)
    return x @ x.T


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two 1-d arrays (ties get their mean rank); nan if either is constant."""
    ra, rb = _ranks(np.asarray(a, np.float64)), _ranks(np.asarray(b, np.float64))
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), np.float64)
    ranks[order] = np.arange(len(x), dtype=np.float64)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return (sums / counts)[inverse]


def similarity_index(emb: np.ndarray, attributes: np.ndarray, in_b: np.ndarray, center: bool = False) -> dict:
    """How well ``emb`` [K, D] reflects shared visual attributes ``attributes`` [K, M] (bool).

    Returns ``{"rho": Spearman rho between cos(e_i, e_j) and |attrs_i & attrs_j| over all pairs
    i < j, "nearest_a_shares": share of B classes (``in_b`` [K] bool) whose nearest A class by
    cosine shares at least one attribute with it, "chance_shares": the same share for a uniformly
    random A class (its expectation), "pairs": K (K - 1) / 2}``.
    """
    attributes = np.asarray(attributes, bool)
    in_b = np.asarray(in_b, bool)
    k = len(emb)
    if attributes.shape[0] != k or in_b.shape != (k,):
        raise ValueError(f"{k} embedding rows, {attributes.shape[0]} attribute rows, {in_b.shape} set flags")
    cos = cosine_matrix(emb, center)
    shared = attributes.astype(np.int64) @ attributes.T.astype(np.int64)
    iu = np.triu_indices(k, 1)
    out = {"rho": spearman(cos[iu], shared[iu]), "pairs": len(iu[0])}
    a_idx, b_idx = np.where(~in_b)[0], np.where(in_b)[0]
    if len(a_idx) and len(b_idx):
        nearest = a_idx[np.argmax(cos[np.ix_(b_idx, a_idx)], axis=1)]
        out["nearest_a_shares"] = float(np.mean(shared[b_idx, nearest] > 0))
        out["chance_shares"] = float(np.mean(shared[np.ix_(b_idx, a_idx)] > 0))
    return out


def similarity_indices(emb: np.ndarray, attributes: np.ndarray, in_b: np.ndarray) -> dict:
    """``similarity_index`` of ``emb`` as given and centred: ``{"similarity", "similarity_centred"}``."""
    return {"similarity": similarity_index(emb, attributes, in_b),
            "similarity_centred": similarity_index(emb, attributes, in_b, center=True)}


def nearest_a_classes(emb: np.ndarray, in_a: np.ndarray, k: int = NEAREST_A) -> tuple[np.ndarray, np.ndarray]:
    """Each class's ``k`` most similar set-A classes by the cosine of centred rows (``cosine_matrix``
    with ``center=True``, as ``similarity_index``'s centred reading): ``emb`` [K, D], ``in_a`` [K] bool
    → (rows int64 [K, k], cosines float64 [K, k]), most similar first, ties broken by the lower row.
    A class is never its own neighbour; with fewer than ``k`` candidates the missing places hold row
    -1 and cosine NaN."""
    in_a = np.asarray(in_a, bool)
    if in_a.shape != (len(emb),):
        raise ValueError(f"{len(emb)} embedding rows, {in_a.shape} set flags")
    cos = cosine_matrix(emb, center=True)
    a_rows = np.nonzero(in_a)[0]
    sims = cos[:, a_rows]
    sims[a_rows, np.arange(len(a_rows))] = -np.inf  # not its own neighbour
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    rows = np.full((len(cos), k), -1, np.int64)
    vals = np.full((len(cos), k), np.nan)
    taken = np.take_along_axis(sims, order, axis=1)
    ok = np.isfinite(taken)
    rows[:, :order.shape[1]] = np.where(ok, a_rows[order], -1)
    vals[:, :order.shape[1]] = np.where(ok, taken, np.nan)
    return rows, vals


@dataclass(frozen=True)
class RidgeMap:
    """y ≈ (x - x_mean) @ weight + y_mean, fitted by ``fit_ridge``."""
    weight: np.ndarray  # [D, E]
    x_mean: np.ndarray  # [D]
    y_mean: np.ndarray  # [E]
    alpha: float
    loo_error: float  # mean squared leave-one-out error at ``alpha`` (per output entry)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, np.float64) - self.x_mean) @ self.weight + self.y_mean


def fit_ridge(x: np.ndarray, y: np.ndarray, alphas: Sequence[float] = RIDGE_ALPHAS) -> RidgeMap:
    """Ridge regression x [N, D] → y [N, E] with an intercept, alpha chosen among ``alphas`` by exact
    leave-one-out error on these N rows (kernel form: N may be far below D, as 20 A classes against
    5120-d detection weights). Rows of x are scaled by one common factor (their mean norm) first, so
    the alphas mean the same for every embedding."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) != len(y) or len(x) < 3:
        raise ValueError(f"ridge needs the same number (>= 3) of rows in x and y, got {len(x)} and {len(y)}")
    x_mean, y_mean = x.mean(0), y.mean(0)
    xc, yc = x - x_mean, y - y_mean
    scale = float(np.linalg.norm(xc, axis=1).mean()) or 1.0
    xs = xc / scale
    gram = xs @ xs.T
    n = len(x)
    best = None
    for alpha in alphas:
        inv = np.linalg.inv(gram + alpha * np.eye(n))
        # fitted values y_mean + G (G + alpha I)^-1 yc: hat matrix 1/n + G (G + alpha I)^-1 (the intercept
        # is unpenalised); a penalised least-squares fit's leave-one-out residual is r_i / (1 - H_ii)
        resid = yc - gram @ inv @ yc
        leave = resid / (1.0 - (np.einsum("ij,ji->i", gram, inv) + 1.0 / n))[:, None]
        err = float(np.mean(leave ** 2))
        if best is None or err < best[0]:
            best = (err, alpha, inv)
    err, alpha, inv = best
    weight = xs.T @ inv @ yc / scale  # [D, E], for unscaled centred x
    return RidgeMap(weight, x_mean, y_mean, float(alpha), err)


def linear_probe(emb: np.ndarray, w_seg: np.ndarray, in_a: np.ndarray,
                 alphas: Sequence[float] = RIDGE_ALPHAS) -> tuple[np.ndarray, RidgeMap]:
    """Ridge from the embedding of set A's classes to their mask weights, applied to every class.

    emb [K, D], w_seg [K, E] (e.g. the oracle's weights with its bias as a last column), in_a [K] bool
    → (predicted w_seg [K, E], the fitted map). Only A's rows of ``w_seg`` are read."""
    in_a = np.asarray(in_a, bool)
    fit = fit_ridge(np.asarray(emb)[in_a], np.asarray(w_seg)[in_a], alphas)
    return fit(emb), fit


def calibrate_rows(pred: np.ndarray, w_seg: np.ndarray, in_a: np.ndarray) -> np.ndarray:
    """Rows ``pred`` [K, E] with each one's deviation from A's mean row of ``w_seg`` [K, E] rescaled to
    the mean norm of A's own deviations (``in_a`` [K] bool): the direction ridge predicts, at the size
    the oracle's rows have. A row equal to the mean stays the mean."""
    in_a = np.asarray(in_a, bool)
    w = np.asarray(w_seg, np.float64)
    mean = w[in_a].mean(0)
    target = float(np.linalg.norm(w[in_a] - mean, axis=1).mean())
    dev = np.asarray(pred, np.float64) - mean
    norm = np.linalg.norm(dev, axis=1, keepdims=True)
    return mean + np.divide(dev * target, norm, out=np.zeros_like(dev), where=norm > 0)


def transfer_spread(w_seg: np.ndarray) -> dict:
    """How class-specific the rows of ``w_seg`` [K, E] are: ``{"mean_row_norm": |mean row|,
    "mean_deviation": mean over classes of |w_k - mean row|, "spread": their ratio}``. A class-agnostic
    head has spread 0; rows with no shared part have spread >= 1."""
    w = np.asarray(w_seg, np.float64)
    mean = w.mean(0)
    norm = float(np.linalg.norm(mean))
    dev = float(np.linalg.norm(w - mean, axis=1).mean())
    return {"mean_row_norm": norm, "mean_deviation": dev, "spread": dev / norm if norm else float("inf")}


def gap_closed(value: float, agnostic: float, oracle: float) -> Optional[float]:
    """Share of the agnostic-to-oracle gap that ``value`` closes (1: as the oracle; 0: as the agnostic
    head; negative: below it). None when the gap is zero."""
    gap = oracle - agnostic
    return None if gap == 0 else (value - agnostic) / gap


def class_embedding_matrix(model, class_names: Sequence[str], kind: str, seed: int = 0) -> np.ndarray:
    """The input of T for each of the model's K real classes, float64 [K, D]: detection weights read from
    its box predictor (``cls``, ``box``, ``cls+box``) or a fixed embedding of the class names (``randn``,
    ``glove``: zero rows for names GloVe does not know, ``text``) as its source gives it (T sees a fixed
    embedding's rows scaled to ``Config.embedding_norm``, which changes no cosine)."""
    from .models.embeddings import class_embeddings

    if kind in ("cls", "box", "cls+box"):
        w = detection_weights(model.roi_heads.box_predictor, kind)[1:]
    elif kind in ("randn", "glove", "text"):
        w = class_embeddings(kind, list(class_names), seed=seed, **({"missing": "zero"} if kind == "glove" else {}))
    else:
        raise ValueError(f"embedding kind must be one of {EMBEDDING_KINDS}, got {kind!r}")
    return w.detach().double().cpu().numpy()


def mask_weight_rows(model) -> np.ndarray:
    """Every real class's mask weights with its bias as a last column, [K, E + 1] (no bias: zeros)."""
    rh = model.roi_heads
    w, b = rh.mask_predictor.all_classes(rh.box_predictor)
    w = w.detach().double().cpu().numpy()[1:]
    b = np.zeros(len(w)) if b is None else b.detach().double().cpu().numpy()[1:]
    return np.concatenate([w, b[:, None]], axis=1)  # a class-agnostic head's shared row comes K times


@torch.no_grad()
def with_mask_weights(oracle_model, rows: np.ndarray):
    """A copy of an oracle model (class-specific ``MaskWeights``) whose per-class mask weights and biases
    are ``rows`` [K, E + 1] (as ``mask_weight_rows``); the background row is kept."""
    import copy

    mp = oracle_model.roi_heads.mask_predictor
    if mp.kind != "oracle":
        raise ValueError(f"needs an oracle (class-specific) mask head, got {mp.kind!r}")
    model = copy.deepcopy(oracle_model)
    rows_t = torch.tensor(np.array(rows), dtype=mp.weight.dtype)  # a copy: rows may be a read-only view
    if rows_t.shape != (mp.weight.shape[0] - 1, mp.weight.shape[1] + 1):
        raise ValueError(f"rows must be [{mp.weight.shape[0] - 1}, {mp.weight.shape[1] + 1}], got {tuple(rows_t.shape)}")
    model.roi_heads.mask_predictor.weight[1:] = rows_t[:, :-1]
    model.roi_heads.mask_predictor.bias[1:] = rows_t[:, -1]
    return model


def category_attributes(categories: Sequence[dict]) -> list[list[str]]:
    """The visual attributes of COCO-format ``categories``: the ``attributes`` the data records (a bare
    name such as the 3000-class world's "nicked" becomes ``mod:nicked``), its ``base`` class where it
    has one (``base:<name>``), and, unless an attribute names its body, the family look it shares
    (``family:<supercategory>``)."""
    out = []
    for c in categories:
        attrs = [a if ":" in a else f"mod:{a}" for a in c.get("attributes", [])]
        if "base" in c:
            attrs.append(f"base:{c['base']}")
        if not any(a.startswith("body:") for a in attrs):
            attrs.append(f"family:{c.get('supercategory', '')}")
        out.append(attrs)
    return out


def embedding_views(model, categories: Sequence[dict], in_a: np.ndarray, kinds: Sequence[str] = EMBEDDING_KINDS,
                    seed: int = 0, project: Optional[Callable[[np.ndarray], np.ndarray]] = None,
                    k: int = NEAREST_A) -> dict:
    """What a person looks at to compare the inputs of T, from class weights alone (no images): per
    kind, the classes' 2-d layout and each set-B class's nearest set-A classes.

    ``model``: a trained detector (its box predictor gives ``cls``, ``box``, ``cls+box``);
    ``categories``: its K real classes' COCO categories in label order (names, ids, attributes as
    ``category_attributes`` reads them); ``in_a`` [K] bool: set A; ``seed``: the ``randn`` embedding's.
    Each kind of ``kinds`` and ``"attributes"`` (one-hot rows: the reference) is centred on its mean
    row (a softmax classifier's rows are only defined up to a shared row), then ``project``ed
    ([K, D] → [K, 2], e.g. a UMAP with cosine distance; none: no layout) and searched by
    ``nearest_a_classes``. A kind that cannot be built is left out with its error.

    Returns ``{"class_list": [{"id", "name", "set": "A" | "B", "attributes"}] (label order),
    "nearest_A": {kind: {B category id (str): [[A category id, cosine], ...] (``k``, most similar
    first)}}, "projection": {kind: [[x, y]] in label order} (with ``project``), "view_errors": {kind:
    error}}``.
    """
    in_a = np.asarray(in_a, bool)
    if len(categories) != len(in_a):
        raise ValueError(f"{len(categories)} categories, {len(in_a)} set flags")
    ids = [int(c["id"]) for c in categories]
    names = [c["name"] for c in categories]
    attrs = category_attributes(categories)
    out: dict = {"class_list": [{"id": i, "name": n, "set": "A" if a else "B", "attributes": at}
                                for i, n, a, at in zip(ids, names, in_a, attrs)],
                 "nearest_A": {}, "view_errors": {}}
    if project is not None:
        out["projection"] = {}
    onehot = attribute_matrix(attrs)[0].astype(np.float64)
    for kind in (*kinds, ATTRIBUTES):
        try:
            emb = onehot if kind == ATTRIBUTES else class_embedding_matrix(model, names, kind, seed=seed)
        except (ImportError, OSError, ValueError) as e:
            out["view_errors"][kind] = f"{type(e).__name__}: {e}"
            continue
        rows, cos = nearest_a_classes(emb, in_a, k)
        out["nearest_A"][kind] = {str(ids[b]): [[ids[r], round(float(c), 4)] for r, c in zip(rows[b], cos[b]) if r >= 0]
                                  for b in np.nonzero(~in_a)[0]}
        if project is not None:
            xy = np.asarray(project(emb - emb.mean(0, keepdims=True)), np.float64)
            out["projection"][kind] = [[round(float(x), 3), round(float(y), 3)] for x, y in xy]
    return out


def diagnose(detector, oracle, agnostic, val, split, *, agnostic_all=None, transfer=None, images: int = 100,
             kinds: Sequence[str] = EMBEDDING_KINDS, seed: int = 0) -> dict:
    """The four measures on one frozen detector and mask heads trained on it (stage-wise).

    ``detector``, ``oracle`` (class-specific head, every class's masks), ``agnostic`` (A's masks),
    ``agnostic_all`` (class-agnostic, every class's masks) and ``transfer`` (a trained T): models that
    share ``detector``'s backbone and box branch (the last two optional). ``val``: a ``CocoDataset``
    with every mask; ``split``: its A/B ``Split``. Mask IoU is measured on the ground-truth boxes and
    classes of the first ``images`` val images (``gt_box_eval``). A kind whose embedding cannot be built
    (e.g. ``text`` without its extra) is reported with its error.

    Returns ``{"iou_on_gt_boxes": {model: {"A", "B"}}, "per_class_iou_on_gt_boxes": {model: {category id
    (str): mean IoU}} (the heads given, classes with an instance in those images), "embeddings": {kind: {"similarity",
    "similarity_centred", "probe": {"alpha", "iou_A", "iou_B", "gap_closed_B", "class_part_closed_B"},
    "probe_calibrated": the same without alpha}}, "spread": {...}, "class_value_B": oracle -
    agnostic_all on B, ...}``; the kinds are ``kinds`` and ``"attributes"`` (the upper bound). ``gap_closed_B`` is the
    probe's share of the agnostic (A's masks) → oracle gap; ``class_part_closed_B`` its share of the
    gap between the oracle's FCN with one shared row (A's mean, ``oracle_mean_row``) and the oracle:
    the class-specific part alone, since the probe runs on the oracle's FCN, trained with B's masks.
    """
    from . import gt_box_eval

    names = list(val.categories.names)
    ids = list(val.categories.ids)
    a_ids = set(split.a_ids)
    in_a = np.array([c in a_ids for c in ids])
    cats = {c["id"]: c for c in val.data["categories"]}
    attrs, attr_names = attribute_matrix(category_attributes([cats[c] for c in ids]))
    inputs = gt_box_eval.gt_box_inputs(detector, val, images)

    def ious(model, per_class: Optional[dict] = None) -> dict:
        s = gt_box_eval.summarize(gt_box_eval.instance_ious(model, inputs), split)
        if per_class is not None:
            per_class.update({str(c): v for c, v in s["per_class"].items()})
        return {k: s[k]["mean_iou"] for k in ("A", "B")}

    models = {"agnostic": agnostic, "oracle": oracle, "agnostic_all": agnostic_all, "transfer": transfer}
    per_class: dict = {k: {} for k, m in models.items() if m is not None}
    out: dict = {"images": images, "attributes": attr_names, "classes": len(names), "A_classes": int(in_a.sum()),
                 "iou_on_gt_boxes": {k: ious(m, per_class[k]) for k, m in models.items() if m is not None},
                 "per_class_iou_on_gt_boxes": per_class}
    base = out["iou_on_gt_boxes"]
    oracle_rows = mask_weight_rows(oracle)
    # the oracle's features with one shared row (A's mean) for every class: what the oracle's FCN gives
    # without class-specific weights. The probe's gap over the A-only agnostic head mixes two things:
    # B's masks in the FCN's training, and B's own weights; from this row on, only the second is left
    mean_row = np.broadcast_to(oracle_rows[in_a].mean(0), oracle_rows.shape)
    base["oracle_mean_row"] = ious(with_mask_weights(oracle, mean_row))
    out["embeddings"] = {}

    def probe_record(pred: np.ndarray) -> dict:
        r = ious(with_mask_weights(oracle, pred))
        return {"iou_A": r["A"], "iou_B": r["B"],
                "gap_closed_B": gap_closed(r["B"], base["agnostic"]["B"], base["oracle"]["B"]),
                "class_part_closed_B": gap_closed(r["B"], base["oracle_mean_row"]["B"], base["oracle"]["B"])}

    for kind in (*kinds, ATTRIBUTES):
        try:
            emb = attrs.astype(np.float64) if kind == ATTRIBUTES else class_embedding_matrix(detector, names, kind, seed=seed)
        except (ImportError, OSError, ValueError) as e:
            out["embeddings"][kind] = {"error": f"{type(e).__name__}: {e}"}
            continue
        pred, fit = linear_probe(emb, oracle_rows, in_a)
        out["embeddings"][kind] = {
            **similarity_indices(emb, attrs, ~in_a),
            "probe": {"alpha": fit.alpha, **probe_record(pred)},
            "probe_calibrated": probe_record(calibrate_rows(pred, oracle_rows, in_a))}
    out["spread"] = {"oracle": transfer_spread(oracle_rows[:, :-1])}
    if transfer is not None:
        out["spread"]["transfer"] = transfer_spread(mask_weight_rows(transfer)[:, :-1])
    if agnostic_all is not None:
        out["class_value_B"] = base["oracle"]["B"] - base["agnostic_all"]["B"]
    out["oracle_minus_agnostic_B"] = base["oracle"]["B"] - base["agnostic"]["B"]
    return out
