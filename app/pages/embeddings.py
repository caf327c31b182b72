"""Embeddings: UMAP of the classes' detection weights (w_cls+box) coloured by set; select points
to see those classes' masks; the same projection for every input of T and for w_seg."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import streamlit as st  # noqa: E402

import common  # noqa: E402

TITLES = {"w_cls": "w_cls", "w_box": "w_box", "w_cls+box": "w_cls+box (w_det)", "glove": "GloVe",
          "text": "text (MiniLM)", "randn": "randn", "w_seg": "w_seg (the mask weights)"}
MAIN = "w_cls+box"
MAX_CLASSES, PER_CLASS = 12, 4  # examples shown for a selection


@st.cache_resource(max_entries=2, show_spinner="Computing the class embeddings ...")
def matrices(key: str, _predictor) -> dict:
    from maskx_app.projection import embedding_matrices

    return embedding_matrices(_predictor)


@st.cache_resource(max_entries=32, show_spinner=False)
def projection(key: str, kind: str, cache_dir: str, _matrix) -> np.ndarray:
    from maskx_app.projection import umap_2d

    return umap_2d(_matrix, Path(cache_dir))


def figure(xy, names, in_a, selected, title, height):
    import plotly.graph_objects as go

    fig = go.Figure()
    scatter = go.Scattergl if len(names) > 1000 else go.Scatter  # WebGL for thousands of classes
    for label, mask, color in (("set A", in_a, common.GREEN_HEX), ("set B", ~in_a, common.RED_HEX)):
        idx = np.nonzero(mask)[0]
        fig.add_trace(scatter(x=xy[idx, 0], y=xy[idx, 1], mode="markers", name=label, customdata=idx,
                                 hovertext=[names[i] for i in idx], hoverinfo="text",
                                 marker=dict(color=color, size=7 if len(names) < 500 else 4, opacity=0.85)))
    if selected:
        idx = np.array(sorted(selected))
        fig.add_trace(scatter(x=xy[idx, 0], y=xy[idx, 1], mode="markers", name="selected", customdata=idx,
                                 hovertext=[names[i] for i in idx], hoverinfo="text",
                                 marker=dict(size=13, color="rgba(0,0,0,0)", line=dict(color="black", width=2))))
    fig.update_layout(title=title, height=height, margin=dict(l=10, r=10, t=40, b=10), dragmode="lasso",
                      legend=dict(orientation="h", y=-0.05), xaxis=dict(showticklabels=False),
                      yaxis=dict(showticklabels=False))
    return fig


@st.cache_resource(max_entries=2, show_spinner=False)
def class_index(key: str, _ds) -> dict:
    """{class name: [(dataset index, instance k)]} over the ground truth."""
    cats, out = _ds.categories, {}
    for pos, iid in enumerate(_ds.ids):
        for k, it in enumerate(_ds.anns[iid]):
            if it.get("has_mask"):
                out.setdefault(cats.name(cats.label(it["ann"]["category_id"])), []).append((pos, k))
    return out


def crop(rgb, mask, box, name, in_a):
    """The instance's box with a margin, its mask drawn in its set's colour."""
    from maskx_app.visualize import Drawn

    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = box
    m = 0.2 * max(x1 - x0, y1 - y0) + 2
    a, b = int(max(0, x0 - m)), int(max(0, y0 - m))
    c, d = int(min(w, x1 + m + 1)), int(min(h, y1 + m + 1))
    sub = None if mask is None else mask[b:d, a:c]
    return common.picture(np.ascontiguousarray(rgb[b:d, a:c]), [Drawn([x0 - a, y0 - b, x1 - a, y1 - b], sub, name,
                                                                      None, in_a)], min_side=128, labels=False)


def examples(predictor, names: list[str], a_names: set) -> None:
    """Ground-truth masks of the chosen classes from the embedded val data, else the model's masks on
    the sample images; at most ``MAX_CLASSES`` classes with examples are drawn."""
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


def selected_points(event) -> set:
    out = set()
    for p in (event.selection.get("points", []) if event else []):
        c = p.get("customdata")
        c = c[0] if isinstance(c, (list, tuple)) else c
        if c is not None:
            out.add(int(c))
    return out


def main():
    st.title("Embeddings")
    predictor = common.require_model()
    key = common.model_key(predictor)
    cfg = common.settings()
    mats = matrices(key, predictor)
    names = list(predictor.class_names)
    in_a = np.array([c in predictor.set_a for c in predictor.category_ids])
    a_names = {n for n, a in zip(names, in_a) if a}
    main_kind = MAIN if MAIN in mats else next(iter(mats))
    st.caption(f"UMAP (random_state 0, cosine) of {len(names)} classes; cached in `{cfg.cache}`. "
               "Click, box- or lasso-select points to see those classes' masks.")
    with st.spinner("Projecting (UMAP) ..."):
        xy = projection(key, main_kind, str(cfg.cache), mats[main_kind])
    picked = common.class_filter("Or choose classes", names, key="emb_classes")
    chosen_idx = {names.index(n) for n in picked} | selected_points(st.session_state.get("emb_main"))
    left, right = st.columns([3, 2])
    with left:
        st.plotly_chart(figure(xy, names, in_a, chosen_idx, f"{TITLES[main_kind]} of each class", 520),
                        on_select="rerun", selection_mode=("points", "box", "lasso"), key="emb_main")
    with right:
        st.subheader("Example masks")
        if chosen_idx:
            examples(predictor, [names[i] for i in sorted(chosen_idx)], a_names)
        else:
            st.info("Select points in the projection (or choose classes above) to see their masks here.")
    st.subheader("Every input of T, and w_seg")
    missing = [TITLES[k] for k in TITLES if k not in mats]
    if missing:
        st.caption(f"Not available here: {', '.join(missing)} (an optional extra is not installed, or the "
                   "model has no mask head).")
    kinds = [k for k in TITLES if k in mats]
    for row in range(0, len(kinds), 3):
        for col, kind in zip(st.columns(3), kinds[row:row + 3]):
            with col, st.spinner(f"Projecting {TITLES[kind]} ..."):
                xy_k = projection(key, kind, str(cfg.cache), mats[kind])
                title = TITLES[kind] + (" (one row shared by every class)" if kind == "w_seg" and
                                        not np.any(np.ptp(xy_k, axis=0)) else "")
                st.plotly_chart(figure(xy_k, names, in_a, chosen_idx, title, 340), key=f"emb_{kind}")


common.guard(main)
