"""Lock files that let several processes share one plan of runs (``study run --jobs N``).

A lock is a file holding the pid of its owner, created with ``O_EXCL`` so exactly one process
takes it. A lock whose process has died (killed, machine restarted) does not count and is taken
over, so an interrupted study never needs a manual clean-up.
"""
from __future__ import annotations

import os
from pathlib import Path


def lock_held(path: Path) -> bool:
    """Held by a live process (a lock left by a dead process does not count)."""
    try:
        pid = int(Path(path).read_text().strip() or 0)
    except (FileNotFoundError, ValueError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        pass
    return True


def take_lock(path: Path) -> bool:
    """Create the lock for this process (False: another live process holds it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not lock_held(path):
        path.unlink(missing_ok=True)  # stale: its process died
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))
    return True


def release_lock(path: Path) -> None:
    Path(path).unlink(missing_ok=True)
