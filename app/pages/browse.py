"""Browse: walk a dataset with its ground truth beside the model's predictions, and per-class AP."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import streamlit as st  # noqa: E402

import common  # noqa: E402


@st.cache_resource(max_entries=4, show_spinner=False)
def image_classes(key: str, _ds) -> dict:
    """{image id: set of class names} from the annotations (no image is decoded)."""
    cats = _ds.categories
    out = {}
    for iid in _ds.ids:
        labels = [cats.label(it["ann"]["category_id"]) if "ann" in it else it["label"] for it in _ds.anns[iid]]
        out[iid] = {cats.name(k) for k in labels}
    return out


def ground_truth(ds, target, a_names) -> list:
    """Dataset target → drawable instances (no score; VG has boxes only)."""
    from maskx_app.visualize import Drawn

    masks, has = target.get("masks"), target.get("has_mask")
    out = []
    for k in range(target["boxes"].shape[0]):
        name = ds.categories.name(int(target["labels"][k]))
        mask = masks[k].numpy().astype(bool) if masks is not None and bool(has[k]) else None
        out.append(Drawn([float(v) for v in target["boxes"][k]], mask, name, None, name in a_names))
    return out


def comparable(ds, kind, predictor) -> str:
    """Why the model's AP cannot be computed on this dataset ('' if it can)."""
    if kind != "coco":
        return "this dataset has no masks (Visual Genome): mask AP needs a COCO-format dataset"
    names = dict(zip(ds.categories.ids, ds.categories.names))
    if any(names.get(cid) != n for cid, n in zip(predictor.category_ids, predictor.class_names)):
        return "the model's classes (ids and names) are not this dataset's"
    return ""


def evaluate_first(ds, predictor, n: int) -> dict:
    """COCO AP on A and B over the first ``n`` images (maskx.evaluate on a subset of the ground truth)."""
    from maskx.data.splits import Split
    from maskx.evaluate import evaluate_predictions
    from maskx.predictor import coco_entries

    ids = ds.ids[:n]
    keep = set(ids)
    gt = {**ds.data, "images": [im for im in ds.data["images"] if im["id"] in keep],
          "annotations": [a for a in ds.data["annotations"] if a["image_id"] in keep]}
    a_ids = tuple(sorted(set(predictor.set_a) & set(ds.categories.ids)))
    split = Split("model", a_ids, tuple(c for c in ds.categories.ids if c not in set(a_ids)))
    preds, bar = [], st.progress(0.0, text="Evaluating ...")
    for k, iid in enumerate(ids):
        image, _ = ds[k]
        preds.extend(coco_entries(common.predict(predictor, common.to_uint8(image), f"{ds.ann_file}:{iid}"), iid))
        bar.progress((k + 1) / len(ids), text=f"Evaluating: image {k + 1} of {len(ids)}")
    bar.empty()
    return evaluate_predictions(gt, preds, split)


def ap_panel(ds, kind, predictor, path: Path, sets, classes) -> None:
    st.subheader("Per-class AP")
    model_dir = common.model_path()
    eval_file = (model_dir if model_dir.is_dir() else model_dir.parent) / "eval.json"
    metrics, error = common.read_result(eval_file)
    if error:
        st.warning(error)
    if metrics is not None and "per_class" not in metrics:  # a study record: {direction: metrics}
        metrics = next((v for v in metrics.get("metrics", metrics).values()
                        if isinstance(v, dict) and "per_class" in v), None)
    source = f"from `{eval_file}`"
    if metrics is None:
        why = comparable(ds, kind, predictor)
        if why:
            st.info(f"No `eval.json` beside the model, and {why}.")
            return
        n = st.number_input("Images to evaluate", 1, len(ds.ids), min(20, len(ds.ids)), key="browse_eval_n")
        key = ("browse_eval", str(path), common.model_key(predictor), int(n))
        if st.button(f"Evaluate on the first {n} images", key="browse_eval_button"):
            from maskx.evaluate import PredictionError

            try:
                st.session_state[key] = evaluate_first(ds, predictor, int(n))
            except (PredictionError, ValueError) as e:
                st.error(f"Cannot evaluate: {e}")
        metrics = st.session_state.get(key)
        if metrics is None:
            st.caption(f"No `eval.json` beside the model ({eval_file}); evaluate here instead.")
            return
        source = f"on the first {n} images of this dataset"
    st.caption(f"COCO mask AP (0-100) {source}.")
    a, b = st.columns(2)
    for col, name in ((a, "A"), (b, "B")):
        v = (metrics.get(name) or {}).get("segm_AP")
        col.metric(f"mask AP on {name}", "n/a" if v is None else f"{v:.1f}")
    st.dataframe(common.per_class_table(metrics, sets, classes), hide_index=True, height=420)


