"""The app as a server that starts its first page's work at once (what ``make app`` runs).

    streamlit run app/serve.py -- --model models/maskx-3k [--data DIR] ...

Same app, pages and options as ``streamlit run app/streamlit_app.py``; the difference is when the
work happens. A plain Streamlit script runs only when a browser connects, so the first visitor
waits for torch's import, the model's load and the first prediction one after the other. Here
Streamlit's ``st.App`` lifespan hook starts ``common.warm_up`` in a thread as the server starts:
that work overlaps the browser's connecting and the page's own imports, and the page picks up the
cached model and masks. A failed warm-up (no model, bad checkpoint) only leaves the caches cold;
the page then shows its usual message.
"""
import sys
import threading
import traceback
from contextlib import asynccontextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import streamlit as st  # noqa: E402

import common  # noqa: E402


def _warm_up() -> None:
    try:
        common.warm_up()
    except Exception:  # the page reports the same problem when it runs
        traceback.print_exc()


@asynccontextmanager
async def _lifespan(_app):
    threading.Thread(target=_warm_up, name="maskx-warm-up", daemon=True).start()
    yield


# The pages are st.navigation's (streamlit_app.py). Streamlit sees the pages/ folder beside it and runs
# every script as a pages-folder app until some session has run st.navigation, so a first visit straight
# to /embeddings (a bookmark, a link) would run that page alone: no sidebar, no wide layout. Saying at
# start that the folder is not the app's navigation makes every URL run streamlit_app.py.
from streamlit.runtime.pages_manager import PagesManager  # noqa: E402

PagesManager.uses_pages_directory = False

app = st.App(str(Path(__file__).resolve().parent / "streamlit_app.py"), lifespan=_lifespan)
