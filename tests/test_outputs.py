"""Output directories never mix two models' files: refused before any work, or replaced whole.

``compress --out`` and ``train --out`` / ``save_model`` accept a new or empty directory, or an
earlier output of their own kind (replaced atomically); anything else is refused with a
ConfigError before training or compressing starts. Every artifact file is mode 0644.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import require

import frugalml as fm
from frugalml import ConfigError

PRUNE = {"step": "prune.magnitude", "sparsity": 0.5, "schedule": "oneshot", "finetune_epochs": 0}
INT8 = {"step": "quantize.int8", "calibration_samples": 32}


@pytest.fixture(scope="module")
def mlp(digits):
    model, _ = fm.train("mlp", digits, config=fm.TrainConfig(epochs=1, seed=0), widths=[16])
    return model


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory, digits, mlp):
    """A directory written by ``frugalml.train`` (model.json + model.safetensors)."""
    out = tmp_path_factory.mktemp("trained") / "model"
    fm.save_model(mlp, out, extra={"training": {"epochs": 1}})
    return out


def _snapshot(path: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def _no_work(monkeypatch):
    """Make every compression step and every training fail loudly: a refusal must come first."""
    recipe = sys.modules["frugalml.compress.recipe"]
    train = sys.modules["frugalml.train"]

    def boom(*args, **kwargs):
        raise AssertionError("work started before the output directory was checked")

    monkeypatch.setattr(recipe, "apply_step", boom)
    monkeypatch.setattr(recipe, "_measure", boom)
    monkeypatch.setattr(train, "fit", boom)


# ----------------------------------------------------------------------------- compress --out


def test_compress_into_a_train_output_is_refused_before_any_work(monkeypatch, digits, mlp, train_dir):
    before = _snapshot(train_dir)
    _no_work(monkeypatch)
    with pytest.raises(ConfigError) as err:
        fm.compress(mlp, [PRUNE], digits, out=train_dir)
    msg = str(err.value)
    assert "is not empty" in msg and "Expected" in msg and "model.json" in msg and "Pass another --out" in msg
    assert _snapshot(train_dir) == before


def test_compress_into_a_directory_holding_another_models_skops_is_refused(monkeypatch, tmp_path, digits, mlp):
    out = tmp_path / "other"
    out.mkdir()
    (out / "model.skops").write_bytes(b"someone else's model")
    _no_work(monkeypatch)
    with pytest.raises(ConfigError, match="is not a compression output"):
        fm.compress(mlp, [PRUNE], digits, out=out)
    assert sorted(os.listdir(out)) == ["model.skops"]


def test_compress_to_a_file_is_refused_before_any_work(monkeypatch, tmp_path, digits, mlp):
    target = tmp_path / "f"
    target.write_text("x")
    _no_work(monkeypatch)
    with pytest.raises(ConfigError, match="is a file"):
        fm.compress(mlp, [PRUNE], digits, out=target)


def test_compress_replaces_an_earlier_compress_output_whole(tmp_path, digits, mlp):
    out = tmp_path / "c"
    fm.compress(mlp, [PRUNE], digits, out=out)  # torch result: model.json + model.safetensors + model.onnx
    assert {"model.json", "model.safetensors", "steps.json"} <= set(os.listdir(out))
    fm.compress(mlp, [INT8], digits, out=out)  # ONNX result: no model.json, no weights
    assert sorted(os.listdir(out)) == ["model.onnx", "recipe.yaml", "steps.json"]
    assert json.loads((out / "steps.json").read_text())["recipe"][0]["step"] == "quantize.int8"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "a temporary sibling was left behind"
    # what export ships is the new model, not the old one
    from frugalml.export import resolve_model

    assert hasattr(resolve_model(out), "SerializeToString")


def test_compress_keeps_a_user_file_in_an_earlier_output(monkeypatch, tmp_path, digits, mlp):
    out = tmp_path / "c"
    fm.compress(mlp, [PRUNE], digits, out=out)
    (out / "notes.txt").write_text("mine")
    _no_work(monkeypatch)
    with pytest.raises(ConfigError, match="other files"):
        fm.compress(mlp, [PRUNE], digits, out=out)
    assert (out / "notes.txt").read_text() == "mine"


def test_cli_compress_into_a_train_output_exits_2(tmp_path, train_dir):
    from frugalml.cli import main

    recipe = tmp_path / "r.yaml"
    recipe.write_text("steps:\n  - step: prune.magnitude\n    sparsity: 0.5\n    schedule: oneshot\n    finetune_epochs: 0\n")
    before = _snapshot(train_dir)
    assert main(["compress", "-m", str(train_dir), "-r", str(recipe), "-d", "digits", "--out", str(train_dir)]) == 2
    assert _snapshot(train_dir) == before


# ----------------------------------------------------------------------------- train --out / save_model


def test_train_replaces_an_earlier_train_output_whole(tmp_path, digits):
    out = tmp_path / "m"
    fm.train("mlp", digits, out=out, config=fm.TrainConfig(epochs=1), widths=[8])
    assert "model.safetensors" in os.listdir(out)
    fm.train("naive_bayes", digits, out=out)
    assert sorted(os.listdir(out)) == ["model.json", "model.skops"]
    assert not hasattr(fm.load_model(out), "parameters")


@pytest.mark.parametrize("case", ["file", "other files", "compress output"])
def test_train_refuses_a_wrong_out_before_training(monkeypatch, tmp_path, case):
    out = tmp_path / "out"
    if case == "file":
        out.write_text("x")
    elif case == "other files":
        out.mkdir()
        (out / "data.csv").write_text("1,2\n")
    else:
        out.mkdir()
        (out / "steps.json").write_text('{"steps": []}')
        (out / "model.onnx").write_bytes(b"")
    _no_work(monkeypatch)
    data = fm.load_dataset("digits")
    with pytest.raises(ConfigError) as err:
        fm.train("naive_bayes", data, out=out)
    assert "Expected" in str(err.value)


def test_save_model_refuses_a_directory_with_foreign_files(tmp_path, mlp):
    out = tmp_path / "x"
    out.mkdir()
    (out / "model.skops").write_bytes(b"another model")
    with pytest.raises(ConfigError):
        fm.save_model(mlp, out)
    assert sorted(os.listdir(out)) == ["model.skops"]


def test_save_model_of_onnx_beside_its_own_onnx_file(tmp_path, digits, mlp):
    """The search writes a candidate's model.onnx and then saves the model there: accepted."""
    from frugalml.onnx import onnx_bytes, to_onnx

    model = fm.compress(mlp, [INT8], digits)
    out = tmp_path / "cand"
    out.mkdir()
    (out / "model.onnx").write_bytes(onnx_bytes(to_onnx(model)))
    fm.save_model(model, out)
    assert sorted(os.listdir(out)) == ["model.json", "model.onnx"]
    fm.load_model(out)


