"""The study's result files: reading ``results/`` (and ``results/superseded/``), the examples each
result keeps, folder defaults, and the time estimate of the runs left (``maskx_study.runner`` writes them).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

from maskx.config import get_preset

EXAMPLE_IMAGES = 8  # val images whose predictions each result keeps, for qualitative figures
EXAMPLE_MIN_SCORE = 0.3


def examples(preds: list[dict], image_ids: list[int]) -> dict:
    """The predictions (COCO results, RLE masks) on the first ``EXAMPLE_IMAGES`` val images."""
    keep = set(sorted(image_ids)[:EXAMPLE_IMAGES])
    return {"image_ids": sorted(keep), "min_score": EXAMPLE_MIN_SCORE,
            "predictions": [p for p in preds if p["image_id"] in keep and p["score"] >= EXAMPLE_MIN_SCORE]}


def estimate_hours(runs: list, results: dict[str, dict]) -> dict:
    """Measured hours so far and an estimate for the runs left, from the mean train + eval seconds
    of finished runs of the same kind (stage, and backbone for detectors and e2e runs), plus each
    RoI cache (``maskx.roi_cache``): built once per detector, counted once, estimated for the
    detectors whose stage-wise runs have not built theirs yet."""
    def kind(r) -> tuple:  # r: study.Run
        stage = get_preset(r.preset).stage
        return (stage, r.backbone) if stage != "mask" else (stage,)

    spent: dict[tuple, list] = {}
    caches: dict[str, float] = {}  # detector run key -> build seconds
    for r in runs:
        rec = results.get(r.key)
        if rec is not None:
            spent.setdefault(kind(r), []).append(rec.get("train_seconds", 0) + rec.get("eval_seconds", 0))
            if rec.get("roi_cache"):
                caches[r.detector().key] = rec["roi_cache"].get("build_seconds") or 0.0
    left, unknown = 0.0, 0
    for r in runs:
        if r.key in results:
            continue
        seconds = spent.get(kind(r))
        if seconds:
            left += sum(seconds) / len(seconds)
        else:
            unknown += 1
    caches_left = roi_caches_left(runs, results)
    if caches_left and caches:
        left += len(caches_left) * sum(caches.values()) / len(caches)
    done = sum(sum(v) for v in spent.values()) + sum(caches.values())
    return {"hours_done": round(done / 3600, 2), "hours_left_estimate": round(left / 3600, 2),
            "runs_left_without_estimate": unknown, "roi_caches_left": len(caches_left)}


STUDY_BUDGET_HOURS = 10.0  # the whole study's budget, wall clock on this 2-core machine
MACHINE_CORES = 2


def roi_cache_seconds(results: dict[str, dict]) -> dict[str, float]:
    """Build seconds of each RoI cache the results used, keyed by its detector's sha256 (counted once)."""
    return {r["roi_cache"]["detector_sha256"]: r["roi_cache"].get("build_seconds") or 0
            for r in results.values() if r.get("roi_cache")}


def roi_caches_left(runs: list, results: dict[str, dict]) -> set[str]:
    """The detectors (run keys) with stage-wise runs left among ``runs`` and no RoI cache recorded by
    any of their finished ones: each cache is still to be built, once."""
    built = {r.detector().key for r in runs if (results.get(r.key) or {}).get("roi_cache")}
    return {r.detector().key for r in runs
            if r.key not in results and get_preset(r.preset).stage == "mask" and r.detector().key not in built}


def _kind(stage, split: str, backbone) -> tuple:
    """A run's kind for timing: (stage, split family, backbone); random splits grouped by |A|."""
    return stage, re.sub(r"_t\d+$", "", split or ""), backbone  # rand20_t3 -> rand20


