"""Timing helpers of the benchmarks: interleaved repetitions with paired ratios, FLOP counts, the
machine's matmul peak, and the peak of torch's CPU allocations during a call."""
from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time

import torch


@contextlib.contextmanager
def quiet_stderr():
    """Silence the C++ profiler's start/stop chatter on fd 2 (Python exceptions still propagate)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleave(fns: dict, reps: int, warmup: int, base: str | None = None) -> dict:
    """Time every fn ``reps`` times, interleaved (rotating order); median, min, and ratio to ``base``."""
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    times = {n: [] for n in names}
    for r in range(reps):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            times[n].append(timed(fns[n]))
    out = {}
    for n in names:
        out[n] = {"median_s": statistics.median(times[n]), "min_s": min(times[n]), "times_s": times[n]}
        if base is not None:
            out[n]["ratio_vs_" + base] = statistics.median(t / b for t, b in zip(times[n], times[base]))
            out[n]["ratio_of_medians_vs_" + base] = out[n]["median_s"] / out[base]["median_s"]
            out[n]["ratio_of_mins_vs_" + base] = out[n]["min_s"] / out[base]["min_s"]
    return out


def step_flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def matmul_gflops(n: int = 2048, reps: int = 5) -> float:
    """Best fp32 GFLOP/s of ``reps`` [n, n] x [n, n] ``torch.mm`` (after one untimed)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    return 2 * n ** 3 / min(timed(lambda: torch.mm(a, b)) for _ in range(reps)) / 1e9


def peak_tensor_bytes(fn) -> int:
    """Peak of torch's CPU allocations during ``fn()``, above the bytes live when it started."""
    from torch.profiler import ProfilerActivity, profile

    if hasattr(fn, "reset"):
        fn.reset()
    with quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]" and str(e.device_type()).endswith("CPU"))
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak
