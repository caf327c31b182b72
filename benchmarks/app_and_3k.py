"""The shipped 3000-class model and the app: per-image prediction at 512 px, and the app's cold start.

    python benchmarks/app_and_3k.py --out benchmarks/results/app_and_3k.json

a. ``maskx.load("maskx-3k")``: load time in a fresh process (imports included), and ``predict`` on
   ``--images`` val images of the 3000-class world drawn at 512 px (``render3k(1, i, 512)``; the model
   resizes to its 256 px), median and max wall time per image after one warm-up, detections per
   image, with ``torch.get_num_threads()`` threads (2 here). Three variants, interleaved image by
   image, give the inference speed-ups before/after (``_predictors``); the headline numbers are the
   app's (``sparse_roi_align``).
b. App cold start, side by side for the two launch scripts (``APP_SCRIPTS``, alternated
   ``--app-repeats`` times): ``streamlit run SCRIPT`` started as a fresh process while headless
   Chromium (Playwright, the system's ``chromium``; started first, as a visitor's browser is
   already open) waits for the server's health check and then opens the Segment page; the time
   from starting the process until the overlay image is on the page. ``app/serve.py`` (``make
   app``) starts the page's work with the server; ``serve_live`` is ``serve`` on a copy of the shipped
   model without ``examples.json`` (its masks on the sample images, saved by ``maskx ship``), so
   its first result waits for torch's import, the model's load and a prediction. Skipped, with the reason, when Chromium or
   Playwright is missing (``.ci/install-browser``). ``--screenshot docs/app.png`` saves the first
   screen (the README's picture) of the last ``serve`` start, after the timing.
"""
from __future__ import annotations

import argparse
import datetime
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import sys
import time
import urllib.request
from pathlib import Path
from typing import Optional

from maskx_app.headless import stop

REPO = Path(__file__).resolve().parents[1]
LOAD_SNIPPET = ("import sys, time; t=time.perf_counter(); import maskx; p=maskx.load(sys.argv[1]); "
                "print(time.perf_counter()-t)")


VARIANTS = ("torchvision", "postprocess", "sparse_roi_align")


def _predictors(model: str) -> dict:
    """The model three ways, before → after of the inference speed-ups: ``torchvision`` (its RoIAlign
    forward and its ``postprocess_detections``, which decodes a box for every RoI x class),
    ``postprocess`` (Mask^X's, decoding only pairs above the score threshold: same output bit for
    bit), ``sparse_roi_align`` (that, plus the sparse RoIAlign forward: what the app uses)."""
    import types

    from torchvision.models.detection.roi_heads import RoIHeads

    import maskx

    out = {v: maskx.load(model, roi_align_forward="sparse" if v == "sparse_roi_align" else "torchvision")
           for v in VARIANTS}
    heads = out["torchvision"].model.roi_heads
    heads.postprocess_detections = types.MethodType(RoIHeads.postprocess_detections, heads)
    return out


def bench_predict(images: int, model: str = "maskx-3k") -> dict:
    """Per-image ``predict`` of each variant, interleaved image by image (same load for all)."""
    import torch

    from maskx.data.synthetic3k import render3k

    load_s = float(subprocess.run([sys.executable, "-c", LOAD_SNIPPET, model], capture_output=True, text=True, check=True,
                                  cwd=REPO).stdout.strip().splitlines()[-1])
    predictors = _predictors(model)
    pics = [render3k(1, i, 512)[0] for i in range(images + 1)]
    for p in predictors.values():
        p.predict(pics[0])  # warm-up
    times = {v: [] for v in VARIANTS}
    dets, same = [], True
    for pic in pics[1:]:
        found = {}
        for v, p in predictors.items():
            t = time.perf_counter()
            found[v] = p.predict(pic)
            times[v].append(time.perf_counter() - t)
        dets.append(len(found["sparse_roi_align"]))
        same &= len(found["torchvision"]) == len(found["postprocess"]) and all(
            a.box == b.box and a.label == b.label for a, b in zip(found["torchvision"], found["postprocess"]))
    base = times["torchvision"]
    variants = {v: {"median_s": round(statistics.median(ts), 3), "max_s": round(max(ts), 3),
                    "x_torchvision": round(statistics.median(t / b for t, b in zip(ts, base)), 3),
                    "times_s": [round(t, 3) for t in ts]} for v, ts in times.items()}
    app = variants["sparse_roi_align"]
    return {"load_fresh_process_s": round(load_s, 2), "images": images, "input_px": 512,
            "model_image_size": predictors["torchvision"].config.image_size, "threads": torch.get_num_threads(),
            "median_s": app["median_s"], "max_s": app["max_s"], "mean_detections": round(statistics.fmean(dets), 1),
            "postprocess_same_detections": same, "variants": variants}


APP_SCRIPTS = {"plain": "app/streamlit_app.py", "serve": "app/serve.py", "serve_live": "app/serve.py"}
# serve_live: the shipped model without its saved sample masks (examples.json), so the first sample is
# segmented live, after torch's import and the model's load (the cold start without saved masks)


