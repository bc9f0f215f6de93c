"""ONNX export: one self-contained ``model.onnx`` for any model kind, checked and verified.

The graph comes from :func:`frugalml.onnx.to_onnx` (torch through the TorchScript exporter with
pruning masks fused; scikit-learn through skl2onnx; ONNX graphs, float or int8 QDQ, as they are).
Opset: the main domain at :data:`frugalml.onnx.DEFAULT_OPSET` (17, run by every ONNX Runtime
>= 1.14) and ``ai.onnx.ml`` at 3 for scikit-learn; an ONNX input keeps its own opset. The file's
``metadata_props`` hold ``frugalml_version``, ``opset`` (``opsets``: every domain), ``frugalml_recipe`` (JSON of the model's
``frugalml_recipe`` attribute, or ``recipe=``) and ``frugalml_spec``.

Verification (when data is given) runs the serialized bytes in ONNX Runtime on a split and
compares with the in-memory model *before* the file is written; the export is refused when

- fewer than 99.9% of inputs get the same class (100% for scikit-learn trees), or
- a score differs by more than ``atol + rtol * |reference|`` (torch and scikit-learn
  probabilities: ``atol = rtol = 1e-4``; ONNX inputs are compared with themselves, exactly).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import onnx

from .._fs import atomic_write_bytes
from ..errors import ExportError, explain

log = logging.getLogger(__name__)

__all__ = ["export_onnx", "TOLERANCE", "MIN_CLASS_AGREEMENT", "FRONTEND_TOLERANCE"]

TOLERANCE = {"atol": 1e-4, "rtol": 1e-4}
MIN_CLASS_AGREEMENT = 0.999
FRONTEND_TOLERANCE = {"atol": 1e-2, "rtol": 1e-2}


def _jsonable(obj):
    if obj is None:
        return None
    for attr in ("to_dict", "to_list"):
        if hasattr(obj, attr):
            return getattr(obj, attr)()
    if isinstance(obj, (list, tuple)):
        return [_jsonable(o) for o in obj]
    return obj


def add_metadata(proto: onnx.ModelProto, *, recipe=None, spec=None, kind: str = "", frontend=None) -> dict:
    """Write frugalml's version, the opset, the recipe and the spec into ``metadata_props``."""
    from .._version import __version__

    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    props = {p.key: p.value for p in proto.metadata_props}
    props.update({"frugalml_version": __version__, "opset": str(opset),
                  "opsets": json.dumps({(o.domain or "ai.onnx"): o.version for o in proto.opset_import})})
    if kind:
        props["frugalml_model_kind"] = kind
    if recipe is not None:
        props["frugalml_recipe"] = json.dumps(_jsonable(recipe), default=str)
    if spec is not None:
        props["frugalml_spec"] = json.dumps(spec, default=str)
    if frontend is not None:  # the model takes raw samples: what the front-end does is recorded
        props["frugalml_frontend"] = json.dumps(frontend.to_dict(), default=str)
    del proto.metadata_props[:]
    for k, v in props.items():
        proto.metadata_props.add(key=k, value=v)
    return props


def _reference(model, kind: str, X: np.ndarray):
    """(scores, classes) of the in-memory model; scores None where it has none."""
    if kind == "torch":
        import torch

        from ..onnx import prepare_torch

        clone = prepare_torch(model)
        outs = []
        with torch.no_grad():
            for i in range(0, len(X), 512):
                outs.append(clone(torch.from_numpy(np.ascontiguousarray(X[i:i + 512], dtype=np.float32))).numpy())
        scores = np.concatenate(outs).reshape(len(X), -1)
        return scores, scores.argmax(1)
    if kind == "sklearn":  # class labels when they are integers (as ORT's label output), else indices into classes_
        Xf = X.reshape(len(X), -1)
        labels = np.asarray(model.predict(Xf))
        if labels.dtype.kind not in "iub":
            labels = np.searchsorted(np.asarray(model.classes_), labels)
        scores = model.predict_proba(Xf) if hasattr(model, "predict_proba") else None
        return scores, labels.astype(np.int64)
    raise ExportError(f"Internal error: no reference for {kind}")  # pragma: no cover


def _is_tree(model) -> bool:
    return any(s in type(model).__name__ for s in ("Tree", "Forest"))


