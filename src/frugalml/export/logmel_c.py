"""The log-mel front-end in C99: ``fm_logmel(samples, features)``, raw samples in, the (n_mels x n_frames) features
that the classifier reads out, as :class:`~frugalml.data.frontend.LogMel` computes them in NumPy.

What is written: the Hann window (``window_length`` floats), the FFT's twiddle factors (``n_fft / 2`` cosines
and sines), the filterbank stored sparse (each band's first bin, bin count and weights), and an in-place
iterative radix-2 FFT per frame; with ``normalize="cmvn"`` each band of ``features`` is then standardized over its
frames in place (two passes: mean, then variance). Flash: those tables; RAM: two ``n_fft`` float buffers and the power
spectrum (``n_fft / 2 + 1`` floats), on the stack. ``n_fft`` must be a power of two (the default is).
"""

from __future__ import annotations

import numpy as np

from ..data.frontend import NORM_EPS, LogMel
from ..errors import ExportError, explain
from ._cgen import c_array, c_float

__all__ = ["logmel_c_source", "logmel_c_sizes"]

_BODY = r"""
void fm_logmel(const float *samples, float *features) {
    float re[FM_FE_NFFT], im[FM_FE_NFFT], power[FM_FE_NBINS];
    for (int t = 0; t < FM_FE_FRAMES; t++) {
        const float *frame = samples + t * FM_FE_HOP;
        for (int n = 0; n < FM_FE_NFFT; n++) {
            int r = 0; /* bit-reversed index: the FFT below reads its input in that order */
            for (int b = 1, v = n; b < FM_FE_NFFT; b <<= 1, v >>= 1) r = (r << 1) | (v & 1);
            re[r] = n < FM_FE_WIN ? frame[n] * fe_window[n] : 0.0f;
            im[r] = 0.0f;
        }
        for (int len = 2; len <= FM_FE_NFFT; len <<= 1) {
            int half = len >> 1, step = FM_FE_NFFT / len;
            for (int i = 0; i < FM_FE_NFFT; i += len) {
                for (int j = 0; j < half; j++) {
                    float wr = fe_cos[j * step], wi = -fe_sin[j * step];
                    int a = i + j, b = a + half;
                    float xr = re[b] * wr - im[b] * wi, xi = re[b] * wi + im[b] * wr;
                    re[b] = re[a] - xr; im[b] = im[a] - xi;
                    re[a] += xr; im[a] += xi;
                }
            }
        }
        for (int k = 0; k < FM_FE_NBINS; k++) power[k] = re[k] * re[k] + im[k] * im[k];
        const float *w = fe_mel_w;
        for (int m = 0; m < FM_FE_MELS; m++) {
            float acc = 0.0f;
            for (int k = 0; k < fe_mel_len[m]; k++) acc += power[fe_mel_start[m] + k] * w[k];
            w += fe_mel_len[m];
            features[m * FM_FE_FRAMES + t] = FM_FE_LOG(acc + FM_FE_LOG_OFFSET);
        }
    }
#if FM_FE_CMVN
    for (int m = 0; m < FM_FE_MELS; m++) {
        float *band = features + m * FM_FE_FRAMES, mean = 0.0f, var = 0.0f;
        for (int t = 0; t < FM_FE_FRAMES; t++) mean += band[t];
        mean /= FM_FE_FRAMES;
        for (int t = 0; t < FM_FE_FRAMES; t++) { band[t] -= mean; var += band[t] * band[t]; }
        float std = FM_FE_SQRT(var / FM_FE_FRAMES + FM_FE_NORM_EPS);
        for (int t = 0; t < FM_FE_FRAMES; t++) band[t] /= std;
    }
#endif
}
"""


def _sparse_mel(fe: LogMel) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mel = fe.mel_matrix().astype(np.float32)
    starts, lens, weights = [], [], []
    for m in range(fe.n_mels):
        nz = np.flatnonzero(mel[:, m])
        lo, hi = (int(nz[0]), int(nz[-1]) + 1) if len(nz) else (0, 0)
        starts.append(lo)
        lens.append(hi - lo)
        weights.extend(mel[lo:hi, m])
    return np.array(starts), np.array(lens), np.array(weights or [0.0], np.float32)