def _model_without_examples(tmp: Path) -> Path:
    """A folder with the shipped checkpoint (its JSON copied, its weights linked) and no examples.json."""
    from maskx.hub import shipped_dir

    out = tmp / "maskx-3k-no-examples"
    out.mkdir()
    for f in shipped_dir("maskx-3k").glob("ckpt_*"):
        if f.suffix == ".json":
            shutil.copy(f, out / f.name)
        else:
            os.symlink(f.resolve(), out / f.name)
    return out


def _cold_start(browser, script: str, screenshot: str = "", env: Optional[dict] = None) -> dict:
    """``streamlit run SCRIPT`` in a fresh process; the open browser loads the page as soon as the
    server answers its health check. → seconds from the process start to health and to the overlay."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", script, "--server.headless", "true",
                             "--server.port", str(port), "--server.address", "127.0.0.1",
                             "--browser.gatherUsageStats", "false"], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, **(env or {})})
    try:
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.1)
            if time.perf_counter() - t0 > 120:
                return {"skipped": "streamlit did not answer within 120 s"}
        health = time.perf_counter() - t0
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
        page.close()
        return {"server_healthy_s": round(health, 2), "first_result_s": round(shown, 2)}
    finally:
        stop(proc)


def bench_app_cold_start(screenshot: str = "", repeats: int = 3) -> dict:
    """Cold start of each launch script (``APP_SCRIPTS``), alternated ``repeats`` times: from
    ``streamlit run`` to the Segment page's overlay in headless Chromium. The browser is started
    before the server (a visitor's browser is already open, so its start-up is not counted).
    ``plain`` runs the page's work only when the browser connects; ``serve`` (``make app``) starts
    it with the server (``app/serve.py``); ``serve_live`` is ``serve`` with a copy of the shipped model
    that lacks its saved sample masks, so the first result waits for the model (the baseline)."""
    chromium = os.environ.get("MASKX_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return {"skipped": "playwright is not installed: run .ci/install-browser"}
    if not Path(chromium).is_file():
        return {"skipped": f"no Chromium at {chromium}: run .ci/install-browser"}
    runs = {name: [] for name in APP_SCRIPTS}
    with sync_playwright() as p, tempfile.TemporaryDirectory(prefix="maskx-bench-") as tmp:
        live = {"MASKX_MODEL": str(_model_without_examples(Path(tmp)))}
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        for k in range(repeats):
            for name, script in APP_SCRIPTS.items():
                last = k == repeats - 1 and name == "serve"
                r = _cold_start(browser, script, screenshot if last else "", live if name == "serve_live" else None)
                if "skipped" in r:
                    return r
                runs[name].append(r)
        browser.close()
    out = {name: {"first_result_s": round(statistics.median(r["first_result_s"] for r in rs), 2),
                  "server_healthy_s": round(statistics.median(r["server_healthy_s"] for r in rs), 2),
                  "runs": rs} for name, rs in runs.items()}
    return {"repeats": repeats, "browser_started_before_server": True, **out,
            "serve_x_plain": round(out["serve"]["first_result_s"] / out["plain"]["first_result_s"], 2),
            "serve_x_serve_live": round(out["serve"]["first_result_s"] / out["serve_live"]["first_result_s"], 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "app_and_3k.json"))
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--model", default="maskx-3k", help="the shipped model's name, or a run folder")
    ap.add_argument("--skip-app", action="store_true")
    ap.add_argument("--app-repeats", type=int, default=3)
    ap.add_argument("--screenshot", default="", help="also save the first screen here (e.g. docs/app.png)")
    args = ap.parse_args(argv)
    load = os.getloadavg()
    res = {"meta": {"date": datetime.date.today().isoformat(), "load_avg_start": load},
           "predict_3k": bench_predict(args.images, args.model)}
    res["app_cold_start"] = ({"skipped": "--skip-app"} if args.skip_app
                             else bench_app_cold_start(args.screenshot, args.app_repeats))
    res["meta"]["load_avg_end"] = os.getloadavg()
    from maskx.atomic import write_json_atomic

    write_json_atomic(res, args.out)
    p, a = res["predict_3k"], res["app_cold_start"]
    print(f"| 3000-class model | load (fresh process) {p['load_fresh_process_s']} s | predict at 512 px: median "
          f"{p['median_s']} s, max {p['max_s']} s ({p['threads']} threads, {p['mean_detections']} detections/img) |")
    for v, r in p["variants"].items():
        print(f"| predict, {v} | median {r['median_s']} s | {r['x_torchvision']}x torchvision |")
    if "skipped" in a:
        print(f"| app cold start | {a['skipped']} |")
    for name in () if "skipped" in a else APP_SCRIPTS:
        print(f"| app cold start, {name}: `streamlit run {APP_SCRIPTS[name]}` | first result on the page "
              f"{a[name]['first_result_s']} s (median of {a['repeats']}; server healthy at "
              f"{a[name]['server_healthy_s']} s) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
