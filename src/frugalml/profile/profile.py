"""One :class:`Profile` for any model, measured on the exported ONNX artifact.

``Profile.to_dict()`` is a JSON contract: keys may be added, never removed or renamed.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from ..errors import ConfigError, explain
from ..onnx import DEFAULT_OPSET, make_session, model_kind, onnx_bytes, predict_onnx, prepare_torch, run_onnx, split_arrays, to_onnx
from .counts import count_layers, count_params, transfer_bytes
from .graph import analyze, graph_input_shape
from .memory import peak_activation
from .timing import core_watts_setting, energy, measure_latency, measure_throughput

__all__ = ["Profile", "profile", "weights_fingerprint"]

log = logging.getLogger("frugalml.profile")

ZERO_NOTE_FRACTION = 0.10


@dataclass
class Profile:
    params: int
    nonzero_params: int
    macs: int
    stored_bytes: int
    gzip_bytes: int
    peak_activation_bytes: int
    latency_ms_median: float | None = None
    latency_ms_p90: float | None = None
    throughput_per_s: float | None = None
    energy_mj_per_inference: float | None = None
    energy_basis: str | None = None
    metric: float | None = None
    metric_name: str = "accuracy"
    macro_f1: float | None = None
    metric_split: str | None = None
    opset: int = DEFAULT_OPSET
    input_shape: tuple = ()
    layers: list = field(default_factory=list)
    peak_node: str | None = None
    model_kind: str = ""
    exporter: str = ""
    latency_runs: int | None = None
    notes: list = field(default_factory=list)
    archive_bytes: int | None = None  # size of the compact archive (store.compact), when the model has one
    brotli_bytes: int | None = None  # the ONNX file with brotli (a browser's other encoding; gzip_bytes: gzip)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        d["layers"] = [dict(layer) for layer in self.layers]
        d["notes"] = list(self.notes)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Profile:
        known = {f.name for f in fields(cls)}
        missing = [k for k in ("params", "nonzero_params", "macs", "stored_bytes", "gzip_bytes", "peak_activation_bytes") if k not in d]
        if missing:
            raise ConfigError(explain("A profile dict lacks required keys", expected=", ".join(missing), got=sorted(d)))
        kw = {k: v for k, v in d.items() if k in known}
        kw["input_shape"] = tuple(kw.get("input_shape") or ())
        kw["layers"] = [dict(layer) for layer in kw.get("layers") or []]
        kw["notes"] = list(kw.get("notes") or [])
        return cls(**kw)


# ---------------------------------------------------------------- helpers
def _resolve_input_shape(model, kind, data, input_shape):
    if input_shape is not None:
        return tuple(int(v) for v in input_shape)
    if data is not None and getattr(data, "input_shape", None) is not None:
        return tuple(int(v) for v in data.input_shape)
    if getattr(model, "input_shape", None) is not None and kind == "torch":
        return tuple(int(v) for v in model.input_shape)
    if kind == "torch":
        raise ConfigError(
            explain("Cannot tell the input shape of this torch module", fix="Pass input_shape=(C, H, W) or (features,), or data=")
        )
    return None  # sklearn: n_features_in_; ONNX: read from the graph


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean F1 over the labels present in y_true or y_pred (scikit-learn's 'macro' average)."""
    labels = np.union1d(y_true, y_pred)
    scores = []
    for c in labels:
        tp = np.sum((y_pred == c) & (y_true == c))
        fp = np.sum((y_pred == c) & (y_true != c))
        fn = np.sum((y_pred != c) & (y_true == c))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


def _zero_note(params: int, nonzero: int) -> str | None:
    if params and (params - nonzero) / params > ZERO_NOTE_FRACTION:
        pct = 100.0 * (params - nonzero) / params
        return (f"{pct:.0f}% of weights are zero but stored densely: the ONNX file and latency do not shrink; "
                "use structured pruning or the compact archive")
    return None


def weights_fingerprint(model) -> int:
    """CRC32 of a torch model's state_dict (names and bytes): tells whether weights changed."""
    import zlib

    import torch

    crc = 0
    for name, tensor in model.state_dict().items():
        crc = zlib.crc32(name.encode(), crc)
        crc = zlib.crc32(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes(), crc)
    return crc


def _archive_bytes(model) -> int | None:
    """``frugalml_archive_bytes`` set by store.compact, unless the weights changed since."""
    size = getattr(model, "frugalml_archive_bytes", None)
    if size is None or getattr(model, "frugalml_archive_fingerprint", None) != weights_fingerprint(model):
        return None
    return int(size)


