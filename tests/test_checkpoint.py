"""Checkpoints (maskx/checkpoint.py): safetensors + JSON pairs, keep and prune, truncated or altered files
skipped or refused, pickle never run, state that does not fit the model, the class list.

More checkpoint faults (a kill mid-write, a ``weights`` path outside the run folder, tensors of the wrong
kind) are in tests/test_faults.py; loading a checkpoint as a predictor is in tests/test_predictor.py.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

import maskx
from maskx.checkpoint import (FORMAT, CheckpointError, check_classes, find_checkpoint, list_checkpoints,
                              load_model_state, load_optimizer_state, read_checkpoint, save_checkpoint)

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------ no training

class _Tiny(torch.nn.Module):
    def __init__(self, n: int = 3):
        super().__init__()
        self.lin = torch.nn.Linear(n, 2)

    def forward(self, x):
        return self.lin(x)


def _save_series(run: Path, iters=(1, 2, 3)) -> torch.nn.Module:
    model = _Tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for it in iters:
        model.lin.weight.data.fill_(float(it))
        model(torch.ones(1, 3)).sum().backward()
        opt.step()
        save_checkpoint(run, it, model, {"class_names": ["a"], "category_ids": [1]}, opt, keep=5)
    return model


def test_checkpoint_roundtrip_and_keep(tmp_path):
    model = _save_series(tmp_path, iters=(1, 2, 3))
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt_0000001.json", "ckpt_0000002.json",
                                                            "ckpt_0000003.json"]
    meta, tensors = find_checkpoint(tmp_path)
    assert meta["iteration"] == 3 and meta["format"] == FORMAT
    assert torch.equal(tensors["model.lin.weight"], model.lin.weight.detach())
    assert "optim.lin.weight.momentum_buffer" in tensors
    other = _Tiny()
    opt = torch.optim.SGD(other.parameters(), lr=0.1, momentum=0.9)
    load_model_state(other, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, "x")
    load_optimizer_state(opt, other, tensors)
    assert torch.equal(other.lin.weight, model.lin.weight)
    assert torch.equal(opt.state[other.lin.weight]["momentum_buffer"],
                       tensors["optim.lin.weight.momentum_buffer"])
    save_checkpoint(tmp_path, 4, model, {}, keep=2)  # prunes pairs beyond the newest 2
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt_0000003.json", "ckpt_0000004.json"]
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == ["ckpt_0000003.safetensors",
                                                                     "ckpt_0000004.safetensors"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_truncated_newest_falls_back_with_warning(tmp_path):
    _save_series(tmp_path)
    newest = tmp_path / "ckpt_0000003.safetensors"
    newest.write_bytes(newest.read_bytes()[:-10])
    with pytest.warns(UserWarning, match="ckpt_0000003.safetensors: size or SHA-256 differs"):
        meta, _ = find_checkpoint(tmp_path)
    assert meta["iteration"] == 2
    # an explicitly named checkpoint does not fall back
    with pytest.raises(CheckpointError, match="truncated or was changed"):
        find_checkpoint(tmp_path / "ckpt_0000003.json")


def test_changed_bytes_same_size_detected(tmp_path):
    _save_series(tmp_path, iters=(1, 2))
    f = tmp_path / "ckpt_0000002.safetensors"
    raw = bytearray(f.read_bytes())
    raw[-1] ^= 0xFF
    f.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="skipping unusable checkpoint"):
        assert find_checkpoint(tmp_path)[0]["iteration"] == 1


def test_every_checkpoint_corrupt_is_a_clear_error(tmp_path):
    _save_series(tmp_path, iters=(1, 2))
    (tmp_path / "ckpt_0000001.safetensors").unlink()
    (tmp_path / "ckpt_0000002.json").write_text("{not json")
    with pytest.raises(CheckpointError) as e:
        find_checkpoint(tmp_path)
    msg = str(e.value)
    assert "every checkpoint is unusable" in msg
    assert "ckpt_0000001.safetensors: weights file of ckpt_0000001.json is missing" in msg
    assert "ckpt_0000002.json: corrupt checkpoint metadata" in msg
    with pytest.raises(CheckpointError, match="no checkpoint here"):
        find_checkpoint(tmp_path / "empty")


@pytest.mark.parametrize("mutate", [lambda m: {**m, "format": "maskx-checkpoint-0"},
                                    lambda m: {k: v for k, v in m.items() if k != "format"},
                                    lambda m: [m], lambda m: "ckpt"], ids=["old", "none", "list", "string"])
def test_checkpoint_json_with_wrong_format_rejected(tmp_path, mutate):
    _save_series(tmp_path, iters=(1,))
    path = tmp_path / "ckpt_0000001.json"
    path.write_text(json.dumps(mutate(json.loads(path.read_text()))))
    with pytest.raises(CheckpointError, match="not a maskx checkpoint"):
        read_checkpoint(path)
    with pytest.raises(CheckpointError, match="every checkpoint is unusable"):
        find_checkpoint(tmp_path)


class _Payload:
    """Unpickling this creates ``marker``: proof that a loader ran pickle."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("kind", ["pickle", "torch.save"])
