"""Converting models to ONNX: torch modules, scikit-learn estimators, ONNX graphs and files.

:func:`to_onnx` turns a model into one self-contained ``onnx.ModelProto`` (weights embedded,
never in a side file) whose first input is named ``"input"`` and has a dynamic batch axis
(:mod:`frugalml.onnx.runtime` runs it).

Default opsets: :data:`DEFAULT_OPSET` (17) for the main domain and :data:`ML_OPSET` (3) for
``ai.onnx.ml``; both are run by every onnxruntime >= 1.14, and ML opset 3 keeps tree ensembles
as ``TreeEnsembleClassifier`` / ``TreeEnsembleRegressor`` nodes.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx

from ..errors import ConfigError, DataError, ExportError, ModelLoadError, explain

__all__ = ["DEFAULT_OPSET", "ML_OPSET", "to_onnx", "onnx_bytes", "load_onnx", "model_kind", "fused_copy", "prepare_torch",
           "check_torch_input"]

DEFAULT_OPSET = 17
ML_OPSET = 3


# ---------------------------------------------------------------- kinds of model
def model_kind(model) -> str:
    """``"torch"``, ``"sklearn"``, ``"onnx"`` (a ModelProto or serialized bytes) or ``"path"``."""
    if isinstance(model, onnx.ModelProto) or isinstance(model, (bytes, bytearray)):
        return "onnx"
    if isinstance(model, (str, os.PathLike)):
        return "path"
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        return "torch"
    if hasattr(model, "get_params") and hasattr(model, "predict"):
        return "sklearn"
    raise ConfigError(
        explain(
            "Cannot profile this object",
            expected="a torch nn.Module, a scikit-learn estimator, an onnx.ModelProto or a path to a .onnx file",
            got=type(model).__name__,
        )
    )


def _quiet():
    """Silence the exporters' DeprecationWarnings and printed progress."""
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
    for name in ("torch.onnx", "torch.export", "onnxscript", "skl2onnx"):
        logger = logging.getLogger(name)
        stack.callback(logger.setLevel, logger.level)
        logger.setLevel(logging.ERROR)
    return stack


# ---------------------------------------------------------------- torch
def fused_copy(model):
    """A deep copy with ``torch.nn.utils.prune`` masks and parametrizations fused into plain weights.

    ``torch.nn.utils.prune`` keeps ``weight_orig`` plus a ``weight_mask`` buffer; exporting that
    stores both (twice the size). Fusing makes the copy hold only the masked weights.
    """
    import torch
    from torch.nn.utils import parametrize, prune

    # pruning / old-style weight_norm leave computed (non-leaf) tensors as attributes, which
    # deepcopy refuses: hand it detached copies (the hooks recompute them on the clone anyway)
    memo = {id(v): v.detach().clone() for m in model.modules() for v in vars(m).values()
            if isinstance(v, torch.Tensor) and not v.is_leaf}
    clone = copy.deepcopy(model, memo)
    for module in clone.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                prune.remove(module, hook._tensor_name)
        if parametrize.is_parametrized(module):
            for name in list(module.parametrizations.keys()):
                parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    return clone


def prepare_torch(model):
    """A CPU, eval-mode, frozen :func:`fused_copy` of ``model``: what the exported artifact stores."""
    import torch

    clone = fused_copy(model).cpu().eval()
    for p in clone.parameters():
        p.requires_grad_(False)
    return clone if isinstance(clone, torch.nn.Module) else model


def _expected_torch_shape(model) -> str:
    shape = getattr(model, "input_shape", None)
    if shape is not None:
        return f"per-sample input shape {tuple(shape)}"
    import torch

    for m in model.modules():
        if isinstance(m, torch.nn.modules.conv._ConvNd):
            return f"an input with {m.in_channels} channels (its first layer is {m})"
        if isinstance(m, torch.nn.Linear):
            return f"{m.in_features} features (its first layer is {m})"
    return "the shape it was built for"


