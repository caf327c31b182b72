"""Faults: kill -9 and --resume, a DDP worker that dies, fuzzed COCO annotations, untrusted checkpoints.

The bad-input cases written by hand live in tests/test_coco.py, the checkpoint faults (truncated,
altered, pickle) in tests/test_checkpoint.py, a checkpoint of other classes in tests/test_predictor.py,
non-finite losses in tests/test_engine.py; this file adds what needs a real process to die, or many
generated inputs.
"""
from __future__ import annotations

import copy
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pycocotools import mask as mask_utils
from safetensors.torch import load_file

from helpers import TINY, subprocess_env
from maskx.checkpoint import list_checkpoints, read_checkpoint
from maskx.data.coco import CocoDataset, DatasetError

from conftest import coco_fixture

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ dataset fuzzing

@pytest.fixture(scope="module")
def coco_root(tmp_path_factory) -> tuple[Path, dict]:
    """3 real 48 x 64 images and a valid COCO file (polygons, compressed and uncompressed RLE, a crowd)."""
    root = tmp_path_factory.mktemp("fuzz")
    data = coco_fixture(root)
    return root, {k: v for k, v in data.items() if not k.startswith("_")}


def _compressed(mask: np.ndarray) -> str:
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode("ascii")


_BLOB = np.zeros((48, 64), bool)
_BLOB[10:30, 5:50] = True
VALID_COMPRESSED = _compressed(_BLOB)

# values of every JSON type, including the ones json writes but no COCO file should hold
NUM = st.one_of(st.integers(-100, 200), st.floats(-100, 200), st.integers(-2 ** 80, 2 ** 80),
                st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([10 ** 400, -(10 ** 400), 1e308]))
WEIRD = st.one_of(st.none(), st.booleans(), NUM, st.text(max_size=6), st.lists(st.integers(-3, 3), max_size=4),
                  st.dictionaries(st.text(max_size=3), st.integers(0, 3), max_size=2), st.builds(list), st.builds(dict))
IDS = st.one_of(st.sampled_from([1, 3, 18, 44, 62, 90, 139, 140, 141, 1001, 1002, 1003, 1004, 1005, 0, -1]),
                st.integers(-2 ** 70, 2 ** 70), WEIRD)
SIZE = st.one_of(st.just([48, 64]), st.just([64, 48]), st.lists(st.integers(-2, 100), max_size=3), WEIRD)
POLY = st.lists(NUM, max_size=10)
UNCOMPRESSED = st.lists(st.integers(0, 3072), min_size=1, max_size=6).map(
    lambda c: c[:-1] + [max(0, 3072 - sum(c[:-1]))])  # sums to H*W unless the head already exceeds it


@st.composite
def compressed_counts(draw) -> str:
    """A valid compressed RLE string, then maybe cut, extended or with characters changed."""
    s = draw(st.sampled_from([VALID_COMPRESSED, _compressed(np.zeros((48, 64), bool)), _compressed(~_BLOB)]))
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["cut", "append", "replace", "insert"]))
        i = draw(st.integers(0, max(len(s) - 1, 0)))
        c = draw(st.one_of(st.characters(min_codepoint=40, max_codepoint=120), st.characters()))
        s = {"cut": s[:i], "append": s + c, "replace": s[:i] + c + s[i + 1:], "insert": s[:i] + c + s[i:]}[op]
    return s


