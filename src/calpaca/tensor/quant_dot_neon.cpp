// AArch64 NEON fast quantized kernels: the functions of quant_dot.h for every weight type
// (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 against Q8_0 / Q8_1; Q2_K .. Q6_K against Q8_K) and the
// activation quantizers. Built when the compiler targets AArch64 with NEON (always on for
// AArch64) and not x86 AVX2; otherwise quant_dot_x86.cpp or quant_dot_generic.cpp provides
// the same functions.
//
// Technique: weight codes are unpacked to one signed byte per element (16 per register),
// with the format's offset (-8, -16, -32, -4) subtracted in the byte lanes, so every
// product is a plain s8×s8 one. Sixteen products are summed into four int32 lanes by
// `vdotq_s32` when the build targets the dot-product extension (__ARM_FEATURE_DOTPROD,
// e.g. -march=armv8.2-a+dotprod), else by `vmull_s8` (int16 products, |p| <= 2^14) and
// `vpadalq_s16` (pairwise add into int32). Lane grouping differs between the two, but each
// vector covers exactly one (sub-)block, so its lane total — the integer block sum — is the
// same. Sub-block scales multiply the int32 lanes (`vmlaq_n_s32`), K-quant mins go through
// the activation block sums (Q8_K's bsums), Q4_1 / Q5_1 offsets through Q8_1's s; each block
// is scaled in f32 once, as the reference does, so results differ from quant_dot_ref.cpp
// only by f32 summation order. The activation quantizers are byte-identical to the
// reference ones (`vcvtaq_s32_f32` is roundf, `vcvtnq_s32_f32` is nearest-even).
#if defined(__ARM_NEON) && defined(__aarch64__) && !(defined(__AVX2__) && defined(__FMA__) && defined(__F16C__))

#include <arm_neon.h>

#include <cmath>
#include <cstring>

#include "calpaca/base/error.h"
#include "calpaca/tensor/quant.h"
#include "calpaca/tensor/quant_blocks.h"
#include "calpaca/tensor/quant_dot.h"

namespace calpaca {

using namespace quant;

namespace {

inline float h2f(uint16_t h) { return vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(h))), 0); }

// acc + sums of s8×s8 products of a and b, four int32 lanes whose total is the full dot.
inline int32x4_t dot16(int32x4_t acc, int8x16_t a, int8x16_t b) {
#if defined(__ARM_FEATURE_DOTPROD)
    return vdotq_s32(acc, a, b);
#else
    acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(a), vget_low_s8(b)));
    return vpadalq_s16(acc, vmull_high_s8(a, b));
#endif
}
inline int32x4_t dot32(int8x16_t a0, int8x16_t a1, const int8_t* y) {
    return dot16(dot16(vdupq_n_s32(0), a0, vld1q_s8(y)), a1, vld1q_s8(y + 16));
}
inline int8x16_t s8(uint8x16_t v) { return vreinterpretq_s8_u8(v); }

// ------------------------------------------------------------------ legacy × Q8_0 / Q8_1
struct Codes32 {  // elements 0..15 and 16..31 of a block, one signed byte each
    int8x16_t lo, hi;
};

// The legacy nibble layout: element j (j<16) = low nibble of qs[j], element j+16 = high nibble.
inline Codes32 nibbles32(const uint8_t* qs) {
    const uint8x16_t v = vld1q_u8(qs);
    return {s8(vandq_u8(v, vdupq_n_u8(0x0F))), s8(vshrq_n_u8(v, 4))};
}
// 32 bits (little-endian bytes qh[0..3]) → 0x10 in byte j where bit j is set, j < 32.
inline void high_bits32(const uint8_t* qh, uint8x16_t& lo, uint8x16_t& hi) {
    static const uint8_t kIdxLo[16] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1};
    static const uint8_t kIdxHi[16] = {2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3};
    static const uint8_t kBit[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    uint8_t b[16] = {qh[0], qh[1], qh[2], qh[3]};
    const uint8x16_t bytes = vld1q_u8(b), bit = vld1q_u8(kBit), ten = vdupq_n_u8(0x10);
    lo = vandq_u8(vtstq_u8(vqtbl1q_u8(bytes, vld1q_u8(kIdxLo)), bit), ten);
    hi = vandq_u8(vtstq_u8(vqtbl1q_u8(bytes, vld1q_u8(kIdxHi)), bit), ten);
}

