"""``python -m maskx train / predict / eval`` end to end, CLI errors, and distributed training (torchrun, gloo)."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import subprocess_env
from maskx.__main__ import main
from maskx.config import PRESETS, Config
from maskx.evaluate import check_predictions

ROOT = Path(__file__).resolve().parents[1]
# tiny model and RoI budgets (see tests/test_engine.py)
TINY = ["--image-size", "64", "--set", "rois_per_image=64", "--set", "mask_rois_per_image=16",
        "--set", "box_head_dim=128", "--set", "mask_dim=64", "--set", "transfer_hidden=64",
        "--set", "warmup_iters=1", "--set", "detections_per_img=20", "--quiet"]


@pytest.fixture
def data(data64) -> Path:
    return data64


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


def _check(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"


# ------------------------------------------------------------------ errors (fast, in-process)

def test_unknown_preset_lists_presets(data, tmp_path, capsys):
    assert main(["train", "--preset", "maskx_rcnn_best", "--data", str(data), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "unknown preset 'maskx_rcnn_best'" in err
    assert all(name in err for name in PRESETS)
    assert not (tmp_path / "r").exists()


def test_empty_set_a_split_file(data, tmp_path, capsys):
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"A": []}))
    code = main(["train", "--preset", "agnostic_e2e", "--data", str(data), "--split", str(split),
                 "--out", str(tmp_path / "r"), *TINY])
    assert code == 2
    assert "has an empty set A: no class would have mask labels" in capsys.readouterr().err
    assert not list(tmp_path.glob("r/ckpt_*"))


@pytest.mark.parametrize("argv, msg", [
    (["--set", "no_such_field=1"], "unknown config field 'no_such_field'"),
    (["--set", "iters=many"], "iters='many': expected int"),
    (["--set", "mask_head=fancy"], "mask_head='fancy' is not one of"),
    (["--split", "rand99_t0"], "split 'rand99_t0': |A| = 99 must be between 1 and 79"),
])
def test_bad_train_options_exit_2(data, tmp_path, capsys, argv, msg):
    code = main(["train", "--preset", "transfer_clsbox_2lrelu_mlp_e2e", "--data", str(data),
                 "--out", str(tmp_path / "r"), *TINY, *argv])
    assert code == 2
    assert msg in capsys.readouterr().err


def test_oracle_needs_split_all(data, tmp_path, capsys):
    assert main(["train", "--preset", "oracle_e2e", "--split", "voc2nonvoc", "--data", str(data),
                 "--out", str(tmp_path / "r"), *TINY]) == 2
    assert "use split='all'" in capsys.readouterr().err


def test_missing_data_folder(tmp_path, capsys):
    assert main(["train", "--preset", "agnostic_e2e", "--data", str(tmp_path / "nope"),
                 "--out", str(tmp_path / "r"), *TINY]) == 2
    assert "no such folder or annotations file" in capsys.readouterr().err


def test_predict_without_checkpoint(data, tmp_path, capsys):
    assert main(["predict", "--checkpoint", str(tmp_path), "--images", str(data / "images"),
                 "--out", str(tmp_path / "p.json")]) == 2
    assert "no checkpoint here" in capsys.readouterr().err


# ------------------------------------------------------------------ end to end (slow, real processes)

@pytest.mark.slow
def test_train_resume_predict_eval(data, tmp_path):
    run, pred = tmp_path / "run", tmp_path / "pred.json"
    train = ["train", "--preset", "agnostic_e2e", "--data", data, "--iters", "2", "--set", "score_thresh=0.0",
             "--set", "checkpoint_every=1", *TINY, "--out", run]
    proc = maskx_cli(*train, "--stop-after", "1")
    _check(proc)
    assert json.loads(proc.stdout)["checkpoint"].endswith("ckpt_0000001.json")
    assert not (run / "done.json").exists()
    # without --resume the run folder is refused; with it, training continues to --iters
    proc = maskx_cli(*train)
    assert proc.returncode == 2 and "pass --resume" in proc.stderr
    proc = maskx_cli(*train, "--resume")
    _check(proc)
    out = json.loads(proc.stdout)
    assert out["checkpoint"].endswith("ckpt_0000002.json") and out["preset"] == "agnostic_e2e"
    assert Config.from_json(out["config"]).iters == 2
    assert [json.loads(line)["iter"] for line in (run / "log.jsonl").read_text().splitlines()] == [0, 1]
    # --resume with another config is refused
    proc = maskx_cli(*train, "--resume", "--set", "base_lr=0.01")
    assert proc.returncode == 2 and "trained with another config" in proc.stderr

    proc = maskx_cli("predict", "--checkpoint", run, "--images", data / "images",
                     "--ann", data / "annotations.json", "--out", pred)
    _check(proc)
    gt = json.loads((data / "annotations.json").read_text())
    preds = json.loads(pred.read_text())
    assert json.loads(proc.stdout) == {"images": 4, "detections": len(preds), "out": str(pred)}
    assert preds and check_predictions(preds, gt) is preds
    assert {p["image_id"] for p in preds} <= {im["id"] for im in gt["images"]}
    assert all("segmentation" in p for p in preds)
    fast = tmp_path / "pred_sparse.json"  # the sparse RoIAlign forward: same model, valid results
    _check(maskx_cli("predict", "--checkpoint", run, "--images", data / "images", "--ann", data / "annotations.json",
                     "--roi-align-forward", "sparse", "--out", fast))
    assert check_predictions(json.loads(fast.read_text()), gt)

    proc = maskx_cli("eval", "--gt", data / "annotations.json", "--pred", pred, "--split", "voc2nonvoc")
    _check(proc)
    metrics = json.loads(proc.stdout)
    assert {"A", "B", "per_class", "split"} <= metrics.keys()
    assert {"bbox_AP", "segm_AP"} <= metrics["A"].keys() and {"bbox_AP", "segm_AP"} <= metrics["B"].keys()
    assert metrics["num_predictions"] == len(preds)


def _update(run: Path, it: int, init: dict) -> torch.Tensor:
    t = load_file(run / f"ckpt_{it:07d}.safetensors")
    return torch.cat([(t[f"model.{k}"] - v).flatten() for k, v in init.items() if v.is_floating_point()])


@pytest.mark.slow
def test_ddp_two_processes_match_one_process_with_the_global_batch(data, tmp_path):
    """torchrun x2 (gloo, CPU), 1 image per process == 1 process with 2 images, up to RoI sampling.

    Both runs read the same global batch (engine.batch_positions) at the same lr (scaled by the
    global batch), and DDP averages gradients. The torch RNG is reseeded per (seed, iter, rank),
    so RoI/anchor sampling differs between the two setups and exact equality is not expected: the
    updates must agree in size (a wrong lr scale or summed gradients would show as x0.5 or x2)
    and in direction.
    """
    common = ["train", "--preset", "transfer_clsbox_2lrelu_mlp_e2e", "--data", data, "--iters", "2",
              "--set", "checkpoint_every=1", "--set", "grad_clip=0.0", *TINY]
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    proc = torchrun(*common, "--set", "batch_size=1", "--out", ddp)
    _check(proc)
    _check(maskx_cli(*common, "--set", "batch_size=2", "--out", single))
    for run in (ddp, single):
        assert sorted(p.name for p in run.glob("ckpt_*.json")) == ["ckpt_0000001.json", "ckpt_0000002.json"]
        assert (run / "done.json").is_file()
    assert json.loads((ddp / "run.json").read_text())["world_size"] == 2
    log_ddp = [json.loads(line) for line in (ddp / "log.jsonl").read_text().splitlines()]
    log_single = [json.loads(line) for line in (single / "log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in log_ddp] == [0, 1]  # rank 0 alone writes the log
    assert [r["lr"] for r in log_ddp] == pytest.approx([r["lr"] for r in log_single])

    meta = json.loads((single / "ckpt_0000001.json").read_text())
    from maskx.models.maskx_rcnn import build_model
    cfg = Config.from_json(meta["config"])
    torch.manual_seed(cfg.seed)  # as run_training: the same initial weights in both runs
    init = build_model(cfg, meta["class_names"]).state_dict()
    for it in (1, 2):
        a, b = _update(ddp, it, init), _update(single, it, init)
        assert b.norm() > 0
        ratio = float(a.norm() / b.norm())
        cos = float(torch.nn.functional.cosine_similarity(a, b, dim=0))
        assert 0.85 < ratio < 1.15, f"iteration {it}: DDP update / single-process update = {ratio:.3f}"
        assert cos > 0.9, f"iteration {it}: cosine of the updates {cos:.3f}"


@pytest.mark.slow
def test_ddp_stagewise_trains_detector_then_mask_head(data, tmp_path):
    """The detector of a stage-wise preset is trained inside the same torchrun job, then the mask head."""
    run = tmp_path / "run"
    proc = torchrun("train", "--preset", "transfer_clsbox_2lrelu", "--data", data, "--iters", "1",
                    "--detector-iters", "1", "--set", "batch_size=1", *TINY, "--out", run)
    _check(proc)
    for d in (run / "detector", run):
        assert (d / "done.json").is_file()
        assert [p.name for p in d.glob("ckpt_*.json")] == ["ckpt_0000001.json"]
        assert len((d / "log.jsonl").read_text().splitlines()) == 1
    meta = json.loads((run / "ckpt_0000001.json").read_text())
    assert meta["world_size"] == 2 and meta["config"]["detector"] == str(run / "detector")


def test_annotations_file_needs_images_folder(data, tmp_path, capsys):
    assert main(["train", "--preset", "agnostic_e2e", "--data", str(data / "annotations.json"),
                 "--out", str(tmp_path / "r"), *TINY]) == 2
    assert "needs --images DIR" in capsys.readouterr().err


def test_folder_without_annotations_rejected(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["train", "--preset", "agnostic_e2e", "--data", str(tmp_path / "empty"),
                 "--out", str(tmp_path / "r"), *TINY]) == 2
    assert "no annotations.json here" in capsys.readouterr().err


def test_coco_layout_with_separate_images_folder(data, tmp_path):
    """Real COCO's layout: annotations/instances_*.json and a separate image folder."""
    assert main(["train", "--preset", "agnostic_e2e", "--data", str(data / "annotations.json"),
                 "--images", str(data / "images"), "--out", str(tmp_path / "r"), "--stop-after", "1",
                 *TINY]) == 0
    assert (tmp_path / "r" / "ckpt_0000001.json").is_file()


def test_malformed_categories_are_a_clear_error(data, tmp_path, capsys):
    import json

    ann = json.loads((data / "annotations.json").read_text())
    ann["categories"][3] = "dog"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(ann))
    assert main(["train", "--preset", "agnostic_e2e", "--data", str(bad), "--images", str(data / "images"),
                 "--out", str(tmp_path / "r"), *TINY]) == 2
    assert "categories[3]" in capsys.readouterr().err


def test_cpu_signature_names_the_cpu_and_torchs_kernels():
    """Recorded in run.json: bit-for-bit restores hold on one kind of CPU only."""
    import torch

    from maskx.train import cpu_signature

    sig = cpu_signature()
    assert sig.endswith(f"torch {torch.backends.cpu.get_cpu_capability()})") and len(sig) > 20