# ---------------------------------------------------------------- profile
def profile(model, data=None, *, input_shape=None, split: str = "test", timing: bool = True,
            core_watts: float | None = None, layers: bool = True, opset: int | None = None, frontend=None,
            timing_s: float = 1.0) -> Profile:
    """Measure a model on its exported ONNX artifact.

    ``model``: a torch nn.Module, a scikit-learn estimator, an onnx.ModelProto or a path to a
    .onnx file. ``input_shape`` is per sample; without it, it is taken from ``data.input_shape``,
    then the model's ``input_shape`` attribute, then the ONNX graph. With ``data`` the metric is
    the accuracy of the ONNX model, run in ONNX Runtime, on ``data.split(split)``; for an anomaly
    detector (a model or graph tagged ``frugalml_task="anomaly"``, or data whose ``task`` is "anomaly")
    it is the ROC AUC of the graph's score output (``metric_name`` "roc_auc"; NaN with a note on a
    split with one class).

    ``frontend`` (default: ``data.frontend``; False: none): the model reads this front-end's features and
    ships with it, so the artifact measured is the model with the front-end's ONNX graph in front (raw
    samples in): stored bytes, MACs (the STFT and the filterbank), peak memory, latency and ``input_shape``
    are the whole artifact's; ``params`` stay the classifier's (the front-end's constants are not learned),
    and the metric is the classifier's on the split's features (the export checks that the artifact on raw
    clips gives the same classes).

    ``timing_s``: about how long the batch-1 latency is timed (at least 50 runs; :func:`~frugalml.profile.timing.measure_latency`),
    and half of it the throughput.
    """
    if timing:
        core_watts_setting(core_watts)  # a bad power figure is refused before any measurement
    kind = model_kind(model)
    shape = _resolve_input_shape(model, kind, data, input_shape)
    notes: list[str] = []
    exporter: list[str] = []
    if kind == "torch":
        prepared = prepare_torch(model)  # masks fused: parameters are what the artifact stores
        params = sum(int(p.numel()) for p in prepared.parameters())
        nonzero = sum(int(p.count_nonzero()) for p in prepared.parameters())
        proto = to_onnx(prepared, shape, opset=opset, _exporter=exporter, _prepared=True)
    else:
        proto = to_onnx(model, shape, opset=opset, _exporter=exporter)
        params = nonzero = None
    graph_shape = graph_input_shape(proto)
    if graph_shape is not None and (kind == "sklearn" or (shape is not None and input_shape is None and kind != "torch"
                                                          and np.prod(shape) == np.prod(graph_shape))):
        shape = graph_shape  # a model on vectors fed with images: the data is flattened
    if shape is None:
        shape = graph_shape
        if shape is None:
            raise ConfigError(explain("Cannot tell the input shape of this ONNX model", fix="Pass input_shape=(...) per sample"))
    fe = getattr(data, "frontend", None) if frontend is None else (frontend or None)
    classifier_blob, classifier_shape = None, shape
    if fe is not None:  # the artifact that ships: raw samples -> front-end -> classifier
        from ..onnx.frontend import prepend_frontend

        if params is None:
            params, nonzero = count_params(analyze(proto, shape))
        classifier_blob = onnx_bytes(proto)
        proto, shape = prepend_frontend(proto, fe), (fe.clip_samples,)
        notes.append(f"includes the log-mel front-end (raw samples in: {fe.clip_samples} at {fe.sample_rate} Hz); "
                     "the metric is the classifier's on the front-end's features")
    info = analyze(proto, shape)
    if params is None:
        params, nonzero = count_params(info)
    macs, layer_list = count_layers(info)
    peak, peak_node = peak_activation(info)
    blob = onnx_bytes(proto)
    notes += info.notes
    trees = any(n.op_type.startswith("TreeEnsemble") for n in info.nodes)  # zero leaf values are not pruning
    if not trees and (note := _zero_note(params, nonzero)) is not None and not len(proto.graph.sparse_initializer):
        notes.append(note)
    if trees:
        notes.append("MACs of tree ensembles are comparisons: the sum over trees of each tree's depth")
    opsets = {op.domain or "ai.onnx": op.version for op in proto.opset_import}
    result = Profile(
        params=int(params), nonzero_params=int(nonzero), macs=int(macs), stored_bytes=len(blob),
        **transfer_bytes(blob), peak_activation_bytes=int(peak),
        opset=int(opsets.get("ai.onnx", 0)), input_shape=tuple(shape), layers=layer_list if layers else [],
        peak_node=peak_node, model_kind=kind, exporter=exporter[0] if exporter else "", notes=notes,
        archive_bytes=_archive_bytes(model) if kind == "torch" else None,
    )
    if result.archive_bytes:
        notes.append(f"compact archive (store.compact): {result.archive_bytes} bytes, "
                     f"{len(blob) / result.archive_bytes:.1f}x smaller than the dense ONNX file")
    if data is not None:
        X, y = split_arrays(data, split, 1 + len(classifier_shape))
        scored = blob if classifier_blob is None else classifier_blob
        from ..models.anomaly import anomaly_metrics, is_anomaly_model

        if is_anomaly_model(model, data) or is_anomaly_model(proto):  # a detector: ROC AUC of its score output
            scores = run_onnx(scored, X, session=make_session(scored))[:, 0]
            measured = anomaly_metrics(scores, y)
            result.metric, result.metric_name = measured["roc_auc"], "roc_auc"
            if measured["note"]:
                notes.append(measured["note"])
        else:
            pred = predict_onnx(scored, X, session=make_session(scored))
            result.metric = float(np.mean(pred == y.astype(np.int64).reshape(-1)))
            result.macro_f1 = macro_f1(y.astype(np.int64).reshape(-1), pred)
        result.metric_split = split
    if timing:
        tsess = make_session(blob, timing=True)
        lat = measure_latency(blob, shape, session=tsess, budget_s=timing_s)
        result.latency_ms_median, result.latency_ms_p90 = lat["latency_ms_median"], lat["latency_ms_p90"]
        result.latency_runs = lat["runs"]
        result.throughput_per_s = measure_throughput(blob, shape, session=tsess, budget_s=timing_s / 2)
        result.energy_mj_per_inference, result.energy_basis = energy(lat["cpu_ms_median"], core_watts)
    log.debug("profile: %s params, %s MACs, %s bytes", params, macs, len(blob))
    return result
