"""Compare: the study's class-agnostic head, Mask^X R-CNN and oracle side by side on one val image, with
the ground truth beside them and each mask's IoU with it; a sentence on what the numbers mean; per
set-B class, what transfer gained (Mask^X AP minus class-agnostic AP). The logic is ``maskx_app.compare``."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import streamlit as st  # noqa: E402

import common  # noqa: E402
from maskx_app import compare as cmp  # noqa: E402
from maskx_study.plan import ARROW, DIRECTIONS, SCALES  # noqa: E402

DETECTIONS, GT_BOXES = "the models' detections", "the ground-truth boxes and classes"
# four columns show each picture (512 px and more, ``common.picture``) at about half its size: labels this
# tall stay legible there
LABEL_SIZE = 20


@st.cache_data(show_spinner=False, max_entries=32)
def val_example(data_dir: str, image_id: int, version: int, size: int, stamp: str):
    """``cmp.val_example``, once per file version (``stamp``)."""
    return cmp.val_example(Path(data_dir), image_id, version, size)


def study_val(image_id: int, version: int):
    """(RGB, ground truth, where from) of a study val image, or (None, None, why not)."""
    from maskx.data.synthetic import SIZES

    scale = SCALES["study"]
    data = common._resolve(scale.data) / "val"
    ann = data / "annotations.json"
    try:
        return val_example(str(data), image_id, version, SIZES[scale.data_size]["image_size"],
                           str(ann.stat().st_mtime_ns) if ann.is_file() else "")
    except ValueError as e:  # a generator version this code cannot draw
        return None, None, f"Val image {image_id} cannot be drawn here ({e}); generate the study's data (`make demo`)."


def read_records(folder: Path, direction: str) -> tuple[dict, list[str]]:
    """{seed: {preset: record}} of the page's runs of ``direction`` in ``folder`` and the messages of
    unreadable files."""
    out, errors = {}, []
    for seed in cmp.seeds_in(folder, direction):
        for _, run in cmp.study_runs(direction, seed):
            record, error = common.read_result(folder / f"{run.key}.json")
            if error:
                errors.append(error)
            if record is not None:
                out.setdefault(seed, {})[run.preset] = record
    return out, errors


def column_instances(run, record, folder: Path, rgb, image_id, thresh, mode):
    """One model's masks on the image: (instances, how many were not drawn for want of a mask, where
    they come from) or (None, 0, why there are none). ``folder``: the results read."""
    run_dir = common.settings().runs / run.key
    if mode == GT_BOXES:
        if record is None:
            return None, 0, f"Pending: `{folder / (run.key + '.json')}` does not exist yet."
        got = cmp.gt_box_instances(record, image_id, rgb.shape[:2])
        if got is None:
            return None, 0, f"`{run.key}.json` keeps no masks on the ground-truth boxes of image {image_id}."
        return (*got, f"`{run.key}.json` (its kept masks on the ground-truth boxes)")
    if common.newest_checkpoint_json(run_dir) is not None:
        predictor, error = common.load_model(run_dir)
        if error:
            return None, 0, error
        shown, empty = cmp.live_instances(common.predict(predictor, rgb), thresh)
        done = "" if (run_dir / "done.json").is_file() else ", training not finished"
        return shown, empty, f"the checkpoint in `{run_dir}` (iteration {predictor.meta.get('iteration')}{done})"
    if record is None:
        return None, 0, f"Pending: neither `{run_dir}` nor `{folder / (run.key + '.json')}` exists yet."
    ex = record.get("examples") or {}
    if image_id not in ex.get("image_ids", []):
        return None, 0, f"`{run.key}.json` keeps no predictions for image {image_id}."
    try:
        shown, empty = cmp.saved_instances(record, image_id, thresh, rgb.shape[:2])
    except ValueError as e:
        return None, 0, f"`{run.key}.json`: {e} (was the study run on other data?)"
    return shown, empty, f"`{run.key}.json` (its kept predictions, scores ≥ {ex.get('min_score', 0)})"


def not_drawn_note(empty: int, record, mode) -> str:
    if not empty:
        return ""
    if mode == GT_BOXES:
        return f" {empty} empty masks (IoU 0) are not drawn."
    if "classes present" in str((record or {}).get("eval", "")):  # how the study evaluated: ``runner``'s record
        return f" {empty} detections of classes absent from the image are not drawn: the study computes no mask for them."
    return f" {empty} detections with an empty mask are not drawn."


def to_drawn(inst, names, a_ids, with_gt: bool):
    from maskx_app.visualize import Drawn

    note = f"IoU {inst.iou:.2f}" if inst.iou is not None else ("no match" if with_gt else "")
    return Drawn(inst.box, inst.mask, names.get(inst.category_id, str(inst.category_id)), inst.score,
                 inst.category_id in a_ids, note)


def pick_default_image(records: dict, ids: list, thresh: float, image_of) -> int:
    """``cmp.default_image`` over the kept predictions at the default threshold (the first image when
    none can be counted). ``image_of(image id)``: its RGB, or None."""
    counts = {}
    for image_id in ids:
        rgb = image_of(image_id)
        if rgb is None:
            continue
        try:
            counts[image_id] = [len(cmp.saved_instances(records[p], image_id, thresh, rgb.shape[:2])[0])
                                if records.get(p) else 0 for _, p in cmp.MODELS]
        except ValueError:
            counts[image_id] = [0]
    return cmp.default_image(counts) or ids[0]


def sentence(by_seed: dict, records: dict, direction: str, seed: int) -> None:
    """What the numbers mean: the chosen seed's headline, then the seed means'."""
    values = [cmp.ap(records.get(p), direction, "B") for _, p in cmp.MODELS]
    if None in values:
        missing = ", ".join(label for (label, _), v in zip(cmp.MODELS, values) if v is None)
        st.info(f"Pending: the sentence on what the numbers mean needs all three results ({missing} missing).")
        return
    where = f"{ARROW[direction]}, seed {seed}"
    st.markdown("**What the numbers mean.** " + cmp.headline(*values, where))
    results = {run.key: recs[run.preset] for s, recs in by_seed.items()
               for _, run in cmp.study_runs(direction, s) if run.preset in recs}
    over = cmp.seed_summary(results, direction, f"{ARROW[direction]}, mean over seeds")
    if over:
        st.markdown(over)
    n = ((records[cmp.TRANSFER].get("metrics") or {}).get(direction) or {}).get("num_images")
    st.caption(f"Mask AP (0-100) over {n or 'the'} val images; the pictures below are one of them. Set A: the "
               "classes trained with masks (all three models learn them alike); set B: boxes only, except "
               "for the oracle.")


def gain_chart(records: dict, direction: str) -> None:
    import pandas as pd
    import plotly.graph_objects as go

    st.subheader(f"Did transfer help on set B? ({ARROW[direction]})")
    rows = cmp.b_gains(records, direction)
    if rows is None:
        st.info("Pending: needs the class-agnostic and the Mask^X results of this direction with per-class AP.")
        return
    if not rows:
        st.info("No set-B class has mask AP in both results.")
        return
    df = pd.DataFrame(rows)
    helped = int((df["gain"] > 0).sum())
    st.caption(f"Mask^X AP minus class-agnostic AP (mask AP, 0-100) per set-B class, biggest gain first: transfer "
               f"helped on {helped} of {len(df)} classes; mean change {df['gain'].mean():+.1f} AP.")
    fig = go.Figure(go.Bar(x=df["class"], y=df["gain"], marker_color=["#1f77b4" if g > 0 else "#9a9a9a"
                                                                      for g in df["gain"]],
                           customdata=df[["class-agnostic", "Mask^X"]].values,
                           hovertemplate="%{x}: %{y:+.1f} AP<br>class-agnostic %{customdata[0]:.1f}, "
                                         "Mask^X %{customdata[1]:.1f}<extra></extra>"))
    fig.update_layout(height=380, margin=dict(l=10, r=10, t=10, b=10), yaxis_title="Δ mask AP",
                      xaxis=dict(tickangle=-60, categoryorder="array", categoryarray=list(df["class"])))
    st.plotly_chart(fig, key="compare_gain")
    st.dataframe(df[["class", "gain", "class-agnostic", "Mask^X", "oracle"]], hide_index=True, height=240,
                 column_config={c: st.column_config.NumberColumn(format="%.1f")
                                for c in ("gain", "class-agnostic", "Mask^X", "oracle")}, key="compare_gains")


def main():
    st.title("Compare")
    st.caption("The study's class-agnostic mask head, Mask^X R-CNN (masks of set B by weight transfer) and the "
               "oracle (trained with every class's masks) on the same val image, end to end (Table 2). Every "
               "mask is labelled with its IoU with the ground-truth object it matches (same class, box IoU ≥ "
               f"{cmp.MATCH_BOX_IOU}).")
    cfg = common.settings()
    folders = cmp.result_folders(cfg.results)
    folder = folders[0]
    if len(folders) > 1:  # an older world's study kept beside the current one
        folder = st.columns([1, 2])[0].selectbox("Results", folders, key="compare_results", format_func=lambda p: (
            str(p.relative_to(cfg.results.parent)) if p.is_relative_to(cfg.results.parent) else str(p)))
    if folders[0] != cfg.results:
        pending = ("holds only part of these runs: its study is still running" if cfg.results in folders
                   else "holds no result of these runs yet")
        st.caption(f"Showing `{folder}`: an earlier world's study, kept as it ran (`{cfg.results}` {pending}).")
    c_dir, c_seed, c_image, c_thresh = st.columns([1.1, 0.7, 1.2, 1.5])
    direction = c_dir.selectbox("Direction", DIRECTIONS, format_func=ARROW.get, key="compare_direction")
    by_seed, errors = read_records(folder, direction)
    for error in errors:
        st.warning(error)
    seeds = cmp.seeds_in(folder, direction)
    if st.session_state.get("compare_seed") not in seeds:  # another folder or direction: its first seed
        st.session_state["compare_seed"] = seeds[0]
    seed = c_seed.selectbox("Seed", seeds, key="compare_seed")
    records = by_seed.get(seed, {})
    runs = cmp.study_runs(direction, seed)
    version = cmp.generator_version(records.values())
    names, a_ids = cmp.class_sets(records.values(), direction, version)

    default_thresh = cmp.default_threshold(records.values())
    st.session_state.setdefault("compare_thresh", default_thresh)  # the rule of ``default_threshold``
    ids = cmp.example_ids(records.values())
    if st.session_state.get("compare_image") not in ids:
        st.session_state["compare_image"] = pick_default_image(records, ids, default_thresh,
                                                               lambda i: study_val(i, version)[0]) if records else ids[0]
    image_id = c_image.selectbox("Image (the first val images)", ids, format_func=lambda i: f"val image {i}",
                                 key="compare_image")
    modes = [DETECTIONS] + ([GT_BOXES] if cmp.has_gt_box_masks(records.values()) else [])
    if st.session_state.get("compare_masks") not in modes:
        st.session_state["compare_masks"] = DETECTIONS
    mode = st.radio("Masks on", modes, key="compare_masks", horizontal=True,
                    help="Detections: each model's own boxes, classes and scores. Ground-truth boxes and classes: "
                         "each model's mask branch given every true object (detection taken out), as the "
                         "notebooks' mask grids.") if len(modes) > 1 else DETECTIONS
    thresh = c_thresh.slider("Score threshold (all columns)", 0.0, 1.0, step=0.01, key="compare_thresh",
                             disabled=mode == GT_BOXES,
                             help=f"Default {default_thresh:.2f}: the lowest score the results keep predictions of.")
    if mode == DETECTIONS and thresh < default_thresh and records:
        st.caption(f"The results keep no predictions scoring under {default_thresh:.2f}: below it the columns "
                   "show no more than at it.")

    sentence(by_seed, records, direction, seed)

    rgb, gt, where = study_val(image_id, version)
    if rgb is None:
        st.error(where)
        gain_chart(records, direction)
        return
    cols = st.columns(4)
    with cols[0]:
        st.markdown("**ground truth**")
        in_b = sum(g.category_id not in a_ids for g in gt)
        st.image(common.picture(rgb, [to_drawn(g, names, a_ids, False) for g in gt], label_size=LABEL_SIZE),
                 width="stretch", caption=f"{len(gt)} objects, {in_b} in set B")
        st.caption(f"Image and masks: {where}.")
    matched = []  # per model: (label, its matches to the ground truth) for the table
    for col, (label, run) in zip(cols[1:], runs):
        with col:
            st.markdown(f"**{label}**")
            record = records.get(run.preset)
            shown, empty, source = column_instances(run, record, folder, rgb, image_id, thresh, mode)
            if shown is None:
                st.image(rgb, width="stretch")
                st.info(source)
                continue
            pairs = cmp.match_to_gt(shown, gt)
            if mode == DETECTIONS:
                for inst, (_, iou) in zip(shown, pairs):
                    inst.iou = iou
            matched.append((label, shown, pairs))
            st.image(common.picture(rgb, [to_drawn(i, names, a_ids, bool(gt)) for i in shown], label_size=LABEL_SIZE),
                     width="stretch", caption=f"{len(shown)} instances drawn")
            st.caption(f"From {source}.{not_drawn_note(empty, record, mode)}")
            a, b = cmp.ap(record, direction, "A"), cmp.ap(record, direction, "B")
            if a is not None or b is not None:
                st.caption(f"mask AP: A {_fmt(a)}, B {_fmt(b)}")
    st.caption(f"Runs: seed {seed}, backbone `{runs[0][1].backbone}`, {ARROW[direction]}; colours mark this "
               "direction's sets (the oracle was trained with every class's masks).")
    instance_table(gt, names, a_ids, matched, mode)
    gain_chart(records, direction)


def instance_table(gt, names, a_ids, matched, mode) -> None:
    """Per ground-truth object of the image, each model's mask IoU with it."""
    import pandas as pd

    if not gt or not matched:
        return
    st.subheader("Per object: mask IoU with the ground truth")
    rows = [{"class": names.get(g.category_id, str(g.category_id)), "set": "A" if g.category_id in a_ids else "B"}
            for g in gt]
    for label, shown, pairs in matched:
        for row in rows:
            row[label] = "missed"
        for inst, (j, iou) in zip(shown, pairs):
            if j is not None:
                rows[j][label] = f"{inst.iou if mode == GT_BOXES else iou:.2f}"
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="compare_objects")
    if mode == DETECTIONS:
        st.caption("Missed: no instance the model draws is that object. Drawn instances that are no object "
                   f"(another class, or box IoU under {cmp.MATCH_BOX_IOU}): " +
                   ", ".join(f"{label} {sum(j is None for j, _ in pairs)}" for label, _, pairs in matched) + ".")


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.1f}"


common.guard(main)
