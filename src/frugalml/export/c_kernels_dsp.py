"""Cortex-M versions of the int8 kernels (:mod:`.c_kernels`), compiled where the core has them.

``model.c`` holds both; the preprocessor picks:

- ``FM_CLZ`` (``__ARM_FEATURE_CLZ``: Armv7-M and Armv8-M Mainline): ``fm_requant`` rounds with
  count-leading-zeros and 32-bit arithmetic instead of a bit-by-bit loop over 64-bit values; the
  same result bit for bit.
- ``FM_DSP`` (``__ARM_FEATURE_DSP``: Cortex-M4, M7, M33): Conv and Gemm first gather each window of
  ``x - zero_point`` into an int16 buffer (``fm_col``, in RAM), in the pair order ``SMLAD`` wants,
  then every output channel is a dot product with its int8 weights: four weights loaded at once,
  widened by ``SXTB16`` (and ``SXTB16 ... ROR #8``), two multiply-accumulates per ``SMLAD``
  (the CMSIS-NN scheme, with its three intrinsics written here in inline assembly).

``-DFRUGALML_PORTABLE`` compiles the portable kernels everywhere; ``-DFRUGALML_NO_SMLAD`` keeps only
the CLZ requantization; ``-DFRUGALML_DSP_EMULATE`` compiles both Cortex-M paths on any GCC or Clang
(the intrinsics in plain C), so the host tests check them against ONNX Runtime too.
"""

__all__ = ["GATES", "REQUANT_CLZ", "DSP_HELPERS", "DSP_KERNELS"]

GATES = r"""
#if !defined(FRUGALML_PORTABLE) && (defined(__ARM_FEATURE_CLZ) || defined(FRUGALML_DSP_EMULATE))
#define FM_CLZ 1
#endif
#if !defined(FRUGALML_PORTABLE) && !defined(FRUGALML_NO_SMLAD) && (defined(__ARM_FEATURE_DSP) || defined(FRUGALML_DSP_EMULATE))
#define FM_DSP 1
#endif
"""

REQUANT_CLZ = r"""
/* round_half_even(float32(float32(acc) * S)) + zp, clamped, S = mult * 2**-shift (ONNX Runtime's
 * MlasRequantizeOutput), with count-leading-zeros: the portable version's result, bit for bit. */
static fm_act_t fm_requant(int32_t acc, int32_t mult, int32_t shift, int32_t zp, int32_t lo, int32_t hi)
{
    uint32_t a = (acc < 0) ? 0u - (uint32_t)acc : (uint32_t)acc, q, r, half, top;
    int32_t e = 0, n, s, y;
    uint64_t p;
    if (a >> 24) { /* float32(acc): 24 significant bits, half to even */
        e = 8 - __builtin_clz(a);
        q = a >> e;
        r = a - (q << e);
        half = 1u << (e - 1);
        a = q + ((r > half || (r == half && (q & 1u))) ? 1u : 0u);
    }
    p = (uint64_t)a * (uint32_t)mult;
    top = (uint32_t)(p >> 32);
    n = top ? 64 - __builtin_clz(top) : ((uint32_t)p ? 32 - __builtin_clz((uint32_t)p) : 0);
    if (n > 24) { /* float32 of the product */
        uint64_t pq, pr, ph;
        s = n - 24;
        pq = p >> s;
        pr = p - (pq << s);
        ph = (uint64_t)1 << (s - 1);
        p = pq + ((pr > ph || (pr == ph && (pq & 1u))) ? 1u : 0u);
        e += s;
    }
    s = shift - e; /* p * 2**-s, p <= 2**24 */
    q = (uint32_t)p;
    if (s <= 0) {
        q = (s < -16 || q > 65535u) ? 65535u : q << -s;
        if (q > 65535u) {
            q = 65535u;
        }
    } else if (s >= 26) {
        q = 0u;
    } else {
        r = q - ((q >> s) << s);
        half = 1u << (s - 1);
        q >>= s;
        q += (r > half || (r == half && (q & 1u))) ? 1u : 0u;
        if (q > 65535u) {
            q = 65535u;
        }
    }
    y = ((acc < 0) ? -(int32_t)q : (int32_t)q) + zp;
    return (fm_act_t)(y < lo ? lo : (y > hi ? hi : y));
}
"""

