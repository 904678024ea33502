// x86 fast quantized kernels (AVX2 + FMA + F16C; the u8×s8 dot of the legacy types uses
// VPDPBUSD when the build targets AVX-512 VNNI or AVX-VNNI). Built when the compiler targets
// AVX2 (CALPACA_NATIVE on an AVX2 machine, or -march=x86-64-v3); otherwise
// quant_dot_neon.cpp (AArch64) or quant_dot_generic.cpp provides the same functions.
//
// Technique (the standard one for int8 SIMD): weight codes are unpacked to 32 bytes per
// 32 elements; _mm256_maddubs_epi16 multiplies unsigned codes by signed activation bytes
// and adds pairs into int16 (no overflow: codes <= 63, |activation| <= 127), and
// _mm256_madd_epi16 against the sub-block scale (or against 1) widens to int32. Signed
// weight codes use |w| with the sign moved onto the activation (_mm256_sign_epi8).
// Offsets (-8, -16, -32, -4) and K-quant mins are applied through the activation block
// sums (Q8_1's s, Q8_K's bsums) instead of per element.
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)

#include <immintrin.h>

#include <cmath>
#include <cstring>

#include "calpaca/base/error.h"
#include "calpaca/tensor/quant.h"
#include "calpaca/tensor/quant_blocks.h"
#include "calpaca/tensor/quant_dot.h"
#include "calpaca/tensor/simd_x86.h"

namespace calpaca {

using namespace quant;
using namespace x86;

namespace {

inline uint16_t f2h(float f) { return static_cast<uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT)); }

inline int hsum_i32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}
inline int hsum_i32_128(__m128i s) {
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}
inline float hmax(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}
inline __m256 abs_ps(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }

// u8 codes × s8 activations, pairs summed and multiplied by a per-16-element int16 scale.
inline __m256i dot_scaled(__m256i q, __m256i y, __m256i scale16) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(q, y), scale16);
}
// The 16 per-16-element scales of a K-quant super-block as int16 (sc16): pair_scales(sc16, i)
// (i < 8) scales elements 0..15 of a 32-byte step by sc[2i] and 16..31 by sc[2i + 1], made by two
// shuffles of sc16 (the half's 128 bits in both lanes, then its lanes 2c / 2c + 1 broadcast per
// lane). Scalar loads, broadcasts and an insert per pair were about a third of the Q6_K decode
// kernel's instructions.
inline __m256i pair_scales(__m256i sc16, int i) {
    const __m256i half = i < 4 ? _mm256_permute2x128_si256(sc16, sc16, 0x00) : _mm256_permute2x128_si256(sc16, sc16, 0x11);
    const auto b = static_cast<char>(4 * (i & 3));
    const __m256i mask = _mm256_setr_epi8(b, b + 1, b, b + 1, b, b + 1, b, b + 1, b, b + 1, b, b + 1, b, b + 1, b, b + 1,
                                          b + 2, b + 3, b + 2, b + 3, b + 2, b + 3, b + 2, b + 3, b + 2, b + 3, b + 2,
                                          b + 3, b + 2, b + 3, b + 2, b + 3);
    return _mm256_shuffle_epi8(half, mask);
}
inline __m256i srl16(__m256i v, int n) { return _mm256_srl_epi16(v, _mm_cvtsi32_si128(n)); }


// ------------------------------------------------------------------ legacy × Q8_0 / Q8_1
struct DecQ4_0 {
    static __m256i codes(const BlockQ4_0& b) { return _mm256_sub_epi8(nibbles32(b.qs), _mm256_set1_epi8(8)); }
};
struct DecQ5_0 {
    static __m256i codes(const BlockQ5_0& b) {
        return _mm256_sub_epi8(_mm256_or_si256(nibbles32(b.qs), high_bits32(b.qh)), _mm256_set1_epi8(16));
    }
};
struct DecQ8_0 {
    static __m256i codes(const BlockQ8_0& b) { return loadu(b.qs); }
};
struct DecQ4_1 {
    static __m256i codes(const BlockQ4_1& b) { return nibbles32(b.qs); }
};
struct DecQ5_1 {
    static __m256i codes(const BlockQ5_1& b) { return _mm256_or_si256(nibbles32(b.qs), high_bits32(b.qh)); }
};

