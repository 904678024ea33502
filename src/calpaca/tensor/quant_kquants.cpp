// K-quant super-block formats (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) and the Q8_K activation
// format: ggml's reference quantizers, reproduced exactly (same search, same f32 operation
// order), and their dequantizers.
//
// The reference search, per sub-block of 16 or 32 elements:
//  * Q2_K / Q4_K / Q5_K (scale + min, codes 0..nmax): start from scale = (max-min)/nmax with
//    min = min(0, smallest element); then try nstep+1 alternative inverse scales
//    (rmin + rdelta*i + nmax)/(max-min); for each, round the codes and solve the weighted
//    least-squares fit of scale and min to those codes (min clamped to <= 0); keep the
//    candidate with the smallest weighted error (absolute error for Q2_K, squared for
//    Q4_K/Q5_K). Weights: |x| (Q2_K), sqrt(mean(x^2)) + |x| (Q4_K, Q5_K).
//  * Q3_K (symmetric, codes -4..3): scale from the signed absmax, then up to 5 passes of
//    coordinate descent that move single codes when that raises the x^2-weighted fit.
//  * Q6_K (symmetric, codes -32..31): 19 candidate scales -(32 + 0.1*i)/max (i = -9..9),
//    each scored by the x^2-weighted least-squares fit, best one kept.
// Then the sub-block scales (and mins) are themselves quantized to 4, 6 or 8 bits against a
// f16 super-block scale, and every element is re-rounded against the *quantized* scale.
#include <cmath>
#include <cstring>

#include "calpaca/tensor/dtype.h"
#include "calpaca/tensor/quant.h"
#include "calpaca/tensor/quant_blocks.h"

// Bit-exact reference arithmetic: no fused multiply-add contraction in this file.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace calpaca::quant {

namespace {

constexpr float kGroupMaxEps = 1e-15f;

inline int clampi(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

// Symmetric codes in [-nmax, nmax) with an x^2-weighted scale search over 19 candidates.
// Writes L[i] = code + nmax; returns the scale.
float symmetric_search(int n, int nmax, const float* x, int8_t* L) {
    float amax = 0, mx = 0;
    for (int i = 0; i < n; ++i) {
        float ax = std::fabs(x[i]);
        if (ax > amax) {
            amax = ax;
            mx = x[i];
        }
    }
    if (amax < kGroupMaxEps) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        return 0.0f;
    }
    auto fit = [&](float iscale, float& sumlx, float& suml2) {
        sumlx = suml2 = 0;
        for (int i = 0; i < n; ++i) {
            int l = clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1);
            float w = x[i] * x[i];
            sumlx += w * x[i] * static_cast<float>(l);
            suml2 += w * static_cast<float>(l) * static_cast<float>(l);
        }
    };
    auto set_codes = [&](float iscale) {
        for (int i = 0; i < n; ++i) L[i] = static_cast<int8_t>(nmax + clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1));
    };
    float iscale = static_cast<float>(-nmax) / mx;
    float sumlx, suml2;
    fit(iscale, sumlx, suml2);
    set_codes(iscale);
    float scale = suml2 != 0 ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; ++is) {
        if (is == 0) continue;
        iscale = -(static_cast<float>(nmax) + 0.1f * static_cast<float>(is)) / mx;
        fit(iscale, sumlx, suml2);
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            set_codes(iscale);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

// Q3_K's symmetric search: codes in [-nmax, nmax) refined by coordinate descent.
// Writes L[i] = code + nmax (all 0 for an all-zero group); returns the scale.
float q3_search(int n, int nmax, const float* x, int8_t* L) {
    float amax = 0, mx = 0;
    for (int i = 0; i < n; ++i) {
        float ax = std::fabs(x[i]);
        if (ax > amax) {
            amax = ax;
            mx = x[i];
        }
    }
    if (amax < kGroupMaxEps) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        return 0.0f;
    }
    const float iscale = static_cast<float>(-nmax) / mx;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
        int l = clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1);
        L[i] = static_cast<int8_t>(l);
        float w = x[i] * x[i];
        sumlx += w * x[i] * static_cast<float>(l);
        suml2 += w * static_cast<float>(l) * static_cast<float>(l);
    }
    for (int pass = 0; pass < 5; ++pass) {
        int changed = 0;
        for (int i = 0; i < n; ++i) {
            const float w = x[i] * x[i];
            const float li = static_cast<float>(L[i]);
            float slx = sumlx - w * x[i] * li;
            if (slx > 0) {
                float sl2 = suml2 - w * li * li;
                int nl = clampi(nearest_int(x[i] * sl2 / slx), -nmax, nmax - 1);
                if (nl != L[i]) {
                    slx += w * x[i] * static_cast<float>(nl);
                    sl2 += w * static_cast<float>(nl) * static_cast<float>(nl);
                    if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = static_cast<int8_t>(nl);
                        sumlx = slx;
                        suml2 = sl2;
                        ++changed;
                    }
                }
            }
        }
        if (!changed) break;
    }
    for (int i = 0; i < n; ++i) L[i] = static_cast<int8_t>(L[i] + nmax);
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

