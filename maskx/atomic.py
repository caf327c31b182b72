"""Atomic file writes: write a temporary file beside the target, fsync, rename over it.

A reader (or a run killed mid-write) sees the old file or the new one, never half of one.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], private_dir: bool = False) -> None:
    """Call ``write(tmp_path)``, then move the result to ``path`` (mode 0666 minus the umask,
    like a plain ``open``, not mkstemp's 0600). ``private_dir``: ``tmp_path`` lies in a fresh hidden
    folder beside ``path`` (removed afterwards), for writers that make temporary files of their own
    beside their target (safetensors >= 0.6 writes ``.tmpXXXXXX`` and renames it): a write cut off by
    a kill then leaves only ``.<name>.*`` behind, which the caller can recognise and remove."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = None
    if private_dir:
        folder = tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent)
        tmp = os.path.join(folder, path.name)
    else:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def write_json_atomic(obj, path: str | os.PathLike) -> None:
    """Write ``obj`` as JSON to ``path`` atomically."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj)))


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; when the block ends without an error it replaces
    ``path`` (an old folder there is removed first), otherwise it is deleted. A reader sees the old
    folder, no folder, or the finished new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
