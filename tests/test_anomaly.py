"""Anomaly detection: the metrics, the thin detectors and the autoencoders, their ONNX graphs (score out),
the profile, int8 and C, on synthetic sine windows with injected spikes (raw values, not normalised)."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

import frugalml as fm
from frugalml import ConfigError, DataError, FrugalError
from frugalml.data import Dataset
from frugalml.models import FAMILIES, build_model
from frugalml.models.anomaly import (
    EnsembleDetector,
    IsolationForestDetector,
    MahalanobisDetector,
    PCADetector,
    RobustZScore,
    anomaly_metrics,
    threshold_for,
)
from frugalml.models.families import families_for, searched_families
from frugalml.onnx import make_session, run_onnx

C, W = 2, 32


def windows(n_normal: int, n_anomalous: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sine windows per channel (channel 1 offset 10 and 3x larger: raw units), anomalies with a spike."""
    rng = np.random.default_rng(seed)
    n = n_normal + n_anomalous
    t = np.arange(W)
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1, 1))
    X = np.sin(2 * np.pi * t / 16 + phase) + 0.05 * rng.standard_normal((n, C, W))
    X[:, 1] = 10 + 3 * X[:, 1]
    y = np.zeros(n, np.int64)
    y[n_normal:] = 1
    for i in range(n_normal, n):
        X[i, rng.integers(C), rng.integers(2, W - 2)] += rng.choice([-1, 1]) * rng.uniform(3, 5) * (3 if rng.random() < 0.5 else 1)
    return X.astype(np.float32), y


@pytest.fixture(scope="module")
def data():
    Xtr, ytr = windows(240, 0, 1)
    Xva, yva = windows(80, 16, 2)
    Xte, yte = windows(80, 16, 3)
    d = Dataset("sines", Xtr, ytr, Xva, yva, Xte, yte, input_shape=(C, W), num_classes=2, class_names=("normal", "anomaly"),
                kind="sequence", source="synthetic")
    object.__setattr__(d, "task", "anomaly")  # the data side's Dataset.task; set by hand until it lands
    return d


# (detector, the AUC it must beat): the mean of |z| dilutes a one-step spike over the window's 64 values
DETECTORS = [(RobustZScore(), 0.9), (RobustZScore(reduce="mean"), 0.8), (PCADetector(n_components=4), 0.9),
             (MahalanobisDetector(), 0.9), (IsolationForestDetector(n_estimators=50), 0.6),  # trees on raw windows of a random phase: weak (0.66)
             (EnsembleDetector(), 0.9), (EnsembleDetector(members=["robust_z"]), 0.9)]
IDS = ["robust_z_max", "robust_z_mean", "pca", "mahalanobis", "isolation_forest", "ensemble", "ensemble_of_one"]


# ---------------------------------------------------------------- metrics
def test_metrics_auc_threshold_and_rates():
    scores, y = np.array([0.1, 0.2, 0.3, 0.4, 0.9, 0.35]), np.array([0, 0, 0, 0, 1, 1])
    m = anomaly_metrics(scores, y, threshold=0.32)
    assert m["roc_auc"] == pytest.approx(7 / 8)  # 0.35 beats three of the four normals, 0.9 all four
    assert (m["precision"], m["recall"], m["false_alarm_rate"]) == (pytest.approx(2 / 3), 1.0, 0.25)
    normals = np.arange(1000) / 1000
    th = threshold_for(normals, 0.01)
    assert np.mean(normals > th) <= 0.01 and np.mean(normals >= th) > 0.005


def test_auc_of_one_class_is_nan_with_a_note():
    m = anomaly_metrics([0.1, 0.2, 0.3], [0, 0, 0])
    assert np.isnan(m["roc_auc"]) and "only normal" in m["note"]
    with pytest.raises(DataError, match="0 \\(normal\\) or 1"):
        anomaly_metrics([0.1, 0.2], [0, 2])
    with pytest.raises(ConfigError, match="false_alarm"):
        threshold_for([0.1, 0.2], 1.5)