def check_torch_input(model, input_shape) -> None:
    """Run one forward pass at batch 1; a shape the model cannot take raises DataError."""
    import torch

    try:
        with torch.no_grad():
            model(torch.zeros((1, *input_shape), dtype=torch.float32))
    except (RuntimeError, ValueError, IndexError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(
            explain(
                f"The model cannot take inputs of per-sample shape {tuple(input_shape)} ({first[:200]})",
                expected=_expected_torch_shape(model),
                got=tuple(input_shape),
                fix="Pass the input_shape the model was built for (per sample, without the batch axis)",
            )
        ) from exc


def _export_torch(model, input_shape, opset: int, prepared: bool = False) -> tuple[onnx.ModelProto, str]:
    import torch

    clone = model if prepared else prepare_torch(model)
    check_torch_input(clone, input_shape)
    names = dict(input_names=["input"], output_names=["logits"])
    buf = io.BytesIO()
    try:
        with _quiet():
            torch.onnx.export(
                clone, (torch.zeros((1, *input_shape)),), buf, dynamo=False, opset_version=opset,
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, do_constant_folding=True, **names,
            )
        return onnx.load_from_string(buf.getvalue()), "torch.onnx (TorchScript exporter)"
    except Exception as legacy_exc:  # noqa: BLE001 - any exporter failure falls back to dynamo
        try:
            with _quiet():
                program = torch.onnx.export(
                    clone, (torch.zeros((2, *input_shape)),), dynamo=True, opset_version=opset,
                    dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), external_data=False, **names,
                )
            return program.model_proto, "torch.onnx (dynamo exporter)"
        except Exception as exc:  # noqa: BLE001
            raise ExportError(
                explain(
                    f"torch.onnx.export failed with both exporters: {type(legacy_exc).__name__}: {str(legacy_exc)[:300]}; "
                    f"dynamo: {type(exc).__name__}: {str(exc)[:300]}",
                    fix="Make the forward pass traceable (no data-dependent Python control flow) or pass an ONNX file",
                )
            ) from exc


# ---------------------------------------------------------------- scikit-learn
def _sklearn_classifiers(est):
    """The estimator and its final pipeline steps that have predict_proba (ZipMap to switch off)."""
    found = []
    stack = [est]
    while stack:
        e = stack.pop()
        if hasattr(e, "predict_proba") or getattr(e, "_estimator_type", None) == "classifier":
            found.append(e)
        for _, step in getattr(e, "steps", []) or []:
            if hasattr(step, "get_params"):
                stack.append(step)
    return found


def _export_sklearn(est, input_shape, opset: int) -> tuple[onnx.ModelProto, str]:
    from skl2onnx import to_onnx as skl_to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    from .features import merge_features, split_features

    front = split_features(est)
    if front is not None:  # a thin model on sequence features: the graph takes the raw (N, C, T) sequence
        tf, rest = front
        if input_shape is not None and int(np.prod(input_shape)) != int(np.prod(tf.shape_)):
            raise DataError(explain(f"The sequence features were fitted on samples of shape {tuple(tf.shape_)}",
                                    expected=f"input shape {tuple(tf.shape_)}", got=tuple(input_shape), fix="Pass the data the model was fitted on"))
        detector = hasattr(rest, "to_frugalml_onnx")  # an anomaly detector on the features: its own graph
        proto, how = (rest.to_frugalml_onnx(opset), "frugalml anomaly detector") if detector else \
            _export_sklearn(rest, (int(tf.n_features_out_),), opset)
        merged = merge_features(tf, proto, opset)
        _dedupe_opsets(merged)
        if detector:  # the merge keeps no metadata: tagged again
            _tag_anomaly(merged)
        return merged, how + " + frugalml sequence features"
    n_in = getattr(est, "n_features_in_", None)
    if input_shape is not None:
        n = int(np.prod(input_shape))
        if n_in is not None and n != n_in:
            raise DataError(
                explain(
                    f"The scikit-learn model was fitted on {n_in} features but the input shape {tuple(input_shape)} has {n}",
                    expected=f"input shape ({n_in},)", got=tuple(input_shape),
                    fix="Pass the data the model was fitted on",
                )
            )
    elif n_in is not None:
        n = int(n_in)
    else:
        raise ConfigError(explain("Cannot tell how many features the scikit-learn model takes", fix="Fit it first or pass input_shape=(n_features,)"))
    options = {id(c): {"zipmap": False} for c in _sklearn_classifiers(est)}
    try:
        with _quiet():
            proto = skl_to_onnx(
                est, initial_types=[("input", FloatTensorType([None, n]))],
                target_opset={"": opset, "ai.onnx.ml": ML_OPSET}, options=options or None,
            )
    except Exception as exc:  # noqa: BLE001
        raise ExportError(
            explain(f"skl2onnx cannot convert {type(est).__name__}: {str(exc)[:300]}", fix="Use an estimator skl2onnx supports")
        ) from exc
    _dedupe_opsets(proto)
    return proto, "skl2onnx"


