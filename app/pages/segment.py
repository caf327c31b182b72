"""Segment: the model's masks on a sample image or an upload, set A green and set B red."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402

import common  # noqa: E402


def choose_image():
    """→ (RGB image, name, image id) or stops with a message."""
    cfg = common.settings()
    source = st.radio("Image", ["Sample image", "Upload"], horizontal=True, key="seg_source")
    if source == "Upload":
        upload = st.file_uploader("PNG or JPEG (any size; large images are downscaled)",
                                  type=["png", "jpg", "jpeg"], key="seg_upload")
        if upload is None:
            st.info("Choose an image file to segment, or switch to a sample image.")
            st.stop()
        rgb, notes, error = common.read_upload(upload)
        if error:
            st.error(error)
            st.stop()
        for note in notes:
            st.caption(f"Note: {note}.")
        if common.is_shipped_model():
            st.info(common.EMBEDDED_WORLD_NOTE)
        return rgb, upload.name, 1
    labels = [s[0] for s in common.sample_list(str(cfg.data))]
    k = st.selectbox("Sample", range(len(labels)), format_func=lambda i: labels[i], key="seg_sample")
    _, image_id, rgb = common.sample_image(str(cfg.data), k)
    return rgb, f"val-{image_id}.png", image_id


def main():
    st.title("Segment")
    saved = common.saved_predictions()
    if not saved:  # no saved masks: the model is needed for every image, say so before anything else
        common.require_model()
    controls, view = st.columns([1, 3])
    with controls:
        rgb, name, image_id = choose_image()
        thresh = st.slider("Score threshold", 0.0, 1.0, common.settings().score, 0.01, key="seg_thresh")
        show_a = st.toggle("Set A (green)", value=True, key="seg_show_a")
        show_b = st.toggle("Set B (red)", value=True, key="seg_show_b")
    found = saved.get(common.image_key(rgb))
    if found is None:
        predictor = common.require_model()
        found = common.predict(predictor, rgb)
    else:  # drawn without the model: saved by `python -m maskx ship` for these weights
        view.caption("Masks saved with this model's weights (`examples.json`, written by `python -m maskx ship`); "
                     "uploads and other images run the model.")
    above = [i for i in found if i.score >= thresh]
    with controls:
        # a chosen class stays chosen when the threshold rises past its instances (said below), rather
        # than being dropped from the filter unseen
        found_names, above_names = {i.class_name for i in found}, {i.class_name for i in above}
        kept = [c for c in st.session_state.get("seg_classes", []) if c in found_names]
        names = sorted(above_names | set(kept))
        chosen = common.class_filter("Classes (none chosen: all)", names, key="seg_classes")
        faded = sorted(c for c in chosen if c not in above_names)
        if faded:
            st.caption(f"No instance of {', '.join(faded)} scores {thresh:.2f} or more.")
    shown = [i for i in above if (i.in_A and show_a or not i.in_A and show_b)
             and (not chosen or i.class_name in chosen)]
    with view:
        counts = {"A": sum(i.in_A for i in shown), "B": sum(not i.in_A for i in shown)}
        picture = common.picture(rgb, common.drawn(shown))
        st.image(picture, caption=f"{name}: {len(shown)} of {len(found)} instances shown", width="content")
        common.legend(counts)
        if not shown:
            if not found:
                st.info("The model found nothing in this image.")
            elif not above:
                best = max(i.score for i in found)
                st.info(f"No instance scores {thresh:.2f} or more (the best is {best:.2f}); lower the "
                        "score threshold to see more.")
            else:
                st.info("Every instance above the threshold is hidden by the set or class filters.")
    if shown:
        table = pd.DataFrame([{"class": i.class_name, "set": "A" if i.in_A else "B", "score": round(i.score, 3),
                               "box (x0, y0, x1, y1)": ", ".join(f"{v:.0f}" for v in i.box),
                               "mask area (px)": int(i.mask.sum()) if i.mask is not None else None}
                              for i in sorted(shown, key=lambda i: -i.score)])
        st.subheader("Instances")
        st.dataframe(table, hide_index=True)
    from maskx.instances import coco_entries

    left, right = st.columns(2)
    stem = Path(name).stem
    left.download_button("Download overlay (PNG)", common.png_bytes(picture), f"{stem}-maskx.png", "image/png")
    right.download_button("Download results (COCO JSON)", json.dumps(coco_entries(shown, image_id)),
                          f"{stem}-maskx.json", "application/json")
    if saved:  # drawn from saved masks: load the model now, for uploads and other images
        common.preload_model()


common.guard(main)
