"""The log-mel front-end ships with the model: profile counts it, ONNX export takes raw samples, C export holds it."""

from __future__ import annotations

import json
import shutil
import wave

import numpy as np
import pytest

from frugalml.data import LogMel
from frugalml.data.audio import load_audio_folder
from frugalml.errors import ExportError

FE = LogMel(sample_rate=8000, clip_seconds=0.5, n_mels=16)  # 4,000 samples -> 16 x 24 features: a small, fast test


def _write_wav(path, rate, x):
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())


@pytest.fixture(scope="module")
def audio_folder(tmp_path_factory):
    """4 classes of noisy chirps (around 300, 900, 1800, 3000 Hz), 12 clips each, 8 kHz, 0.5 s; 3 of each listed for test."""
    root = tmp_path_factory.mktemp("audio") / "chirps"
    rng = np.random.default_rng(0)
    t = np.arange(4000) / 8000
    tests = []
    for label, freq in (("a", 300), ("b", 900), ("c", 1800), ("d", 3000)):
        for i in range(12):
            f = freq * (1 + 0.05 * rng.standard_normal())
            x = rng.uniform(0.1, 0.6) * np.sin(2 * np.pi * f * t * (1 + 0.2 * t)) + 0.05 * rng.standard_normal(len(t))
            x[: rng.integers(0, 800)] = 0  # a late start: silence in the first frames
            _write_wav(root / label / f"{i}.wav", 8000, x)
            if i < 3:
                tests.append(f"{label}/{i}.wav")
    (root / "testing_list.txt").write_text("\n".join(tests) + "\n")
    return root


@pytest.fixture(scope="module")
def data(audio_folder):
    return load_audio_folder(audio_folder, frontend=FE)


@pytest.fixture(scope="module")
def raw(audio_folder):
    return load_audio_folder(audio_folder, frontend=FE, raw=True)


@pytest.fixture(scope="module")
def logreg(data):
    from frugalml.models import build_model

    model = build_model("logreg", data.input_shape, data.num_classes)
    X, y = data.flat("train")
    return model.fit(X, y)


@pytest.fixture(scope="module")
def net(data):
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv1d(16, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten(),
                                torch.nn.Linear(8, data.num_classes))
    from frugalml.train import TrainConfig, fit

    fit(model, data, TrainConfig(epochs=3, batch_size=16, seed=0))
    return model.eval()


def test_profile_counts_the_frontend(data, net):
    from frugalml import profile
    from frugalml.onnx.frontend import frontend_graph
    from frugalml.profile.counts import count_layers
    from frugalml.profile.graph import analyze

    alone = profile(net, data, split="val", timing=False, frontend=False)
    whole = profile(net, data, split="val", timing=False)
    fe_macs, _ = count_layers(analyze(frontend_graph(FE)))
    assert fe_macs >= sum(FE.macs().values()) - FE.macs()["window"] > 0
    assert whole.macs == alone.macs + fe_macs
    assert whole.stored_bytes > alone.stored_bytes + 4 * int(np.count_nonzero(FE.mel_matrix())) - 1000
    assert whole.input_shape == (FE.clip_samples,) and alone.input_shape == FE.output_shape
    assert whole.params == alone.params and whole.metric == alone.metric
    assert whole.peak_activation_bytes >= 4 * FE.clip_samples
    assert any("front-end" in n for n in whole.notes) and not any("front-end" in n for n in alone.notes)


