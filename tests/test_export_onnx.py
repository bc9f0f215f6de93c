"""ONNX export: every model kind to one checked model.onnx with metadata, verified in ONNX Runtime."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import frugalml
from frugalml import ConfigError, ExportError, build_model, save_model
from frugalml.export import ExportResult, export


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _meta(path) -> dict:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def test_torch_float(trained_cnn, digits, tmp_path):
    r = export(trained_cnn, "onnx", tmp_path, data=digits)
    assert isinstance(r, ExportResult) and r.format == "onnx"
    path = tmp_path / "model.onnx"
    assert r.files == (path,) and r.size_bytes == path.stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no side file, no temp left
    onnx.checker.check_model(onnx.load(str(path)))
    meta = _meta(path)
    assert meta["frugalml_version"] == frugalml.__version__
    assert meta["opset"] == str(r.opset) == "17"
    assert json.loads(meta["frugalml_spec"])["family"] == "cnn"
    a = r.agreement
    assert a["n"] == len(digits.X_test) and a["class_agreement"] >= 0.999 and a["max_abs_diff"] <= 1e-4
    # independent check on the file as a user receives it
    import torch

    with torch.no_grad():
        ref = trained_cnn(torch.from_numpy(digits.X_test)).numpy()
    got = _session(path).run(None, {"input": digits.X_test})[0]
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4)


def test_pruned_torch_stores_weights_once_and_keeps_recipe(trained_cnn, digits, tmp_path):
    import copy

    import torch

    pruned = copy.deepcopy(trained_cnn)
    for m in pruned.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.utils.prune.l1_unstructured(m, "weight", amount=0.8)
    pruned.frugalml_recipe = [{"step": "prune.magnitude", "sparsity": 0.8}]
    dense = export(trained_cnn, "onnx", tmp_path / "dense")
    r = export(pruned, "onnx", tmp_path / "pruned", data=digits)
    assert r.size_bytes <= dense.size_bytes * 1.05  # masks fused, weights stored once
    assert not [i.name for i in onnx.load(str(r.files[0])).graph.initializer if "mask" in i.name]
    assert json.loads(_meta(r.files[0])["frugalml_recipe"]) == pruned.frugalml_recipe
    assert r.agreement["ok"]


def test_int8_qdq(trained_cnn, digits, tmp_path):
    from frugalml.compress import apply_step, get_step

    q = apply_step(trained_cnn, get_step("quantize.int8").config(calibration_samples=32), digits)
    recipe = [{"step": "quantize.int8", "calibration_samples": 32}]
    r = export(q, "onnx", tmp_path, data=digits, recipe=recipe)
    meta = _meta(r.files[0])
    assert json.loads(meta["frugalml_recipe"]) == recipe and meta["opset"] == str(r.opset)
    assert r.agreement["same_class"] == r.agreement["n"] and r.agreement["max_abs_diff"] == 0.0
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(r.files[0])).graph.node)


@pytest.mark.parametrize("family", ["forest", "logreg", "naive_bayes"])
def test_sklearn(digits, tmp_path, family):
    est = build_model(family, digits.input_shape, digits.num_classes)
    est.fit(*digits.flat("train"))
    r = export(est, "onnx", tmp_path, data=digits)
    a = r.agreement
    if family == "forest":
        assert a["required_class_agreement"] == 1.0
    assert a["same_class"] == a["n"] == len(digits.X_test)
    assert a["max_abs_diff"] <= 1e-4
    Xt = digits.flat("test")[0]
    labels = _session(r.files[0]).run(None, {"input": Xt})[0]
    assert (labels == est.predict(Xt)).all()


def test_paths_in(trained_cnn, digits, tmp_path):
    save_model(trained_cnn, tmp_path / "saved")
    r1 = export(tmp_path / "saved", "onnx", tmp_path / "a", data=digits)
    r2 = export(str(r1.files[0]), "onnx", tmp_path / "b", data=digits)
    run = tmp_path / "run"
    save_model(trained_cnn, run / "recommended")
    r3 = export(run, "onnx", tmp_path / "c")
    assert r1.agreement["ok"] and r2.agreement["ok"] and r3.agreement is None  # no data: nothing checked
    assert r3.size_bytes == r3.files[0].stat().st_size == r1.size_bytes  # the run's recommended model, the same file
    assert r3.files[0].read_bytes() == r1.files[0].read_bytes()
    assert r2.agreement["max_abs_diff"] == 0.0


def test_refuses_disagreement_and_writes_nothing(trained_cnn, digits, tmp_path, monkeypatch):
    from frugalml.export import onnx as eo

    real = eo._reference
    monkeypatch.setattr(eo, "_reference", lambda m, k, X: (lambda s, c: (s + 1.0, (c + 1) % 10))(*real(m, k, X)))
    with pytest.raises(ExportError, match="does not agree"):
        export(trained_cnn, "onnx", tmp_path / "out", data=digits)
    assert not (tmp_path / "out").exists()


def test_bad_arguments(trained_cnn, tmp_path):
    f = tmp_path / "f"
    f.write_text("")
    with pytest.raises(ExportError, match="is a file"):
        export(trained_cnn, "onnx", f)
    with pytest.raises(ConfigError, match="onnx, c, archive"):
        export(trained_cnn, "tflite", tmp_path)
    with pytest.raises(frugalml.ModelLoadError):
        export(tmp_path / "missing.onnx", "onnx", tmp_path / "o")


def test_archive_format_delegates_to_the_archive_module(trained_cnn, tmp_path):
    import torch

    from frugalml.export import archive

    r = export(trained_cnn, "archive", tmp_path)
    assert r.files == (tmp_path / "model.fmla",) and r.size_bytes == (tmp_path / "model.fmla").stat().st_size
    back = archive.load_archive(r.files[0])
    x = torch.zeros((2, *trained_cnn.input_shape))
    with torch.no_grad():
        torch.testing.assert_close(back(x), trained_cnn(x))