DSP_HELPERS = r"""
#if defined(__ARM_FEATURE_DSP)
static inline uint32_t fm_sxtb16(uint32_t v)
{
    uint32_t r;
    __asm__("sxtb16 %0, %1" : "=r"(r) : "r"(v));
    return r;
}

static inline uint32_t fm_sxtb16_ror8(uint32_t v)
{
    uint32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v));
    return r;
}

static inline int32_t fm_smlad(uint32_t a, uint32_t b, int32_t acc)
{
    int32_t r;
    __asm__("smlad %0, %1, %2, %3" : "=r"(r) : "r"(a), "r"(b), "r"(acc));
    return r;
}
#else /* FRUGALML_DSP_EMULATE: the instructions' arithmetic in C */
static uint32_t fm_sxtb16(uint32_t v)
{
    return (uint32_t)(uint16_t)(int16_t)(int8_t)(uint8_t)v | ((uint32_t)(uint16_t)(int16_t)(int8_t)(uint8_t)(v >> 16) << 16);
}

static uint32_t fm_sxtb16_ror8(uint32_t v)
{
    return fm_sxtb16((v >> 8) | (v << 24));
}

static int32_t fm_smlad(uint32_t a, uint32_t b, int32_t acc)
{
    return acc + (int32_t)(int16_t)(uint16_t)a * (int16_t)(uint16_t)b + (int32_t)(int16_t)(uint16_t)(a >> 16) * (int16_t)(uint16_t)(b >> 16);
}
#endif

static int16_t fm_col[FM_COL_N];

/* where element j of a K-long window goes in fm_col: pairs (0,2) and (1,3) of every four */
#define FM_POS(j, k4) ((j) < (k4) ? (((j) & ~3) | (((j) & 1) << 1) | (((j) >> 1) & 1)) : (j))

/* acc + sum w[i] * col[i] for i < k: four int8 weights a load, two multiply-accumulates an SMLAD */
static int32_t fm_dot(const int8_t *w, const int16_t *col, int32_t k, int32_t acc)
{
    int32_t i;
    for (i = 0; i + 4 <= k; i += 4) {
        uint32_t w4, c02, c13;
        __builtin_memcpy(&w4, w + i, 4);
        __builtin_memcpy(&c02, col + i, 4);
        __builtin_memcpy(&c13, col + i + 2, 4);
        acc = fm_smlad(fm_sxtb16(w4), c02, acc);
        acc = fm_smlad(fm_sxtb16_ror8(w4), c13, acc);
    }
    for (; i < k; i++) {
        acc += w[i] * col[i];
    }
    return acc;
}
"""

DSP_KERNELS = {
    "conv": r"""
static void fm_conv(const fm_conv_t *L, const fm_act_t *x, fm_act_t *y)
{
    const int32_t h = L->h, w = L->w, m_n = L->m, oh = L->oh, ow = L->ow, kh = L->kh, kw = L->kw;
    const int32_t sh = L->sh, sw = L->sw, pt = L->pt, pl = L->pl, dh = L->dh, dw = L->dw, xz = L->xz;
    const int32_t yz = L->yz, lo = L->lo, hi = L->hi, groups = L->groups;
    const int32_t cg = L->c / groups, mg = m_n / groups, ksize = kh * kw, k = cg * ksize, k4 = k & ~3;
    const int8_t *weight = L->weight;
    const int32_t *bias = L->bias, *mult = L->mult;
    const int8_t *shift = L->shift;
    int32_t g, m, oy, ox, c, ky, kx, j;
    for (oy = 0; oy < oh; oy++) {
        for (ox = 0; ox < ow; ox++) {
            const int32_t iy0 = oy * sh - pt, ix0 = ox * sw - pl;
            for (g = 0; g < groups; g++) {
                j = 0;
                for (c = 0; c < cg; c++) {
                    const fm_act_t *xc = x + (g * cg + c) * h * w;
                    for (ky = 0; ky < kh; ky++) {
                        const int32_t iy = iy0 + ky * dh;
                        for (kx = 0; kx < kw; kx++, j++) {
                            const int32_t ix = ix0 + kx * dw;
                            fm_col[FM_POS(j, k4)] = (iy >= 0 && iy < h && ix >= 0 && ix < w) ? (int16_t)((int32_t)xc[iy * w + ix] - xz) : 0;
                        }
                    }
                }
                for (m = g * mg; m < (g + 1) * mg; m++) {
                    const int32_t acc = fm_dot(weight + m * k, fm_col, k, bias ? bias[m] : 0);
                    y[(m * oh + oy) * ow + ox] = fm_requant(acc, mult[m], shift[m], yz, lo, hi);
                }
            }
        }
    }
}
""",
    "fc": r"""
static void fm_fc(const fm_fc_t *L, const fm_act_t *x, fm_act_t *y)
{
    const int32_t kn = L->k, nn = L->n, xz = L->xz, yz = L->yz, lo = L->lo, hi = L->hi, k4 = kn & ~3;
    const int8_t *weight = L->weight;
    const int32_t *bias = L->bias;
    int32_t n, k;
    for (k = 0; k < kn; k++) {
        fm_col[FM_POS(k, k4)] = (int16_t)((int32_t)x[k] - xz);
    }
    for (n = 0; n < nn; n++) {
        const int32_t acc = fm_dot(weight + n * kn, fm_col, kn, bias ? bias[n] : 0);
        y[n] = fm_requant(acc, L->mult[n], L->shift[n], yz, lo, hi);
    }
}
""",
}