struct DecQ4_0 {
    static Codes32 codes(const BlockQ4_0& b) {
        const Codes32 c = nibbles32(b.qs);
        return {vsubq_s8(c.lo, vdupq_n_s8(8)), vsubq_s8(c.hi, vdupq_n_s8(8))};
    }
};
struct DecQ4_1 {
    static Codes32 codes(const BlockQ4_1& b) { return nibbles32(b.qs); }
};
template <typename B>
Codes32 five_bit(const B& b) {  // Q5_0 / Q5_1: nibble | 5th bit, unsigned 0..31
    uint8x16_t hl, hh;
    high_bits32(b.qh, hl, hh);
    const Codes32 c = nibbles32(b.qs);
    return {vorrq_s8(c.lo, s8(hl)), vorrq_s8(c.hi, s8(hh))};
}
struct DecQ5_0 {
    static Codes32 codes(const BlockQ5_0& b) {
        const Codes32 c = five_bit(b);
        return {vsubq_s8(c.lo, vdupq_n_s8(16)), vsubq_s8(c.hi, vdupq_n_s8(16))};
    }
};
struct DecQ5_1 {
    static Codes32 codes(const BlockQ5_1& b) { return five_bit(b); }
};
struct DecQ8_0 {
    static Codes32 codes(const BlockQ8_0& b) { return {vld1q_s8(b.qs), vld1q_s8(b.qs + 16)}; }
};

// Signed weight codes against Q8_0; two accumulators per row hide the FMA latency.
template <int NT, typename B, typename Dec>
void dot_sym(const void* w, const void* const* a, int64_t nb, float* out) {
    const B* x = static_cast<const B*>(w);
    const BlockQ8_0* y[NT];
    float32x4_t acc[2][NT];
    for (int k = 0; k < NT; ++k) {
        y[k] = static_cast<const BlockQ8_0*>(a[k]);
        acc[0][k] = acc[1][k] = vdupq_n_f32(0);
    }
    auto step = [&](int64_t b, float32x4_t* ac) {
        const Codes32 q = Dec::codes(x[b]);
        const float dw = h2f(x[b].d);
        for (int k = 0; k < NT; ++k) {
            const int32x4_t p = dot32(q.lo, q.hi, y[k][b].qs);
            ac[k] = vfmaq_n_f32(ac[k], vcvtq_f32_s32(p), dw * h2f(y[k][b].d));
        }
    };
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2) {
        step(b, acc[0]);
        step(b + 1, acc[1]);
    }
    if (b < nb) step(b, acc[0]);
    for (int k = 0; k < NT; ++k) out[k] = vaddvq_f32(vaddq_f32(acc[0][k], acc[1][k]));
}

// Unsigned weight codes with an offset m against Q8_1 (its s = d * sum of quants).
template <int NT, typename B, typename Dec>
void dot_affine(const void* w, const void* const* a, int64_t nb, float* out) {
    const B* x = static_cast<const B*>(w);
    const BlockQ8_1* y[NT];
    float32x4_t acc[2][NT];
    float macc[NT];
    for (int k = 0; k < NT; ++k) {
        y[k] = static_cast<const BlockQ8_1*>(a[k]);
        acc[0][k] = acc[1][k] = vdupq_n_f32(0);
        macc[k] = 0;
    }
    auto step = [&](int64_t b, float32x4_t* ac) {
        const Codes32 q = Dec::codes(x[b]);
        const float dw = h2f(x[b].d), mw = h2f(x[b].m);
        for (int k = 0; k < NT; ++k) {
            const int32x4_t p = dot32(q.lo, q.hi, y[k][b].qs);
            ac[k] = vfmaq_n_f32(ac[k], vcvtq_f32_s32(p), dw * h2f(y[k][b].d));
            macc[k] += mw * h2f(y[k][b].s);
        }
    };
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2) {
        step(b, acc[0]);
        step(b + 1, acc[1]);
    }
    if (b < nb) step(b, acc[0]);
    for (int k = 0; k < NT; ++k) out[k] = vaddvq_f32(vaddq_f32(acc[0][k], acc[1][k])) + macc[k];
}