// Signed weight codes against Q8_0; two accumulators per row hide the FMA latency.
template <int NT, typename B, typename Dec>
void dot_sym(const void* w, const void* const* a, int64_t nb, float* out) {
    const B* x = static_cast<const B*>(w);
    const BlockQ8_0* y[NT];
    __m256 acc[2][NT];
    for (int k = 0; k < NT; ++k) {
        y[k] = static_cast<const BlockQ8_0*>(a[k]);
        acc[0][k] = acc[1][k] = _mm256_setzero_ps();
    }
    auto step = [&](int64_t b, __m256* ac) {
        const __m256i q = Dec::codes(x[b]);
        const __m256i aq = _mm256_sign_epi8(q, q);
        const float dw = h2f(x[b].d);
        for (int k = 0; k < NT; ++k) {
            const __m256i p = dot_u8s8(aq, _mm256_sign_epi8(loadu(y[k][b].qs), q));
            ac[k] = _mm256_fmadd_ps(_mm256_set1_ps(dw * h2f(y[k][b].d)), _mm256_cvtepi32_ps(p), ac[k]);
        }
    };
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2) {
        step(b, acc[0]);
        step(b + 1, acc[1]);
    }
    if (b < nb) step(b, acc[0]);
    for (int k = 0; k < NT; ++k) out[k] = hsum(_mm256_add_ps(acc[0][k], acc[1][k]));
}

// Unsigned weight codes with an offset m against Q8_1 (its s = d * sum of quants).
template <int NT, typename B, typename Dec>
void dot_affine(const void* w, const void* const* a, int64_t nb, float* out) {
    const B* x = static_cast<const B*>(w);
    const BlockQ8_1* y[NT];
    __m256 acc[2][NT];
    float macc[NT];
    for (int k = 0; k < NT; ++k) {
        y[k] = static_cast<const BlockQ8_1*>(a[k]);
        acc[0][k] = acc[1][k] = _mm256_setzero_ps();
        macc[k] = 0;
    }
    auto step = [&](int64_t b, __m256* ac) {
        const __m256i q = Dec::codes(x[b]);
        const float dw = h2f(x[b].d), mw = h2f(x[b].m);
        for (int k = 0; k < NT; ++k) {
            const __m256i p = dot_u8s8(q, loadu(y[k][b].qs));
            ac[k] = _mm256_fmadd_ps(_mm256_set1_ps(dw * h2f(y[k][b].d)), _mm256_cvtepi32_ps(p), ac[k]);
            macc[k] += mw * h2f(y[k][b].s);
        }
    };
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2) {
        step(b, acc[0]);
        step(b + 1, acc[1]);
    }
    if (b < nb) step(b, acc[0]);
    for (int k = 0; k < NT; ++k) out[k] = hsum(_mm256_add_ps(acc[0][k], acc[1][k])) + macc[k];
}

// ------------------------------------------------------------------ K-quants × Q8_K
template <int NT>
void load_q8k(const void* const* a, const BlockQ8_K** y) {
    for (int k = 0; k < NT; ++k) y[k] = static_cast<const BlockQ8_K*>(a[k]);
}

// Q4_K / Q5_K: the 8 six-bit scales and 8 mins (layout in quant_blocks.h), byte j of
// sc8 / mn8 = sub-block j, unpacked with 32-bit word operations.
inline void k4_scales(const uint8_t* s, uint64_t& sc8, uint64_t& mn8) {
    uint32_t u0, u1, u2;
    std::memcpy(&u0, s, 4);
    std::memcpy(&u1, s + 4, 4);
    std::memcpy(&u2, s + 8, 4);
    const uint32_t sc_lo = u0 & 0x3f3f3f3f, mn_lo = u1 & 0x3f3f3f3f;
    const uint32_t sc_hi = (u2 & 0x0f0f0f0f) | (((u0 >> 6) & 0x03030303) << 4);
    const uint32_t mn_hi = ((u2 >> 4) & 0x0f0f0f0f) | (((u1 >> 6) & 0x03030303) << 4);
    sc8 = sc_lo | static_cast<uint64_t>(sc_hi) << 32;
    mn8 = mn_lo | static_cast<uint64_t>(mn_hi) << 32;
}

