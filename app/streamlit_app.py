"""The Mask^X R-CNN app: segment images, browse a dataset, explore class embeddings, compare
the study's models.

    streamlit run app/streamlit_app.py -- --model models/maskx-3k [--results results] [--data DIR]

Every option also reads an environment variable (MASKX_MODEL, MASKX_RESULTS, MASKX_RUNS,
MASKX_DATA, MASKX_APP_CACHE, MASKX_SCORE); see ``common.OPTIONS``.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import streamlit as st  # noqa: E402

import common  # noqa: E402

st.set_page_config(page_title="Mask^X R-CNN", page_icon=":material/format_paint:", layout="wide")

PAGES = [
    st.Page("pages/segment.py", title="Segment", icon=":material/format_paint:", default=True),
    st.Page("pages/browse.py", title="Browse", icon=":material/photo_library:"),
    st.Page("pages/embeddings.py", title="Embeddings", icon=":material/scatter_plot:"),
    st.Page("pages/compare.py", title="Compare", icon=":material/compare:"),
]
page = st.navigation(PAGES)

with st.sidebar:
    st.markdown("**Mask^X R-CNN**: learning to segment every thing")
    st.text_input("Model", value=str(common.settings().model), key="model_path",
                  help="a run folder (its newest checkpoint) or a ckpt_*.json")
    info, error = common.model_summary()  # from the checkpoint's JSON: the page never waits for torch here
    if error:
        st.warning(f"No usable model ({error}); see the page for what to do.")
    else:
        st.caption(f"{info['classes']} classes, {info['set_A']} in set A (split {info['split']}), "
                   f"iteration {info['iteration']}")
    common.legend()

page.run()