// ------------------------------------------------------------------ K-quants × Q8_K
template <int NT>
void load_q8k(const void* const* a, const BlockQ8_K** y) {
    for (int k = 0; k < NT; ++k) y[k] = static_cast<const BlockQ8_K*>(a[k]);
}

// Σ_s m[s] * bsums[s] over 16 sub-blocks of 16 (m: 16 unsigned bytes).
inline int mins_dot_bsums16(uint8x16_t m, const int16_t* bsums) {
    const int16x8_t m0 = vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(m)));
    const int16x8_t m1 = vreinterpretq_s16_u16(vmovl_high_u8(m));
    const int16x8_t b0 = vld1q_s16(bsums), b1 = vld1q_s16(bsums + 8);
    int32x4_t s = vmull_s16(vget_low_s16(m0), vget_low_s16(b0));
    s = vmlal_high_s16(s, m0, b0);
    s = vmlal_s16(s, vget_low_s16(m1), vget_low_s16(b1));
    s = vmlal_high_s16(s, m1, b1);
    return vaddvq_s32(s);
}

// Q2_K: el. 128h + 32j + l has code (qs[32h + l] >> 2j) & 3 in sub-block 8h + 2j + l/16;
// x = d*scale*q - dmin*min.
template <int NT>
void dot_q2_K(const void* w, const void* const* a, int64_t nb, float* out) {
    const BlockQ2_K* x = static_cast<const BlockQ2_K*>(w);
    const BlockQ8_K* y[NT];
    load_q8k<NT>(a, y);
    float acc[NT], macc[NT];
    for (int k = 0; k < NT; ++k) acc[k] = macc[k] = 0;
    const uint8x16_t m3 = vdupq_n_u8(3);
    for (int64_t b = 0; b < nb; ++b) {
        const uint8x16_t raw = vld1q_u8(x[b].scales);
        uint8_t sc[16];
        vst1q_u8(sc, vandq_u8(raw, vdupq_n_u8(0x0F)));
        int32x4_t sumi[NT];
        for (int k = 0; k < NT; ++k) sumi[k] = vdupq_n_s32(0);
        for (int h = 0; h < 2; ++h) {
            uint8x16_t q0 = vld1q_u8(x[b].qs + 32 * h), q1 = vld1q_u8(x[b].qs + 32 * h + 16);
            for (int j = 0; j < 4; ++j) {
                const int8x16_t c0 = s8(vandq_u8(q0, m3)), c1 = s8(vandq_u8(q1, m3));
                const int s = 8 * h + 2 * j, off = 128 * h + 32 * j;
                for (int k = 0; k < NT; ++k) {
                    sumi[k] = vmlaq_n_s32(sumi[k], dot16(vdupq_n_s32(0), c0, vld1q_s8(y[k][b].qs + off)), sc[s]);
                    sumi[k] = vmlaq_n_s32(sumi[k], dot16(vdupq_n_s32(0), c1, vld1q_s8(y[k][b].qs + off + 16)), sc[s + 1]);
                }
                q0 = vshrq_n_u8(q0, 2);
                q1 = vshrq_n_u8(q1, 2);
            }
        }
        const float d = h2f(x[b].d), dmin = h2f(x[b].dmin);
        const uint8x16_t mins = vshrq_n_u8(raw, 4);
        for (int k = 0; k < NT; ++k) {
            const float dy = y[k][b].d;
            acc[k] += d * dy * static_cast<float>(vaddvq_s32(sumi[k]));
            macc[k] += dmin * dy * static_cast<float>(mins_dot_bsums16(mins, y[k][b].bsums));
        }
    }
    for (int k = 0; k < NT; ++k) out[k] = acc[k] - macc[k];
}

