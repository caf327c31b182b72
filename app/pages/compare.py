"""Compare: the study's class-agnostic, transfer (Mask^X R-CNN) and oracle models on one image,
and per B class whether transfer helped (transfer AP minus class-agnostic AP)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import streamlit as st  # noqa: E402

import common  # noqa: E402
from maskx_study.plan import ARROW  # noqa: E402

MODELS = (("class-agnostic", "agnostic_e2e"), ("transfer (Mask^X R-CNN)", "transfer_clsbox_2lrelu_mlp_e2e"),
          ("oracle (fully supervised)", "oracle_e2e"))


def study_runs(direction: str) -> list:
    from maskx.config import get_preset
    from maskx_study.runner import SCALES, Run

    bb = SCALES["study"].backbone
    return [(label, Run(p, "all" if get_preset(p).split == "all" else direction, 0, bb)) for label, p in MODELS]


@st.cache_data(show_spinner=False)
def direction_split(direction: str) -> tuple[dict, set]:
    """The embedded data's categories {id: name} and the direction's set A ids."""
    from maskx.data.splits import resolve_split
    from maskx.data.synthetic import categories, voc_like_category_ids

    cats = categories()
    split = resolve_split(direction, cats, voc_like_ids=voc_like_category_ids())
    return {c["id"]: c["name"] for c in cats}, set(split.a_ids)


@st.cache_data(show_spinner=False)
def study_images() -> list:
    """The study's first val images, on which each result keeps its predictions: the files of the
    study's data when present, else rendered (val is seed 1, 256 px)."""
    from maskx_study.runner import EXAMPLE_IMAGES, SCALES

    return common.sample_images(str(common._resolve(SCALES["study"].data) / "val"), EXAMPLE_IMAGES)


def has_checkpoint(run_dir: Path) -> bool:
    from maskx.checkpoint import list_checkpoints

    return bool(list_checkpoints(run_dir))


def masks_of(label, run, record, rgb, image_id, thresh, direction):
    """→ (drawable instances, where they come from) or (None, why not)."""
    from maskx_app.visualize import Drawn, from_coco

    cfg = common.settings()
    names, a_ids = direction_split(direction)
    run_dir = cfg.runs / run.key
    if has_checkpoint(run_dir):
        predictor, error = common.load_model(run_dir)
        if error:
            return None, error
        found = [i for i in common.predict(predictor, rgb) if i.score >= thresh]
        done = "" if (run_dir / "done.json").is_file() else ", training not finished"
        return [Drawn(i.box, i.mask, i.class_name, i.score, i.category_id in a_ids) for i in found], \
            f"checkpoint in `{run_dir}` (iteration {predictor.meta.get('iteration')}{done})"
    if record is None:
        return None, f"Pending: neither `{run_dir}` nor `{cfg.results / (run.key + '.json')}` exists yet"
    ex = record.get("examples") or {}
    if image_id not in ex.get("image_ids", []):
        return None, f"`{run.key}.json` keeps no predictions for image {image_id}"
    try:
        shown = from_coco(ex.get("predictions", []), image_id, names, a_ids, min_score=thresh)
    except (KeyError, TypeError, ValueError) as e:
        return None, f"`{run.key}.json`: unreadable examples ({e})"
    if any(d.mask is not None and d.mask.shape != rgb.shape[:2] for d in shown):
        return None, (f"`{run.key}.json` holds masks of another image size than image {image_id} here "
                      f"({rgb.shape[1]} x {rgb.shape[0]}): was the study run on other data?")
    return shown, f"predictions saved in `{run.key}.json` (scores >= {ex.get('min_score', 0)})"


def gain_chart(records: dict, direction: str) -> None:
    import pandas as pd
    import plotly.graph_objects as go

    st.subheader(f"Did transfer help on set B? ({ARROW[direction]})")
    agn, tra = records.get("agnostic_e2e"), records.get("transfer_clsbox_2lrelu_mlp_e2e")
    try:
        pa, pt = (r["metrics"][direction]["per_class"] if r else None for r in (agn, tra))
    except (KeyError, TypeError):
        st.warning("The result files lack per-class metrics for this direction; rerun `python -m maskx study run`.")
        return
    if pa is None or pt is None:
        st.info("Pending: needs the class-agnostic and the transfer results of this direction "
                f"(`{common.settings().results}`).")
        return
    rows = [{"class": n, "gain": pt[n]["segm_AP"] - v["segm_AP"], "agnostic": v["segm_AP"],
             "transfer": pt[n]["segm_AP"]} for n, v in pa.items()
            if v.get("set") == "B" and n in pt and v.get("segm_AP") is not None and pt[n].get("segm_AP") is not None]
    if not rows:
        st.info("No set-B class has mask AP in both results.")
        return
    df = pd.DataFrame(rows).sort_values("gain", ascending=False)
    helped = int((df["gain"] > 0).sum())
    st.caption(f"Transfer AP minus class-agnostic AP (mask AP, 0-100) per set-B class: transfer helped on "
               f"{helped} of {len(df)} classes; mean change {df['gain'].mean():+.1f} AP.")
    fig = go.Figure(go.Bar(x=df["class"], y=df["gain"], marker_color=["#1f77b4" if g > 0 else "#9a9a9a"
                                                                      for g in df["gain"]],
                           customdata=df[["agnostic", "transfer"]].values,
                           hovertemplate="%{x}: %{y:+.1f} AP<br>agnostic %{customdata[0]:.1f}, "
                                         "transfer %{customdata[1]:.1f}<extra></extra>"))
    fig.update_layout(height=380, margin=dict(l=10, r=10, t=10, b=10), yaxis_title="Δ mask AP",
                      xaxis=dict(tickangle=-60))
    st.plotly_chart(fig, key="compare_gain")


def main():
    st.title("Compare")
    from maskx_study.runner import DIRECTIONS

    cfg = common.settings()
    c1, c2, c3 = st.columns([1, 2, 1])
    direction = c1.selectbox("Direction", DIRECTIONS, format_func=ARROW.get, key="compare_direction")
    samples = study_images()
    k = c2.selectbox("Image (the first val images)", range(len(samples)), format_func=lambda i: samples[i][0],
                     key="compare_image")
    thresh = c3.slider("Score threshold", 0.0, 1.0, common.settings().score, 0.01, key="compare_thresh")
    _, image_id, rgb = samples[k]
    runs = study_runs(direction)
    records = {}
    for _, run in runs:
        record, error = common.read_result(cfg.results / f"{run.key}.json")
        if error:
            st.warning(error)
        if record is not None:
            records[run.preset] = record
    for col, (label, run) in zip(st.columns(3), runs):
        with col:
            st.markdown(f"**{label}**")
            shown, where = masks_of(label, run, records.get(run.preset), rgb, image_id, thresh, direction)
            if shown is None:
                st.image(rgb, width="stretch")
                st.info(where)
                continue
            st.image(common.picture(rgb, shown), width="stretch", caption=f"{len(shown)} instances")
            st.caption(f"From the {where}.")
            rec = records.get(run.preset)
            ap = ((rec or {}).get("metrics", {}).get(direction) or {})
            if ap:
                st.caption(f"mask AP: A {_fmt(ap.get('A', {}).get('segm_AP'))}, "
                           f"B {_fmt(ap.get('B', {}).get('segm_AP'))}")
    st.caption(f"Runs: seed 0, backbone `{runs[0][1].backbone}`, {ARROW[direction]}; colours mark this "
               "direction's sets (the oracle was trained with every mask).")
    gain_chart(records, direction)


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.1f}"


common.guard(main)
