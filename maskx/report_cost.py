"""RESULTS.md's "Scale and cost" section: compute spent, wall-clock hours against the 8-hour budget
(``study_results.wall_hours``) and where they go, per kind of run."""
from __future__ import annotations

from .study_plan import StudyScale, plan
from .study_results import roi_cache_seconds, wall_hours


def cost_section(sc: StudyScale, results: dict, superseded: list[dict]) -> tuple[list[str], float]:
    """The section's markdown lines, and the measured worker-seconds of ``results`` (RoI caches included)."""
    caches = roi_cache_seconds(results)
    seconds = sum(r.get("train_seconds", 0) + r.get("eval_seconds", 0) for r in results.values()) + sum(caches.values())
    spent = sum(r.get("train_seconds", 0) + r.get("eval_seconds", 0) for r in superseded)
    planned = plan(sc)
    wall = wall_hours(results, planned)
    left = sum(r.key not in results for r in planned)
    budget, quiet = wall["budget"], wall["quiet_estimate"]
    if quiet > budget:
        verdict = f" (not met: {quiet / budget - 1:.0%} over even on an idle machine)."
    elif not left:
        verdict = " (met)."
    else:
        total = quiet + wall["left"]
        verdict = (f" (so far; {left} of {len(planned)} runs to go: at the lower quartile of their kinds' times they add"
                   f" ≈ {wall['left']:.1f} h, ≈ {total:.1f} h in all"
                   + (f", {total / budget - 1:.0%} over" if total > budget else "")
                   + (f", not counting {wall['left_unmeasured']} run(s) of kinds not measured yet"
                      if wall["left_unmeasured"] else "") + ").")
    lines = ["", "## Scale and cost", "", f"Scale `{sc.name}`: " + ", ".join(f"{k}={v}" for k, v in sc.to_json().items()),
             "", f"Measured compute of the runs so far: {seconds / 3600:.2f} h (training steps + evaluation"
             + (f" + {len(caches)} RoI cache{'s' * (len(caches) > 1)}, {sum(caches.values()) / 3600:.2f} h" if caches else "")
             + ", summed over runs: worker-hours)" + (f"; superseded runs cost another {spent / 3600:.2f} h." if spent else "."),
             "", f"As wall-clock time on the 2 cores (1-thread runs two at a time, detectors alone): {wall['measured']:.1f} h "
             f"measured, {quiet:.1f} h at the lower quartile of each run kind's times (an otherwise idle machine; the "
             f"measured times include other work sharing the cores). Budget: {budget:.0f} h" + verdict,
             *_second_backbone_share(sc, results, quiet, budget), "",
             "| run kind (stage, split, backbone) | done | left | wall min per run (lower quartile) | hours |",
             "|---|---:|---:|---:|---:|",
             *(f"| {k['kind']} | {k['done']} | {k['left']} | {k['minutes']:.1f} | {k['hours']:.2f} |" for k in wall["by_kind"]),
             ""]
    return lines, seconds


def _second_backbone_share(sc: StudyScale, results: dict, quiet: float, budget: float) -> list[str]:
    """A line on what Table 2's second backbone costs beyond its first seed, and the study without it:
    the one part of the study that decides whether it fits the budget at this scale (README, budget)."""
    if sc.second_backbone == sc.backbone:
        return []
    first = sc.seeds[0]
    extra = {k for k, r in results.items() if r.get("backbone") == sc.second_backbone and r.get("seed") != first}
    if not extra:
        return []
    without = wall_hours({k: r for k, r in results.items() if k not in extra})["quiet_estimate"]
    seeds = sorted({results[k]["seed"] for k in extra})
    fits = "within" if without <= budget else "still over"
    return ["", f"Of these, Table 2's second backbone ({sc.second_backbone}) on seed{'s' * (len(seeds) > 1)} "
            f"{', '.join(map(str, seeds))} ({len(extra)} runs, its detectors included) adds ≈ {quiet - without:.1f} h "
            f"to the lower-quartile estimate; with seed {first} only there (`second_backbone_seeds=({first},)`) the study "
            f"comes to ≈ {without:.1f} h, {fits} the budget."]