// Q3_K: low 2 bits as Q2_K, high bit of el. 128h + 32j + l = hmask[l] bit 4h + j; code =
// low + 4*high - 4, signed scales per 16 elements.
template <int NT>
void dot_q3_K(const void* w, const void* const* a, int64_t nb, float* out) {
    const BlockQ3_K* x = static_cast<const BlockQ3_K*>(w);
    const BlockQ8_K* y[NT];
    load_q8k<NT>(a, y);
    float acc[NT];
    for (int k = 0; k < NT; ++k) acc[k] = 0;
    const uint8x16_t m3 = vdupq_n_u8(3), one = vdupq_n_u8(1);
    const int8x16_t four = vdupq_n_s8(4);
    for (int64_t b = 0; b < nb; ++b) {
        int8_t sc[16];
        unpack_q3k_scales(x[b].scales, sc);
        int32x4_t sumi[NT];
        for (int k = 0; k < NT; ++k) sumi[k] = vdupq_n_s32(0);
        uint8x16_t hm0 = vld1q_u8(x[b].hmask), hm1 = vld1q_u8(x[b].hmask + 16);  // bit 4h + j at bit 0
        for (int h = 0; h < 2; ++h) {
            uint8x16_t q0 = vld1q_u8(x[b].qs + 32 * h), q1 = vld1q_u8(x[b].qs + 32 * h + 16);
            for (int j = 0; j < 4; ++j) {
                const uint8x16_t u0 = vorrq_u8(vandq_u8(q0, m3), vshlq_n_u8(vandq_u8(hm0, one), 2));
                const uint8x16_t u1 = vorrq_u8(vandq_u8(q1, m3), vshlq_n_u8(vandq_u8(hm1, one), 2));
                const int8x16_t c0 = vsubq_s8(s8(u0), four), c1 = vsubq_s8(s8(u1), four);
                const int s = 8 * h + 2 * j, off = 128 * h + 32 * j;
                for (int k = 0; k < NT; ++k) {
                    sumi[k] = vmlaq_n_s32(sumi[k], dot16(vdupq_n_s32(0), c0, vld1q_s8(y[k][b].qs + off)), sc[s]);
                    sumi[k] = vmlaq_n_s32(sumi[k], dot16(vdupq_n_s32(0), c1, vld1q_s8(y[k][b].qs + off + 16)), sc[s + 1]);
                }
                q0 = vshrq_n_u8(q0, 2);
                q1 = vshrq_n_u8(q1, 2);
                hm0 = vshrq_n_u8(hm0, 1);
                hm1 = vshrq_n_u8(hm1, 1);
            }
        }
        const float d = h2f(x[b].d);
        for (int k = 0; k < NT; ++k) acc[k] += d * y[k][b].d * static_cast<float>(vaddvq_s32(sumi[k]));
    }
    for (int k = 0; k < NT; ++k) out[k] = acc[k];
}

