"""run_training (maskx/train.py): an existing run needs --resume, resume refuses another config and equals
a straight run bit for bit, stage-wise runs train their detector first, the log, distributed training
(torchrun, gloo) and the CPU signature.

The in-process runs use a shrunken model (``SMALL`` in tests/helpers.py); the expensive checks are marked
``slow``.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import TINY, assert_bit_identical, maskx_cli, model_tensors, read_log, tiny_config, torchrun
from helpers import check_exit as _check
from maskx.checkpoint import CheckpointError, list_checkpoints
from maskx.config import Config, ConfigError
from maskx.train import run_training

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def cpu_only(monkeypatch):
    """Bit-identical comparisons need deterministic kernels: keep run_training off a GPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def data(data64) -> Path:
    return data64


# ------------------------------------------------------------------ run_training wiring

def test_existing_checkpoints_need_resume(trained_run, data64, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    with pytest.raises(FileExistsError, match="pass --resume"):
        run_training(tiny_config(iters=2, checkpoint_every=1, score_thresh=0.0), data64, run, progress=False)


@pytest.mark.parametrize("change", [{"base_lr": 0.01}, {"mask_head": "agnostic"}, {"seed": 1}])
def test_resume_with_another_config_refused(trained_run, data64, tmp_path, change):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    before = sorted(p.name for p in run.iterdir())
    cfg = tiny_config(iters=2, checkpoint_every=1, score_thresh=0.0, **change)
    with pytest.raises(CheckpointError, match="trained with another config"):
        run_training(cfg, data64, run, resume=True, progress=False)
    assert sorted(p.name for p in run.iterdir()) == before


def test_resume_may_change_the_inference_settings(trained_run, data64, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    cfg = tiny_config(iters=3, checkpoint_every=1, score_thresh=0.0, detections_per_img=7, rpn_test_proposals=50)
    run_training(cfg, data64, run, resume=True, progress=False)
    assert json.loads((run / "run.json").read_text())["config"]["rpn_test_proposals"] == 50


def test_a_run_killed_before_its_first_checkpoint_starts_a_fresh_log(data64, tmp_path):
    """Its log's records (no checkpoint to resume from) are dropped, not appended to: the study
    sums a run's step times from the log."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.jsonl").write_text('{"iter": 0, "sec": 100.0}\n{"iter": 1, "sec": 100.0}\n{"iter": 2, "se')
    run_training(tiny_config(iters=2, checkpoint_every=2, score_thresh=0.0), data64, run, resume=True,
                 progress=False)
    assert [r["iter"] for r in read_log(run)] == [0, 1] and all(r["sec"] < 100 for r in read_log(run))


def test_resume_when_already_done_changes_nothing(trained_run, data64, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    before = model_tensors(list_checkpoints(run)[-1])
    path = run_training(tiny_config(iters=2, checkpoint_every=1, score_thresh=0.0), data64, run, resume=True,
                        progress=False)
    assert path.name == "ckpt_0000002.json"
    assert_bit_identical(model_tensors(path), before)
    assert len(read_log(run)) == 2


@pytest.mark.parametrize("n, m", [(1, 1), pytest.param(2, 2, marks=pytest.mark.slow)])
def test_resume_equals_straight_run_e2e(data64, tmp_path, cpu_only, n, m):
    """N+M iterations straight == N, stop, resume for M: bit-identical weights, same losses."""
    # warm-up over 2 iterations and lr decays at 2/3 and 8/9 of the run: the schedule changes across the stop
    cfg = tiny_config(iters=n + m, checkpoint_every=1, keep_checkpoints=2)
    a = run_training(cfg, data64, tmp_path / "a", progress=False)
    b1 = run_training(cfg, data64, tmp_path / "b", stop_after=n, progress=False)
    assert b1.name == f"ckpt_{n:07d}.json" and not (tmp_path / "b" / "done.json").exists()
    b = run_training(cfg, data64, tmp_path / "b", resume=True, progress=False)
    assert a.name == b.name == f"ckpt_{n + m:07d}.json"
    assert (tmp_path / "b" / "done.json").is_file()
    assert_bit_identical(model_tensors(a), model_tensors(b))
    optim_a = {k: v for k, v in load_file(a.with_suffix(".safetensors")).items() if k.startswith("optim.")}
    optim_b = {k: v for k, v in load_file(b.with_suffix(".safetensors")).items() if k.startswith("optim.")}
    assert optim_a and optim_a.keys() == optim_b.keys()
    assert all(torch.equal(optim_a[k], optim_b[k]) for k in optim_a)
    log_a, log_b = read_log(tmp_path / "a"), read_log(tmp_path / "b")
    assert [r["iter"] for r in log_b] == list(range(n + m))
    for ra, rb in zip(log_a, log_b):
        assert {k: v for k, v in ra.items() if k != "sec"} == {k: v for k, v in rb.items() if k != "sec"}
    # the weights did move (the comparison is not vacuous)
    before = model_tensors(tmp_path / "a" / f"ckpt_{n + m - 1:07d}.json")
    assert any(not torch.equal(before[k], v) for k, v in model_tensors(a).items())


@pytest.mark.slow
def test_stagewise_trains_detector_first_and_resumes_exactly(data64, tmp_path, cpu_only):
    cfg = tiny_config("transfer_clsbox_2lrelu", iters=2, checkpoint_every=1)
    assert cfg.stage == "mask" and cfg.detector is None
    a = run_training(cfg, data64, tmp_path / "a", detector_iters=1, progress=False)
    det = tmp_path / "a" / "detector"
    assert (det / "done.json").is_file() and [p.name for p in list_checkpoints(det)] == ["ckpt_0000001.json"]
    det_meta = json.loads((det / "ckpt_0000001.json").read_text())
    assert det_meta["config"]["stage"] == "detector" and det_meta["config"]["iters"] == 1
    meta = json.loads(a.read_text())
    assert meta["config"]["detector"] == str(det) and meta["config"]["stage"] == "mask"
    # the detector part of the mask run is the trained detector, bit for bit (frozen in stage 2)
    det_t, mask_t = model_tensors(det / "ckpt_0000001.json"), model_tensors(a)
    mask_branch = ("model.roi_heads.mask_head.", "model.roi_heads.mask_predictor.", "model.roi_heads.mask_mlp.")
    shared = [k for k in det_t if not k.startswith(mask_branch)]
    assert shared and all(torch.equal(det_t[k], mask_t[k]) for k in shared)
    optim_keys = [k for k in load_file(a.with_suffix(".safetensors")) if k.startswith("optim.")]
    assert optim_keys and all(k.startswith(tuple("optim." + p[6:] for p in mask_branch)) for k in optim_keys)
    assert "loss_classifier" not in read_log(tmp_path / "a")[0] and "loss_mask" in read_log(tmp_path / "a")[0]

    b1 = run_training(cfg, data64, tmp_path / "b", detector_iters=1, stop_after=1, progress=False)
    assert b1.name == "ckpt_0000001.json"
    b = run_training(cfg, data64, tmp_path / "b", detector_iters=1, resume=True, progress=False)
    assert_bit_identical(model_tensors(a), model_tensors(b))
    assert_bit_identical(model_tensors(det / "ckpt_0000001.json"),
                         model_tensors(tmp_path / "b" / "detector" / "ckpt_0000001.json"))


def test_an_end_to_end_run_starts_from_its_stage_wise_run(data64, tmp_path, cpu_only):
    """``mask_init``: the e2e run's first step starts from the stage-wise run's weights (detector and
    trained mask branch); a stage-wise run of another method, or on another detector, is refused."""
    from maskx.data.coco import CocoDataset
    from maskx.models.maskx_rcnn import build_model
    from maskx.train import load_mask_init

    sw_cfg = tiny_config("agnostic", iters=2, checkpoint_every=2)
    sw = run_training(sw_cfg, data64, tmp_path / "sw", detector_iters=1, progress=False)
    det = str(tmp_path / "sw" / "detector")
    e2e = tiny_config("agnostic_e2e", iters=1, detector=det, mask_init=str(tmp_path / "sw"))
    ds = CocoDataset.from_dir(data64)
    model = build_model(e2e, list(ds.categories.names))
    load_mask_init(model, e2e.mask_init, ds, e2e)
    started = {f"model.{k}": v for k, v in model.state_dict().items()}
    assert_bit_identical({k: started[k] for k in model_tensors(sw)}, model_tensors(sw))
    out = run_training(e2e, data64, tmp_path / "e2e", progress=False)
    assert json.loads(out.read_text())["config"]["mask_init"] == str(tmp_path / "sw")
    with pytest.raises(CheckpointError, match="differs in mask_head"):
        load_mask_init(build_model(e2e.replace(mask_head="oracle", split="all"), list(ds.categories.names)),
                       e2e.mask_init, ds, e2e.replace(mask_head="oracle", split="all"))
    with pytest.raises(CheckpointError, match="same detector"):
        load_mask_init(model, e2e.mask_init, ds, e2e.replace(detector=str(tmp_path / "other")))
    with pytest.raises(CheckpointError, match="stage-wise"):
        load_mask_init(model, det, ds, e2e)
    with pytest.raises(ConfigError, match="mask_init"):
        tiny_config("agnostic", mask_init="x")


def test_read_log_skips_a_line_cut_by_a_kill(tmp_path):
    from maskx.train import read_log

    log = tmp_path / "log.jsonl"
    assert read_log(log) == []
    log.write_text('{"iter": 0, "sec": 1.5}\n{"iter": 1, "sec": 2.0}\n{"iter": 2, "se')
    assert [r["iter"] for r in read_log(log)] == [0, 1]


# ------------------------------------------------------------------ distributed (slow, real processes)

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


# ------------------------------------------------------------------ run metadata

def test_cpu_signature_names_the_cpu_and_torchs_kernels():
    """Recorded in run.json: bit-for-bit restores hold on one kind of CPU only."""
    import torch

    from maskx.train import cpu_signature

    sig = cpu_signature()
    assert sig.endswith(f"torch {torch.backends.cpu.get_cpu_capability()})") and len(sig) > 20