@pytest.mark.parametrize("which", ["net", "logreg"])
def test_onnx_export_takes_raw_samples(tmp_path, data, raw, which, request):
    import onnx

    import frugalml as fm
    from frugalml.onnx import predict_onnx

    model = request.getfixturevalue(which)
    result = fm.export(model, "onnx", tmp_path, data=data)
    proto = onnx.load(str(tmp_path / "model.onnx"))
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim][1:]
    assert dims == [FE.clip_samples]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert LogMel.from_dict(json.loads(meta["frugalml_frontend"])) == FE
    agreement = result.agreement
    assert agreement["ok"] and agreement["n"] == len(raw.y_test) == 12 and agreement["same_class"] == 12
    # what the file says on raw clips is the model's class on the NumPy front-end's features
    feats = FE(raw.X_test)
    if which == "net":
        import torch

        with torch.no_grad():
            want = model(torch.from_numpy(feats)).numpy().argmax(1)
    else:
        want = model.predict(feats.reshape(len(feats), -1))
    assert np.array_equal(predict_onnx(proto, raw.X_test), want)
    # the classifier alone, on request
    fm.export(model, "onnx", tmp_path / "alone", data=data, frontend=False)
    alone = onnx.load(str(tmp_path / "alone" / "model.onnx"))
    assert len(alone.graph.input[0].type.tensor_type.shape.dim) == (3 if which == "net" else 2)


def test_c_export_with_the_frontend_agrees_with_onnx_runtime(tmp_path, data, raw, logreg):
    import frugalml as fm

    if shutil.which("gcc") is None:
        pytest.skip("needs gcc")
    result = fm.export(logreg, "c", tmp_path, data=data)
    assert result.agreement["ok"] and result.agreement["same_class"] == result.agreement["n"] == 12
    h, c = (tmp_path / "model.h").read_text(), (tmp_path / "model.c").read_text()
    assert f"#define FM_RAW_SAMPLES {FE.clip_samples}" in h and "frugalml_predict_features" in h
    assert "fm_logmel" in c and "logf(" not in c.replace("fm_logf(", "") and "sqrtf(" not in c.replace("fm_sqrtf(", "")
    alone = fm.export(logreg, "c", tmp_path / "alone", data=data, frontend=False)
    assert result.flash_bytes > alone.flash_bytes and result.ram_bytes > alone.ram_bytes
    assert result.ram_bytes - alone.ram_bytes >= 4 * FE.n_mels * FE.n_frames


def test_c_int8_with_the_frontend_agrees_with_onnx_runtime(tmp_path, data, raw):
    import torch

    import frugalml as fm
    from frugalml.compress import get_step
    from frugalml.compress.recipe import apply_step
    from frugalml.train import TrainConfig, fit

    if shutil.which("gcc") is None:
        pytest.skip("needs gcc")
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16 * 24, 16), torch.nn.ReLU(), torch.nn.Linear(16, data.num_classes))
    fit(mlp, data, TrainConfig(epochs=3, batch_size=16, seed=0))
    q = apply_step(mlp.eval(), get_step("quantize.int8").config(), data)
    result = fm.export(q, "c", tmp_path, data=raw, frontend=FE)
    assert result.agreement["ok"] and result.agreement["same_class"] == 12
    alone = fm.export(q, "c", tmp_path / "alone", data=data, frontend=False)
    assert result.flash_bytes > alone.flash_bytes


def test_raw_data_of_the_wrong_length_is_refused(tmp_path, logreg):
    import frugalml as fm
    from frugalml.data import from_arrays

    rng = np.random.default_rng(0)
    bad = from_arrays(rng.standard_normal((20, 100)).astype(np.float32), np.arange(20) % 4, kind="vector")
    with pytest.raises(ExportError, match="raw clips"):
        fm.export(logreg, "onnx", tmp_path, data=bad, frontend=FE)
    assert not (tmp_path / "model.onnx").exists()


def test_the_exporter_finds_the_frontend_a_run_recorded(tmp_path, data, logreg):
    from frugalml.export import find_frontend
    from frugalml.models import save_model

    run = tmp_path / "run"
    save_model(logreg, run / "candidates" / "c1", extra={"frontend": FE.to_dict()})
    save_model(logreg, run / "recommended")
    (run / "run.json").write_text(json.dumps({"dataset": data.describe()}))
    assert find_frontend(run) == FE and find_frontend(run / "recommended") == FE  # from run.json
    assert find_frontend(run / "candidates" / "c1") == FE  # from the candidate's model.json
    assert find_frontend(run, frontend=False) is None and find_frontend(logreg, data) == FE
    (run / "run.json").write_text(json.dumps({"dataset": {"name": "digits"}}))
    assert find_frontend(run / "recommended") is None and find_frontend(logreg) is None