// Q4_K / Q5_K: el. 64p + l (l<32) is the low nibble of qs[32p + l] (sub-block 2p), el. 64p +
// 32 + l the high nibble (sub-block 2p + 1); Q5_K's 5th bits are qh[l] bits 2p and 2p + 1.
template <int NT, bool kFive, typename B>
void dot_q45_K(const void* w, const void* const* a, int64_t nb, float* out) {
    const B* x = static_cast<const B*>(w);
    const BlockQ8_K* y[NT];
    load_q8k<NT>(a, y);
    float acc[NT], macc[NT];
    for (int k = 0; k < NT; ++k) acc[k] = macc[k] = 0;
    const uint8x16_t m4 = vdupq_n_u8(0x0F), one = vdupq_n_u8(1);
    for (int64_t b = 0; b < nb; ++b) {
        uint8_t sc[8], mn[8];
        for (int s = 0; s < 8; ++s) scale_min_k4(s, x[b].scales, sc[s], mn[s]);
        uint8x16_t hb0 = vdupq_n_u8(0), hb1 = vdupq_n_u8(0);
        if constexpr (kFive) hb0 = vld1q_u8(x[b].qh), hb1 = vld1q_u8(x[b].qh + 16);
        int32x4_t sumi[NT];
        for (int k = 0; k < NT; ++k) sumi[k] = vdupq_n_s32(0);
        for (int p = 0; p < 4; ++p) {
            const uint8x16_t q0 = vld1q_u8(x[b].qs + 32 * p), q1 = vld1q_u8(x[b].qs + 32 * p + 16);
            uint8x16_t l0 = vandq_u8(q0, m4), l1 = vandq_u8(q1, m4);
            uint8x16_t h0 = vshrq_n_u8(q0, 4), h1 = vshrq_n_u8(q1, 4);
            if constexpr (kFive) {
                l0 = vorrq_u8(l0, vshlq_n_u8(vandq_u8(hb0, one), 4));
                l1 = vorrq_u8(l1, vshlq_n_u8(vandq_u8(hb1, one), 4));
                h0 = vorrq_u8(h0, vshlq_n_u8(vandq_u8(vshrq_n_u8(hb0, 1), one), 4));
                h1 = vorrq_u8(h1, vshlq_n_u8(vandq_u8(vshrq_n_u8(hb1, 1), one), 4));
                hb0 = vshrq_n_u8(hb0, 2);
                hb1 = vshrq_n_u8(hb1, 2);
            }
            for (int k = 0; k < NT; ++k) {
                const int8_t* yq = y[k][b].qs + 64 * p;
                sumi[k] = vmlaq_n_s32(sumi[k], dot32(s8(l0), s8(l1), yq), sc[2 * p]);
                sumi[k] = vmlaq_n_s32(sumi[k], dot32(s8(h0), s8(h1), yq + 32), sc[2 * p + 1]);
            }
        }
        const int16x8_t mins = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(mn)));
        const float d = h2f(x[b].d), dmin = h2f(x[b].dmin);
        for (int k = 0; k < NT; ++k) {
            const float dy = y[k][b].d;
            acc[k] += d * dy * static_cast<float>(vaddvq_s32(sumi[k]));
            // sums of 32 activations per sub-block from the 16 bsums, times the mins
            const int16x8_t pairs = vpaddq_s16(vld1q_s16(y[k][b].bsums), vld1q_s16(y[k][b].bsums + 8));
            const int32x4_t ms = vmlal_high_s16(vmull_s16(vget_low_s16(pairs), vget_low_s16(mins)), pairs, mins);
            macc[k] += dmin * dy * static_cast<float>(vaddvq_s32(ms));
        }
    }
    for (int k = 0; k < NT; ++k) out[k] = acc[k] - macc[k];
}