SEGMENTATION = st.one_of(
    st.lists(POLY, max_size=3),  # polygons, of any length and values
    POLY,  # a flat list instead of a list of polygons
    st.lists(st.lists(st.floats(-10, 80), min_size=6, max_size=12).filter(lambda p: len(p) % 2 == 0),
             min_size=1, max_size=2),  # plausible polygons, partly outside
    st.fixed_dictionaries({"size": SIZE, "counts": st.one_of(UNCOMPRESSED, st.lists(st.integers(-5, 4000),
                                                                                     max_size=6), WEIRD)}),
    st.fixed_dictionaries({"size": SIZE, "counts": st.one_of(compressed_counts(), st.text(max_size=12))}),
    st.dictionaries(st.sampled_from(["size", "counts", "other"]), WEIRD, max_size=3),
    WEIRD,
)
PLAUSIBLE_BOX = st.lists(st.one_of(st.integers(-3, 70), st.floats(-3, 70)), min_size=4, max_size=4)
PLAUSIBLE_SEG = st.one_of(
    st.lists(st.lists(st.integers(-3, 70), min_size=6, max_size=10).filter(lambda p: len(p) % 2 == 0),
             max_size=2),
    st.lists(st.lists(st.integers(0, 20), min_size=0, max_size=6), max_size=2),  # degenerate polygons
    st.builds(lambda m: {"size": [48, 64], "counts": _compressed(m)},
              st.sampled_from([_BLOB, np.zeros((48, 64), bool), ~_BLOB])))
BOX = st.one_of(st.lists(st.floats(-10, 80), min_size=4, max_size=4), st.lists(NUM, min_size=4, max_size=4),
                st.lists(NUM, max_size=6), WEIRD)
FIELDS = {
    "images": {"id": IDS, "file_name": st.one_of(st.sampled_from(["000000000139.jpg", "nope.jpg", "", ".", "x" * 300]),
                                                 st.text(max_size=8), WEIRD),
               "width": st.one_of(st.sampled_from([64, 48, 1, 0, -64, 2 ** 40, 10 ** 22]), WEIRD),
               "height": st.one_of(st.sampled_from([48, 64, 1, 0, -48, 2 ** 40, 10 ** 22]), WEIRD)},
    "annotations": {"id": IDS, "image_id": IDS, "category_id": IDS, "bbox": BOX, "segmentation": SEGMENTATION,
                    "iscrowd": st.one_of(st.sampled_from([0, 1, 2, "0", "1"]), WEIRD), "area": st.one_of(NUM, WEIRD)},
    "categories": {"id": IDS, "name": st.one_of(st.sampled_from(["person", "dog"]), WEIRD),
                   "supercategory": WEIRD},
}


@st.composite
def malformed(draw, valid: dict) -> dict:
    """``valid`` with 1-4 random faults: dropped or retyped fields, bad values, removed, repeated,
    emptied or non-object entries, missing top-level lists."""
    d = copy.deepcopy(valid)
    for _ in range(draw(st.integers(1, 4))):
        part = draw(st.sampled_from(["images", "categories"] + ["annotations"] * 4))
        if not isinstance(d.get(part), list):
            continue
        entries = d[part]
        op = draw(st.sampled_from(["set"] * 4 + ["segmentation"] * 3 + ["geometry"] * 3 +
                                  ["drop_field", "drop", "duplicate", "not_object", "empty", "top_level"]))
        k = draw(st.integers(0, max(len(entries) - 1, 0)))
        if op == "top_level":
            if draw(st.booleans()):
                d.pop(part)
            else:
                d[part] = draw(WEIRD)
        elif op == "empty":
            d[part] = []
        elif not entries:
            continue
        elif op == "drop":
            entries.pop(k)
        elif op == "duplicate":
            entries.append(copy.deepcopy(entries[k]))
        elif op == "not_object":
            entries[k] = draw(WEIRD)
        elif op in ("geometry", "segmentation"):
            if part == "annotations" and isinstance(entries[k], dict):
                if op == "segmentation":
                    entries[k]["segmentation"] = draw(SEGMENTATION)
                else:  # a plausible box or mask, maybe empty, tiny or (partly) outside the image
                    entries[k].update(draw(st.fixed_dictionaries({}, optional={"bbox": PLAUSIBLE_BOX,
                                                                               "segmentation": PLAUSIBLE_SEG})))
        elif isinstance(entries[k], dict):
            field = draw(st.sampled_from(sorted(FIELDS[part])))
            if op == "drop_field":
                entries[k].pop(field, None)
            else:
                entries[k][field] = draw(FIELDS[part][field])
    return d


