"""Browse: walk a dataset with its ground truth beside the model's predictions, and per-class AP."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import streamlit as st  # noqa: E402

import common  # noqa: E402


@st.cache_resource(max_entries=4, show_spinner=False)
def image_classes(key: str, _ds) -> dict:
    from maskx_app.browse import image_classes as classes_of

    return classes_of(_ds)


def offer_generation(path: Path, error: str) -> None:
    """A missing dataset folder: what it is and how to make it; an embedded world's val folder is
    generated here on request, with progress."""
    from maskx_app.browse import generate_val, generation_running, missing_val

    missing = missing_val(path)
    if missing is None:
        st.error(error)
        return
    st.warning(f"`{path}` does not exist yet: the validation images of the embedded {missing.world} world "
               "are not part of the repository; they are made on this machine by the project's generator.")
    st.markdown(f"It holds {missing.images} images of {missing.image_size} px (seed {missing.seed}, every instance "
                "with its mask): the set this world's models are evaluated on, and the ground truth this page "
                "shows. Generate it here, or on the command line:")
    st.code(missing.command, language="bash")
    if missing.command_note:
        st.caption(f"That command {missing.command_note}; the button writes the val folder only.")
    n = st.number_input("Images to generate", 1, missing.images, missing.images, key="browse_generate_n",
                        help="the first N images of the val set (the same as the full set's first N); "
                             "fewer is quicker")
    running = generation_running(path)
    if not running and not st.button(f"Generate `{path.name}` now ({int(n)} images)", key="browse_generate",
                                     type="primary"):
        return
    bar = st.progress(0.0, text="Starting the generator ...")

    def show(done: int, total: int) -> None:
        text = (f"Generating `{path.name}`: image {done} of {total}" if done < total
                else "Writing the annotations ...")
        bar.progress(done / total, text=text)

    try:
        generate_val(missing, int(n), on_progress=show)
    except (OSError, ValueError) as e:
        bar.empty()
        st.error(f"Cannot generate `{path}`: {e}")
        return
    st.rerun()  # the page opens the new folder


def ap_panel(ds, kind, predictor, path: Path, sets, classes) -> None:
    """Per-class AP from ``eval.json`` beside the model; without one, evaluated here on request (when a
    dataset the model can be evaluated on is open: ``ds`` None means none is)."""
    from maskx_app.browse import comparable, evaluate_first, per_class_metrics

    st.subheader("Per-class AP")
    model_dir = common.model_path()
    eval_file = (model_dir if model_dir.is_dir() else model_dir.parent) / "eval.json"
    record, error = common.read_result(eval_file)
    if error:
        st.warning(error)
    metrics = per_class_metrics(record)
    source = f"from `{eval_file}`"
    if metrics is None:
        why = "no dataset is open" if ds is None else comparable(ds, kind, predictor)
        if why:
            st.info(f"No `eval.json` with per-class AP beside the model, and {why}.")
            return
        n = st.number_input("Images to evaluate", 1, len(ds.ids), min(20, len(ds.ids)), key="browse_eval_n")
        key = ("browse_eval", str(path), common.model_key(predictor), int(n))
        if st.button(f"Evaluate on the first {n} images", key="browse_eval_button"):
            from maskx.evaluate import PredictionError

            bar = st.progress(0.0, text="Evaluating ...")
            try:
                st.session_state[key] = evaluate_first(
                    ds, predictor, int(n),
                    lambda image, iid: common.predict(predictor, common.to_uint8(image), f"{ds.ann_file}:{iid}"),
                    lambda done, total: bar.progress(done / total, text=f"Evaluating: image {done} of {total}"))
            except (PredictionError, ValueError) as e:
                st.error(f"Cannot evaluate: {e}")
            bar.empty()
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
    path = common._resolve(st.text_input("Dataset folder (COCO or Visual Genome format)",
                                         str(common.settings().data), key="browse_path").strip() or ".")
    opened, error = common.open_dataset(path)
    if error:  # the model's saved per-class AP needs no dataset: shown beside what to do
        left, right = st.columns([3, 2])
        with left:
            offer_generation(path, error)
        with right:
            ap_panel(None, None, None, path, ("A", "B"), set())
        st.stop()
    predictor = common.require_model()
    ds, kind = opened
    if not ds.ids:
        st.warning(f"{path}: the dataset has no images.")
        st.stop()
    from maskx_app.browse import ground_truth

    per_image = image_classes(f"{path}:{common._stamp(path)}", ds)
    a_names = {n for n, c in zip(predictor.class_names, predictor.category_ids) if c in predictor.set_a}
    left, right = st.columns([3, 2])
    with left:
        f1, f2, f3 = st.columns([2, 1, 1])
        # the dataset's classes, whatever the threshold: a chosen class stays chosen when it rises
        classes = common.class_filter("Classes (none chosen: all; only images with them)",
                                      list(ds.categories.names), key="browse_classes", where=f1)
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
        preds = common.drawn(common.predict(predictor, rgb, f"{getattr(ds, 'ann_file', path)}:{iid}"))
        keep = (lambda d: (d.in_A and show_a or not d.in_A and show_b) and (not classes or d.name in classes))
        truth = [d for d in ground_truth(ds, target, a_names) if keep(d)]
        shown = [d for d in preds if keep(d) and d.score >= thresh]
        g, p = st.columns(2)
        g.image(common.picture(rgb, truth), caption=f"ground truth: {len(truth)} instances", width="stretch")
        p.image(common.picture(rgb, shown), caption=f"predictions: {len(shown)} of {len(preds)} instances",
                width="stretch")
        if not shown:
            st.info("No prediction passes the filters on this image" +
                    (f" (the best score is {max(d.score for d in preds):.2f})." if preds else "."))
        above = {d.name for d in preds if d.score >= thresh}
        faded = sorted(c for c in classes if c not in above)
        if faded:
            st.caption(f"No prediction of {', '.join(faded)} scores {thresh:.2f} or more on this image.")
        st.caption(f"Image id {iid}; classes here: {', '.join(sorted(per_image[iid])) or 'none'}.")
    with right:
        sets = tuple(s for s, on in (("A", show_a), ("B", show_b)) if on)
        ap_panel(ds, kind, predictor, path, sets, set(classes))


common.guard(main)