// Q6_K: el. 128h + 32c + l: low 4 bits from ql[64h + l + 32*(c&1)] (nibble c/2), high 2 bits
// (qh[32h + l] >> 2c) & 3; code - 32; signed scales per 16 elements.
template <int NT>
void dot_q6_K(const void* w, const void* const* a, int64_t nb, float* out) {
    const BlockQ6_K* x = static_cast<const BlockQ6_K*>(w);
    const BlockQ8_K* y[NT];
    load_q8k<NT>(a, y);
    float acc[NT];
    for (int k = 0; k < NT; ++k) acc[k] = 0;
    const uint8x16_t m4 = vdupq_n_u8(0x0F), m3 = vdupq_n_u8(3);
    const int8x16_t k32 = vdupq_n_s8(32);
    for (int64_t b = 0; b < nb; ++b) {
        const int8_t* sc = x[b].scales;
        int32x4_t sumi[NT];
        for (int k = 0; k < NT; ++k) sumi[k] = vdupq_n_s32(0);
        for (int h = 0; h < 2; ++h) {
            const uint8_t* ql = x[b].ql + 64 * h;
            const uint8x16_t la0 = vld1q_u8(ql), la1 = vld1q_u8(ql + 16);  // c = 0, 2
            const uint8x16_t lb0 = vld1q_u8(ql + 32), lb1 = vld1q_u8(ql + 48);  // c = 1, 3
            uint8x16_t qh0 = vld1q_u8(x[b].qh + 32 * h), qh1 = vld1q_u8(x[b].qh + 32 * h + 16);
            for (int c = 0; c < 4; ++c) {
                const uint8x16_t s0 = (c & 1) ? lb0 : la0, s1 = (c & 1) ? lb1 : la1;
                const uint8x16_t n0 = (c >> 1) ? vshrq_n_u8(s0, 4) : vandq_u8(s0, m4);
                const uint8x16_t n1 = (c >> 1) ? vshrq_n_u8(s1, 4) : vandq_u8(s1, m4);
                const int8x16_t c0 = vsubq_s8(s8(vorrq_u8(n0, vshlq_n_u8(vandq_u8(qh0, m3), 4))), k32);
                const int8x16_t c1 = vsubq_s8(s8(vorrq_u8(n1, vshlq_n_u8(vandq_u8(qh1, m3), 4))), k32);
                const int s = 8 * h + 2 * c, off = 128 * h + 32 * c;
                for (int k = 0; k < NT; ++k) {
                    sumi[k] = vmlaq_n_s32(sumi[k], dot16(vdupq_n_s32(0), c0, vld1q_s8(y[k][b].qs + off)), sc[s]);
                    sumi[k] = vmlaq_n_s32(sumi[k], dot16(vdupq_n_s32(0), c1, vld1q_s8(y[k][b].qs + off + 16)), sc[s + 1]);
                }
                qh0 = vshrq_n_u8(qh0, 2);
                qh1 = vshrq_n_u8(qh1, 2);
            }
        }
        const float d = h2f(x[b].d);
        for (int k = 0; k < NT; ++k) acc[k] += d * y[k][b].d * static_cast<float>(vaddvq_s32(sumi[k]));
    }
    for (int k = 0; k < NT; ++k) out[k] = acc[k];
}

template <int NT>
void dispatch_dot(DType t, const void* w, const void* const* a, int64_t n, float* out) {
    switch (t) {
        case DType::Q4_0: return dot_sym<NT, BlockQ4_0, DecQ4_0>(w, a, n / QK, out);
        case DType::Q5_0: return dot_sym<NT, BlockQ5_0, DecQ5_0>(w, a, n / QK, out);
        case DType::Q8_0: return dot_sym<NT, BlockQ8_0, DecQ8_0>(w, a, n / QK, out);
        case DType::Q4_1: return dot_affine<NT, BlockQ4_1, DecQ4_1>(w, a, n / QK, out);
        case DType::Q5_1: return dot_affine<NT, BlockQ5_1, DecQ5_1>(w, a, n / QK, out);
        case DType::Q2_K: return dot_q2_K<NT>(w, a, n / QK_K, out);
        case DType::Q3_K: return dot_q3_K<NT>(w, a, n / QK_K, out);
        case DType::Q4_K: return dot_q45_K<NT, false, BlockQ4_K>(w, a, n / QK_K, out);
        case DType::Q5_K: return dot_q45_K<NT, true, BlockQ5_K>(w, a, n / QK_K, out);
        case DType::Q6_K: return dot_q6_K<NT>(w, a, n / QK_K, out);
        default: fail("no quantized dot product for weight type {}", dtype_name(t));
    }
}

// ------------------------------------------------------------------ activation quantizers
// 4 int32x4 (values within int8 range) → 16 int8 in order.
inline int8x16_t narrow16(int32x4_t a, int32x4_t b, int32x4_t c, int32x4_t d) {
    const int16x8_t ab = vcombine_s16(vqmovn_s32(a), vqmovn_s32(b));
    const int16x8_t cd = vcombine_s16(vqmovn_s32(c), vqmovn_s32(d));
    return vcombine_s8(vqmovn_s16(ab), vqmovn_s16(cd));
}