// Q3_K: the 16 signed scales (minus 32 applied) as 16 bytes, from the 12 packed bytes.
inline __m128i q3k_scales(const uint8_t* s) {
    uint32_t a0, a1, a2;
    std::memcpy(&a0, s, 4);
    std::memcpy(&a1, s + 4, 4);
    std::memcpy(&a2, s + 8, 4);
    const uint32_t m4 = 0x0f0f0f0f, m2 = 0x03030303;
    const __m128i v = _mm_setr_epi32(static_cast<int>((a0 & m4) | ((a2 & m2) << 4)),
                                     static_cast<int>((a1 & m4) | (((a2 >> 2) & m2) << 4)),
                                     static_cast<int>(((a0 >> 4) & m4) | (((a2 >> 4) & m2) << 4)),
                                     static_cast<int>(((a1 >> 4) & m4) | (((a2 >> 6) & m2) << 4)));
    return _mm_sub_epi8(v, _mm_set1_epi8(32));
}

template <int NT>
void dot_q2_K(const void* w, const void* const* a, int64_t nb, float* out) {
    const BlockQ2_K* x = static_cast<const BlockQ2_K*>(w);
    const BlockQ8_K* y[NT];
    load_q8k<NT>(a, y);
    __m256 acc[NT];
    float macc[NT];
    for (int k = 0; k < NT; ++k) acc[k] = _mm256_setzero_ps(), macc[k] = 0;
    const __m256i m3 = _mm256_set1_epi8(3);
    for (int64_t b = 0; b < nb; ++b) {
        const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x[b].scales));
        const __m256i mins16 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(raw, 4), _mm_set1_epi8(0x0F)));
        const __m256i sc16 = _mm256_cvtepu8_epi16(_mm_and_si128(raw, _mm_set1_epi8(0x0F)));
        __m256i sumi[NT];
        for (int k = 0; k < NT; ++k) sumi[k] = _mm256_setzero_si256();
        for (int h = 0; h < 2; ++h) {
            const __m256i qv = loadu(x[b].qs + 32 * h);
            for (int j = 0; j < 4; ++j) {
                const __m256i q = _mm256_and_si256(srl16(qv, 2 * j), m3);
                const __m256i s = pair_scales(sc16, 4 * h + j);
                for (int k = 0; k < NT; ++k) {
                    sumi[k] = _mm256_add_epi32(sumi[k], dot_scaled(q, loadu(y[k][b].qs + 128 * h + 32 * j), s));
                    keep_in_register(sumi[k]);
                }
            }
        }
        const float d = h2f(x[b].d), dmin = h2f(x[b].dmin);
        for (int k = 0; k < NT; ++k) {
            const float dy = y[k][b].d;
            acc[k] = _mm256_fmadd_ps(_mm256_set1_ps(d * dy), _mm256_cvtepi32_ps(sumi[k]), acc[k]);
            const int ms = hsum_i32(_mm256_madd_epi16(loadu(y[k][b].bsums), mins16));
            macc[k] += dmin * dy * static_cast<float>(ms);
        }
    }
    for (int k = 0; k < NT; ++k) out[k] = hsum(acc[k]) - macc[k];
}

