"""Shipped models by name (maskx.hub): where ``maskx.load("maskx-3k")`` looks, and its error."""
from __future__ import annotations


import pytest

from maskx import hub


def _fake_model(folder):
    folder.mkdir(parents=True)
    (folder / "ckpt_0000001.json").write_text("{}")
    return folder


def test_a_name_resolves_to_the_checkout_models_folder():
    assert hub.resolve("maskx-3k") == hub.CHECKOUT_MODELS / "maskx-3k"


def test_paths_pass_through_unchanged(tmp_path):
    assert hub.resolve(tmp_path) == tmp_path
    assert hub.resolve("runs/some-run") == hub.Path("runs/some-run")


def test_the_environment_folder_comes_first(tmp_path, monkeypatch):
    mine = _fake_model(tmp_path / "maskx-3k")
    monkeypatch.setenv(hub.MODELS_ENV, str(tmp_path))
    assert hub.resolve("maskx-3k") == mine


def test_installed_package_data_is_found_without_a_checkout(tmp_path, monkeypatch):
    monkeypatch.delenv(hub.MODELS_ENV, raising=False)
    monkeypatch.setattr(hub, "CHECKOUT_MODELS", tmp_path / "no-checkout")
    monkeypatch.setattr(hub, "PACKAGED_MODELS", tmp_path / "_models")
    packaged = _fake_model(tmp_path / "_models" / "maskx-3k")
    assert hub.shipped_dir("maskx-3k") == packaged


def test_a_missing_model_names_every_folder_searched_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv(hub.MODELS_ENV, str(tmp_path / "env"))
    monkeypatch.setattr(hub, "CHECKOUT_MODELS", tmp_path / "checkout")
    monkeypatch.setattr(hub, "PACKAGED_MODELS", tmp_path / "packaged")
    _fake_model(tmp_path / "checkout" / "other-model")
    with pytest.raises(hub.ShippedModelError) as e:
        hub.resolve("maskx-3k")
    msg = str(e.value)
    for where in ("env", "checkout", "packaged"):
        assert str(tmp_path / where / "maskx-3k") in msg
    assert hub.MODELS_ENV in msg and "pip install ." in msg


def test_an_unknown_name_is_refused():
    with pytest.raises(hub.ShippedModelError, match="not a shipped model"):
        hub.shipped_dir("maskx-9k")