def wall_hours(results: dict[str, dict], planned: Optional[list] = None) -> dict:
    """The study's cost in wall-clock hours on a ``MACHINE_CORES``-core machine, from its result records.

    A run's seconds count as ``seconds * threads / cores``: 1-thread runs ran two at a time
    (``--jobs 2``), 2-thread runs (detectors) alone; a RoI cache is built by one 1-thread worker while
    the others run other runs (``Study.run`` defers the stage-wise runs that would wait for it), so it
    counts like a 1-thread run. ``measured``: the recorded times, which include slowdowns from other
    work sharing the machine (and pauses); ``quiet_estimate``: each run kind (stage, split family,
    backbone) at the lower quartile of its measured times, what a rerun on an otherwise idle machine
    would take; a detector restored bit for bit (``Study._restored``: the same training again) counts
    its lower training time there. With ``planned`` (``maskx_study.plan.Run`` list): ``left``, the planned
    runs without a result at their kind's lower quartile (plus the RoI caches still to build,
    ``roi_caches_left``), and ``left_unmeasured``, those of a kind not measured yet. ``by_kind``: per
    kind, runs done and left, the lower-quartile wall minutes per run and the hours they come to, and a
    last row for the RoI caches (those left at the fastest build)."""
    kinds: dict[tuple, list] = {}
    quiet_kinds: dict[tuple, list] = {}
    for r in results.values():
        share = (r.get("torch_threads") or 1) / MACHINE_CORES
        key = _kind(r.get("stage"), r.get("split", ""), r.get("backbone"))
        train = r.get("train_seconds", 0)
        kinds.setdefault(key, []).append((train + r.get("eval_seconds", 0)) * share)
        fastest = min([train] + [x["train_seconds"] for x in r.get("restores", [])])
        quiet_kinds.setdefault(key, []).append((fastest + r.get("eval_seconds", 0)) * share)
    cache_seconds = roi_cache_seconds(results)
    caches = sum(cache_seconds.values()) / MACHINE_CORES
    cache_each = min(cache_seconds.values(), default=0.0) / MACHINE_CORES  # a cache left: the fastest build
    measured = sum(sum(v) for v in kinds.values()) + caches
    quarter = {k: sorted(v)[(len(v) - 1) // 4] for k, v in quiet_kinds.items()}
    quiet = sum(len(quiet_kinds[k]) * q for k, q in quarter.items()) + caches
    out = {"measured": round(measured / 3600, 2), "quiet_estimate": round(quiet / 3600, 2),
           "budget": STUDY_BUDGET_HOURS}
    # where the time goes: per kind, its runs done (and left), the lower-quartile seconds per run
    by_kind = {k: {"kind": " ".join(str(x) for x in k), "done": len(quiet_kinds[k]), "left": 0, "each": q}
               for k, q in quarter.items()}
    caches_left: set = set()
    if planned is not None:
        left, unmeasured = 0.0, 0
        for run in planned:
            if run.key in results:
                continue
            kind = _kind(get_preset(run.preset).stage, run.split, run.backbone)
            q = quarter.get(kind)
            if q is None:
                unmeasured += 1
            else:
                left += q
                by_kind[kind]["left"] += 1
        caches_left = roi_caches_left(planned, results)
        left += len(caches_left) * cache_each
        out.update(left=round(left / 3600, 2), left_unmeasured=unmeasured)
    rows = [{"kind": v["kind"], "done": v["done"], "left": v["left"], "minutes": round(v["each"] / 60, 1),
             "hours": round((v["done"] + v["left"]) * v["each"] / 3600, 2)}
            for _, v in sorted(by_kind.items(), key=lambda kv: [str(x) for x in kv[0]])]
    if cache_seconds:
        rows.append({"kind": "RoI cache (one per detector, 1 thread)", "done": len(cache_seconds),
                     "left": len(caches_left), "minutes": round(cache_each / 60, 1),
                     "hours": round((caches + len(caches_left) * cache_each) / 3600, 2)})
    out["by_kind"] = rows
    return out


def train_seconds(log: Path) -> float:
    """Summed step times of the run (resumed runs included; data waits counted)."""
    from maskx.train import read_log  # torch-heavy; the report's readers of results/ need not import it

    return round(sum(row.get("sec", 0.0) for row in read_log(log)), 3)


def run_versions(out: Path) -> dict:
    meta = json.loads((out / "run.json").read_text()) if (out / "run.json").is_file() else {}
    return {k: meta.get(k) for k in ("generator_version", "maskx_version", "torch_version", "torch_threads", "cpu")}


def load_superseded(results_dir="results") -> list[dict]:
    """Results moved aside by ``Study.supersede_stale`` (oldest first)."""
    return [json.loads(p.read_text()) for p in sorted(Path(results_dir, "superseded").glob("*.json"),
                                                      key=lambda p: p.stem.rsplit("__", 1)[-1])]


def load_results(results_dir="results") -> dict[str, dict]:
    """Every ``results/*.json`` by run key."""
    out = {}
    for p in sorted(Path(results_dir).glob("*.json")):
        r = json.loads(p.read_text())
        out[r["run"]] = r
    return out


def default_results_dir(scale: str) -> str:
    """Results of a scale: the committed study in ``results/``, any other scale outside git."""
    return "results" if scale == "study" else f"runs/results-{scale}"


def default_runs_dir(scale: str) -> str:
    """Checkpoints of a scale's runs: run keys do not name the scale, so scales never share a folder."""
    return f"runs/{scale}"
