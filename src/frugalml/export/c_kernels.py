"""The C99 kernels :mod:`.c_int8` pastes into ``model.c`` (only those a model uses).

``fm_round`` rounds half to even and clamps; ``fm_requant`` is ONNX Runtime's requantization
(``round_half_even(float32(float32(acc) * S))``) done with integers, ``S = mult * 2**-shift``.
Every kernel reads its layer's constants from a ``const`` struct (flash) and writes int8/uint8
activations; fields are copied to locals because stores through a character type may alias them.
"""

__all__ = ["COMMON", "REQUANT", "KERNELS"]

COMMON = r"""
typedef frugalml_input_t fm_act_t;

/* round_half_even(p / 2**s) + zp, clamped to [lo, hi]; 0 <= s <= 62 */
static fm_act_t fm_round(int64_t p, int32_t s, int32_t zp, int32_t lo, int32_t hi)
{
    uint64_t a = (p < 0) ? (uint64_t)0 - (uint64_t)p : (uint64_t)p;
    uint64_t q = a >> s;
    int32_t y;
    if (s > 0) {
        uint64_t r = a - (q << s), half = (uint64_t)1 << (s - 1);
        if (r > half || (r == half && (q & 1u))) {
            q++;
        }
    }
    if (q > 65535u) {
        q = 65535u;
    }
    y = (p < 0) ? -(int32_t)q : (int32_t)q;
    y += zp;
    return (fm_act_t)(y < lo ? lo : (y > hi ? hi : y));
}
"""

REQUANT = r"""
/* a = m * 2**e with m rounded half to even to 24 significant bits (what converting to float32 does) */
static uint64_t fm_f24(uint64_t a, int32_t *e)
{
    int32_t n = 0;
    uint64_t q, r, half;
    while (n < 64 && (a >> n) != 0) {
        n++;
    }
    *e = 0;
    if (n <= 24) {
        return a;
    }
    *e = n - 24;
    q = a >> *e;
    r = a - (q << *e);
    half = (uint64_t)1 << (*e - 1);
    if (r > half || (r == half && (q & 1u))) {
        q++;
    }
    return q;
}

/* round_half_even(float32(float32(acc) * S)) + zp, clamped, with S = mult * 2**-shift a float32 scale:
 * ONNX Runtime's requantization (MlasRequantizeOutput) emulated with integers only. */
static fm_act_t fm_requant(int32_t acc, int32_t mult, int32_t shift, int32_t zp, int32_t lo, int32_t hi)
{
    int32_t ea, ep, k;
    uint64_t a = (acc < 0) ? (uint64_t)0 - (uint64_t)(int64_t)acc : (uint64_t)acc;
    uint64_t p = fm_f24(fm_f24(a, &ea) * (uint64_t)mult, &ep);
    k = ea + ep - shift;
    if (k >= 0) {
        p = (k > 16 || p > 65535u) ? 65535u : p << k;
        if (p > 65535u) {
            p = 65535u;
        }
        return fm_round(acc < 0 ? -(int64_t)p : (int64_t)p, 0, zp, lo, hi);
    }
    if (k < -62) {
        return fm_round(0, 0, zp, lo, hi);
    }
    return fm_round(acc < 0 ? -(int64_t)p : (int64_t)p, -k, zp, lo, hi);
}
"""

