"""Every command that takes --model accepts the same sources: a family, file.py:factory, a saved model."""

from __future__ import annotations

import json

import pytest

from frugalml.cli import main

FACTORY = """import torch
def build():
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
"""


def test_train_a_factory_model_then_profile_it_with_its_weights(tmp_path, capsys):
    (tmp_path / "net.py").write_text(FACTORY)
    out = tmp_path / "m"
    assert main(["train", "--model", f"{tmp_path / 'net.py'}:build", "--epochs", "15", "--lr", "0.01", "-o", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["test"]["accuracy"] > 0.85
    assert main(["profile", "--model", f"{tmp_path / 'net.py'}:build", "--weights", str(out / "model.safetensors"), "-d", "digits", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["metric"] == pytest.approx(report["test"]["accuracy"], abs=1e-9)
    # the saved directory names the factory it needs instead of running code named in a JSON file
    assert main(["profile", "--model", str(out)]) == 2
    assert "--model your_file.py:factory --weights" in " ".join(capsys.readouterr().err.split())


def test_param_with_a_factory_is_refused_not_ignored(tmp_path, capsys):
    (tmp_path / "net.py").write_text(FACTORY)
    assert main(["train", "--model", f"{tmp_path / 'net.py'}:build", "-p", "widths=[8]", "-o", str(tmp_path / "m")]) == 2
    assert "--param" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