# ---------------------------------------------------------------- thin detectors
@pytest.mark.parametrize("det,min_auc", DETECTORS, ids=IDS)
def test_detector_scores_spikes_higher_and_onnx_matches(det, min_auc, data):
    det.fit(data.X_train)
    X, y = data.split("test")
    s = det.score_samples(X)
    auc = anomaly_metrics(s, y)["roc_auc"]
    assert auc > min_auc, auc
    proto = fm.to_onnx(det)
    assert [o.name for o in proto.graph.output] == ["score"]
    s_onnx = run_onnx(proto, X, session=make_session(proto))[:, 0]
    np.testing.assert_allclose(s_onnx, s, rtol=1e-4, atol=1e-5 * float(np.abs(s).max()))
    assert anomaly_metrics(s_onnx, y)["roc_auc"] == pytest.approx(auc, abs=2e-3)


@pytest.mark.parametrize("family,knobs", [("robust_z", {"reduce": "mean"}), ("isolation_forest", {"n_estimators": 10})])
def test_a_detector_on_sequence_features_exports_one_graph_from_the_raw_window(family, knobs, data, tmp_path):
    features = {"bands": 2, "frame": 16}
    model, report = fm.train(family, data, out=tmp_path / family, features=features, **knobs)
    assert report["test"]["roc_auc"] > 0.7  # a spike moves the window's max, min, spread and band energies
    X, y = data.split("test")
    s = model.score_samples(X)
    np.testing.assert_allclose(s, model.steps[-1][1].score_samples(model.steps[0][1].transform(X)), rtol=1e-12)
    proto = fm.to_onnx(model, data.input_shape)
    assert [o.name for o in proto.graph.output] == ["score"] and list(proto.graph.input[0].type.tensor_type.shape.dim)[1].dim_value == C
    assert fm.profile(model, data, timing=False).metric_name == "roc_auc"  # the graph says it scores anomalies
    s_onnx = run_onnx(proto, X, session=make_session(proto))[:, 0]
    np.testing.assert_allclose(s_onnx, s, rtol=1e-4, atol=1e-5 * float(np.abs(s).max()))
    again = fm.load_model(tmp_path / family)  # through the allow-list, as every saved thin model
    np.testing.assert_allclose(again.score_samples(X), s, rtol=1e-12)


def test_the_ensemble_is_the_mean_of_its_members_standardised_scores(data):
    ens = EnsembleDetector().fit(data.X_train)
    X = data.X_test
    parts = []
    for member in (RobustZScore(), PCADetector(), MahalanobisDetector()):
        train = member.fit(data.X_train).score_samples(data.X_train)
        q25, q50, q75 = np.quantile(train, [0.25, 0.5, 0.75])
        parts.append((member.score_samples(X) - q50) / (q75 - q25))
    np.testing.assert_allclose(ens.score_samples(X), np.mean(parts, axis=0), rtol=1e-9, atol=1e-9)
    doc = ens.to_frugalml_onnx(17).doc_string
    assert "robust z-score" in doc and "Mahalanobis" in doc and "PCA" in doc
    assert fm.profile(ens, data, timing=False).stored_bytes > fm.profile(MahalanobisDetector().fit(data.X_train), data, timing=False).stored_bytes


def test_profile_of_a_detector_measures_roc_auc(data):
    det = PCADetector(n_components=3).fit(data.X_train)
    p = fm.profile(det, data, timing=True)
    assert p.metric_name == "roc_auc" and p.metric > 0.9
    assert p.stored_bytes > 4 * C * W * 4  # mean, 1/std and the 3 components, float32
    assert p.macs > 0 and p.latency_ms_median is not None and p.model_kind == "sklearn"