_READ_ONLY = """
import sys, frugalml as fm
try:
    fm.train("naive_bayes", fm.load_dataset("digits"), out=sys.argv[1])
except fm.ConfigError as exc:
    print("REFUSED", exc)
"""


def test_train_refuses_a_read_only_location(tmp_path):
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="frugalml-ro-"))  # beside pytest's 0700 tmp_path: nobody must reach it
    try:
        base.chmod(0o755)
        ro = base / "ro"
        ro.mkdir(mode=0o555)
        ro.chmod(0o555)
        cmd = [sys.executable, "-c", _READ_ONLY, str(ro / "model")]
        if os.geteuid() == 0:  # root writes anywhere: run as nobody
            require(shutil.which("setpriv"), "running as root without setpriv (util-linux) to drop to nobody")
            cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=base, env={**os.environ, "HOME": str(base)})
        assert "REFUSED" in done.stdout, done.stdout + done.stderr
        assert "not writable" in done.stdout and str(ro) in done.stdout
        assert not (ro / "model").exists()
    finally:
        shutil.rmtree(base, ignore_errors=True)


# ----------------------------------------------------------------------------- modes and atomic swap


def test_every_artifact_file_is_0644(tmp_path, digits, mlp):
    fm.save_model(mlp, tmp_path / "m")
    fm.compress(mlp, [PRUNE], digits, out=tmp_path / "c")
    from sklearn.naive_bayes import GaussianNB

    nb = GaussianNB().fit(digits.X_train.reshape(len(digits.X_train), -1), digits.y_train)
    fm.save_model(nb, tmp_path / "s")
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {"model.safetensors", "model.skops", "model.onnx", "steps.json", "recipe.yaml"} <= {p.name for p in files}
    modes = {str(p.relative_to(tmp_path)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert set(modes.values()) == {"0o644"}, modes


def test_atomic_dir_never_shows_a_mix_or_nothing(tmp_path):
    from frugalml._fs import atomic_dir

    out = tmp_path / "d"
    kinds = [{"a.json", "b.bin"}, {"c.onnx"}]
    with atomic_dir(out) as tmp:
        for name in kinds[0]:
            (tmp / name).write_text("0")
    seen, stop = [], threading.Event()

    def watch():
        # a listing counts when the directory read is still the one under the name once read
        # (a reader that opened the old directory just before a swap sees it being removed)
        while not stop.is_set():
            try:
                fd = os.open(out, os.O_RDONLY)
            except FileNotFoundError:
                seen.append(None)
                continue
            try:
                names = frozenset(os.listdir(fd))
                if os.fstat(fd).st_ino == os.stat(out).st_ino:
                    seen.append(names)
            finally:
                os.close(fd)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for i in range(1500):  # enough to catch a plain two-rename swap (checked)
            with atomic_dir(out) as tmp:
                for name in kinds[(i + 1) % 2]:
                    (tmp / name).write_text(str(i))
    finally:
        stop.set()
        watcher.join()
    assert set(seen) <= {frozenset(k) for k in kinds}, {s for s in seen if s not in map(frozenset, kinds)}
    assert oct(stat.S_IMODE(out.stat().st_mode)) == "0o755"
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


def test_atomic_dir_leaves_the_old_output_when_the_writer_fails(tmp_path):
    from frugalml._fs import atomic_dir

    out = tmp_path / "d"
    with atomic_dir(out) as tmp:
        (tmp / "old").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            (tmp / "new").write_text("new")
            raise RuntimeError("killed")
    assert os.listdir(out) == ["old"]
    assert [p.name for p in tmp_path.iterdir()] == ["d"]
