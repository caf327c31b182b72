"""The cost section of RESULTS.md (maskx_study/cost.py): hours against the study's budget, projected or
finished, and the runs beyond the budget priced apart; from hand-made result records (no training)."""
from __future__ import annotations

from maskx_study.runner import SCALES, plan, table_runs
from study_records import SCALE, record


def test_the_cost_section_says_how_far_a_projection_or_a_finished_study_is_over():
    from maskx_study.cost import cost_section
    from maskx_study.results import STUDY_BUDGET_HOURS as budget

    det, agn = plan(SCALE)[:2]
    assert (det.preset, agn.preset) == ("detector", "agnostic")
    results = {det.key: {**record(det, 1.0), "torch_threads": 2, "train_seconds": 7 * 3600.0, "eval_seconds": 0},
               agn.key: {**record(agn, 1.0), "torch_threads": 1, "train_seconds": 3600.0, "eval_seconds": 0}}
    lines, seconds = cost_section(SCALE, results, [])
    text = "\n".join(lines)
    assert seconds == 8 * 3600  # worker-seconds as recorded
    # 7.5 h done at the lower quartile, the other voc2nonvoc stage-wise runs left at 0.5 h each: over budget
    left = sum(r.key not in results and r.split == "voc2nonvoc" and r.config(SCALE).stage == "mask" for r in plan(SCALE))
    assert 7.5 + left * 0.5 > budget
    assert left >= 1 and f"≈ {7.5 + left * 0.5:.1f} h in all, {(7.5 + left * 0.5) / budget - 1:.0%} over" in text
    results[det.key]["train_seconds"] = (budget + 1) * 3600.0  # done alone: budget + 1.5 h
    over = f"{1.5 / budget:.0%}"
    assert f"(not met: {over} over even on an idle machine)." in "\n".join(cost_section(SCALE, results, [])[0])


def test_the_budget_counts_the_plan_and_prices_the_runs_beyond_it_apart():
    """Table 2's second backbone on seeds 1-2 is beyond the study's budget: the budget's hours are the
    plan's (seed 0 there); the others are priced at the plan's rates for their kinds and as they ran."""
    from maskx_study.cost import cost_section
    from maskx_study.runner import beyond_budget

    scale = SCALES["study"]
    t2 = table_runs("t2", beyond_budget(scale), backbones=["second"])
    runs = set(t2) | {r.detector() for r in t2}
    # seed 0 (in the plan) on one CPU: detectors 1 h with 2 threads, e2e 0.2 h with 1; seeds 1-2 at half that
    results = {r.key: {**record(r, 1.0), "torch_threads": 2 if r.preset == "detector" else 1,
                       "cpu": "Intel X (6/207/2)" if r.seed == 0 else "AMD Y (26/2/1)",
                       "train_seconds": 3600.0 * (1.0 if r.preset == "detector" else 0.2) * (1 if r.seed == 0 else 0.5),
                       "eval_seconds": 0} for r in runs}
    text = "\n".join(cost_section(scale, results, [])[0])
    # the plan: one detector (1 h) and 6 end-to-end runs (0.2 h / 2 each)
    assert "1.6 h at the lower quartile" in text and "(met at this estimate, 6.5 h to spare;" not in text  # runs left
    done = {**results, **{r.key: {**record(r, 1.0), "train_seconds": 60.0} for r in plan(scale) if r.key not in results}}
    assert "(met at this estimate, " in "\n".join(cost_section(scale, done, [])[0])
    # 26 runs: their detectors, Table 2's end-to-end runs and the 12 stage-wise runs those start from
    assert "seeds 1, 2: 26 runs (their 2 detectors included), 14 done." in text
    # at the plan's rates: 2 detectors at 1 h + 12 runs at 0.1 h; as they ran (the other CPU): half
    assert "of their kinds (Intel X) they come to ≈ 3.2 h, ≈ 4.8 h with the plan (12 of them of kinds" in text
    assert "As they ran (AMD Y): ≈ 1.6 h at their own lower quartile." in text
    # none run yet: priced at the plan's rates alone
    first = {k: r for k, r in results.items() if r["seed"] == 0}
    text = "\n".join(cost_section(scale, first, [])[0])
    assert "14 done" not in text and "0 done. At the lower quartile" in text and "As they ran" not in text
    # a plan with every seed leaves nothing beyond its budget (and counts those runs in it)
    text = "\n".join(cost_section(beyond_budget(scale), results, [])[0])
    assert "Beyond the budget" not in text and "1.6 h at the lower quartile" not in text