template <int NT>
void dot_q3_K(const void* w, const void* const* a, int64_t nb, float* out) {
    const BlockQ3_K* x = static_cast<const BlockQ3_K*>(w);
    const BlockQ8_K* y[NT];
    load_q8k<NT>(a, y);
    __m256 acc[NT];
    for (int k = 0; k < NT; ++k) acc[k] = _mm256_setzero_ps();
    const __m256i m3 = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1);
    for (int64_t b = 0; b < nb; ++b) {
        const __m128i sc8 = q3k_scales(x[b].scales);
        const __m256i sc16 = _mm256_cvtepi8_epi16(sc8);
        __m256i sumi[NT];
        for (int k = 0; k < NT; ++k) sumi[k] = _mm256_setzero_si256();
        const __m256i hm = loadu(x[b].hmask);
        for (int h = 0; h < 2; ++h) {
            const __m256i qv = loadu(x[b].qs + 32 * h);
            for (int j = 0; j < 4; ++j) {
                const __m256i lo = _mm256_and_si256(srl16(qv, 2 * j), m3);
                const __m256i hb = _mm256_slli_epi16(_mm256_and_si256(srl16(hm, 4 * h + j), one), 2);
                const __m256i q = _mm256_or_si256(lo, hb);  // code + 4, in 0..7
                const __m256i s = pair_scales(sc16, 4 * h + j);
                for (int k = 0; k < NT; ++k) {
                    sumi[k] = _mm256_add_epi32(sumi[k], dot_scaled(q, loadu(y[k][b].qs + 128 * h + 32 * j), s));
                    keep_in_register(sumi[k]);
                }
            }
        }
        const float d = h2f(x[b].d);
        for (int k = 0; k < NT; ++k) {
            // subtract 4 * sum(scale * bsum): the codes above were offset by +4
            const __m256i bias = _mm256_madd_epi16(loadu(y[k][b].bsums), sc16);
            const __m256i tot = _mm256_sub_epi32(sumi[k], _mm256_slli_epi32(bias, 2));
            acc[k] = _mm256_fmadd_ps(_mm256_set1_ps(d * y[k][b].d), _mm256_cvtepi32_ps(tot), acc[k]);
        }
    }
    for (int k = 0; k < NT; ++k) out[k] = hsum(acc[k]);
}

template <int NT, bool kFive, typename B>
void dot_q45_K(const void* w, const void* const* a, int64_t nb, float* out) {
    const B* x = static_cast<const B*>(w);
    const BlockQ8_K* y[NT];
    load_q8k<NT>(a, y);
    __m256 acc[NT];
    float macc[NT];
    for (int k = 0; k < NT; ++k) acc[k] = _mm256_setzero_ps(), macc[k] = 0;
    const __m256i m4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
    for (int64_t b = 0; b < nb; ++b) {
        uint64_t sc8, mn8;  // the 8 scales and 8 mins, one per byte, kept in registers
        k4_scales(x[b].scales, sc8, mn8);
        auto sc = [sc8](int s) { return static_cast<int>((sc8 >> (8 * s)) & 0xFF); };
        const __m128i mins16 = _mm_cvtepu8_epi16(_mm_cvtsi64_si128(static_cast<long long>(mn8)));
        __m256i hbits = _mm256_setzero_si256();
        if constexpr (kFive) hbits = loadu(x[b].qh);
        __m256i sumi[NT];
        for (int k = 0; k < NT; ++k) sumi[k] = _mm256_setzero_si256();
        for (int p = 0; p < 4; ++p) {
            const __m256i qv = loadu(x[b].qs + 32 * p);
            __m256i lo = _mm256_and_si256(qv, m4), hi = _mm256_and_si256(_mm256_srli_epi16(qv, 4), m4);
            if constexpr (kFive) {
                lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(srl16(hbits, 2 * p), one), 4));
                hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(srl16(hbits, 2 * p + 1), one), 4));
            }
            const __m256i s_lo = _mm256_set1_epi16(static_cast<int16_t>(sc(2 * p)));
            const __m256i s_hi = _mm256_set1_epi16(static_cast<int16_t>(sc(2 * p + 1)));
            for (int k = 0; k < NT; ++k) {
                const __m256i p0 = dot_scaled(lo, loadu(y[k][b].qs + 64 * p), s_lo);
                const __m256i p1 = dot_scaled(hi, loadu(y[k][b].qs + 64 * p + 32), s_hi);
                sumi[k] = _mm256_add_epi32(sumi[k], _mm256_add_epi32(p0, p1));
                keep_in_register(sumi[k]);
            }
        }
        const float d = h2f(x[b].d), dmin = h2f(x[b].dmin);
        for (int k = 0; k < NT; ++k) {
            const float dy = y[k][b].d;
            acc[k] = _mm256_fmadd_ps(_mm256_set1_ps(d * dy), _mm256_cvtepi32_ps(sumi[k]), acc[k]);
            // sums of 32 activations per sub-block from the 16 bsums, times the mins
            const __m128i* bs = reinterpret_cast<const __m128i*>(y[k][b].bsums);
            const __m128i pairs = _mm_hadd_epi16(_mm_loadu_si128(bs), _mm_loadu_si128(bs + 1));
            const int ms = hsum_i32_128(_mm_madd_epi16(pairs, mins16));
            macc[k] += dmin * dy * static_cast<float>(ms);
        }
    }
    for (int k = 0; k < NT; ++k) out[k] = hsum(acc[k]) - macc[k];
}