// Scale + min search for codes in [0, nmax] (see the file comment). Writes L, sets
// neg_min = -min (>= 0) and returns the scale.
float affine_search(int n, int nmax, const float* x, const float* weights, uint8_t* L, float& neg_min, float rmin,
                    float rdelta, int nstep, bool use_mad) {
    float mn = x[0], mx = x[0];
    float sum_w = weights[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; ++i) {
        if (x[i] < mn) mn = x[i];
        if (x[i] > mx) mx = x[i];
        sum_w += weights[i];
        sum_x += weights[i] * x[i];
    }
    if (mn > 0) mn = 0;
    if (mx == mn) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        neg_min = -mn;
        return 0.0f;
    }
    auto err_of = [&](float diff) { return use_mad ? std::fabs(diff) : diff * diff; };
    float iscale = static_cast<float>(nmax) / (mx - mn);
    float scale = 1 / iscale;
    float best_error = 0;
    for (int i = 0; i < n; ++i) {
        L[i] = static_cast<uint8_t>(clampi(nearest_int(iscale * (x[i] - mn)), 0, nmax));
        float diff = scale * static_cast<float>(L[i]) + mn - x[i];
        best_error += weights[i] * err_of(diff);
    }
    uint8_t Laux[32];
    for (int is = 0; is <= nstep; ++is) {
        iscale = (rmin + rdelta * static_cast<float>(is) + static_cast<float>(nmax)) / (mx - mn);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; ++i) {
            int l = clampi(nearest_int(iscale * (x[i] - mn)), 0, nmax);
            Laux[i] = static_cast<uint8_t>(l);
            const float w = weights[i], fl = static_cast<float>(l);
            sum_l += w * fl;
            sum_l2 += w * fl * fl;
            sum_xl += w * fl * x[i];
        }
        const float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float cur_error = 0;
            for (int i = 0; i < n; ++i) {
                float diff = this_scale * static_cast<float>(Laux[i]) + this_min - x[i];
                cur_error += weights[i] * err_of(diff);
            }
            if (cur_error < best_error) {
                std::memcpy(L, Laux, static_cast<size_t>(n));
                best_error = cur_error;
                scale = this_scale;
                mn = this_min;
            }
        }
    }
    neg_min = -mn;
    return scale;
}

// Q4_K/Q5_K: pack 8 six-bit scales and mins into 12 bytes.
void pack_scales_k4(const uint8_t ls[8], const uint8_t lm[8], uint8_t* s) {
    std::memset(s, 0, K_SCALE_SIZE);
    for (int j = 0; j < 8; ++j) {
        if (j < 4) {
            s[j] = ls[j];
            s[j + 4] = lm[j];
        } else {
            s[j + 4] = static_cast<uint8_t>((ls[j] & 0xF) | ((lm[j] & 0xF) << 4));
            s[j - 4] |= static_cast<uint8_t>((ls[j] >> 4) << 6);
            s[j] |= static_cast<uint8_t>((lm[j] >> 4) << 6);
        }
    }
}

