"""The app in a real browser: ``streamlit run app/serve.py`` (what ``make app`` runs) as a
subprocess (tiny model, fake study results), every page opened in headless Chromium (Playwright,
the system's ``chromium``), no exception element, the expected headings and content; screenshots
saved.

Needs ``.ci/install-browser`` (Debian's chromium + the pinned playwright; never ``playwright
install``). Screenshots go to pytest's tmp folder, and with ``MASKX_APP_SCREENSHOTS=1`` also to
``docs/app-screenshots/`` and the Segment page to ``docs/app.png`` (the README's picture).
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from helpers import ROOT, subprocess_env
from maskx_app.headless import wait_idle

CHROMIUM = os.environ.get("MASKX_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def _missing() -> str:
    if not Path(CHROMIUM).is_file():
        return f"no Chromium at {CHROMIUM}: run .ci/install-browser (apt-get install chromium) or set MASKX_CHROMIUM"
    try:
        import playwright.sync_api  # noqa: F401 (is it installed?)
    except ImportError:
        return "playwright is not installed: run .ci/install-browser"
    return ""


pytestmark = [pytest.mark.slow, pytest.mark.skipif(bool(_missing()), reason=_missing())]
# (url path, heading, CSS selector that must appear, how many at least)
PAGES = [("", "Segment", '[data-testid="stImage"] img', 1),
         ("browse", "Browse", '[data-testid="stImage"] img', 2),
         ("embeddings", "Embeddings", ".js-plotly-plot", 1),
         ("compare", "Compare", '[data-testid="stImage"] img', 3)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_model, app_val, fake_results, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("app_server")
    port = _free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", "app/serve.py", "--server.headless", "true",
           "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
           "--", "--model", str(tiny_model), "--results", str(fake_results), "--runs", str(tmp / "runs"),
           "--data", str(app_val), "--cache", str(tmp / "cache"), "--score", "0"]
    log = open(tmp / "streamlit.log", "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.5)
            assert proc.poll() is None, (tmp / "streamlit.log").read_text()[-3000:]
        else:
            pytest.fail("streamlit did not start in 60 s: " + (tmp / "streamlit.log").read_text()[-3000:])
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        pg = browser.new_page(viewport={"width": 1440, "height": 2000})  # Streamlit scrolls inside the page
        yield pg
        browser.close()


def screenshot(page, name: str, tmp_path: Path) -> Path:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("MASKX_APP_SCREENSHOTS"):
        out = ROOT / "docs" / "app-screenshots"
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, out / path.name)
        if name == "segment":  # the first screen, for the README
            page.screenshot(path=str(ROOT / "docs" / "app.png"), clip={"x": 0, "y": 0, "width": 1440, "height": 900})
    return path


@pytest.mark.parametrize("path,heading,selector,count", PAGES, ids=[p[1] for p in PAGES])
def test_page_in_browser(page, server, tmp_path, path, heading, selector, count):
    page.goto(f"{server}/{path}", wait_until="domcontentloaded")
    page.get_by_role("heading", name=heading, level=1).wait_for(timeout=60_000)
    page.locator(selector).nth(count - 1).wait_for(timeout=240_000)
    wait_idle(page)
    shot = screenshot(page, heading.lower(), tmp_path)
    assert page.locator('[data-testid="stException"]').count() == 0, f"exception on {heading}; see {shot}"
    assert page.locator(selector).count() >= count
    assert page.get_by_text("No usable model").count() == 0  # the sidebar found the model
    assert page.locator('[data-testid="stSidebar"]').get_by_text("set A: trained with masks").count() == 1


def test_embeddings_lasso_shows_masks(page, server, tmp_path):
    """Lasso the left half of the projection: those classes' example masks appear."""
    page.goto(f"{server}/embeddings", wait_until="domcontentloaded")
    plot = page.locator(".js-plotly-plot").first
    plot.wait_for(timeout=240_000)
    wait_idle(page)
    page.get_by_text("Select points in the projection").wait_for()
    box = plot.locator(".nsewdrag").first.bounding_box()
    x, y, w, h = box["x"], box["y"], box["width"], box["height"]
    page.mouse.move(x + 0.05 * w, y + 0.05 * h)
    page.mouse.down()
    for fx, fy in ((0.5, 0.05), (0.5, 0.95), (0.05, 0.95), (0.05, 0.1)):
        page.mouse.move(x + fx * w, y + fy * h, steps=8)
    page.mouse.up()
    page.get_by_text("Select points in the projection").wait_for(state="detached", timeout=60_000)
    wait_idle(page)
    screenshot(page, "embeddings-selected", tmp_path)
    assert page.locator('[data-testid="stException"]').count() == 0
    assert page.get_by_text("Select points in the projection").count() == 0