// One Q6_K super-block of weights against NT activation rows' blocks y[k], into acc[k].
template <int NT>
inline void q6k_block(const BlockQ6_K& x, const BlockQ8_K* const* y, __m256* acc) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), m3 = _mm256_set1_epi8(3);
    const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x.scales)));
    __m256i sumi[NT];
    for (int k = 0; k < NT; ++k) sumi[k] = _mm256_setzero_si256();
    for (int h = 0; h < 2; ++h) {
        const __m256i ql0 = loadu(x.ql + 64 * h), ql1 = loadu(x.ql + 64 * h + 32);
        const __m256i qh = loadu(x.qh + 32 * h);
        const __m256i q[4] = {
            _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_slli_epi16(_mm256_and_si256(qh, m3), 4)),
            _mm256_or_si256(_mm256_and_si256(ql1, m4),
                            _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m3), 4)),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                            _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m3), 4)),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                            _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m3), 4)),
        };
        for (int c = 0; c < 4; ++c) {
            const __m256i s = pair_scales(sc16, 4 * h + c);
            for (int k = 0; k < NT; ++k) {
                sumi[k] = _mm256_add_epi32(sumi[k], dot_scaled(q[c], loadu(y[k]->qs + 128 * h + 32 * c), s));
                keep_in_register(sumi[k]);
            }
        }
    }
    const float d = h2f(x.d);
    for (int k = 0; k < NT; ++k) {
        // the codes above are offset by +32: subtract 32 * sum(scale * bsum)
        const __m256i bias = _mm256_madd_epi16(loadu(y[k]->bsums), sc16);
        const __m256i tot = _mm256_sub_epi32(sumi[k], _mm256_slli_epi32(bias, 5));
        acc[k] = _mm256_fmadd_ps(_mm256_set1_ps(d * y[k]->d), _mm256_cvtepi32_ps(tot), acc[k]);
    }
}

template <int NT>
void dot_q6_K(const void* w, const void* const* a, int64_t nb, float* out) {
    const BlockQ6_K* x = static_cast<const BlockQ6_K*>(w);
    const BlockQ8_K* y[NT];
    load_q8k<NT>(a, y);
    __m256 acc[NT];
    for (int k = 0; k < NT; ++k) acc[k] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
        const BlockQ8_K* yb[NT];
        for (int k = 0; k < NT; ++k) yb[k] = y[k] + b;
        q6k_block<NT>(x[b], yb, acc);
    }
    for (int k = 0; k < NT; ++k) out[k] = hsum(acc[k]);
}