// Q8_0 / Q8_1: d = absmax / 127, code = roundf(x * (1/d)) — vcvtaq rounds ties away from zero.
// vmaxnm skips NaN inputs as the reference's std::max(amax, |x|) does.
template <bool kSum, typename B>
void quantize_q8_legacy(const float* x, B* y, int64_t n) {
    for (int64_t b = 0; b < n / QK; ++b, x += QK) {
        float32x4_t v[8];
        for (int i = 0; i < 8; ++i) v[i] = vld1q_f32(x + 4 * i);
        float32x4_t m = vabsq_f32(v[0]);
        for (int i = 1; i < 8; ++i) m = vmaxnmq_f32(m, vabsq_f32(v[i]));
        const float amax = vmaxnmvq_f32(m);
        const float d = amax / 127;
        const float id = d != 0 ? 1.0f / d : 0.0f;
        y[b].d = fp32_to_fp16(d);
        int32x4_t q[8];
        for (int i = 0; i < 8; ++i) q[i] = vcvtaq_s32_f32(vmulq_n_f32(v[i], id));
        const int8x16_t lo = narrow16(q[0], q[1], q[2], q[3]), hi = narrow16(q[4], q[5], q[6], q[7]);
        vst1q_s8(y[b].qs, lo);
        vst1q_s8(y[b].qs + 16, hi);
        if constexpr (kSum) {
            const int sum = vaddlvq_s8(lo) + vaddlvq_s8(hi);
            y[b].s = fp32_to_fp16(static_cast<float>(sum) * d);
        }
    }
}

// Q8_K: iscale = -127 / (the first element of largest magnitude, with its sign), code =
// min(127, nearest-even(iscale * x)); bsums = sums of 16 codes.
void quantize_q8_K(const float* x, BlockQ8_K* y, int64_t n) {
    for (int64_t b = 0; b < n / QK_K; ++b, x += QK_K) {
        float32x4_t m = vdupq_n_f32(0);
        for (int i = 0; i < QK_K; i += 4) m = vmaxnmq_f32(m, vabsq_f32(vld1q_f32(x + i)));
        const float amax = vmaxnmvq_f32(m);
        BlockQ8_K& o = y[b];
        if (amax == 0) {
            std::memset(&o, 0, sizeof(o));
            continue;
        }
        float mx = 0;
        for (int j = 0; j < QK_K; ++j)
            if (std::fabs(x[j]) == amax) {
                mx = x[j];
                break;
            }
        const float iscale = -127.f / mx;
        const int32x4_t lim = vdupq_n_s32(127);
        for (int i = 0; i < QK_K; i += 16) {
            int32x4_t q[4];
            for (int j = 0; j < 4; ++j) q[j] = vminq_s32(vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(x + i + 4 * j), iscale)), lim);
            const int8x16_t v = narrow16(q[0], q[1], q[2], q[3]);
            vst1q_s8(o.qs + i, v);
            o.bsums[i / 16] = vaddlvq_s8(v);
        }
        o.d = 1 / iscale;
    }
}

}  // namespace

void quantize_act(DType act, const float* x, void* y, int64_t n) {
    if (n % dtype_info(act).block_size) fail("quantize_act: {} elements is not a multiple of the {} block size", n, dtype_name(act));
    switch (act) {
        case DType::Q8_0: return quantize_q8_legacy<false>(x, static_cast<BlockQ8_0*>(y), n);
        case DType::Q8_1: return quantize_q8_legacy<true>(x, static_cast<BlockQ8_1*>(y), n);
        case DType::Q8_K: return quantize_q8_K(x, static_cast<BlockQ8_K*>(y), n);
        default: quantize_act_ref(act, x, y, n);
    }
}

void vec_dot_q(DType w, const void* wrow, const void* const* arows, int nt, int64_t n, float* out) {
    if (n % dtype_info(w).block_size) fail("dot: row of {} elements is not a multiple of the {} block size", n, dtype_name(w));
    switch (nt) {
        case 1: return dispatch_dot<1>(w, wrow, arows, n, out);
        case 2: return dispatch_dot<2>(w, wrow, arows, n, out);
        case 3: return dispatch_dot<3>(w, wrow, arows, n, out);
        case 4: return dispatch_dot<4>(w, wrow, arows, n, out);
        default: fail("vec_dot_q: {} activation rows (expected 1 to 4)", nt);
    }
}

const char* quant_kernel_isa() {
#if defined(__ARM_FEATURE_DOTPROD)
    return "neon-dotprod";
#else
    return "neon";
#endif
}

}  // namespace calpaca

#endif  // AArch64 NEON