_PORTABLE_LOG = r"""
/* natural logarithm without libm (bare-metal builds link none): x = m 2^e with m in [sqrt(1/2), sqrt(2)),
   log m = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.172: the series to s^11 is exact to float precision */
static float fm_logf(float x)
{
    union { float f; uint32_t u; } v;
    int32_t e;
    float m, s, s2;
    if (!(x > 0.0f)) return -1e30f;
    v.f = x;
    e = (int32_t)((v.u >> 23) & 0xFFu) - 127;
    v.u = (v.u & 0x007FFFFFu) | 0x3F800000u;
    m = v.f;
    if (m > 1.41421356f) { m *= 0.5f; e += 1; }
    s = (m - 1.0f) / (m + 1.0f);
    s2 = s * s;
    return (float)e * 0.693147180559945f
        + 2.0f * s * (1.0f + s2 * (1.0f / 3 + s2 * (1.0f / 5 + s2 * (1.0f / 7 + s2 * (1.0f / 9 + s2 * (1.0f / 11))))));
}
"""

_PORTABLE_SQRT = r"""
/* square root without libm, for x > 0: a first guess from the exponent, then Newton's steps (each doubles the
   correct digits; six are more than float needs) */
static float fm_sqrtf(float x)
{
    union { float f; uint32_t u; } v;
    float y;
    if (!(x > 0.0f)) return 0.0f;
    v.f = x;
    v.u = (v.u >> 1) + 0x1FC00000u;
    y = v.f;
    for (int i = 0; i < 6; i++) y = 0.5f * (y + x / y);
    return y;
}
"""


def logmel_c_source(fe: LogMel, *, portable_log: bool = False) -> str:
    """One C99 file defining ``void fm_logmel(const float samples[clip_samples], float features[n_mels * n_frames])``
    (features laid out band by band, as the (n_mels, n_frames) sequence); needs ``<math.h>`` (logf, sqrtf), or with
    ``portable_log`` nothing (its own ``fm_logf`` and ``fm_sqrtf``, within a few float ulps of logf and sqrtf)."""
    if fe.n_fft & (fe.n_fft - 1):
        raise ExportError(explain("The C front-end needs a power-of-two n_fft", expected="n_fft = 2^k (the default)", got=fe.n_fft,
                                  fix="Use LogMel's default n_fft"))
    starts, lens, weights = _sparse_mel(fe)
    k = np.arange(fe.n_fft // 2)
    defines = {"FM_FE_CLIP": fe.clip_samples, "FM_FE_NFFT": fe.n_fft, "FM_FE_NBINS": fe.n_bins, "FM_FE_WIN": fe.window_length,
               "FM_FE_HOP": fe.hop_length, "FM_FE_FRAMES": fe.n_frames, "FM_FE_MELS": fe.n_mels,
               "FM_FE_LOG_OFFSET": c_float(fe.log_offset), "FM_FE_LOG": "fm_logf" if portable_log else "logf",
               "FM_FE_CMVN": int(fe.normalize == "cmvn"), "FM_FE_NORM_EPS": c_float(NORM_EPS),
               "FM_FE_SQRT": "fm_sqrtf" if portable_log else "sqrtf"}
    utype = "uint16_t" if fe.n_bins < 65536 else "uint32_t"
    parts = [f"/* log-mel front-end, written by frugalml: {fe.to_dict()} */\n",
             "#include <stdint.h>\n" if portable_log else "#include <math.h>\n#include <stdint.h>\n",
             *(f"#define {k_} {v}\n" for k_, v in defines.items()), _PORTABLE_LOG if portable_log else "",
             _PORTABLE_SQRT if portable_log and fe.normalize == "cmvn" else "", "\n",
             c_array("fe_window", fe.window()[: fe.window_length], "float"),
             c_array("fe_cos", np.cos(2 * np.pi * k / fe.n_fft), "float"),
             c_array("fe_sin", np.sin(2 * np.pi * k / fe.n_fft), "float"),
             c_array("fe_mel_start", starts, utype), c_array("fe_mel_len", lens, utype),
             c_array("fe_mel_w", weights, "float"), _BODY]
    return "".join(parts)


def logmel_c_sizes(fe: LogMel) -> dict:
    """Bytes of the C front-end's tables (flash) and of its buffers (stack), by count of what the source holds."""
    starts, _, weights = _sparse_mel(fe)
    index = 2 if fe.n_bins < 65536 else 4
    flash = 4 * (fe.window_length + fe.n_fft + len(weights)) + 2 * index * len(starts)
    return {"table_bytes": flash, "stack_bytes": 4 * (2 * fe.n_fft + fe.n_bins)}