// R weight rows against one activation row, block by block side by side (R memory streams);
// each row's arithmetic is dot_q6_K<1>'s.
template <int R>
void dot_q6_K_rows(const void* const* w, const void* a, int64_t nb, float* out) {
    const BlockQ8_K* y = static_cast<const BlockQ8_K*>(a);
    __m256 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
        const BlockQ8_K* yb = y + b;
        for (int r = 0; r < R; ++r) q6k_block<1>(static_cast<const BlockQ6_K*>(w[r])[b], &yb, &acc[r]);
    }
    for (int r = 0; r < R; ++r) out[r] = hsum(acc[r]);
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
// C's roundf (ties away from zero) on 8 floats, exactly: truncate, then step away from zero
// when the dropped fraction is >= 0.5 (x - trunc(x) is exact).
inline __m256 round_away(__m256 v) {
    const __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m256 frac = abs_ps(_mm256_sub_ps(v, t));
    const __m256 step = _mm256_or_ps(_mm256_and_ps(v, _mm256_set1_ps(-0.0f)), _mm256_set1_ps(1.0f));
    return _mm256_add_ps(t, _mm256_and_ps(_mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ), step));
}
// 4×8 integral floats → 32 int8 in order.
inline __m256i pack_i8(__m256 a, __m256 b, __m256 c, __m256 d) {
    const __m256i ab = _mm256_packs_epi32(_mm256_cvtps_epi32(a), _mm256_cvtps_epi32(b));
    const __m256i cd = _mm256_packs_epi32(_mm256_cvtps_epi32(c), _mm256_cvtps_epi32(d));
    return _mm256_permutevar8x32_epi32(_mm256_packs_epi16(ab, cd), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

template <bool kSum, typename B>
void quantize_q8_legacy(const float* x, B* y, int64_t n) {
    for (int64_t b = 0; b < n / QK; ++b, x += QK) {
        __m256 v[4];
        for (int i = 0; i < 4; ++i) v[i] = _mm256_loadu_ps(x + 8 * i);
        const float amax = hmax(_mm256_max_ps(_mm256_max_ps(abs_ps(v[0]), abs_ps(v[1])), _mm256_max_ps(abs_ps(v[2]), abs_ps(v[3]))));
        const float d = amax / 127;
        const float id = d != 0 ? 1.0f / d : 0.0f;
        y[b].d = f2h(d);
        const __m256 mul = _mm256_set1_ps(id);
        for (int i = 0; i < 4; ++i) v[i] = round_away(_mm256_mul_ps(v[i], mul));
        const __m256i q = pack_i8(v[0], v[1], v[2], v[3]);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(y[b].qs), q);
        if constexpr (kSum) {
            const int sum = hsum_i32(_mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), q), _mm256_set1_epi16(1)));
            y[b].s = f2h(static_cast<float>(sum) * d);
        }
    }
}

void quantize_q8_K(const float* x, BlockQ8_K* y, int64_t n) {
    for (int64_t b = 0; b < n / QK_K; ++b, x += QK_K) {
        __m256 m = _mm256_setzero_ps();
        for (int i = 0; i < QK_K; i += 8) m = _mm256_max_ps(m, abs_ps(_mm256_loadu_ps(x + i)));
        const float amax = hmax(m);
        BlockQ8_K& o = y[b];
        if (amax == 0) {
            std::memset(&o, 0, sizeof(o));
            continue;
        }
        float mx = 0;
        for (int j = 0; j < QK_K; ++j)
            if (std::fabs(x[j]) == amax) {  // the first element of largest magnitude, with its sign
                mx = x[j];
                break;
            }
        const float iscale = -127.f / mx;
        const __m256 mul = _mm256_set1_ps(iscale);
        for (int i = 0; i < QK_K; i += 32) {
            __m256 v[4];
            for (int j = 0; j < 4; ++j)
                v[j] = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i + 8 * j), mul),
                                       _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            const __m256i q = pack_i8(v[0], v[1], v[2], v[3]);  // packs saturate at 127 = ggml's MIN(127, v)
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(o.qs + i), q);
            // sums of 16: widen to int16 pairs, then add within each 16-element half
            const __m256i s16 = _mm256_maddubs_epi16(_mm256_set1_epi8(1), q);
            const __m256i s32 = _mm256_madd_epi16(s16, _mm256_set1_epi16(1));  // 8 sums of 4
            alignas(32) int32_t t[8];
            _mm256_store_si256(reinterpret_cast<__m256i*>(t), s32);
            o.bsums[i / 16] = static_cast<int16_t>(t[0] + t[1] + t[2] + t[3]);
            o.bsums[i / 16 + 1] = static_cast<int16_t>(t[4] + t[5] + t[6] + t[7]);
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

void vec_dot_q_rows(DType w, const void* const* wrows, int nr, const void* arow, int64_t n, float* out) {
    if (n % dtype_info(w).block_size) fail("dot: row of {} elements is not a multiple of the {} block size", n, dtype_name(w));
    if (w == DType::Q6_K && nr == 4) return dot_q6_K_rows<4>(wrows, arow, n / QK_K, out);
    for (int r = 0; r < nr; ++r) vec_dot_q(w, wrows[r], &arow, 1, n, out + r);
}

const char* quant_kernel_isa() {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    return "avx512-vnni";
#elif defined(__AVXVNNI__)
    return "avx-vnni";
#else
    return "avx2";
#endif
}

}  // namespace calpaca

#endif  // AVX2
