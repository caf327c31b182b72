"""The shipped 3000-class model and the app: per-image prediction at 512 px, and the app's cold start.

    python benchmarks/app_and_3k.py --out benchmarks/results/app_and_3k.json

a. ``maskx.load("maskx-3k")``: load time in a fresh process (imports included), and ``predict`` on
   ``--images`` val images of the 3000-class world drawn at 512 px (``render3k(1, i, 512)``; the model
   resizes to its 256 px), median and max wall time per image after one warm-up, detections per
   image, with ``torch.get_num_threads()`` threads (2 here).
b. App cold start: ``streamlit run app/streamlit_app.py`` started as a fresh process, then headless
   Chromium (Playwright, the system's ``chromium``) opens the Segment page; the time from starting
   the process until the overlay image is on the page, and until the server answers its health
   check. Skipped, with the reason, when Chromium or Playwright is missing (``.ci/install-browser``).
   ``--screenshot docs/app.png`` saves the first screen (the README's picture) after the timing.
"""
from __future__ import annotations

import argparse
import datetime
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOAD_SNIPPET = ("import sys, time; t=time.perf_counter(); import maskx; p=maskx.load(sys.argv[1]); "
                "print(time.perf_counter()-t)")


def bench_predict(images: int, model: str = "maskx-3k") -> dict:
    import torch

    import maskx
    from maskx.data.synthetic3k import render3k

    load_s = float(subprocess.run([sys.executable, "-c", LOAD_SNIPPET, model], capture_output=True, text=True, check=True,
                                  cwd=REPO).stdout.strip().splitlines()[-1])
    predictor = maskx.load(model)
    pics = [render3k(1, i, 512)[0] for i in range(images + 1)]
    predictor.predict(pics[0])  # warm-up
    times, dets = [], []
    for pic in pics[1:]:
        t = time.perf_counter()
        found = predictor.predict(pic)
        times.append(time.perf_counter() - t)
        dets.append(len(found))
    return {"load_fresh_process_s": round(load_s, 2), "images": images, "input_px": 512,
            "model_image_size": predictor.config.image_size, "threads": torch.get_num_threads(),
            "median_s": round(statistics.median(times), 3), "max_s": round(max(times), 3),
            "mean_detections": round(statistics.fmean(dets), 1), "times_s": [round(t, 3) for t in times]}


def bench_app_cold_start(screenshot: str = "") -> dict:
    chromium = os.environ.get("MASKX_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return {"skipped": "playwright is not installed: run .ci/install-browser"}
    if not Path(chromium).is_file():
        return {"skipped": f"no Chromium at {chromium}: run .ci/install-browser"}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app/streamlit_app.py", "--server.headless",
                             "true", "--server.port", str(port), "--server.address", "127.0.0.1",
                             "--browser.gatherUsageStats", "false"], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.2)
            if time.perf_counter() - t0 > 120:
                return {"skipped": "streamlit did not answer within 120 s"}
        health = time.perf_counter() - t0
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.goto(url)
            page.wait_for_selector('[data-testid="stImage"] img', timeout=180_000)
            shown = time.perf_counter() - t0
            if screenshot:  # the README's picture: the first screen once every element has rendered
                last, quiet = None, 0
                while quiet < 6:  # no spinner and the page unchanged for 3 s
                    state = page.evaluate("() => [document.querySelectorAll('[data-testid=\"stSpinner\"]').length, "
                                          "document.querySelectorAll('img').length, document.body.innerText.length]")
                    quiet = quiet + 1 if state == last and state[0] == 0 else 0
                    last = state
                    time.sleep(0.5)
                page.screenshot(path=screenshot, clip={"x": 0, "y": 0, "width": 1440, "height": 900})
            browser.close()
        return {"server_healthy_s": round(health, 2), "first_result_s": round(shown, 2)}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "app_and_3k.json"))
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--model", default="maskx-3k", help="the shipped model's name, or a run folder")
    ap.add_argument("--skip-app", action="store_true")
    ap.add_argument("--screenshot", default="", help="also save the first screen here (e.g. docs/app.png)")
    args = ap.parse_args(argv)
    load = os.getloadavg()
    res = {"meta": {"date": datetime.date.today().isoformat(), "load_avg_start": load},
           "predict_3k": bench_predict(args.images, args.model)}
    res["app_cold_start"] = {"skipped": "--skip-app"} if args.skip_app else bench_app_cold_start(args.screenshot)
    res["meta"]["load_avg_end"] = os.getloadavg()
    from maskx.atomic import write_json_atomic

    write_json_atomic(res, args.out)
    p, a = res["predict_3k"], res["app_cold_start"]
    print(f"| 3000-class model | load (fresh process) {p['load_fresh_process_s']} s | predict at 512 px: median "
          f"{p['median_s']} s, max {p['max_s']} s ({p['threads']} threads, {p['mean_detections']} detections/img) |")
    print("| app cold start | " + (a.get("skipped") or f"first result on the page {a['first_result_s']} s after "
                                    f"`streamlit run` (server healthy at {a['server_healthy_s']} s)") + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