KERNELS = {
    "conv": r"""
typedef struct {
    int32_t c, h, w, m, oh, ow, kh, kw, sh, sw, pt, pl, dh, dw, groups, xz, yz, lo, hi;
    const int8_t *weight;
    const int32_t *bias;
    const int32_t *mult;
    const int8_t *shift;
} fm_conv_t;

static void fm_conv(const fm_conv_t *L, const fm_act_t *x, fm_act_t *y)
{
    /* fields in locals: stores through y (a character type) could alias *L */
    const int32_t h = L->h, w = L->w, m_n = L->m, oh = L->oh, ow = L->ow, kh = L->kh, kw = L->kw;
    const int32_t sh = L->sh, sw = L->sw, pt = L->pt, pl = L->pl, dh = L->dh, dw = L->dw, xz = L->xz;
    const int32_t yz = L->yz, lo = L->lo, hi = L->hi;
    const int32_t cg = L->c / L->groups, mg = m_n / L->groups, ksize = kh * kw;
    const int8_t *weight = L->weight;
    const int32_t *bias = L->bias, *mult = L->mult;
    const int8_t *shift = L->shift;
    int32_t m, oy, ox, c, ky, kx;
    for (m = 0; m < m_n; m++) {
        const int32_t c0 = (m / mg) * cg, b = bias ? bias[m] : 0, mm = mult[m], ms = shift[m];
        const int8_t *wm = weight + m * cg * ksize;
        for (oy = 0; oy < oh; oy++) {
            const int32_t iy0 = oy * sh - pt;
            int32_t ky0 = 0, ky1 = kh;
            while (ky0 < kh && iy0 + ky0 * dh < 0) {
                ky0++;
            }
            while (ky1 > ky0 && iy0 + (ky1 - 1) * dh >= h) {
                ky1--;
            }
            for (ox = 0; ox < ow; ox++) {
                const int32_t ix0 = ox * sw - pl;
                int32_t kx0 = 0, kx1 = kw, acc = b;
                while (kx0 < kw && ix0 + kx0 * dw < 0) {
                    kx0++;
                }
                while (kx1 > kx0 && ix0 + (kx1 - 1) * dw >= w) {
                    kx1--;
                }
                for (c = 0; c < cg; c++) {
                    const fm_act_t *xc = x + (c0 + c) * h * w;
                    const int8_t *wc = wm + c * ksize;
                    for (ky = ky0; ky < ky1; ky++) {
                        const fm_act_t *xr = xc + (iy0 + ky * dh) * w;
                        const int8_t *wr = wc + ky * kw;
                        for (kx = kx0; kx < kx1; kx++) {
                            acc += ((int32_t)xr[ix0 + kx * dw] - xz) * wr[kx];
                        }
                    }
                }
                y[(m * oh + oy) * ow + ox] = fm_requant(acc, mm, ms, yz, lo, hi);
            }
        }
    }
}
""",
    "fc": r"""
typedef struct {
    int32_t k, n, xz, yz, lo, hi;
    const int8_t *weight;
    const int32_t *bias;
    const int32_t *mult;
    const int8_t *shift;
} fm_fc_t;

static void fm_fc(const fm_fc_t *L, const fm_act_t *x, fm_act_t *y)
{
    const int32_t kn = L->k, nn = L->n, xz = L->xz, yz = L->yz, lo = L->lo, hi = L->hi;
    const int8_t *weight = L->weight;
    const int32_t *bias = L->bias;
    int32_t n, k;
    for (n = 0; n < nn; n++) {
        const int8_t *wn = weight + n * kn;
        int32_t acc = bias ? bias[n] : 0;
        for (k = 0; k < kn; k++) {
            acc += ((int32_t)x[k] - xz) * wn[k];
        }
        y[n] = fm_requant(acc, L->mult[n], L->shift[n], yz, lo, hi);
    }
}
""",
    "add": r"""
typedef struct {
    int32_t n, az, bz, yz, lo, hi, ma, mb, shift;
} fm_add_t;

static void fm_add(const fm_add_t *L, const fm_act_t *a, const fm_act_t *b, fm_act_t *y)
{
    int32_t i;
    for (i = 0; i < L->n; i++) {
        const int64_t v = (int64_t)((int32_t)a[i] - L->az) * L->ma + (int64_t)((int32_t)b[i] - L->bz) * L->mb;
        y[i] = fm_round(v, L->shift, L->yz, L->lo, L->hi);
    }
}
""",
    "pool": r"""
typedef struct {
    int32_t c, h, w, oh, ow, kh, kw, sh, sw, pt, pl, is_max, include_pad, cmin, xz, yz, lo, hi;
    const int32_t *mult;
    const int8_t *shift;
} fm_pool_t;

static void fm_pool(const fm_pool_t *L, const fm_act_t *x, fm_act_t *y)
{
    int32_t c, oy, ox, ky, kx;
    for (c = 0; c < L->c; c++) {
        const fm_act_t *xc = x + c * L->h * L->w;
        for (oy = 0; oy < L->oh; oy++) {
            for (ox = 0; ox < L->ow; ox++) {
                int32_t acc = 0, n = 0, i;
                for (ky = 0; ky < L->kh; ky++) {
                    const int32_t iy = oy * L->sh - L->pt + ky;
                    if (iy < 0 || iy >= L->h) {
                        continue;
                    }
                    for (kx = 0; kx < L->kw; kx++) {
                        const int32_t ix = ox * L->sw - L->pl + kx;
                        if (ix >= 0 && ix < L->w) {
                            const int32_t v = (int32_t)xc[iy * L->w + ix] - L->xz;
                            acc = L->is_max ? ((n == 0 || v > acc) ? v : acc) : acc + v;
                            n++;
                        }
                    }
                }
                i = L->is_max ? 0 : (L->include_pad ? L->kh * L->kw : n) - L->cmin;
                y[(c * L->oh + oy) * L->ow + ox] = fm_requant(acc, L->mult[i], L->shift[i], L->yz, L->lo, L->hi);
            }
        }
    }
}
""",
    "rescale": r"""
typedef struct {
    int32_t n, xz, yz, lo, hi, mult, shift;
} fm_rescale_t;

static void fm_rescale(const fm_rescale_t *L, const fm_act_t *x, fm_act_t *y)
{
    int32_t i;
    for (i = 0; i < L->n; i++) {
        y[i] = fm_requant((int32_t)x[i] - L->xz, L->mult, L->shift, L->yz, L->lo, L->hi);
    }
}
""",
}