// Shared by Q4_K and Q5_K: search each 32-element sub-block, quantize scales/mins to 6 bits,
// then re-round the codes against the stored scales. Fills L[256] (codes 0..nmax).
void kquant_affine_superblock(const float* x, int nmax, float rmin, int nstep, uint16_t& d_out, uint16_t& dmin_out,
                              uint8_t* scales12, uint8_t* L) {
    float scales[8], mins[8], weights[32];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; ++j) {
        const float* xs = x + 32 * j;
        float sum_x2 = 0;
        for (int l = 0; l < 32; ++l) sum_x2 += xs[l] * xs[l];
        const float av_x = std::sqrt(sum_x2 / 32);
        for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(xs[l]);
        scales[j] = affine_search(32, nmax, xs, weights, L + 32 * j, mins[j], rmin, 0.1f, nstep, false);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    uint8_t ls[8], lm[8];
    for (int j = 0; j < 8; ++j) {
        // ggml stores nearest_int(...) into a uint8_t before clamping at 63
        ls[j] = std::min<uint8_t>(63, static_cast<uint8_t>(nearest_int(inv_scale * scales[j])));
        lm[j] = std::min<uint8_t>(63, static_cast<uint8_t>(nearest_int(inv_min * mins[j])));
    }
    pack_scales_k4(ls, lm, scales12);
    d_out = fp32_to_fp16(max_scale / 63.f);
    dmin_out = fp32_to_fp16(max_min / 63.f);
    for (int j = 0; j < 8; ++j) {
        uint8_t sc, m;
        scale_min_k4(j, scales12, sc, m);
        const float d = fp16_to_fp32(d_out) * static_cast<float>(sc);
        if (d == 0) continue;
        const float dm = fp16_to_fp32(dmin_out) * static_cast<float>(m);
        for (int i = 0; i < 32; ++i)
            L[32 * j + i] = static_cast<uint8_t>(clampi(nearest_int((x[32 * j + i] + dm) / d), 0, nmax));
    }
}

// 2-bit codes of 256 elements into 64 bytes (Q2_K, Q3_K low bits).
void pack_2bit(const uint8_t* L, uint8_t* qs) {
    for (int h = 0; h < QK_K; h += 128)
        for (int l = 0; l < 32; ++l)
            qs[h / 4 + l] = static_cast<uint8_t>(L[h + l] | (L[h + l + 32] << 2) | (L[h + l + 64] << 4) | (L[h + l + 96] << 6));
}

}  // namespace

// ------------------------------------------------------------------ Q2_K
void quantize_row_q2_K_ref(const float* x, BlockQ2_K* y, int64_t k) {
    constexpr float q4scale = 15.f;
    for (int64_t b = 0; b < k / QK_K; ++b, x += QK_K) {
        uint8_t L[QK_K];
        float scales[16], mins[16], weights[16];
        float max_scale = 0, max_min = 0;
        for (int j = 0; j < 16; ++j) {
            for (int l = 0; l < 16; ++l) weights[l] = std::fabs(x[16 * j + l]);
            scales[j] = affine_search(16, 3, x + 16 * j, weights, L + 16 * j, mins[j], -0.5f, 0.1f, 15, true);
            if (scales[j] > max_scale) max_scale = scales[j];
            if (mins[j] > max_min) max_min = mins[j];
        }
        BlockQ2_K& o = y[b];
        if (max_scale > 0) {
            const float iscale = q4scale / max_scale;
            for (int j = 0; j < 16; ++j) o.scales[j] = static_cast<uint8_t>(nearest_int(iscale * scales[j]));
            o.d = fp32_to_fp16(max_scale / q4scale);
        } else {
            for (int j = 0; j < 16; ++j) o.scales[j] = 0;
            o.d = fp32_to_fp16(0.f);
        }
        if (max_min > 0) {
            const float iscale = q4scale / max_min;
            for (int j = 0; j < 16; ++j) o.scales[j] |= static_cast<uint8_t>(nearest_int(iscale * mins[j]) << 4);
            o.dmin = fp32_to_fp16(max_min / q4scale);
        } else {
            o.dmin = fp32_to_fp16(0.f);
        }
        for (int j = 0; j < 16; ++j) {
            const float d = fp16_to_fp32(o.d) * static_cast<float>(o.scales[j] & 0xF);
            if (d == 0) continue;
            const float dm = fp16_to_fp32(o.dmin) * static_cast<float>(o.scales[j] >> 4);
            for (int i = 0; i < 16; ++i)
                L[16 * j + i] = static_cast<uint8_t>(clampi(nearest_int((x[16 * j + i] + dm) / d), 0, 3));
        }
        pack_2bit(L, o.qs);
    }
}

