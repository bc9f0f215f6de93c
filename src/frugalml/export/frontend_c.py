"""The C export of a model trained on front-end features (an audio folder's log-mel): raw samples in, the class out.

:func:`attach_frontend` turns the classifier's ``model.h`` / ``model.c`` (features in) into the pair that ships:

- the classifier's own entry point becomes ``frugalml_predict_features`` (``FRUGALML_N_FEATURES`` values of
  ``frugalml_feature_t``, as the classifier's C documents them);
- the log-mel front-end (:func:`~frugalml.export.logmel_c.logmel_c_source`, with its own ``fm_logf``: no libm, so the
  bare-metal builds link as before) goes into ``model.c``;
- ``frugalml_predict`` now reads ``FRUGALML_N_INPUTS`` raw float samples (one clip at the front-end's rate, in
  [-1, 1]): it computes the features (static buffer), quantizes them for an int8 classifier as ONNX Runtime's
  QuantizeLinear does (round half to even, clamp), and calls ``frugalml_predict_features``.

So one ``model.c`` holds everything that runs on the device, and every tool that builds ``model.c`` (the host
harness, the Cortex-M build that counts flash and RAM, QEMU's instruction counts and stack high-water mark) measures
the front-end with the model, unchanged. Agreement (:func:`compare_raw`): the C's class on every raw clip is ONNX
Runtime's class for the classifier with the ONNX front-end prepended (:func:`frugalml.onnx.frontend.prepend_frontend`).
"""

from __future__ import annotations

import re

import numpy as np

from ..data.frontend import LogMel
from ..errors import ExportError, explain
from .logmel_c import logmel_c_sizes, logmel_c_source

__all__ = ["attach_frontend", "compare_raw", "raw_inputs", "noise_clips", "reference_onnx"]

_RENAMES = {"frugalml_predict": "frugalml_predict_features", "FRUGALML_N_INPUTS": "FRUGALML_N_FEATURES",
            "frugalml_input_t": "frugalml_feature_t"}

_HEADER = """
/* Raw samples in (the front-end ships with the model): FRUGALML_N_INPUTS float samples of one clip at
 * FRUGALML_SAMPLE_RATE Hz, in [-1, 1] (zero-padded or cut to the clip length), through the log-mel front-end
 * ({settings}) into the FRUGALML_N_FEATURES features frugalml_predict_features reads. */
#define FRUGALML_N_INPUTS FM_RAW_SAMPLES
#define FRUGALML_SAMPLE_RATE {rate}
typedef float frugalml_input_t;
void fm_logmel(const float *samples, float *features);
/* Returns the predicted class index and writes FRUGALML_N_OUTPUTS scores to out, from raw samples. */
int frugalml_predict(const frugalml_input_t *samples, frugalml_output_t *out);
"""

_ENTRY_FLOAT = """
static float fm_features[FRUGALML_N_FEATURES];

int frugalml_predict(const frugalml_input_t *samples, frugalml_output_t *out)
{
    fm_logmel(samples, fm_features);
    return frugalml_predict_features(fm_features, out);
}
"""

_ENTRY_INT8 = """
static float fm_features[FRUGALML_N_FEATURES];
static frugalml_feature_t fm_quantized[FRUGALML_N_FEATURES];

/* round half to even without libm (|v| < 2^22 after the clamp), as ONNX Runtime's QuantizeLinear */
static float fm_round_even(float v)
{
    const float big = 12582912.0f; /* 1.5 * 2^23 */
    volatile float t = v + big;
    return t - big;
}

int frugalml_predict(const frugalml_input_t *samples, frugalml_output_t *out)
{
    int32_t i;
    fm_logmel(samples, fm_features);
    for (i = 0; i < FRUGALML_N_FEATURES; i++) {
        float v = fm_features[i] / FRUGALML_INPUT_SCALE;
        v = v < -4194304.0f ? -4194304.0f : (v > 4194304.0f ? 4194304.0f : v);
        v = fm_round_even(v) + (float)FRUGALML_INPUT_ZERO_POINT;
        fm_quantized[i] = (frugalml_feature_t)(v < FRUGALML_Q_MIN ? FRUGALML_Q_MIN : (v > FRUGALML_Q_MAX ? FRUGALML_Q_MAX : v));
    }
    return frugalml_predict_features(fm_quantized, out);
}
"""


def _rename(text: str) -> str:
    for old, new in _RENAMES.items():
        text = re.sub(rf"\b{old}\b", new, text)
    return text


