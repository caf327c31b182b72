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


@pytest.mark.slow
def test_a_plain_install_loads_the_shipped_model_outside_the_checkout(tmp_path):
    """`pip install .` (not editable) packages models/ as maskx/_models: maskx.load("maskx-3k") works from
    a folder that is not the checkout, with nothing but the installed package."""
    import os
    import shutil
    import subprocess
    import sys

    root = hub.CHECKOUT_MODELS.parent
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build_dir_before = (root / "build").exists()
    try:
        subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(root)],
                       check=True, cwd=tmp_path, timeout=600)
    finally:  # setuptools builds inside the checkout: leave it as it was
        if not build_dir_before:
            shutil.rmtree(root / "build", ignore_errors=True)
    wheel, = wheels.glob("maskx-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, timeout=600)
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop(hub.MODELS_ENV, None)
    code = ("import maskx, maskx.hub as h; p = maskx.load('maskx-3k'); "
            "print(maskx.__file__); print(h.shipped_dir('maskx-3k')); print(len(p.class_names))")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    module_file, model_dir, classes = r.stdout.split()
    assert module_file.startswith(str(site)) and model_dir == str(site / "maskx" / "_models" / "maskx-3k")
    assert classes == "3000"
    assert (site / "maskx" / "_models" / "maskx-3k" / "projections.npz").is_file()  # the app's Embeddings page