void dequantize_row_q2_K(const BlockQ2_K* x, float* y, int64_t k) {
    for (int64_t b = 0; b < k / QK_K; ++b) {
        const float d = fp16_to_fp32(x[b].d), dmin = fp16_to_fp32(x[b].dmin);
        for (int i = 0; i < QK_K; ++i) {
            const int h = i / 128, j = (i / 32) % 4, l = i % 32;
            const uint8_t sc = x[b].scales[i / 16];
            const int q = (x[b].qs[32 * h + l] >> (2 * j)) & 3;
            const float dl = d * static_cast<float>(sc & 0xF), ml = dmin * static_cast<float>(sc >> 4);
            *y++ = dl * static_cast<float>(q) - ml;
        }
    }
}

// ------------------------------------------------------------------ Q3_K
void quantize_row_q3_K_ref(const float* x, BlockQ3_K* y, int64_t k) {
    for (int64_t b = 0; b < k / QK_K; ++b, x += QK_K) {
        int8_t L[QK_K];
        float scales[16];
        float max_scale = 0, amax = 0;
        for (int j = 0; j < 16; ++j) {
            scales[j] = q3_search(16, 4, x + 16 * j, L + 16 * j);
            const float s = std::fabs(scales[j]);
            if (s > amax) {
                amax = s;
                max_scale = scales[j];
            }
        }
        BlockQ3_K& o = y[b];
        std::memset(o.scales, 0, 12);
        if (max_scale != 0) {
            const float iscale = -32.f / max_scale;
            for (int j = 0; j < 16; ++j) {
                int l = clampi(static_cast<int8_t>(nearest_int(iscale * scales[j])), -32, 31) + 32;
                if (j < 8)
                    o.scales[j] = static_cast<uint8_t>(l & 0xF);
                else
                    o.scales[j - 8] |= static_cast<uint8_t>((l & 0xF) << 4);
                o.scales[j % 4 + 8] |= static_cast<uint8_t>((l >> 4) << (2 * (j / 4)));
            }
            o.d = fp32_to_fp16(1 / iscale);
        } else {
            o.d = fp32_to_fp16(0.f);
        }
        int8_t sc[16];
        unpack_q3k_scales(o.scales, sc);
        for (int j = 0; j < 16; ++j) {
            const float d = fp16_to_fp32(o.d) * static_cast<float>(sc[j]);
            if (d == 0) continue;
            for (int i = 0; i < 16; ++i)
                L[16 * j + i] = static_cast<int8_t>(clampi(nearest_int(x[16 * j + i] / d), -4, 3) + 4);
        }
        std::memset(o.hmask, 0, sizeof(o.hmask));
        uint8_t low[QK_K];
        for (int i = 0; i < QK_K; ++i) {
            int l = L[i];
            if (l > 3) {
                o.hmask[i % 32] |= static_cast<uint8_t>(1u << (i / 32));
                l -= 4;
            }
            low[i] = static_cast<uint8_t>(l);
        }
        pack_2bit(low, o.qs);
    }
}

void dequantize_row_q3_K(const BlockQ3_K* x, float* y, int64_t k) {
    for (int64_t b = 0; b < k / QK_K; ++b) {
        const float d_all = fp16_to_fp32(x[b].d);
        int8_t sc[16];
        unpack_q3k_scales(x[b].scales, sc);
        for (int i = 0; i < QK_K; ++i) {
            const int h = i / 128, j = (i / 32) % 4, l = i % 32;
            const int lo = (x[b].qs[32 * h + l] >> (2 * j)) & 3;
            const int hi = (x[b].hmask[l] >> (4 * h + j)) & 1;
            const float dl = d_all * static_cast<float>(sc[i / 16]);
            *y++ = dl * static_cast<float>(lo - (hi ? 0 : 4));
        }
    }
}

