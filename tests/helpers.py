"""Plain helpers shared by test modules (fixtures live in conftest.py)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from maskx.config import Config, get_preset

ROOT = Path(__file__).resolve().parents[1]


def folder_digest(folder: Path) -> str:
    """SHA-256 over a folder's file names and bytes (a generated dataset: same seed, same bytes)."""
    import hashlib

    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def subprocess_env() -> dict:
    """Environment for `python -m maskx` / torchrun subprocesses: one thread, CPU only (bit-identical
    comparisons), the repository importable, no torchrun variables inherited from outside."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="")
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


# ------------------------------------------------------------------ small training runs, in process

# a shrunken model and tiny RoI budgets: ~0.5 s per iteration at 64 px on one core
SMALL = dict(image_size=64, rois_per_image=64, mask_rois_per_image=16, box_head_dim=128, mask_dim=64,
             transfer_hidden=64, warmup_iters=2, detections_per_img=20)


def tiny_config(preset: str = "transfer_clsbox_2lrelu_mlp_e2e", **kw) -> Config:
    return get_preset(preset).replace(**{**SMALL, **kw})


def model_tensors(ckpt_json: Path) -> dict[str, torch.Tensor]:
    """The ``model.*`` tensors of a checkpoint, read straight from its safetensors file."""
    return {k: v for k, v in load_file(Path(ckpt_json).with_suffix(".safetensors")).items()
            if k.startswith("model.")}


def assert_bit_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"


def read_log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------ the command line, in subprocesses

# tiny model and RoI budgets (as SMALL above)
TINY = ["--image-size", "64", "--set", "rois_per_image=64", "--set", "mask_rois_per_image=16",
        "--set", "box_head_dim=128", "--set", "mask_dim=64", "--set", "transfer_hidden=64",
        "--set", "warmup_iters=1", "--set", "detections_per_img=20", "--quiet"]


def maskx_cli(*args, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "maskx", *map(str, args)], cwd=ROOT, env=subprocess_env(),
                          capture_output=True, text=True, timeout=timeout)


def torchrun(*args, nproc: int = 2, timeout: int = 300) -> subprocess.CompletedProcess:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
           f"--master_port={port}", "-m", "maskx", *map(str, args)]
    return subprocess.run(cmd, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=timeout)


def check_exit(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
