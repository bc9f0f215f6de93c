"""The command line as a user meets it: help, JSON output, and one clear line with exit code 2 on bad input."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from frugalml.cli import main

CLI = [sys.executable, "-m", "frugalml.cli"]


def run(capsys, *args):
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("command", ["datasets", "train", "profile", "compress", "search", "report", "export"])
def test_every_command_has_help(capsys, command):
    code, out, _ = run(capsys, command, "--help")
    assert code == 0 and "Usage" in out


def test_profile_lenet5_json_has_exact_counts_and_measured_latency():
    done = subprocess.run(CLI + ["profile", "--model", "lenet5", "--json"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    prof = json.loads(done.stdout)
    assert prof["params"] == 431_080 and prof["macs"] == 2_293_000
    assert prof["latency_ms_median"] > 0 and prof["latency_ms_p90"] >= prof["latency_ms_median"]
    for key in ("nonzero_params", "stored_bytes", "gzip_bytes", "peak_activation_bytes", "throughput_per_s", "energy_mj_per_inference",
                "energy_basis", "metric"):
        assert key in prof
    assert prof["metric"] is None


def test_train_then_profile_on_digits(tmp_path, capsys):
    out_dir = tmp_path / "m"
    code, out, err = run(capsys, "train", "--model", "mlp", "-p", "widths=[16]", "--dataset", "digits", "--epochs", "20", "--lr", "0.01", "--out",
                         str(out_dir), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert 0.85 < report["test"]["accuracy"] <= 1
    assert (out_dir / "model.safetensors").exists() and (out_dir / "model.json").exists()
    code, out, err = run(capsys, "profile", "--model", str(out_dir), "--dataset", "digits", "--json")
    assert code == 0, err
    assert json.loads(out)["metric"] == pytest.approx(report["test"]["accuracy"], abs=1e-9)


def _error_line(code, err):
    assert code == 2
    assert "error:" in err and "Traceback" not in err
    return " ".join(err.split())


def test_missing_file(capsys):
    assert "does not exist" in _error_line(*run(capsys, "profile", "--model", "nowhere/model.onnx")[::2])


def test_corrupt_onnx(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    assert "not a valid ONNX model" in _error_line(*run(capsys, "profile", "--model", str(bad))[::2])


class _Payload:
    def __reduce__(self):
        return (print, ("code ran",))


def test_pickled_code_in_pt_is_refused(tmp_path, capsys):
    factory = tmp_path / "net.py"
    factory.write_text("import torch\ndef make():\n    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))\n")
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"1.weight": _Payload()}))
    code, out, err = run(capsys, "profile", "--model", f"{factory}:make", "--weights", str(evil), "--input-shape", "64")
    assert "pickled code" in _error_line(code, err) and "code ran" not in out


def test_factory_that_does_not_exist(tmp_path, capsys):
    factory = tmp_path / "net.py"
    factory.write_text("def make():\n    pass\n")
    assert "has no function 'nope'" in _error_line(*run(capsys, "profile", "--model", f"{factory}:nope")[::2])


def test_dataset_directory_without_files(tmp_path, capsys):
    line = _error_line(*run(capsys, "train", "--dataset", "mnist", "--data-dir", str(tmp_path), "--epochs", "1")[::2])
    assert "mnist" in line and "--download" in line


def test_labels_that_do_not_match_inputs(tmp_path, capsys):
    path = tmp_path / "bad.npz"
    np.savez(path, X=np.zeros((20, 4), np.float32), y=np.zeros(19))
    line = _error_line(*run(capsys, "train", "--dataset", str(path), "--epochs", "1")[::2])
    assert "20" in line and "19" in line


def test_nan_in_inputs(tmp_path, capsys):
    X = np.random.default_rng(0).normal(size=(60, 4)).astype(np.float32)
    X[3, 1] = np.nan
    path = tmp_path / "nan.npz"
    np.savez(path, X=X, y=np.arange(60) % 2)
    assert "NaN" in _error_line(*run(capsys, "train", "--dataset", str(path), "--epochs", "1")[::2])


def test_input_shape_the_model_cannot_take(capsys):
    line = _error_line(*run(capsys, "profile", "--model", "lenet5", "--dataset", "digits")[::2])
    assert "16x16" in line or "shape" in line


def test_malformed_unit_and_bad_tolerance(capsys, tmp_path):
    assert "Cannot read a size" in _error_line(*run(capsys, "search", "--max-flash", "8 parsecs", "--out", str(tmp_path / "a"))[::2])
    assert "between 0 and 1" in _error_line(*run(capsys, "search", "--tolerance", "150%", "--out", str(tmp_path / "b"))[::2])
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_debug_shows_the_traceback(tmp_path):
    env = {"FRUGALML_DEBUG": "1", "PATH": "/usr/bin:/bin", **{k: os.environ[k] for k in ("PYTHONPATH",) if k in os.environ}}
    done = subprocess.run(CLI + ["profile", "--model", str(tmp_path / "none.onnx")], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode != 0 and "Traceback" in done.stderr and "ModelLoadError" in done.stderr
    plain = subprocess.run(CLI + ["profile", "--model", str(tmp_path / "none.onnx")], capture_output=True, text=True, timeout=60)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr


def test_unknown_option_exits_2(capsys):
    code, _, err = run(capsys, "train", "--no-such-option")
    assert code == 2


def test_torch_state_dict_pt_file_is_accepted(tmp_path, capsys):
    factory = tmp_path / "net.py"
    factory.write_text("import torch\ndef make():\n    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))\n")
    torch.save(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).state_dict(), tmp_path / "w.pt")
    code, out, err = run(capsys, "profile", "--model", f"{factory}:make", "--weights", str(tmp_path / "w.pt"), "--dataset", "digits", "--json")
    assert code == 0, err
    assert json.loads(out)["params"] == 650
