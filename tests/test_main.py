"""The command line (maskx/__main__.py): ``python -m maskx train / predict / eval`` end to end, and CLI
errors. Distributed training through torchrun is in tests/test_train.py."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import TINY, maskx_cli
from helpers import check_exit as _check
from maskx.__main__ import main
from maskx.config import PRESETS, Config
from maskx.evaluate import check_predictions


@pytest.fixture
def data(data64) -> Path:
    return data64


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
    assert json.loads(proc.stdout) == {"images": 4, "skipped": 0, "skipped_files": [], "detections": len(preds),
                                       "out": str(pred)}
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


# ------------------------------------------------------------------ data arguments

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


@pytest.fixture
def untrained_run(tmp_path) -> Path:
    """A loadable run folder: an untrained tiny model's checkpoint (predict needs weights, not skill)."""
    from maskx.checkpoint import save_checkpoint
    from maskx.models.maskx_rcnn import build_model

    cfg = Config(image_size=64, box_head_dim=32, mask_dim=16, mlp_hidden=16, detections_per_img=5,
                 pretrained_backbone=False)
    names = ["a", "b"]
    save_checkpoint(tmp_path / "run", 1, build_model(cfg, names),
                    {"config": cfg.to_json(), "class_names": names, "category_ids": [1, 2], "set_A": [1]})
    return tmp_path / "run"


def _images(folder: Path, good: int, bad: int) -> Path:
    from PIL import Image

    folder.mkdir()
    for k in range(good):
        Image.new("RGB", (48, 40), (40 * k, 90, 160)).save(folder / f"good{k}.png")
    for k in range(bad):
        (folder / f"bad{k}.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return folder


def test_predict_skips_an_unreadable_image_with_a_warning_and_counts_it(untrained_run, tmp_path, capsys):
    folder = _images(tmp_path / "imgs", good=2, bad=1)
    out = tmp_path / "preds.json"
    assert main(["predict", "--checkpoint", str(untrained_run), "--images", str(folder), "--out", str(out),
                 "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "warning: skipped" in captured.err and "bad0.jpg" in captured.err
    summary = json.loads(captured.out)
    assert summary["images"] == 2 and summary["skipped"] == 1 and summary["skipped_files"][0].endswith("bad0.jpg")
    assert isinstance(json.loads(out.read_text()), list)


def test_predict_strict_stops_at_an_unreadable_image(untrained_run, tmp_path, capsys):
    folder = _images(tmp_path / "imgs", good=1, bad=1)
    out = tmp_path / "preds.json"
    assert main(["predict", "--checkpoint", str(untrained_run), "--images", str(folder), "--out", str(out),
                 "--strict", "--quiet"]) == 2
    assert "bad0.jpg" in capsys.readouterr().err and not out.exists()


def test_predict_fails_when_no_image_can_be_read(untrained_run, tmp_path, capsys):
    folder = _images(tmp_path / "imgs", good=0, bad=2)
    out = tmp_path / "preds.json"
    assert main(["predict", "--checkpoint", str(untrained_run), "--images", str(folder), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "none of its 2 images could be read" in err and not out.exists()