def test_pickle_payload_is_rejected_and_never_executed(tmp_path, kind):
    marker = tmp_path / "unpickled.marker"
    # sanity: the payload does run when unpickled
    pickle.loads(pickle.dumps(_Payload(str(tmp_path / "sanity.marker")))).close()
    assert (tmp_path / "sanity.marker").exists()

    run = tmp_path / "run"
    _save_series(run, iters=(1,))
    weights = run / "ckpt_0000001.safetensors"
    if kind == "pickle":
        weights.write_bytes(pickle.dumps({"model.lin.weight": _Payload(str(marker))}))
    else:
        torch.save({"model.lin.weight": _Payload(str(marker))}, weights)
    # make the JSON vouch for the new file, so that only the format check can stop it
    meta = json.loads((run / "ckpt_0000001.json").read_text())
    import hashlib
    meta.update(bytes=weights.stat().st_size, sha256=hashlib.sha256(weights.read_bytes()).hexdigest())
    (run / "ckpt_0000001.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="cannot read tensors"):
        read_checkpoint(run / "ckpt_0000001.json")
    with pytest.raises(CheckpointError, match="every checkpoint is unusable"):
        find_checkpoint(run)
    with pytest.raises(CheckpointError):
        maskx.load(run)
    assert not marker.exists()


def test_load_model_state_mismatch():
    model = _Tiny(3)
    with pytest.raises(CheckpointError, match=r"shape differs: \['lin.weight'\]"):
        load_model_state(model, _Tiny(4).state_dict(), "other.json")
    with pytest.raises(CheckpointError, match=r"src: checkpoint does not fit this model \(missing: \['lin.bias'\]"):
        load_model_state(model, {"lin.weight": torch.zeros(2, 3)}, "src")
    state = {**model.state_dict(), "extra.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError, match=r"unexpected: \['extra.weight'\]"):
        load_model_state(model, state, "src")
    load_model_state(model, {"lin.weight": torch.ones(2, 3)}, "src", skip_prefixes=("lin.bias",))
    assert torch.equal(model.lin.weight, torch.ones(2, 3))


def test_check_classes_names_the_counts():
    meta = {"class_names": ["a", "b", "c"], "category_ids": [1, 2, 3]}
    check_classes(meta, ["a", "b", "c"], [1, 2, 3], "run")
    with pytest.raises(CheckpointError, match="run: checkpoint has 3 classes, the data has 2"):
        check_classes(meta, ["a", "b"], [1, 2], "run")
    with pytest.raises(CheckpointError, match="first difference at label 2: 'b' vs 'x'"):
        check_classes(meta, ["a", "x", "c"], [1, 2, 3], "run")
    with pytest.raises(CheckpointError, match="category ids differ"):
        check_classes(meta, ["a", "b", "c"], [1, 2, 4], "run")


# ------------------------------------------------------------------ a trained run's checkpoints

def test_checkpoint_files_are_safetensors_and_json(trained_run):
    for j in list_checkpoints(trained_run):
        meta = json.loads(j.read_text())  # plain JSON
        raw = j.with_suffix(".safetensors").read_bytes()
        header_len = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8:8 + header_len])  # safetensors: u64 length + JSON header + raw data
        assert header["__metadata__"]["format"] == FORMAT
        assert meta["weights"] == j.with_suffix(".safetensors").name
        assert not raw.startswith(b"\x80") and not raw.startswith(b"PK")  # neither pickle nor torch zip