// ------------------------------------------------------------------ Q4_K
void quantize_row_q4_K_ref(const float* x, BlockQ4_K* y, int64_t k) {
    for (int64_t b = 0; b < k / QK_K; ++b, x += QK_K) {
        uint8_t L[QK_K];
        BlockQ4_K& o = y[b];
        kquant_affine_superblock(x, 15, -1.f, 20, o.d, o.dmin, o.scales, L);
        for (int p = 0; p < 4; ++p)
            for (int l = 0; l < 32; ++l) o.qs[32 * p + l] = static_cast<uint8_t>(L[64 * p + l] | (L[64 * p + 32 + l] << 4));
    }
}

void dequantize_row_q4_K(const BlockQ4_K* x, float* y, int64_t k) {
    for (int64_t b = 0; b < k / QK_K; ++b) {
        const float d = fp16_to_fp32(x[b].d), dmin = fp16_to_fp32(x[b].dmin);
        for (int p = 0; p < 4; ++p) {
            uint8_t sc, m;
            for (int half = 0; half < 2; ++half) {
                scale_min_k4(2 * p + half, x[b].scales, sc, m);
                const float d1 = d * static_cast<float>(sc), m1 = dmin * static_cast<float>(m);
                for (int l = 0; l < 32; ++l) {
                    const uint8_t q = x[b].qs[32 * p + l];
                    *y++ = d1 * static_cast<float>(half ? q >> 4 : q & 0xF) - m1;
                }
            }
        }
    }
}

// ------------------------------------------------------------------ Q5_K
void quantize_row_q5_K_ref(const float* x, BlockQ5_K* y, int64_t k) {
    for (int64_t b = 0; b < k / QK_K; ++b, x += QK_K) {
        uint8_t L[QK_K];
        BlockQ5_K& o = y[b];
        kquant_affine_superblock(x, 31, -0.5f, 15, o.d, o.dmin, o.scales, L);
        std::memset(o.qh, 0, sizeof(o.qh));
        for (int p = 0; p < 4; ++p) {
            for (int l = 0; l < 32; ++l) {
                int l1 = L[64 * p + l], l2 = L[64 * p + 32 + l];
                if (l1 > 15) {
                    l1 -= 16;
                    o.qh[l] |= static_cast<uint8_t>(1u << (2 * p));
                }
                if (l2 > 15) {
                    l2 -= 16;
                    o.qh[l] |= static_cast<uint8_t>(1u << (2 * p + 1));
                }
                o.qs[32 * p + l] = static_cast<uint8_t>(l1 | (l2 << 4));
            }
        }
    }
}

void dequantize_row_q5_K(const BlockQ5_K* x, float* y, int64_t k) {
    for (int64_t b = 0; b < k / QK_K; ++b) {
        const float d = fp16_to_fp32(x[b].d), dmin = fp16_to_fp32(x[b].dmin);
        for (int p = 0; p < 4; ++p) {
            uint8_t sc, m;
            for (int half = 0; half < 2; ++half) {
                scale_min_k4(2 * p + half, x[b].scales, sc, m);
                const float d1 = d * static_cast<float>(sc), m1 = dmin * static_cast<float>(m);
                for (int l = 0; l < 32; ++l) {
                    const uint8_t q = x[b].qs[32 * p + l];
                    int v = (half ? q >> 4 : q & 0xF) + (((x[b].qh[l] >> (2 * p + half)) & 1) ? 16 : 0);
                    *y++ = d1 * static_cast<float>(v) - m1;
                }
            }
        }
    }
}

