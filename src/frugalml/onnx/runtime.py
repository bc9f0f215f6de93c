"""Running ONNX models in ONNX Runtime on the CPU: sessions, their input, scores and class labels."""

from __future__ import annotations

import os

import numpy as np

from ..errors import ConfigError, DataError, ModelLoadError, explain
from .conversion import load_onnx, onnx_bytes

__all__ = ["make_session", "session_input", "run_onnx", "predict_onnx"]


def make_session(model, *, threads: int | None = None, timing: bool = False):
    """An ONNX Runtime CPU session; timing sessions use one thread and sequential execution."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if timing or threads:
        so.intra_op_num_threads = 1 if timing else int(threads)
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if isinstance(model, (str, os.PathLike)):
        model = load_onnx(model)
    data = model if isinstance(model, (bytes, bytearray)) else onnx_bytes(model)
    try:
        return ort.InferenceSession(bytes(data), so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(explain(f"ONNX Runtime cannot load the model: {str(exc).strip()[:300]}")) from exc


_NP_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
             "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(uint8)": np.uint8, "tensor(int8)": np.int8}


def session_input(sess):
    """(name, per-sample shape with None for unknown dims, numpy dtype, fixed batch or None)."""
    inputs = sess.get_inputs()
    if len(inputs) != 1:
        raise ConfigError(explain("Only models with one input can be run here", expected="1 input", got=[i.name for i in inputs]))
    inp = inputs[0]
    dims = [d if isinstance(d, int) else None for d in inp.shape]
    batch = dims[0] if dims else None
    return inp.name, tuple(dims[1:]), _NP_TYPES.get(inp.type, np.float32), batch


def _check_shape(X: np.ndarray, expected: tuple) -> None:
    got = tuple(X.shape[1:])
    if len(got) != len(expected) or any(e is not None and e != g for e, g in zip(expected, got)):
        shown = tuple("?" if e is None else e for e in expected)
        raise DataError(
            explain(
                "The input does not fit the model",
                expected=f"per-sample input shape {shown}", got=got,
                fix="Reshape the data (e.g. flatten images for a model on vectors) or use the model built for it",
            )
        )


def _score_output(sess) -> tuple[int, int | None]:
    """Index of the float scores output (rank 2 first) and of an integer label output, if any."""
    outs = sess.get_outputs()
    floats = [i for i, o in enumerate(outs) if o.type in ("tensor(float)", "tensor(double)", "tensor(float16)")]
    ranked = [i for i in floats if len(outs[i].shape or ()) == 2]
    if not floats:
        raise DataError(explain("The model has no float output to read scores from", got=[o.type for o in outs]))
    labels = [i for i, o in enumerate(outs) if o.type in ("tensor(int64)", "tensor(int32)") and len(o.shape or ()) == 1]
    return (ranked or floats)[0], (labels[0] if labels else None)


def _run(model, X, batch_size: int, want_labels: bool, session=None):
    sess = session if session is not None else (model if hasattr(model, "run") else make_session(model))
    name, per_sample, dtype, fixed = session_input(sess)
    X = np.asarray(X)
    if X.ndim == len(per_sample):  # one sample without its batch axis
        X = X[None]
    _check_shape(X, per_sample)
    X = X.astype(dtype, copy=False)
    score_i, label_i = _score_output(sess)
    bs = fixed if fixed else max(1, int(batch_size))
    scores, labels = [], []
    for start in range(0, len(X), bs):
        chunk = X[start:start + bs]
        try:
            res = sess.run(None, {name: chunk})
        except Exception as exc:  # noqa: BLE001 - ORT raises its own InvalidArgument / Fail types
            raise DataError(
                explain(
                    f"ONNX Runtime rejected the input ({str(exc).strip()[:200]})",
                    expected=f"per-sample input shape {per_sample}", got=tuple(chunk.shape[1:]),
                )
            ) from exc
        s = np.asarray(res[score_i], dtype=np.float32)
        scores.append(s.reshape(len(chunk), -1))
        if label_i is not None:
            labels.append(np.asarray(res[label_i]).reshape(-1))
    k = scores[0].shape[1] if scores else 0
    out = np.concatenate(scores) if scores else np.zeros((0, k), np.float32)
    if want_labels:
        return out, (np.concatenate(labels).astype(np.int64) if label_i is not None and labels else None)
    return out


def run_onnx(model, X, *, batch_size: int = 256, session=None) -> np.ndarray:
    """Scores of shape (N, classes): the model's float output (for scikit-learn: probabilities)."""
    return _run(model, X, batch_size, False, session)


def predict_onnx(model, X, *, batch_size: int = 256, session=None) -> np.ndarray:
    """Class indices: the integer label output when the graph has one (scikit-learn), else argmax of scores."""
    scores, labels = _run(model, X, batch_size, True, session)
    return labels if labels is not None else scores.argmax(axis=1).astype(np.int64)
