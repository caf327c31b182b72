"""RESULTS.md's "Scale and cost" section: compute spent, wall-clock hours against the 8-hour budget
(``maskx_study.results.wall_hours``) and where they go, per kind of run."""
from __future__ import annotations

from maskx_study.plan import StudyScale, beyond_budget, plan
from maskx_study.results import roi_cache_seconds, wall_hours


def cost_section(sc: StudyScale, results: dict, superseded: list[dict]) -> tuple[list[str], float]:
    """The section's markdown lines, and the measured worker-seconds of ``results`` (RoI caches included).
    The budget counts the plan's runs; those it leaves out (``beyond_budget``) are priced apart."""
    caches = roi_cache_seconds(results)
    seconds = sum(r.get("train_seconds", 0) + r.get("eval_seconds", 0) for r in results.values()) + sum(caches.values())
    spent = sum(r.get("train_seconds", 0) + r.get("eval_seconds", 0) for r in superseded)
    planned = plan(sc)
    planned_set = set(planned)
    beyond = [r for r in plan(beyond_budget(sc)) if r not in planned_set]
    beyond_keys = {r.key for r in beyond}
    in_plan = {k: r for k, r in results.items() if k not in beyond_keys}
    wall = wall_hours(in_plan, planned)
    left = sum(r.key not in results for r in planned)
    budget, quiet = wall["budget"], wall["quiet_estimate"]
    if quiet > budget:
        verdict = f" (not met: {quiet / budget - 1:.0%} over even on an idle machine)."
    elif not left:
        verdict = (f" (met at this estimate, {budget - quiet:.1f} h to spare; it leaves out what comes once per worker"
                   " and detector: its val detections and GT-box features, docs/study.md).")
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
             "", f"The plan's {len(planned)} runs as wall-clock time on the 2 cores (1-thread runs two at a time, "
             f"detectors alone): {wall['measured']:.1f} h measured, {quiet:.1f} h at the lower quartile of each run "
             f"kind's times (an otherwise idle machine; the measured times include other work sharing the cores). "
             f"Budget: {budget:.0f} h" + verdict,
             *_beyond_budget_line(sc, results, in_plan, beyond, quiet), "",
             "| run kind (stage, split, backbone) | done | left | wall min per run (lower quartile) | hours |",
             "|---|---:|---:|---:|---:|",
             *(f"| {k['kind']} | {k['done']} | {k['left']} | {k['minutes']:.1f} | {k['hours']:.2f} |" for k in wall["by_kind"]),
             ""]
    return lines, seconds


def _cpus(records) -> str:
    """The CPU kinds that ran ``records`` (their recorded ``cpu``, model name only)."""
    return " / ".join(sorted({str(r["cpu"]).split(" (")[0] for r in records if r.get("cpu")})) or "CPU not recorded"


def _beyond_budget_line(sc: StudyScale, results: dict, in_plan: dict, beyond: list, quiet: float) -> list[str]:
    """What the runs the budget leaves out (Table 2's second backbone on its other seeds) cost: at the
    plan's own rates for their kinds (the same CPU as the budget), and as they ran."""
    if not beyond:
        return []
    done = {r.key: results[r.key] for r in beyond if r.key in results}
    seeds = sorted({r.seed for r in beyond})
    text = (f"Beyond the budget (`study run --beyond-budget`; Table 2 reports them): the second backbone "
            f"({sc.second_backbone}) on seed{'s' * (len(seeds) > 1)} {', '.join(map(str, seeds))}: {len(beyond)} runs "
            f"(their {sum(r.preset == 'detector' for r in beyond)} detectors included), {len(done)} done.")
    at_plan = wall_hours(in_plan, beyond)
    if at_plan["left_unmeasured"] < len(beyond):
        text += (f" At the lower quartile of the plan's runs of their kinds ({_cpus(in_plan.values())}) they come to"
                 f" ≈ {at_plan['left']:.1f} h, ≈ {quiet + at_plan['left']:.1f} h with the plan"
                 + (f" ({at_plan['left_unmeasured']} of them of kinds the plan has not measured yet)"
                    if at_plan["left_unmeasured"] else "") + ".")
    if done:
        text += (f" As they ran ({_cpus(done.values())}): ≈ {wall_hours(done)['quiet_estimate']:.1f} h"
                 " at their own lower quartile.")
    return ["", text]