def check_target(ds: CocoDataset, index: int) -> None:
    """A target that loads is well-formed: finite boxes with area inside the image, labels 1..K, 0/1 masks."""
    image, t = ds[index]
    im = ds.images[ds.ids[index]]
    h, w = im["height"], im["width"]
    n = len(t["labels"])
    assert image.shape == (3, h, w) and image.dtype == torch.float32
    assert t["boxes"].shape == (n, 4) and t["boxes"].dtype == torch.float32
    for boxes in (t["boxes"], t["crowd_boxes"]):
        assert boxes.ndim == 2 and boxes.shape[1] == 4 and torch.isfinite(boxes).all()
        x0, y0, x1, y1 = boxes.unbind(1)
        assert (x1 > x0).all() and (y1 > y0).all()
        assert (x0 >= 0).all() and (y0 >= 0).all() and (x1 <= w).all() and (y1 <= h).all()
    assert t["labels"].dtype == torch.int64 and ((t["labels"] >= 1) & (t["labels"] <= len(ds.categories.ids))).all()
    assert t["masks"].shape == (n, h, w) and t["masks"].dtype == torch.uint8 and (t["masks"] <= 1).all()
    assert t["has_mask"].shape == (n,) and t["has_mask"].dtype == torch.bool
    assert (t["masks"][~t["has_mask"]] == 0).all()  # set B: never a mask
    assert (t["masks"][t["has_mask"]].flatten(1).sum(1) > 0).all()  # set A: never an empty mask
    assert t["area"].shape == (n,) and torch.isfinite(t["area"]).all() and (t["area"] >= 0).all()
    assert t["ann_ids"].shape == (n,) and len(set(t["ann_ids"].tolist())) == n
    assert t["image_id"] == ds.ids[index]


def _load_all(root: Path, data, strict: bool, mask_ids) -> CocoDataset:
    ann = root / "annotations" / "fuzz.json"
    ann.write_text(json.dumps(data))  # NaN and Infinity written as json does
    ds = CocoDataset(root / "val2017", ann, strict=strict, mask_category_ids=mask_ids)
    for i in range(len(ds)):
        check_target(ds, i)
    return ds