// ------------------------------------------------------------------ Q6_K
void quantize_row_q6_K_ref(const float* x, BlockQ6_K* y, int64_t k) {
    for (int64_t b = 0; b < k / QK_K; ++b, x += QK_K) {
        int8_t L[QK_K];
        float scales[16];
        float max_scale = 0, max_abs_scale = 0;
        for (int j = 0; j < 16; ++j) {
            scales[j] = symmetric_search(16, 32, x + 16 * j, L + 16 * j);
            const float a = std::fabs(scales[j]);
            if (a > max_abs_scale) {
                max_abs_scale = a;
                max_scale = scales[j];
            }
        }
        BlockQ6_K& o = y[b];
        if (max_abs_scale < kGroupMaxEps) {
            std::memset(&o, 0, sizeof(o));
            continue;
        }
        const float iscale = -128.f / max_scale;
        o.d = fp32_to_fp16(1 / iscale);
        for (int j = 0; j < 16; ++j) o.scales[j] = static_cast<int8_t>(std::min(127, nearest_int(iscale * scales[j])));
        for (int j = 0; j < 16; ++j) {
            const float d = fp16_to_fp32(o.d) * static_cast<float>(o.scales[j]);
            if (d == 0) continue;
            for (int i = 0; i < 16; ++i)
                L[16 * j + i] = static_cast<int8_t>(clampi(nearest_int(x[16 * j + i] / d), -32, 31) + 32);
        }
        for (int h = 0; h < 2; ++h) {
            const int8_t* Lh = L + 128 * h;
            uint8_t* ql = o.ql + 64 * h;
            uint8_t* qh = o.qh + 32 * h;
            for (int l = 0; l < 32; ++l) {
                const int q1 = Lh[l], q2 = Lh[l + 32], q3 = Lh[l + 64], q4 = Lh[l + 96];
                ql[l] = static_cast<uint8_t>((q1 & 0xF) | ((q3 & 0xF) << 4));
                ql[l + 32] = static_cast<uint8_t>((q2 & 0xF) | ((q4 & 0xF) << 4));
                qh[l] = static_cast<uint8_t>((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6));
            }
        }
    }
}

void dequantize_row_q6_K(const BlockQ6_K* x, float* y, int64_t k) {
    for (int64_t b = 0; b < k / QK_K; ++b) {
        const float d = fp16_to_fp32(x[b].d);
        for (int i = 0; i < QK_K; ++i) {
            const int h = i / 128, c = (i / 32) % 4, l = i % 32;
            const uint8_t lb = x[b].ql[64 * h + l + 32 * (c & 1)];
            const int lo = (c >> 1) ? lb >> 4 : lb & 0xF;
            const int hi = (x[b].qh[32 * h + l] >> (2 * c)) & 3;
            *y++ = d * static_cast<float>(x[b].scales[i / 16]) * static_cast<float>((lo | (hi << 4)) - 32);
        }
    }
}

// ------------------------------------------------------------------ Q8_K
void quantize_row_q8_K_ref(const float* x, BlockQ8_K* y, int64_t k) {
    for (int64_t b = 0; b < k / QK_K; ++b, x += QK_K) {
        float amax = 0, mx = 0;
        for (int j = 0; j < QK_K; ++j) {
            const float ax = std::fabs(x[j]);
            if (ax > amax) {
                amax = ax;
                mx = x[j];
            }
        }
        BlockQ8_K& o = y[b];
        if (amax == 0) {
            std::memset(&o, 0, sizeof(o));
            continue;
        }
        const float iscale = -127.f / mx;
        for (int j = 0; j < QK_K; ++j) o.qs[j] = static_cast<int8_t>(std::min(127, nearest_int(iscale * x[j])));
        for (int j = 0; j < 16; ++j) {
            int sum = 0;
            for (int i = 0; i < 16; ++i) sum += o.qs[16 * j + i];
            o.bsums[j] = static_cast<int16_t>(sum);
        }
        o.d = 1 / iscale;
    }
}

void dequantize_row_q8_K(const BlockQ8_K* x, float* y, int64_t k) {
    for (int64_t b = 0; b < k / QK_K; ++b)
        for (int j = 0; j < QK_K; ++j) *y++ = x[b].d * static_cast<float>(x[b].qs[j]);
}

}  // namespace calpaca::quant