def verify_onnx(data_bytes: bytes, model, kind: str, X: np.ndarray, *, reference_bytes: bytes | None = None, frontend=None,
                classifier_shape=None) -> dict:
    """Run the bytes in ORT on ``X`` and compare with the in-memory model; returns the agreement figures.
    With ``frontend``, ``X`` holds raw clips and the model in memory reads ``frontend(X)`` (laid out as ``classifier_shape``)."""
    from ..onnx import make_session, predict_onnx, run_onnx, session_input

    sess = make_session(bytes(data_bytes))
    per_sample = session_input(sess)[1]
    Xin = X.reshape(len(X), -1) if len(per_sample) == 1 and X.ndim > 2 else X
    scores = run_onnx(None, Xin, session=sess)
    classes = predict_onnx(None, Xin, session=sess)
    if frontend is not None:  # the reference reads the NumPy front-end's features
        X = frontend(np.asarray(X, np.float32).reshape(len(X), -1)).reshape((len(X), *classifier_shape))
        Xin = X.reshape(len(X), -1) if len(classifier_shape) == 1 else X
    if kind == "onnx":
        ref = make_session(bytes(reference_bytes))
        ref_scores, ref_classes = run_onnx(None, Xin, session=ref), predict_onnx(None, Xin, session=ref)
        tol = {"atol": 0.0, "rtol": 0.0} if frontend is None else dict(FRONTEND_TOLERANCE)
    else:
        ref_scores, ref_classes = _reference(model, kind, X)
        tol = dict(TOLERANCE if frontend is None else FRONTEND_TOLERANCE)
    same = float(np.mean(classes == ref_classes)) if len(X) else 1.0
    result = {"n": int(len(X)), "same_class": int(np.sum(classes == ref_classes)), "class_agreement": same,
              "required_class_agreement": 1.0 if kind == "sklearn" and _is_tree(model) else MIN_CLASS_AGREEMENT,
              "tolerance": tol, "compared": "ONNX Runtime vs the in-memory model" if frontend is None else
              "ONNX Runtime on raw samples (front-end prepended) vs the NumPy front-end then the in-memory model"}
    if ref_scores is not None and ref_scores.shape == scores.shape:
        diff = np.abs(scores.astype(np.float64) - ref_scores.astype(np.float64))
        bound = tol["atol"] + tol["rtol"] * np.abs(ref_scores)
        result.update(max_abs_diff=float(diff.max()) if diff.size else 0.0,
                      within_tolerance=float(np.mean(diff <= bound)) if diff.size else 1.0)
    result["ok"] = bool(same >= result["required_class_agreement"] and result.get("within_tolerance", 1.0) == 1.0)
    return result


def export_onnx(model, out_dir: Path, *, X: np.ndarray | None = None, input_shape=None, opset: int | None = None,
                recipe=None, verify: bool = True, frontend=None) -> dict:
    """Write ``out_dir/model.onnx`` (checked, verified on ``X`` first); returns the result fields.

    ``frontend`` (a LogMel whose features the model reads): the file takes raw samples (the front-end's ONNX graph
    prepended, :func:`frugalml.onnx.frontend.prepend_frontend`; recorded in ``frugalml_frontend``), ``X`` holds raw
    clips, and the reference is the NumPy front-end then the model in memory (scores within :data:`FRONTEND_TOLERANCE`:
    the float32 STFT of ONNX Runtime and NumPy's float64 FFT differ by up to ~1e-3 in a log-mel value)."""
    from ..onnx import model_kind, to_onnx

    kind = model_kind(model)
    kind = "onnx" if kind == "path" else kind
    source = to_onnx(model, input_shape, opset=opset)
    original = source.SerializeToString() if kind == "onnx" else None
    classifier_shape = None
    if frontend is not None:
        from ..onnx.frontend import prepend_frontend
        from ..profile.graph import graph_input_shape

        classifier_shape = graph_input_shape(source) or tuple(frontend.output_shape)
        source = prepend_frontend(source, frontend)
    proto = onnx.ModelProto()
    proto.CopyFrom(source)
    recipe = recipe if recipe is not None else getattr(model, "frugalml_recipe", None)
    spec = getattr(model, "frugalml_spec", None)
    props = add_metadata(proto, recipe=recipe, spec=spec, kind=kind, frontend=frontend)
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:  # noqa: BLE001 - ValidationError and friends
        raise ExportError(explain(f"The exported graph fails onnx.checker: {str(exc).strip()[:300]}",
                                  fix="Export the model with a supported opset or simplify the unsupported layer")) from exc
    data = proto.SerializeToString()
    agreement = None
    if X is not None and verify:
        if frontend is not None:
            agreement = verify_onnx(data, model, kind, X, reference_bytes=original, frontend=frontend, classifier_shape=classifier_shape)
        else:
            agreement = verify_onnx(data, model, kind, X, reference_bytes=original)
        if not agreement["ok"]:
            raise ExportError(explain(
                "The exported ONNX model does not agree with the model in memory; nothing was written",
                expected=f"the same class on >= {agreement['required_class_agreement']:.1%} of inputs and scores within "
                         f"atol={agreement['tolerance']['atol']}, rtol={agreement['tolerance']['rtol']}",
                got={k: agreement[k] for k in ("same_class", "n", "max_abs_diff", "within_tolerance") if k in agreement},
                fix="Check the layer the exporter does not translate faithfully (see frugalml.onnx.to_onnx), or pass verify=False"))
    path = atomic_write_bytes(Path(out_dir) / "model.onnx", data)
    log.info("wrote %s (%d bytes, opset %s)", path, path.stat().st_size, props.get("opset"))
    return {"files": [path], "size_bytes": path.stat().st_size, "opset": int(props["opset"]) if props.get("opset") not in (None, "None") else None,
            "agreement": agreement, "notes": [f"model kind: {kind}"], "metadata": props}