def main():
    st.title("Browse")
    predictor = common.require_model()
    path = common._resolve(st.text_input("Dataset folder (COCO or Visual Genome format)",
                                         str(common.settings().data), key="browse_path").strip() or ".")
    opened, error = common.open_dataset(path)
    if error:
        st.error(f"{error}")
        st.stop()
    ds, kind = opened
    if not ds.ids:
        st.warning(f"{path}: the dataset has no images.")
        st.stop()
    per_image = image_classes(f"{path}:{common._stamp(path)}", ds)
    a_names = {n for n, c in zip(predictor.class_names, predictor.category_ids) if c in predictor.set_a}
    left, right = st.columns([3, 2])
    with left:
        f1, f2, f3 = st.columns([2, 1, 1])
        classes = f1.multiselect("Classes (none chosen: all; only images with them)", list(ds.categories.names),
                                 key="browse_classes")
        thresh = f2.slider("Score threshold", 0.0, 1.0, common.settings().score, 0.01, key="browse_thresh")
        show_a = f3.toggle("Set A (green)", value=True, key="browse_show_a")
        show_b = f3.toggle("Set B (red)", value=True, key="browse_show_b")
        ids = [i for i in ds.ids if not classes or per_image[i] & set(classes)]
        if not ids:
            st.info("No image of this dataset contains the chosen classes.")
            st.stop()
        pos = st.number_input(f"Image (1 to {len(ids)} of {len(ds.ids)} in `{path.name}`)", 1, len(ids), 1,
                              key="browse_index") if len(ids) > 1 else 1
        iid = ids[min(pos, len(ids)) - 1]
        from maskx.data.coco import DatasetError

        try:
            image, target = ds[ds.ids.index(iid)]
        except (DatasetError, OSError, ValueError) as e:
            st.error(f"Cannot read image {iid}: {e}")
            st.stop()
        rgb = common.to_uint8(image)
        preds = common.predict(predictor, rgb, f"{getattr(ds, 'ann_file', path)}:{iid}")
        keep = (lambda d: (d.in_A and show_a or not d.in_A and show_b) and (not classes or d.name in classes))
        truth = [d for d in ground_truth(ds, target, a_names) if keep(d)]
        shown = [d for d in common.drawn(preds) if keep(d) and d.score >= thresh]
        g, p = st.columns(2)
        g.image(common.picture(rgb, truth), caption=f"ground truth: {len(truth)} instances", width="stretch")
        p.image(common.picture(rgb, shown), caption=f"predictions: {len(shown)} of {len(preds)} instances",
                width="stretch")
        if not shown:
            st.info("No prediction passes the filters on this image" +
                    (f" (the best score is {max(d.score for d in preds):.2f})." if preds else "."))
        st.caption(f"Image id {iid}; classes here: {', '.join(sorted(per_image[iid])) or 'none'}.")
    with right:
        sets = tuple(s for s, on in (("A", show_a), ("B", show_b)) if on)
        ap_panel(ds, kind, predictor, path, sets, set(classes))


common.guard(main)
