"""Driving the app headless (the browser test, ``scripts/screenshots.py``, ``benchmarks/app_and_3k.py``):
waiting for a Playwright page to finish running, and stopping the app's server."""
from __future__ import annotations

import subprocess
import time


def wait_idle(page, timeout: float = 240) -> None:
    """Until the page's script has finished: no spinner, no stale (greyed) element, and the counts of
    elements and images unchanged for 3 s (the status widget is not shown with toolbarMode
    "minimal"). Raises ``TimeoutError`` after ``timeout`` seconds."""
    end, last, quiet = time.time() + timeout, None, 0
    while time.time() < end:
        state = page.evaluate("""() => [document.querySelectorAll('[data-testid="stSpinner"]').length,
            document.querySelectorAll('[data-stale="true"]').length,
            document.querySelectorAll('[data-testid="stElementContainer"]').length,
            document.querySelectorAll('img').length]""")
        quiet = quiet + 1 if state == last and state[0] == 0 and state[1] == 0 else 0
        if quiet >= 6:
            return
        last = state
        time.sleep(0.5)
    raise TimeoutError(f"the page was still running after {timeout:.0f} s")


def stop(proc: subprocess.Popen, grace: float = 20) -> None:
    """Terminate the app's server; kill it if it has not exited after ``grace`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