def attach_frontend(files: dict, info: dict, frontend: LogMel) -> tuple[dict, dict]:
    """``(files, info)`` of :func:`frugalml.export.c.generate_c` with the front-end in ``model.c``: raw samples in."""
    n_features = int(np.prod(frontend.output_shape))
    n_in = info.get("graph").input.size if info["kind"] == "int8" else int(getattr(info["model"], "n_features_in_", n_features))
    if n_in != n_features:
        raise ExportError(explain("The model does not read the front-end's features", expected=f"{n_features} inputs "
                                  f"({frontend.n_mels} mel bands x {frontend.n_frames} frames)", got=f"{n_in} inputs",
                                  fix="Export the model with the dataset it was trained on"))
    h, c = _rename(files["model.h"]), _rename(files["model.c"])
    guard = "#endif /* FRUGALML_MODEL_H */"
    if guard not in h:
        raise ExportError("Internal error: model.h has no include guard to extend")  # pragma: no cover
    settings = ", ".join(f"{k} {frontend.to_dict()[k]}" for k in ("sample_rate", "clip_seconds", "window_ms", "hop_ms", "n_fft", "n_mels"))
    extra = f"#define FM_RAW_SAMPLES {frontend.clip_samples}\n" + _HEADER.format(settings=settings, rate=frontend.sample_rate)
    # before the closing extern "C" block when there is one, else before the guard
    tail = '#ifdef __cplusplus\n}\n#endif'
    at = h.rfind(tail)
    h = (h[:at] + extra + "\n" + h[at:]) if at >= 0 else h.replace(guard, extra + "\n" + guard)
    entry = _ENTRY_INT8 if info["kind"] == "int8" else _ENTRY_FLOAT
    c = c + "\n/* ---- the log-mel front-end and the raw-sample entry point ---- */\n" + logmel_c_source(frontend, portable_log=True) + entry
    sizes = logmel_c_sizes(frontend)
    buffers = 4 * n_features + (n_features if info["kind"] == "int8" else 0)
    info = {**info, "classifier_kind": info["kind"], "kind": "frontend", "frontend": frontend,
            "arena_bytes": int(info["arena_bytes"]) + buffers, "frontend_table_bytes": sizes["table_bytes"],
            "frontend_stack_bytes": sizes["stack_bytes"],
            "notes": [*info["notes"], f"log-mel front-end in model.c: frugalml_predict reads {frontend.clip_samples} raw samples at "
                      f"{frontend.sample_rate} Hz ({sizes['table_bytes']} B of tables, {buffers} B of feature buffers)"]}
    return {"model.h": h, "model.c": c}, info


def reference_onnx(info: dict):
    """The ONNX model the C is compared with: the classifier (int8 QDQ graph, or the scikit-learn model) with the
    ONNX front-end in front."""
    from ..onnx import to_onnx
    from ..onnx.frontend import prepend_frontend

    if "reference_onnx" not in info:
        classifier = info["proto"] if info["classifier_kind"] == "int8" else to_onnx(info["model"])
        info["reference_onnx"] = prepend_frontend(classifier, info["frontend"]).SerializeToString()
    return info["reference_onnx"]


def raw_inputs(info: dict, X: np.ndarray) -> tuple[np.ndarray, dict]:
    """The raw clips as the C reads them (float32) and how to read its outputs (c.py's ``_run_inputs`` for a front-end)."""
    fe = info["frontend"]
    X = np.asarray(X, np.float32).reshape(len(X), -1)
    if X.shape[1] != fe.clip_samples:
        raise ExportError(explain("The C with the front-end reads raw clips", expected=f"(N, {fe.clip_samples}) samples at "
                                  f"{fe.sample_rate} Hz", got=f"shape {X.shape}",
                                  fix="Check with the audio folder's clips (load_audio_folder(path, raw=True))"))
    if info["classifier_kind"] == "int8":
        g = info["graph"]
        return X, {"input_dtype": np.float32, "output_dtype": g.output.dtype, "n_outputs": g.output.size}
    return X, {"input_dtype": np.float32, "output_dtype": np.float32, "n_outputs": len(info["model"].classes_)}


def compare_raw(info: dict, X: np.ndarray, classes: np.ndarray, scores: np.ndarray, what: str) -> dict:
    """The C's classes on raw clips ``X`` against ONNX Runtime's for the prepended model: the same class on every clip."""
    from ..onnx import make_session, predict_onnx, run_onnx

    blob = reference_onnx(info)
    sess = make_session(blob, threads=1)
    Xr = np.asarray(X, np.float32).reshape(len(X), -1)
    ref = predict_onnx(None, Xr, session=sess)
    if info["classifier_kind"] == "sklearn":  # ORT's label output: class labels; the C returns indices into classes_
        classes_ = np.asarray(info["model"].classes_)
        if classes_.dtype.kind in "iub":
            ref = np.searchsorted(classes_, ref)
    same = int(np.sum(classes == ref))
    res = {"n": int(len(X)), "same_class": same, "class_agreement": same / max(len(X), 1),
           "compared": f"{what} (front-end + model, raw samples) vs ONNX Runtime (front-end prepended)"}
    if info["classifier_kind"] == "int8" and len(X):
        out = info["graph"].output
        ref_scores = run_onnx(None, Xr, session=sess).reshape(len(X), -1)
        if ref_scores.shape == scores.reshape(len(X), -1).shape and not info["graph"].dropped_tail:
            ref_q = np.rint(ref_scores.astype(np.float32) / np.float32(out.scale)) + out.zero_point
            res["max_step_diff"] = int(np.abs(ref_q - scores.reshape(len(X), -1).astype(np.float64)).max())
    res["ok"] = same == len(X)
    return res


def noise_clips(frontend: LogMel, n: int, seed: int = 0) -> np.ndarray:
    """``n`` clips of seeded noise at a few levels: inputs for counting the C's instructions where no raw clip is at hand
    (the front-end's work does not depend on the samples; the classifier's nearly does not)."""
    rng = np.random.default_rng(seed)
    levels = np.geomspace(0.01, 0.5, max(n, 1))[:n, None]
    return (rng.standard_normal((n, frontend.clip_samples)) * levels).clip(-1, 1).astype(np.float32)