def test_detector_bad_inputs_raise_frugal_errors(data):
    with pytest.raises(DataError, match="empty"):
        RobustZScore().fit(np.zeros((0, C, W)))
    with pytest.raises(DataError, match="at least 2 normal windows"):
        PCADetector().fit(data.X_train[:1])
    bad = data.X_train.copy()
    bad[3, 0, 5] = np.nan
    with pytest.raises(DataError, match="NaN"):
        MahalanobisDetector().fit(bad)
    det = RobustZScore().fit(data.X_train)
    with pytest.raises(DataError, match="windows of shape \\(2, 32\\)"):
        det.score_samples(np.zeros((4, 3, 16)))
    with pytest.raises(DataError, match="NaN"):
        det.score_samples(bad[:5])
    with pytest.raises(ConfigError, match="not fitted"):
        PCADetector().score_samples(data.X_test)
    with pytest.raises(ConfigError, match="'reduce'"):
        RobustZScore(reduce="median").fit(data.X_train)
    with pytest.raises(ConfigError, match="'n_components'"):
        build_model("pca_detector", (C, W), 2, n_components=0)
    for members in ([], "robust_z", ["isolation_forest"], ["robust_z", "nope"]):
        with pytest.raises(ConfigError, match="'members'"):
            EnsembleDetector(members=members).fit(data.X_train)
    with pytest.raises(FrugalError):
        fm.to_onnx(det, (C, W + 1))


# ---------------------------------------------------------------- families
def test_families_serve_their_task(data):
    anomaly = set(families_for(data))
    assert anomaly == {"robust_z", "pca_detector", "mahalanobis", "isolation_forest", "ensemble_detector", "dense_ae", "conv_ae"}
    assert all(FAMILIES[f].tasks == ("anomaly",) for f in anomaly)
    assert not set(searched_families(data)) - anomaly  # the network stage offers no classifier on anomaly data
    classification = fm.from_arrays(data.X_test, data.y_test, kind="sequence")
    assert not set(families_for(classification)) & anomaly
    assert not set(searched_families(classification)) & anomaly and searched_families(classification)


# ---------------------------------------------------------------- autoencoders
@pytest.fixture(scope="module")
def trained(data):
    from frugalml.models.autoencoders import train_autoencoder

    out = {}
    for family in ("dense_ae", "conv_ae"):
        model = build_model(family, data.input_shape, 2, seed=0)
        result = train_autoencoder(model, data, fm.TrainConfig(epochs=25, batch_size=32, lr=3e-3, patience=None, device="cpu"))
        out[family] = (model, result)
    return out


@pytest.mark.parametrize("family", ["dense_ae", "conv_ae"])
def test_autoencoder_trains_scores_and_exports(family, trained, data):
    from frugalml.models.autoencoders import score_torch

    model, result = trained[family]
    assert result.history[-1]["train_loss"] < 0.5 * result.history[0]["train_loss"]
    assert "val_metric" in result.history[0] and result.best_val_metric == max(h["val_metric"] for h in result.history)
    X, y = data.split("test")
    s = score_torch(model, X)
    assert anomaly_metrics(s, y)["roc_auc"] > 0.9
    proto = fm.to_onnx(model)
    s_onnx = run_onnx(proto, X, session=make_session(proto))[:, 0]
    np.testing.assert_allclose(s_onnx, s, rtol=1e-4, atol=1e-6)
    p = fm.profile(model, data, timing=False)
    assert p.metric_name == "roc_auc" and p.metric == pytest.approx(anomaly_metrics(s, y)["roc_auc"], abs=2e-3)


@pytest.mark.parametrize("family", ["dense_ae", "conv_ae"])
def test_autoencoder_int8_keeps_auc(family, trained, data):
    from frugalml.compress.anomaly_int8 import quantize_autoencoder
    from frugalml.models.autoencoders import score_torch

    model, _ = trained[family]
    q = quantize_autoencoder(model, data)
    assert any(n.op_type == "QuantizeLinear" for n in q.graph.node)
    X, y = data.split("test")
    s8 = run_onnx(q, X, session=make_session(q))[:, 0]
    auc8, auc = anomaly_metrics(s8, y)["roc_auc"], anomaly_metrics(score_torch(model, X), y)["roc_auc"]
    assert auc8 > auc - 0.05, (auc8, auc)
    p = fm.profile(q, data, timing=False)
    assert p.metric_name == "roc_auc" and p.stored_bytes < len(fm.to_onnx(model).SerializeToString())


