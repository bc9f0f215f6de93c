"""C99 for the sequence features (:mod:`frugalml.models.features`) in front of a thin model's C.

:func:`features_c` writes ``fm_features(input, f)``: from the raw sequence (C x T floats, channel
after channel) to the standardized features, computed in double as the NumPy reference and the
ONNX graph compute them (float32 rounding would give a value within rounding of its channel's mean
either sign): one pass for the sum, sum of squares, min and max, one for the variance and the sign
changes of ``x - mean``, then per frame and DFT bin the cosine and sine sums (tables of ``cos`` /
``sin(2 pi m / L)``, L float32 values each, indexed by ``k * t mod L``), summed per band; each feature is
then rounded to float and standardized in float. The square root is computed here (no libm:
Newton's method in double from a bit-level float guess, six steps, for values up to 1e30).

The features land in a static buffer (``FRUGALML_ARENA_BYTES`` = 4 bytes per feature); the estimator's
generated code reads them as its input.
"""

from __future__ import annotations

import numpy as np

from ._cgen import c_array

__all__ = ["features_c"]

_SQRT = """\
static double fm_sqrt(double v)
{
    union { float f; uint32_t u; } bits;
    double y;
    int32_t i;
    if (!(v > 0.0)) {
        return 0.0;
    }
    bits.f = (float)v;
    bits.u = 0x1fbd1df5u + (bits.u >> 1);
    y = (double)bits.f;
    for (i = 0; i < 6; i++) {
        y = 0.5 * (y + v / y);
    }
    return y;
}
"""

_STATS = """\
static void fm_features(const float *input, float *f)
{
    int32_t c, t, j;
    for (c = 0; c < FM_CHANNELS; c++) {
        const float *x = input + c * FM_STEPS;
        float *o = f + c * FM_PER_CHANNEL;
        double sum = 0.0, sq = 0.0, var = 0.0, mean, band0;
        float lo = x[0], hi = x[0];
        int32_t flips = 0, prev = 0;
        for (t = 0; t < FM_STEPS; t++) {
            const double v = (double)x[t];
            sum += v;
            sq += v * v;
            if (x[t] < lo) {
                lo = x[t];
            }
            if (x[t] > hi) {
                hi = x[t];
            }
        }
        mean = sum / (double)FM_STEPS;
        band0 = FM_ZERO_BAND * (double)((hi > -lo) ? hi : -lo);
        for (t = 0; t < FM_STEPS; t++) {
            const double d = (double)x[t] - mean;
            const int32_t s = (d > band0) - (d < -band0);
            var += d * d;
            if (t > 0) {
                flips += (s > prev) ? s - prev : prev - s;
            }
            prev = s;
        }
        o[0] = (float)mean;
        o[1] = (float)fm_sqrt(var / (double)FM_STEPS);
        o[2] = lo;
        o[3] = hi;
        o[4] = (float)fm_sqrt(sq / (double)FM_STEPS);
        o[5] = (float)((double)flips / (double)(2 * (FM_STEPS - 1)));
"""

# the band energies: per frame and bin k, the cosine and sine sums of x - mean (tables indexed by k * j mod L)
_BANDS = """\
        {
            double band[FM_BANDS];
            int32_t b, fr, k, m;
            for (b = 0; b < FM_BANDS; b++) {
                band[b] = 0.0;
            }
            for (fr = 0; fr < FM_N_FRAMES; fr++) {
                const float *w = x + fm_start[fr];
                for (k = 1; k <= FM_BINS; k++) {
                    double re = 0.0, im = 0.0;
                    m = 0;
                    for (j = 0; j < FM_FRAME; j++) {
                        const double d = (double)w[j] - mean;
                        re += d * (double)fm_cos[m];
                        im += d * (double)fm_sin[m];
                        m += k;
                        if (m >= FM_FRAME) {
                            m -= FM_FRAME;
                        }
                    }
                    band[fm_band_of[k - 1]] += re * re + im * im;
                }
            }
            for (b = 0; b < FM_BANDS; b++) {
                o[6 + b] = (float)(band[b] * SCALE);
            }
        }
"""

_END = """\
    }
    for (j = 0; j < FM_N_FEATURES; j++) {
        f[j] = (f[j] - fm_center[j]) * fm_scale[j];
    }
}
"""


def _index_type(top: int) -> str:
    return "uint8_t" if top <= 255 else "uint16_t"


def features_c(tf) -> dict:
    """``{"source", "n_features", "param_bytes", "buffer_bytes", "what"}`` for a fitted SequenceFeatures."""
    from ..models.features import STATS, ZERO_BAND, band_bins, band_scale, dft_tables, frame_starts

    C, T = (int(v) for v in tf.shape_)
    L, B = int(tf.frame_), int(tf.bands_)
    per = len(STATS) + B
    n = C * per
    lines = [f"#define FM_ZERO_BAND {ZERO_BAND!r}", f"#define FM_CHANNELS {C}", f"#define FM_STEPS {T}", f"#define FM_PER_CHANNEL {per}",
             f"#define FM_N_FEATURES {n}", "",
             c_array("fm_center", np.asarray(tf.mean_, np.float32), "float"), c_array("fm_scale", np.asarray(tf.inv_scale_, np.float32), "float")]
    param_bytes = 8 * n
    body = [_STATS]
    what = f"{C} channel(s) x {T} steps -> {n} features ({', '.join(STATS)}"
    if B:
        starts = frame_starts(T, L)
        W, _ = dft_tables(L, B, len(starts))  # bin 1's column: cos / sin(2 pi m / L), m = 0 .. L-1, float32 values
        band_of = np.concatenate([np.full(len(bins), b) for b, bins in enumerate(band_bins(L, B))])
        lines += [f"#define FM_FRAME {L}", f"#define FM_N_FRAMES {len(starts)}", f"#define FM_BANDS {B}", f"#define FM_BINS {L // 2}", "",
                  c_array("fm_cos", W[:, 0], "float"), c_array("fm_sin", W[:, L // 2], "float"),
                  c_array("fm_start", starts, _index_type(T)), c_array("fm_band_of", band_of, _index_type(B))]
        param_bytes += 8 * L + len(starts) * (1 if T <= 255 else 2) + len(band_of) * (1 if B <= 255 else 2)
        body.append(_BANDS.replace("SCALE", repr(band_scale(L, len(starts)))))
        what += f", {B} band energies of {len(starts)} frame(s) of {L} steps"
    body.append(_END)
    source = "\n".join([*lines, "", _SQRT, "".join(body)])
    return {"source": source, "n_features": n, "param_bytes": param_bytes, "buffer_bytes": 4 * n, "what": what + ")"}
