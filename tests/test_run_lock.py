"""Run lock files (maskx.run_lock): one owner at a time; a dead owner's lock is taken over."""
import os
import subprocess
import sys

from maskx.run_lock import lock_held, release_lock, take_lock


def test_one_owner_then_released(tmp_path):
    path = tmp_path / "sub" / "run.lock"
    assert not lock_held(path)
    assert take_lock(path) and lock_held(path) and path.read_text() == str(os.getpid())
    assert not take_lock(path)  # held by a live process (this one)
    release_lock(path)
    assert not lock_held(path) and not path.exists()
    release_lock(path)  # releasing twice is harmless


def test_dead_owner_lock_is_taken_over(tmp_path):
    path = tmp_path / "run.lock"
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    path.write_text(child.stdout.strip())  # that process has exited
    assert not lock_held(path)
    assert take_lock(path) and path.read_text() == str(os.getpid())


def test_unreadable_lock_is_not_held(tmp_path):
    path = tmp_path / "run.lock"
    path.write_text("not a pid")
    assert not lock_held(path)
    assert take_lock(path)