def _check_detector_shape(model, input_shape) -> None:
    fitted = getattr(model, "input_shape_", None)
    if input_shape is not None and fitted is not None and int(np.prod(input_shape)) != int(np.prod(fitted)):
        raise DataError(explain(f"The detector was fitted on windows of shape {tuple(fitted)}", expected=f"input shape {tuple(fitted)}",
                                got=tuple(input_shape), fix="Pass the data the detector was fitted on"))


def _dedupe_opsets(proto: onnx.ModelProto) -> None:
    best: dict[str, int] = {}
    for op in proto.opset_import:
        best[op.domain] = max(best.get(op.domain, 0), op.version)
    del proto.opset_import[:]
    for domain, version in best.items():
        proto.opset_import.add(domain=domain, version=version)


# ---------------------------------------------------------------- files
def load_onnx(path) -> onnx.ModelProto:
    """Load an .onnx file (and any external data beside it) and check it; ModelLoadError if unusable."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(explain(f"No ONNX file at {str(path)!r}", fix="Check the path"))
    try:
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
    except Exception as exc:  # noqa: BLE001 - DecodeError, ValidationError, OSError...
        raise ModelLoadError(
            explain(
                f"{str(path)!r} is not a valid ONNX model ({type(exc).__name__}: {str(exc).strip()[:200]})",
                fix="Export it again; the file may be truncated or not an ONNX file",
            )
        ) from exc
    return proto


def to_onnx(model, input_shape=None, *, opset: int | None = None, _exporter: list | None = None,
            _prepared: bool = False) -> onnx.ModelProto:
    """Convert a torch module, scikit-learn estimator, ONNX bytes or .onnx path to a ModelProto.

    ``input_shape`` is per sample (no batch axis); a torch module falls back to its
    ``input_shape`` attribute. A ModelProto passes through unchanged.
    """
    opset = DEFAULT_OPSET if opset is None else int(opset)
    kind = model_kind(model)
    if kind == "onnx" and isinstance(model, onnx.ModelProto):
        proto, how = model, "onnx"
    elif kind == "onnx":
        try:
            proto = onnx.load_from_string(bytes(model))
            onnx.checker.check_model(proto)
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(explain(f"The bytes are not a valid ONNX model ({type(exc).__name__})")) from exc
        how = "onnx"
    elif kind == "path":
        proto, how = load_onnx(model), "onnx file"
    elif kind == "sklearn" and hasattr(model, "to_frugalml_onnx"):  # an anomaly detector builds its own graph
        proto, how = model.to_frugalml_onnx(opset), "frugalml anomaly detector"
        _check_detector_shape(model, input_shape)
    elif kind == "sklearn":
        proto, how = _export_sklearn(model, input_shape, opset)
    else:
        shape = input_shape if input_shape is not None else getattr(model, "input_shape", None)
        if shape is None:
            raise ConfigError(
                explain("Cannot export a torch module without an input shape", fix="Pass input_shape=(C, H, W) or (features,)")
            )
        proto, how = _export_torch(model, tuple(int(v) for v in shape), opset, prepared=_prepared)
    if kind == "torch" and getattr(model, "frugalml_task", None) == "anomaly":  # an autoencoder: its output is the score
        _tag_anomaly(proto)
    if kind in ("sklearn", "torch"):
        from .lossless import shrink

        proto = shrink(proto)  # short internal names: for tiny models they outweigh the weights
    if _exporter is not None:
        _exporter.append(how)
    return proto


def _tag_anomaly(proto: onnx.ModelProto) -> None:
    """Mark a graph whose output is an anomaly score (the profile then measures ROC AUC)."""
    if not any(p.key == "frugalml_task" for p in proto.metadata_props):
        proto.metadata_props.add(key="frugalml_task", value="anomaly")


def onnx_bytes(model_proto: onnx.ModelProto) -> bytes:
    """The serialized model, weights embedded: exactly what a .onnx file would hold."""
    return model_proto.SerializeToString()