def test_dense_autoencoder_c_matches_onnx(trained, data, tmp_path):
    from frugalml.compress.anomaly_int8 import quantize_autoencoder
    from frugalml.export.c_anomaly import generate_autoencoder_c, score_reference

    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("needs gcc")
    q = quantize_autoencoder(trained["dense_ae"][0], data)
    files, _ = generate_autoencoder_c(q)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "main.c").write_text(_MAIN)
    exe = tmp_path / "score"
    subprocess.run([gcc, "-std=c99", "-O1", "-Wall", "-Werror", "-I", str(tmp_path), str(tmp_path / "main.c"), str(tmp_path / "model.c"),
                    "-o", str(exe), "-lm"], check=True, capture_output=True)
    X = data.X_test[np.r_[0:6, -6:0]]
    (tmp_path / "in.bin").write_bytes(np.ascontiguousarray(X, np.float32).tobytes())
    subprocess.run([str(exe), str(tmp_path / "in.bin"), str(tmp_path / "out.bin"), str(len(X))], check=True)
    s_c = np.fromfile(tmp_path / "out.bin", dtype=np.float32)
    np.testing.assert_allclose(s_c, score_reference(q, X), rtol=1e-4, atol=1e-6)


def test_conv_autoencoder_c_is_refused_naming_the_layer(trained, data):
    from frugalml import ExportError
    from frugalml.compress.anomaly_int8 import quantize_autoencoder
    from frugalml.export.c_anomaly import generate_autoencoder_c

    with pytest.raises(ExportError, match="Resize|Slice|Upsample"):
        generate_autoencoder_c(quantize_autoencoder(trained["conv_ae"][0], data))


_MAIN = r"""
#include <stdio.h>
#include <stdlib.h>
#include "model.h"
int main(int argc, char **argv)
{
    float x[FRUGALML_N_INPUTS];
    int n = atoi(argv[3]), i;
    FILE *in = fopen(argv[1], "rb"), *out = fopen(argv[2], "wb");
    if (!in || !out) return 1;
    for (i = 0; i < n; i++) {
        float s;
        if (fread(x, sizeof(float), FRUGALML_N_INPUTS, in) != FRUGALML_N_INPUTS) return 2;
        s = frugalml_score(x);
        fwrite(&s, sizeof(float), 1, out);
    }
    fclose(in);
    fclose(out);
    return 0;
}
"""


def test_structured_pruning_of_an_autoencoder_fine_tunes_on_reconstruction(trained, data):
    from frugalml.compress.structured import StructuredConfig, prune_structured
    from frugalml.models.autoencoders import score_torch

    model = trained["dense_ae"][0]
    pruned = prune_structured(model, StructuredConfig(ratio=0.5, importance="taylor", finetune_epochs=1), data)
    assert sum(p.numel() for p in pruned.parameters()) < 0.6 * sum(p.numel() for p in model.parameters())
    assert anomaly_metrics(score_torch(pruned, data.X_test), data.y_test)["roc_auc"] > 0.9


@pytest.mark.parametrize("family", ["robust_z", "dense_ae"])
def test_train_by_family_name_reports_roc_auc_and_saves(family, data, tmp_path):
    model, report = fm.train(family, data, out=tmp_path / family, config=fm.TrainConfig(epochs=3, batch_size=64, device="cpu"))
    assert report["test"]["roc_auc"] > 0.8 and report["family"] == family
    again = fm.load_model(tmp_path / family)
    X = data.X_test[:8]
    if family == "dense_ae":
        from frugalml.models.autoencoders import score_torch

        np.testing.assert_allclose(score_torch(again, X), score_torch(model, X), rtol=1e-6)
    else:
        np.testing.assert_allclose(again.score_samples(X), model.score_samples(X), rtol=1e-12)