@settings(max_examples=500, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_fuzzed_annotations_error_or_well_formed(coco_root, data):
    """Any malformed COCO file: a DatasetError naming the file, or targets that are all well-formed
    with every left-out annotation counted in ``summary["skipped"]``; never another exception."""
    root, valid = coco_root
    bad = data.draw(malformed(valid), label="annotations")
    strict = data.draw(st.booleans(), label="strict")
    mask_ids = data.draw(st.one_of(st.none(), st.sets(st.sampled_from([1, 3, 18, 44, 62, 90]))), label="set A")
    try:
        ds = _load_all(root, bad, strict, mask_ids)
    except DatasetError as e:
        assert str(root) in str(e) or "mask_category_ids" in str(e), f"message names no file: {e}"
        event("DatasetError: " + re.sub(r"\[\d+\]|-?\d+|\(.*|got .*|'.*", "", str(e).split(": ", 2)[-1])[:50])
        return
    event(f"loaded, skipped {sorted(ds.summary['skipped'])}")
    skipped = ds.summary["skipped"]
    assert all(isinstance(v, int) and v > 0 for v in skipped.values())
    assert set(skipped) <= {"zero_area_box", "box_outside_image", "empty_segmentation"}
    if strict:
        assert skipped == {}
    # every annotation is an instance, a crowd region or counted as skipped
    assert ds.summary["instances"] + ds.summary["crowd"] + sum(skipped.values()) == len(bad["annotations"])


@pytest.mark.parametrize("field, value, match", [
    # each of these escaped as another exception type, crashed the process or gave garbage masks
    ("bbox", [10 ** 400, 5, 20, 20], "'bbox' must be 4 finite numbers"),
    ("segmentation", [[10, 5, 1e9, 5, 30, 25]], "polygon coordinates"),  # was: segfault in pycocotools
    ("segmentation", [[10, 5, float("nan"), 5, 30, 25]], "polygon coordinates"),  # segfault
    ("segmentation", [[10, 5, float("inf"), 5, 30, 25]], "polygon coordinates"),  # segfault
    ("segmentation", [[10, 5, 10 ** 400, 5, 30, 25]], "polygon coordinates"),  # OverflowError
    ("segmentation", {"size": 48, "counts": [3072]}, "RLE size"),  # TypeError
    ("segmentation", {"size": [48, 64], "counts": VALID_COMPRESSED[:-3]}, "compressed RLE"),  # uninitialised pixels
    ("segmentation", {"size": [48, 64], "counts": VALID_COMPRESSED + "1"}, "compressed RLE"),  # ValueError on read
    ("segmentation", {"size": [48, 64], "counts": "zzzzzzzz"}, "compressed RLE"),  # uninitialised pixels
    ("segmentation", {"size": [48, 64], "counts": "é" + VALID_COMPRESSED}, "compressed RLE"),  # UnicodeEncodeError
    ("area", "big", "'area' must be"),  # ValueError on read
    ("area", [1], "'area' must be"),  # TypeError on read
    ("area", 10 ** 400, "'area' must be"),  # OverflowError on read
    ("id", 2 ** 70, "field 'id' must be an integer"),  # RuntimeError (int64 overflow) on read
    ("iscrowd", "0", "'iscrowd' must be 0 or 1"),  # silently made a crowd region
])
def test_malformed_annotation_regressions(coco_root, field, value, match):
    root, valid = coco_root
    bad = copy.deepcopy(valid)
    bad["annotations"][0][field] = value
    with pytest.raises(DatasetError, match=match) as e:
        _load_all(root, bad, strict=False, mask_ids=None)
    assert str(root / "annotations" / "fuzz.json") in str(e.value)


@pytest.mark.parametrize("part, field, value, match", [
    ("images", "width", 10 ** 22, "too large"),  # OverflowError in pycocotools
    ("images", "file_name", "x" * 300, "missing"),  # OSError (file name too long)
    ("categories", "id", float("inf"), r"categories\[0\]"),  # OverflowError
    ("categories", "name", None, r"categories\[0\]"),
])
def test_malformed_image_and_category_regressions(coco_root, part, field, value, match):
    root, valid = coco_root
    bad = copy.deepcopy(valid)
    bad[part][0][field] = value
    with pytest.raises(DatasetError, match=match):
        _load_all(root, bad, strict=False, mask_ids=None)


def test_valid_compressed_rle_still_loads(coco_root):
    """The check on compressed RLE strings accepts what pycocotools writes (not only the fixture's)."""
    root, valid = coco_root
    rng = np.random.default_rng(0)
    good = copy.deepcopy(valid)
    masks = [_BLOB, rng.random((48, 64)) < 0.5, np.ones((48, 64), bool)]
    for a, m in zip(good["annotations"][:3], masks):
        a.update(segmentation={"size": [48, 64], "counts": _compressed(m)}, iscrowd=0, bbox=[0, 0, 64, 48])
    ds = _load_all(root, good, strict=True, mask_ids=None)
    _, t = ds[0]
    assert torch.equal(t["masks"][0], torch.from_numpy(masks[0].astype(np.uint8)))
    assert torch.equal(t["masks"][1], torch.from_numpy(masks[1].astype(np.uint8)))
    assert torch.equal(ds[1][1]["masks"][0], torch.ones(48, 64, dtype=torch.uint8))


# ------------------------------------------------------------------ untrusted checkpoints

def _tiny_checkpoint(run: Path) -> Path:
    from maskx.checkpoint import save_checkpoint

    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    return save_checkpoint(run, 1, model, {"class_names": ["a"], "category_ids": [1]}, opt)


def _vouch(json_path: Path, file: Path, **changes) -> None:
    """Make the checkpoint JSON vouch for ``file`` (size and SHA-256), so only other checks can stop it."""
    import hashlib

    meta = json.loads(json_path.read_text())
    meta.update(bytes=file.stat().st_size, sha256=hashlib.sha256(file.read_bytes()).hexdigest(), **changes)
    json_path.write_text(json.dumps(meta))


def test_leftovers_of_a_killed_write_are_removed_by_the_next_checkpoint(tmp_path):
    """kill -9 during atomic_write leaves ``.ckpt_*.XXXX``; never listed as a checkpoint, removed by the next save."""
    from maskx.checkpoint import save_checkpoint

    _tiny_checkpoint(tmp_path)
    cut = tmp_path / ".ckpt_0000002.safetensors.k1ll3d"  # the tensors' private folder, safetensors' own temp in it
    cut.mkdir()
    (cut / ".tmpAbC123").write_bytes(b"\0" * 100)
    (tmp_path / ".ckpt_0000002.json.k1ll3d").write_text("{")
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt_0000001.json"]
    model = torch.nn.Linear(3, 2)
    save_checkpoint(tmp_path, 2, model, {}, keep=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt_0000002.json", "ckpt_0000002.safetensors"]


@pytest.mark.parametrize("where", ["parent", "absolute", "subfolder", "etc_passwd", "dotdot", "not_a_string"])
def test_checkpoint_weights_path_outside_the_run_folder_refused(tmp_path, where):
    """A checkpoint JSON names its tensors file; one naming a file elsewhere is refused, not followed,
    even when its size and SHA-256 vouch for that file (a valid safetensors file here)."""
    import maskx
    from maskx.checkpoint import CheckpointError, find_checkpoint, read_checkpoint

    run = tmp_path / "a" / "run"
    ckpt = _tiny_checkpoint(run)
    assert read_checkpoint(ckpt)[1]  # as written: a plain file name beside the JSON
    outside = tmp_path / "outside.safetensors"  # a valid tensors file, two levels up
    outside.write_bytes(ckpt.with_suffix(".safetensors").read_bytes())
    (run / "sub").mkdir()
    (run / "sub" / "w.safetensors").write_bytes(outside.read_bytes())
    name = {"parent": "../../outside.safetensors", "absolute": str(outside), "subfolder": "sub/w.safetensors",
            "etc_passwd": "../../../../../../../etc/passwd", "dotdot": "..", "not_a_string": ["x"]}[where]
    target = {"etc_passwd": Path("/etc/passwd"), "subfolder": run / "sub" / "w.safetensors"}.get(where, outside)
    _vouch(ckpt, target if target.is_file() else outside, weights=name)
    with pytest.raises(CheckpointError, match="'weights' must be the name of a file in the same folder"):
        read_checkpoint(ckpt)
    with pytest.raises(CheckpointError, match="every checkpoint is unusable"):
        find_checkpoint(run)
    with pytest.raises(CheckpointError):
        maskx.load(run)


def test_checkpoint_tensors_of_the_wrong_kind_refused(tmp_path):
    """Right names and shapes, but integer weights or momentum of another shape/dtype: CheckpointError
    (float16 weights, as ``save_checkpoint(dtype=float16)`` ships them, still load)."""
    from safetensors.torch import save_file

    from maskx.checkpoint import CheckpointError, load_model_state, load_optimizer_state, model_state, read_checkpoint

    ckpt = _tiny_checkpoint(tmp_path)
    weights = ckpt.with_suffix(".safetensors")
    good = load_file(weights)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    cases = {
        "int weights": ({**good, "model.weight": good["model.weight"].round().to(torch.int64)}, "dtype differs"),
        "bool weights": ({**good, "model.bias": good["model.bias"] > 0}, "dtype differs"),
        "momentum shape": ({**good, "optim.weight.momentum_buffer": torch.zeros(6)}, "momentum buffer of weight"),
        "momentum dtype": ({**good, "optim.bias.momentum_buffer": torch.zeros(2, dtype=torch.float64)},
                           "momentum buffer of bias"),
    }
    for case, (tensors, match) in cases.items():
        save_file(tensors, weights)
        _vouch(ckpt, weights)
        _, loaded = read_checkpoint(ckpt)
        with pytest.raises(CheckpointError, match=match):
            load_model_state(model, model_state(loaded), "src")
            load_optimizer_state(opt, model, loaded)
    save_file({**good, "model.weight": good["model.weight"].half()}, weights)
    _vouch(ckpt, weights)
    _, loaded = read_checkpoint(ckpt)
    load_model_state(model, model_state(loaded), "src")
    load_optimizer_state(opt, model, loaded)
    assert torch.equal(model.weight, good["model.weight"].half().float())


# ------------------------------------------------------------------ processes that die (slow)

def _train_args(data: Path, out: Path, iters: int, *extra) -> list[str]:
    return ["-m", "maskx", "train", "--preset", "agnostic_e2e", "--data", str(data), "--iters", str(iters),
            "--set", "checkpoint_every=1", *TINY, *extra, "--out", str(out)]


def _torchrun(nproc: int = 2) -> list[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
            f"--master_port={port}"]


def _run(cmd: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-5000:]}"
    return proc


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    """Start ``cmd`` in its own process group (so that whatever it leaves behind can be ended)."""
    with open(log, "w") as f:
        return subprocess.Popen(cmd, cwd=ROOT, env=subprocess_env(), stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _end_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the group of our own child: loader workers, torchrun ranks
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)


def _wait_for(cond, proc: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert proc.poll() is None, f"the run ended (exit {proc.returncode}) before the fault\n{log.read_text()[-4000:]}"
        assert time.monotonic() < deadline, f"timed out waiting\n{log.read_text()[-4000:]}"
        time.sleep(0.005)


def test_a_checkpoints_tensors_are_written_where_a_kill_leaves_nothing_unrecognised(tmp_path, monkeypatch):
    """safetensors (>= 0.6) writes its own ``.tmpXXXXXX`` beside the file it is given, then renames it:
    save_checkpoint gives it a path in a private ``.ckpt_*`` folder, so a kill mid-write leaves nothing
    in the run folder that the next checkpoint does not remove, and the folder is gone after a save."""
    import maskx.checkpoint as ckpt
    from safetensors.torch import save_file

    targets = []

    def spy(tensors, filename, metadata=None):
        parent = Path(filename).parent
        targets.append((parent.parent, parent.name))
        (parent / ".tmpKiLL3d").write_bytes(b"\0")  # what safetensors' own temporary file would leave
        return save_file(tensors, filename, metadata=metadata)

    monkeypatch.setattr(ckpt, "save_file", spy)
    ckpt.save_checkpoint(tmp_path, 1, torch.nn.Linear(3, 2), {}, keep=1)
    assert targets[0][0] == tmp_path and targets[0][1].startswith(".ckpt_0000001.safetensors.")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt_0000001.json", "ckpt_0000001.safetensors"]
    assert read_checkpoint(tmp_path / "ckpt_0000001.json")[0]["iteration"] == 1


def _temp_files(run: Path) -> list[str]:
    return [p.name for p in run.iterdir() if p.name.startswith(".ckpt_")] if run.is_dir() else []


def _check_run_folder(run: Path) -> list[str]:
    """Every ckpt_*.json loads (size, SHA-256, tensors); whatever else is there cannot pass for a
    checkpoint. Returns the left-over files (a temporary file or tensors file cut off by the kill)."""
    ckpts = list_checkpoints(run)
    assert ckpts
    for c in ckpts:
        meta, tensors = read_checkpoint(c)
        assert meta["iteration"] == int(c.stem[5:]) and any(k.startswith("model.") for k in tensors)
    known = {c.name for c in ckpts} | {c.with_suffix(".safetensors").name for c in ckpts} | \
        {"run.json", "done.json", "log.jsonl"}
    stray = sorted(p.name for p in run.iterdir() if p.name not in known)
    for name in stray:
        assert re.fullmatch(r"\.ckpt_\d{7}\.(json|safetensors)\..+|ckpt_\d{7}\.safetensors", name), name
    return stray


def _model_and_optim(ckpt_json: Path) -> dict[str, torch.Tensor]:
    return load_file(ckpt_json.with_suffix(".safetensors"))


def _log_records(run: Path) -> list[dict]:
    """log.jsonl without the timings (``sec``), which differ between runs."""
    return [{k: v for k, v in json.loads(line).items() if k != "sec"}
            for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_kill_9_mid_training_then_resume_is_bit_identical(data64, tmp_path):
    """SIGKILL a training process (during a checkpoint write when one can be caught), then --resume:
    the final weights, momentum and losses equal those of an uninterrupted run, bit for bit."""
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    cmd = [sys.executable, *_train_args(data64, killed, 6)]
    log = tmp_path / "killed.log"
    proc = _start(cmd, log)
    try:
        _wait_for(lambda: len(list_checkpoints(killed)) >= 2, proc, log)
        # a 64 px ResNet-18 checkpoint is 130 MB: the next write is usually caught half-way
        until = time.monotonic() + 5
        while not _temp_files(killed) and time.monotonic() < until and proc.poll() is None:
            time.sleep(0.002)
        mid_write = _temp_files(killed)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        _end_group(proc)
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "done.json").exists()
    stray = _check_run_folder(killed)
    resumed_from = read_checkpoint(list_checkpoints(killed)[-1])[0]["iteration"]
    assert 2 <= resumed_from < 6

    _run([*cmd, "--resume"])
    _run([sys.executable, *_train_args(data64, straight, 6)])
    assert _check_run_folder(killed) == []  # the next checkpoint written cleaned up after the kill
    assert (killed / "done.json").is_file()
    a, b = list_checkpoints(straight)[-1], list_checkpoints(killed)[-1]
    assert a.name == b.name == "ckpt_0000006.json"
    ta, tb = _model_and_optim(a), _model_and_optim(b)
    assert ta.keys() == tb.keys() and any(k.startswith("optim.") for k in ta)
    differ = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not differ, f"{len(differ)} tensors differ after kill -9 + --resume, e.g. {differ[:3]}"
    # --resume drops the records written after its checkpoint: one record per iteration, as straight
    assert [r["iter"] for r in _log_records(killed)] == list(range(6))
    assert _log_records(killed) == _log_records(straight)
    print(f"killed after checkpoint {resumed_from}, mid-write: {mid_write}, left over: {stray}")


@pytest.mark.slow
def test_ddp_worker_killed_stops_the_job_and_resume_continues(data64, tmp_path):
    """torchrun x2 (gloo): SIGKILL rank 1 after the first checkpoint. torchrun tears the group down and
    exits non-zero at once (no 30-minute gloo wait), no rank is left running, the checkpoints written
    are valid, and the same command with --resume finishes the run."""
    import psutil

    run, log = tmp_path / "ddp", tmp_path / "ddp.log"
    args = _train_args(data64, run, 4, "--set", "batch_size=1", "--set", "num_workers=0")
    proc = _start([*_torchrun(), *args], log)
    try:
        _wait_for(lambda: (run / "ckpt_0000001.json").exists(), proc, log)
        ranks = psutil.Process(proc.pid).children()  # torchrun starts one process per rank
        rank1 = [p for p in ranks if p.environ().get("RANK") == "1"]
        assert len(ranks) == 2 and len(rank1) == 1, [(p.pid, p.cmdline()) for p in ranks]
        os.kill(rank1[0].pid, signal.SIGKILL)
        t0 = time.monotonic()
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail(f"torchrun still running 120 s after rank 1 died\n{log.read_text()[-4000:]}")
        stop_s = time.monotonic() - t0
        alive = [p.pid for p in ranks if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    finally:
        _end_group(proc)
    out = log.read_text()
    assert proc.returncode != 0, out[-4000:]
    assert "Signal 9 (SIGKILL) received by PID" in out and "rank      : 1" in out, out[-4000:]
    assert not alive, f"ranks {alive} outlived torchrun"
    assert not (run / "done.json").exists()
    _check_run_folder(run)
    assert json.loads((run / "run.json").read_text())["world_size"] == 2

    _run([*_torchrun(), *args, "--resume"])
    _check_run_folder(run)
    assert (run / "done.json").is_file() and list_checkpoints(run)[-1].name == "ckpt_0000004.json"
    assert [r["iter"] for r in _log_records(run)] == [0, 1, 2, 3]  # resume trimmed the log
    print(f"torchrun stopped {stop_s:.1f} s after rank 1 was killed")
