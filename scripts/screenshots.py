"""Screenshots of the app's pages as a visitor first sees them, and how long each took.

    python scripts/screenshots.py                          # every page → docs/screenshots/<page>.png
    python scripts/screenshots.py --pages embeddings --out /tmp/shots
    python scripts/screenshots.py -- --model runs/maskx --data data/synth-default/val   # app options after --

Starts the app headless as ``make app`` does (``streamlit run app/serve.py``, a free port, the app's
options after ``--``), opens each page in Chromium through Playwright (the system's chromium, as the
browser test: ``.ci/install-browser``; ``MASKX_CHROMIUM`` names another) at 1400 x 1000, waits until
the page has finished running (no spinner, nothing greyed out, the page unchanged for 3 s), and saves
the window as ``<page>.png`` (``--full-page``: the whole page, the window grown to it). Prints per
page the seconds until its heading, its first content (image or chart) and the end of its run. A
fresh server per call: caches start cold, as a first visitor finds them (files written ahead, e.g.
projections, are used).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from maskx_app.headless import stop, wait_idle

ROOT = Path(__file__).resolve().parents[1]
# page: (url path, heading, CSS selector of its first content)
PAGES = {"segment": ("", "Segment", '[data-testid="stImage"] img'),
         "browse": ("browse", "Browse", '[data-testid="stImage"] img, [data-testid="stAlert"]'),
         "embeddings": ("embeddings", "Embeddings", ".js-plotly-plot"),
         "compare": ("compare", "Compare", '[data-testid="stImage"] img, [data-testid="stAlert"]')}
VIEWPORT = {"width": 1400, "height": 1000}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(port: int, app_args: list[str], log_path: Path) -> subprocess.Popen:
    """``streamlit run app/serve.py`` on ``port``, its output in ``log_path``; returns once it answers."""
    cmd = [sys.executable, "-m", "streamlit", "run", "app/serve.py", "--server.headless", "true",
           "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
           "--", *app_args]
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/_stcore/health"
    for _ in range(240):
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited ({proc.returncode}): {log_path.read_text()[-3000:]}")
        try:
            if urllib.request.urlopen(url, timeout=2).read() == b"ok":
                return proc
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise RuntimeError(f"the app did not answer in 120 s: {log_path.read_text()[-3000:]}")


def shoot(base: str, name: str, out: Path, page, timeout: float, full_page: bool) -> dict:
    """Open page ``name``, wait for it, save ``out/<name>.png``; the seconds each stage took."""
    path, heading, first = PAGES[name]
    t0 = time.perf_counter()
    page.goto(f"{base}/{path}", wait_until="domcontentloaded")
    page.get_by_role("heading", name=heading, level=1).wait_for(timeout=timeout * 1000)
    t_heading = time.perf_counter() - t0
    page.locator(first).first.wait_for(timeout=timeout * 1000)
    t_first = time.perf_counter() - t0
    wait_idle(page, timeout)
    t_done = time.perf_counter() - t0 - 3.0  # the quiet 3 s that tell the end are not the page's
    shot = out / f"{name}.png"
    if full_page:  # Streamlit scrolls inside its own container: grow the window to the content instead
        height = page.evaluate("""() => Math.max(document.body.scrollHeight, ...Array.from(
            document.querySelectorAll('[data-testid="stMain"], [data-testid="stAppViewContainer"]'),
            e => e.scrollHeight))""")
        page.set_viewport_size({"width": VIEWPORT["width"], "height": max(VIEWPORT["height"], int(height))})
        time.sleep(1.0)
    page.screenshot(path=str(shot), full_page=full_page)
    page.set_viewport_size(VIEWPORT)
    errors = page.locator('[data-testid="stException"]').count()
    return {"page": name, "png": str(shot), "heading_s": round(t_heading, 1), "first_content_s": round(t_first, 1),
            "finished_s": round(t_done, 1), "exceptions": errors}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    app_args = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[:argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="app options go after --")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots", help="folder for the PNGs")
    ap.add_argument("--pages", default=",".join(PAGES), help=f"comma-separated subset of {','.join(PAGES)}")
    ap.add_argument("--timeout", type=float, default=600, help="seconds a page may take")
    ap.add_argument("--full-page", action="store_true", help="the whole page, not the 1400 x 1000 window")
    args = ap.parse_args(own)
    pages = [p.strip() for p in args.pages.split(",") if p.strip()]
    unknown = [p for p in pages if p not in PAGES]
    if unknown:
        ap.error(f"unknown page(s) {unknown}; choose from {list(PAGES)}")
    chromium = os.environ.get("MASKX_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).is_file():
        ap.error(f"no Chromium at {chromium}: run .ci/install-browser or set MASKX_CHROMIUM")
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = args.out / ".streamlit.log"
    proc = start_app(port, app_args, log)
    rows = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-dev-shm-usage"])
            page = browser.new_page(viewport=VIEWPORT)
            for name in pages:
                row = shoot(f"http://127.0.0.1:{port}", name, args.out, page, args.timeout, args.full_page)
                print(json.dumps(row), flush=True)
                rows.append(row)
            browser.close()
    finally:
        stop(proc)
    log.unlink(missing_ok=True)
    return 1 if any(r["exceptions"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
