"""Embeddings: the classes in the embedding a person chooses (an input of T, or w_seg), coloured by
family or by set; a set-B class's nearest set-A classes there, and the masks the model makes for
them; select points to see any classes' masks.

The layouts and nearest classes come from ``<model dir>/projections.npz`` (``scripts/projections.py``)
when it was made for these weights, so the first view needs neither the model nor UMAP; otherwise
they are computed on this visit, with a note.
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import streamlit as st  # noqa: E402

import common  # noqa: E402

# the order a person reads them in: fixed embeddings, detection weights, then the result
KINDS = ("randn", "glove", "text", "w_cls", "w_box", "w_cls+box", "w_seg")
LABELS = {"randn": "randn", "glove": "GloVe", "text": "text (MiniLM)", "w_cls": "w_cls", "w_box": "w_box",
          "w_cls+box": "cls+box (w_det)", "w_seg": "w_seg (mask weights)"}
ABOUT = {"randn": "a random vector per class name: no similarity at all, the control",
         "glove": "GloVe word vectors of the class name, averaged over its words",
         "text": "a sentence embedding (all-MiniLM-L6-v2) of the class name",
         "w_cls": "the class's row of the detector's classification layer",
         "w_box": "the class's rows of the detector's box-regression layer",
         "w_cls+box": "w_cls and w_box together: the detection weights w_det",
         "w_seg": "the mask weights the model uses per class (for a transfer model, T(its input))"}
FAMILY_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                  "#bcbd22", "#17becf")  # plotly's D3 palette; more families cycle through it
MAX_CLASSES, PER_CLASS = 12, 4  # examples shown for a selection
PER_ROW = 6  # classes per row of drawn masks: a set-B class and its 5 nearest set-A classes
PROJECTIONS_HOW = "python scripts/projections.py"
FLUSH_S = 1.0


# ---------------------------------------------------------------- the projections

@st.cache_resource(max_entries=4, show_spinner=False)
def _read(path: str, stamp: int, sha: str, names: tuple, ids: tuple, set_a: tuple):
    from maskx_app.projection import read_projections

    return read_projections(path, sha, list(names), list(ids), set(set_a))


@st.cache_resource(max_entries=2, show_spinner=False)
def _computed(key: str, cache_dir: str, _predictor):
    from maskx_app.projection import projections_of, umap_2d

    return projections_of(_predictor, project=lambda m: umap_2d(m, Path(cache_dir)))


def classes_and_projections():
    """(class names, category ids, set A, checkpoint config, projections, note): from the checkpoint
    JSON and the file beside it when that matches; else the model is loaded and they are computed,
    and the note says why."""
    from maskx_app.projection import PROJECTIONS_FILE

    ckpt = common.newest_checkpoint_json(common.model_path())
    try:
        meta = common.checkpoint_meta(ckpt) if ckpt is not None else None
        names, ids, set_a = tuple(meta["class_names"]), tuple(meta["category_ids"]), tuple(meta["set_A"])
        sha, config = str(meta["sha256"]), dict(meta.get("config") or {})
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        meta = None
    if meta is None:  # no checkpoint or an unreadable one: the model loader says what is wrong
        why = "the checkpoint's metadata could not be read"
    else:
        file = ckpt.parent / PROJECTIONS_FILE
        proj, why = _read(str(file), file.stat().st_mtime_ns if file.is_file() else 0, sha, names, ids, set_a)
        if proj is not None:
            return list(names), list(ids), set(set_a), config, proj, None
    predictor = common.require_model()
    n = len(predictor.class_names)
    with st.spinner(f"Computing the class embeddings and their UMAP layouts ({n} classes; minutes for thousands) ..."):
        proj = _computed(common.model_key(predictor), str(common.settings().cache), predictor)
    note = (f"Computed on this visit: {why}. `{PROJECTIONS_HOW} {common.model_path()}` writes them beside the "
            "model, and this page then opens at once.")
    return list(predictor.class_names), list(predictor.category_ids), set(predictor.set_a), \
        dict(predictor.meta.get("config") or {}), proj, note


# ---------------------------------------------------------------- the chart

def figure(xy, names, in_a, families, colour: str, picked: int | None, nearest: list[int], selected: set,
           title: str, height: int, labels: bool = True):
    import plotly.graph_objects as go

    fig = go.Figure()
    scatter = go.Scattergl if len(names) > 1000 else go.Scatter  # WebGL for thousands of classes
    small = 4 if len(names) > 500 else 7

    def points(idx, name, color, symbol, size, line=None, opacity=0.8, legendgroup=None, showlegend=True):
        idx = np.asarray(idx, int)
        fig.add_trace(scatter(x=xy[idx, 0], y=xy[idx, 1], mode="markers", name=name, customdata=idx,
                              hovertext=[f"{names[i]} (set {'A' if in_a[i] else 'B'})" for i in idx],
                              hoverinfo="text", legendgroup=legendgroup, showlegend=showlegend,
                              marker=dict(color=color, size=size, symbol=symbol, opacity=opacity,
                                          line=line or dict(width=0))))

    a_line = dict(color="black", width=1)
    if colour == "family" and families is not None:
        fam = np.array(families)
        for j, f in enumerate(sorted(set(families))):
            c = FAMILY_COLOURS[j % len(FAMILY_COLOURS)]
            points(np.nonzero((fam == f) & ~in_a)[0], f, c, "circle", small, opacity=0.55, legendgroup=f)
            points(np.nonzero((fam == f) & in_a)[0], f, c, "diamond", small + 6, a_line, 1.0, f, False)
    else:
        points(np.nonzero(~in_a)[0], "set B", common.RED_HEX, "circle", small, opacity=0.5)
        points(np.nonzero(in_a)[0], "set A", common.GREEN_HEX, "diamond", small + 6, a_line, 1.0)
    if selected:
        points(sorted(selected), "selected", "rgba(0,0,0,0)", "circle", 13, dict(color="black", width=2), 1.0)
    if picked is not None:
        ring = [i for i in nearest if i >= 0]
        if ring:
            points(ring, "nearest set A", "rgba(0,0,0,0)", "circle", 18, dict(color="black", width=2.5), 1.0)
        points([picked], names[picked], common.RED_HEX, "star", 20, dict(color="black", width=1.5), 1.0)
        if labels:  # the chosen class by name, its neighbours by rank (their names are in the table)
            for rank, i in enumerate([picked] + ring):
                fig.add_annotation(x=float(xy[i, 0]), y=float(xy[i, 1]), text=names[i] if rank == 0 else str(rank),
                                   showarrow=rank == 0, arrowhead=0, ax=30, ay=-24, xshift=0 if rank == 0 else 12,
                                   yshift=0 if rank == 0 else 10, bgcolor="rgba(255,255,255,0.85)",
                                   font=dict(size=13 if rank == 0 else 12, color="black"))
    fig.update_layout(title=title, height=height, margin=dict(l=10, r=10, t=40, b=10), dragmode="lasso",
                      legend=dict(orientation="h", y=-0.02, itemsizing="constant"),
                      xaxis=dict(showticklabels=False), yaxis=dict(showticklabels=False))
    return fig


def selected_points(event) -> set:
    out = set()
    for p in (event.selection.get("points", []) if event else []):
        c = p.get("customdata")
        c = c[0] if isinstance(c, (list, tuple)) else c
        if c is not None:
            out.add(int(c))
    return out


# ---------------------------------------------------------------- masks

@st.cache_resource(max_entries=256, show_spinner=False)
def rendered(key: str, world: str, name: str, _predictor):
    """(RGB, [(box, model mask, IoU, ground-truth mask)]) of a fresh scene with two instances of ``name``."""
    from maskx_app.class_examples import model_masks, render_examples

    rgb, masks = render_examples(world, name)
    return rgb, [(b, p, i, m) for (b, p, i), m in zip(model_masks(_predictor, rgb, masks, name), masks)]


@st.cache_resource(max_entries=2, show_spinner=False)
def class_index(key: str, _ds) -> dict:
    """{class name: [(dataset index, instance k)]} over the ground truth."""
    cats, out = _ds.categories, {}
    for pos, iid in enumerate(_ds.ids):
        for k, it in enumerate(_ds.anns[iid]):
            if it.get("has_mask"):
                out.setdefault(cats.name(cats.label(it["ann"]["category_id"])), []).append((pos, k))
    return out


def crop(rgb, mask, box, name, in_a, outline=None):
    """The instance's box with a margin, its mask drawn in its set's colour (and ``outline``, a
    ground-truth mask, as a thin white contour)."""
    from maskx_app.visualize import Drawn

    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = box
    m = 0.2 * max(x1 - x0, y1 - y0) + 2
    a, b = int(max(0, x0 - m)), int(max(0, y0 - m))
    c, d = int(min(w, x1 + m + 1)), int(min(h, y1 + m + 1))
    sub = None if mask is None else mask[b:d, a:c]
    pic = common.picture(np.ascontiguousarray(rgb[b:d, a:c]), [Drawn([x0 - a, y0 - b, x1 - a, y1 - b], sub, name,
                                                                     None, in_a)], min_side=128, labels=False)
    if outline is not None:
        gt = outline[b:d, a:c]
        f = pic.shape[0] // gt.shape[0]
        gt = gt.repeat(f, 0).repeat(f, 1)
        edge = gt & ~(np.roll(gt, 1, 0) & np.roll(gt, -1, 0) & np.roll(gt, 1, 1) & np.roll(gt, -1, 1))
        pic = pic.copy()
        pic[edge] = 255
    return pic


def model_or_none():
    """The model, for the masks below the chart; its error as a message in their place."""
    if "torch" not in sys.modules:
        # importing torch holds the GIL for seconds: give the server a moment to send the chart first
        # (as common.preload_model does), so the first view does not wait for the model
        time.sleep(FLUSH_S)
    predictor, error = common.load_model()
    if error:
        st.error(error)
    return predictor


def masks_cell(predictor, world: str, name: str, in_a: bool, caption: str) -> None:
    """One class's fresh instances with the model's masks on their true boxes, IoU under each."""
    rgb, found = rendered(common.model_key(predictor), world, name, predictor)
    st.markdown(caption)
    if not found:
        st.caption("(no instance could be drawn)")
        return
    st.image([crop(rgb, p, b, name, in_a, outline=m) for b, p, _, m in found],
             caption=[f"IoU {i:.2f}" for _, _, i, _ in found], width=112)


def examples(predictor, names: list[str], a_names: set) -> None:
    """Ground-truth masks of the chosen classes from the val data, else the model's masks on the
    sample images; at most ``MAX_CLASSES`` classes with examples are drawn."""
    cfg = common.settings()
    opened, _ = common.open_dataset(cfg.data)
    index = class_index(str(cfg.data), opened[0]) if opened and opened[1] == "coco" else {}
    predicted: dict = {}
    if any(n not in index for n in names):
        for _, iid, rgb in common.sample_images(str(cfg.data)):
            for inst in common.predict(predictor, rgb):
                predicted.setdefault(inst.class_name, []).append((iid, rgb, inst))
    with_examples = [n for n in names if n in index or n in predicted]
    for name in with_examples[:MAX_CLASSES]:
        tiles, captions = [], []
        for pos, k in index.get(name, [])[:PER_CLASS]:
            image, target = opened[0][pos]
            tiles.append(crop(common.to_uint8(image), target["masks"][k].numpy().astype(bool),
                              target["boxes"][k].tolist(), name, name in a_names))
            captions.append(f"ground truth, image {opened[0].ids[pos]}")
        if not tiles:
            for iid, rgb, inst in sorted(predicted[name], key=lambda x: -x[2].score)[:PER_CLASS]:
                tiles.append(crop(rgb, inst.mask, inst.box, name, inst.in_A))
                captions.append(f"predicted {inst.score:.2f}, image {iid}")
        st.markdown(f"**{name}** (set {'A' if name in a_names else 'B'})")
        st.image(tiles, caption=captions, width=128)
    if len(with_examples) > MAX_CLASSES:
        st.caption(f"... and {len(with_examples) - MAX_CLASSES} more classes with examples; select fewer to "
                   "see them.")
    without = [n for n in names if n not in index and n not in predicted]
    if without:
        more = f" and {len(without) - 20} more" if len(without) > 20 else ""
        st.caption(f"No example (no ground truth in `{cfg.data}`, no prediction on the sample images) of: "
                   f"{', '.join(without[:20])}{more}.")


def class_masks(predictor, world, names: list[str], a_names: set, sims: dict | None = None) -> None:
    """The masks of ``names``: fresh instances with the model's masks on their true boxes when the
    model's world can be drawn, else the dataset's examples."""
    if world is None:
        examples(predictor, names, a_names)
        return
    shown = names[:MAX_CLASSES]
    for row in range(0, len(shown), PER_ROW):  # side by side, so shapes can be compared at a glance
        for col, name in zip(st.columns(PER_ROW), shown[row:row + PER_ROW]):
            extra = f", cosine {sims[name]:.2f}" if sims and name in sims else ""
            with col:
                masks_cell(predictor, world, name, name in a_names,
                           f"**{name}**  \nset {'A' if name in a_names else 'B'}{extra}")
    if len(names) > MAX_CLASSES:
        st.caption(f"... and {len(names) - MAX_CLASSES} more classes; select fewer to see them.")


# ---------------------------------------------------------------- the page

def main():
    st.title("Embeddings")
    names, ids, set_a, config, proj, note = classes_and_projections()
    in_a = np.array([c in set_a for c in ids])
    a_names = {n for n, a in zip(names, in_a) if a}
    if note:
        st.info(note)
    kinds = [k for k in KINDS if k in proj.kinds]
    own = "w_" + config["transfer_input"] if config.get("transfer_input") in ("cls", "box", "cls+box") else \
        config.get("transfer_input")
    if config.get("mask_head") != "transfer":
        own = None
    c1, c2 = st.columns([3, 1])
    kind = c1.radio("Embedding", kinds, index=kinds.index(own) if own in kinds else 0, horizontal=True,
                    format_func=lambda k: LABELS.get(k, k) + (" ← T's input" if k == own else ""), key="emb_kind")
    colours = ["family", "set"] if proj.families is not None else ["set"]
    colour = c2.radio("Colour by", colours, horizontal=True, key="emb_colour",
                      format_func={"family": "family", "set": "set (A green, B red)"}.get)
    b_rows = [i for i in range(len(names)) if not in_a[i]]
    st.caption(f"{len(names)} classes ({int(in_a.sum())} in set A, ◆; {len(b_rows)} in set B, ●), UMAP "
               f"({proj.meta.get('umap', {}).get('metric', 'cosine')}, random_state "
               f"{proj.meta.get('umap', {}).get('random_state', 0)}, the same for every embedding). "
               f"**{LABELS.get(kind, kind)}**: {ABOUT.get(kind, '')}. Click, box- or lasso-select points to see "
               "those classes' masks below.")
    if not b_rows:
        st.warning("This model has no set-B class: nothing is transferred.")
    left, right = st.columns([3, 2])
    with right:
        picked = st.selectbox("A set-B class", b_rows, format_func=lambda i: names[i], key="emb_b_class",
                              help="its nearest set-A classes in the chosen embedding are ringed in the chart "
                                   "and listed here") if b_rows else None
        nearest = [int(i) for i in proj.nearest[kind][picked] if i >= 0] if picked is not None else []
        sims = {names[int(i)]: float(s) for i, s in zip(proj.nearest[kind][picked], proj.similarity[kind][picked])
                if i >= 0} if picked is not None else {}
        if picked is not None:
            nearest_panel(proj, kind, names, picked, nearest, sims)
        shares_panel(proj, kinds, kind, in_a)
    picked_names = [names[i] for i in ([picked] if picked is not None else []) + nearest]
    chosen = set(selected_points(st.session_state.get("emb_main")))
    with left:
        same = kind in proj.meta.get("equal_rows", [])
        title = f"{LABELS.get(kind, kind)} of each class" + (" (one row shared by every class)" if same else "")
        st.plotly_chart(figure(proj.xy[kind], names, in_a, proj.families, colour, picked, nearest, chosen, title, 560),
                        on_select="rerun", selection_mode=("points", "box", "lasso"), key="emb_main")
    if proj.families is None and "family" not in colours:
        st.caption(f"No family colouring: {proj.meta.get('family_source') or 'no families known for these classes'}.")

    from maskx_app.class_examples import world_of

    world = world_of(names)
    if picked is not None:
        st.subheader(f"Masks of {names[picked]} and its nearest set-A classes")
        st.caption("What the model draws for each class given the object's true box and class (detection taken "
                   "out), on freshly drawn scenes; the white contour is the true outline. A set-B mask comes from "
                   "transfer: if T borrows shape from similar classes, it should look like its neighbours'."
                   if world else "Examples of each class from the val data, else the model's masks on the sample "
                   "images.")
        predictor = model_or_none()
        if predictor is not None:
            with st.spinner("Drawing the masks ..."):
                class_masks(predictor, world, picked_names, a_names, sims)

    st.subheader("Selected classes")
    picked_by_name = common.class_filter("Or choose classes", names, key="emb_classes")
    chosen_names = [names[i] for i in sorted(chosen)] + [n for n in picked_by_name if names.index(n) not in chosen]
    if chosen_names:
        predictor = model_or_none()
        if predictor is not None:
            with st.spinner("Drawing the masks ..."):
                class_masks(predictor, world, chosen_names, a_names)
    else:
        st.info("Select points in the projection (or choose classes above) to see their masks here.")

    if st.toggle("Every embedding side by side", key="emb_all"):
        for row in range(0, len(kinds), 3):
            for col, k in zip(st.columns(3), kinds[row:row + 3]):
                with col:
                    st.plotly_chart(figure(proj.xy[k], names, in_a, proj.families, colour, picked,
                                           [int(i) for i in proj.nearest[k][picked] if i >= 0] if picked is not None
                                           else [], chosen, LABELS.get(k, k), 340, labels=False), key=f"emb_{k}")


def nearest_panel(proj, kind, names, picked, nearest, sims) -> None:
    import pandas as pd

    fam = proj.families
    rows = [{"": r + 1, "set-A class": names[i], "cosine": round(sims[names[i]], 3),
             **({"family": fam[i]} if fam is not None else {})} for r, i in enumerate(nearest)]
    st.markdown(f"**Nearest set-A classes of {names[picked]}** in {LABELS.get(kind, kind)}"
                + (f" (its family: {fam[picked]})" if fam is not None else ""))
    if not rows:
        st.caption("none: the model has no set-A class")
        return
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    if kind in proj.meta.get("equal_rows", []):
        st.caption("Every class has the same row here (a class-agnostic mask head): no class is nearer than another.")
    elif fam is not None:
        k = sum(fam[i] == fam[picked] for i in nearest)
        st.caption(f"{k} of {len(nearest)} share its family. Cosine of the rows centred on the mean row.")


def shares_panel(proj, kinds, kind, in_a) -> None:
    """Per embedding, how often a set-B class's nearest set-A class is of its own family."""
    import pandas as pd

    from maskx_app.projection import chance_family_share, own_family_share

    chance = chance_family_share(proj, in_a)
    shares = {k: own_family_share(proj, k, in_a) for k in kinds}
    if chance is None or all(v is None for v in shares.values()):
        return
    st.markdown("**Nearest set-A class of the same family**, share of set-B classes")
    df = pd.DataFrame([{"embedding": LABELS.get(k, k) + (" ◀" if k == kind else ""),
                        "same family": f"{100 * v:.0f} %"} for k, v in shares.items() if v is not None])
    st.dataframe(df, hide_index=True, width="stretch")
    st.caption(f"Chance (a random set-A class): {100 * chance:.0f} %. Higher: the embedding groups classes "
               "the way their looks do, which is what T could use to transfer masks.")


common.guard(main)
