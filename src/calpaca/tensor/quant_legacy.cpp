// Legacy 32-element block formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1): ggml's reference
// rounding, reproduced exactly.
//
// Rounding rules (they decide the bytes, so they are part of the format):
//  * symmetric types (Q4_0, Q5_0): d = m / -2^(b-1) where m is the element of largest
//    magnitude *with its sign*, so that element maps to code 0 exactly; code =
//    min(2^b - 1, trunc(x/d + 2^(b-1) + 0.5)) computed in f32 with x * (1/d).
//  * affine types (Q4_1, Q5_1): d = (max - min) / (2^b - 1), m = min; code = trunc((x - min)
//    * (1/d) + 0.5) (Q4_1 clamps at 15, Q5_1 does not need to).
//  * Q8_0 / Q8_1: d = absmax / 127, code = roundf(x * (1/d)) (ties away from zero).
//  The scale is rounded to f16 only when stored; codes are computed with the f32 scale.
#include <cfloat>
#include <cmath>

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

// Largest-magnitude element of x[0..n) with its sign (the first one on ties).
float signed_absmax(const float* x, int n) {
    float amax = 0, m = 0;
    for (int j = 0; j < n; ++j) {
        if (amax < std::fabs(x[j])) {
            amax = std::fabs(x[j]);
            m = x[j];
        }
    }
    return m;
}

void min_max(const float* x, int n, float& mn, float& mx) {
    mn = FLT_MAX;
    mx = -FLT_MAX;
    for (int j = 0; j < n; ++j) {
        if (x[j] < mn) mn = x[j];
        if (x[j] > mx) mx = x[j];
    }
}

// The f32 → small-integer conversion of C (truncation toward zero) into int8, as ggml's
// `(int8_t)(v)`; v is always within int8 range here.
inline int trunc_i8(float v) { return static_cast<int8_t>(v); }

}  // namespace

void quantize_row_q4_0_ref(const float* x, BlockQ4_0* y, int64_t k) {
    for (int64_t b = 0; b < k / QK; ++b, x += QK) {
        const float d = signed_absmax(x, QK) / -8;
        const float id = d != 0 ? 1.0f / d : 0.0f;
        y[b].d = fp32_to_fp16(d);
        for (int j = 0; j < QK / 2; ++j) {
            int lo = std::min(15, trunc_i8(x[j] * id + 8.5f));
            int hi = std::min(15, trunc_i8(x[j + QK / 2] * id + 8.5f));
            y[b].qs[j] = static_cast<uint8_t>(lo | (hi << 4));
        }
    }
}

void quantize_row_q4_1_ref(const float* x, BlockQ4_1* y, int64_t k) {
    for (int64_t b = 0; b < k / QK; ++b, x += QK) {
        float mn, mx;
        min_max(x, QK, mn, mx);
        const float d = (mx - mn) / 15;
        const float id = d != 0 ? 1.0f / d : 0.0f;
        y[b].d = fp32_to_fp16(d);
        y[b].m = fp32_to_fp16(mn);
        for (int j = 0; j < QK / 2; ++j) {
            int lo = std::min(15, trunc_i8((x[j] - mn) * id + 0.5f));
            int hi = std::min(15, trunc_i8((x[j + QK / 2] - mn) * id + 0.5f));
            y[b].qs[j] = static_cast<uint8_t>(lo | (hi << 4));
        }
    }
}

void quantize_row_q5_0_ref(const float* x, BlockQ5_0* y, int64_t k) {
    for (int64_t b = 0; b < k / QK; ++b, x += QK) {
        const float d = signed_absmax(x, QK) / -16;
        const float id = d != 0 ? 1.0f / d : 0.0f;
        y[b].d = fp32_to_fp16(d);
        uint32_t qh = 0;
        for (int j = 0; j < QK / 2; ++j) {
            int lo = std::min(31, trunc_i8(x[j] * id + 16.5f));
            int hi = std::min(31, trunc_i8(x[j + QK / 2] * id + 16.5f));
            y[b].qs[j] = static_cast<uint8_t>((lo & 15) | ((hi & 15) << 4));
            qh |= static_cast<uint32_t>(lo >> 4) << j;
            qh |= static_cast<uint32_t>(hi >> 4) << (j + QK / 2);
        }
        for (int i = 0; i < 4; ++i) y[b].qh[i] = static_cast<uint8_t>(qh >> (8 * i));
    }
}

void quantize_row_q5_1_ref(const float* x, BlockQ5_1* y, int64_t k) {
    for (int64_t b = 0; b < k / QK; ++b, x += QK) {
        float mn, mx;
        min_max(x, QK, mn, mx);
        const float d = (mx - mn) / 31;
        const float id = d != 0 ? 1.0f / d : 0.0f;
        y[b].d = fp32_to_fp16(d);
        y[b].m = fp32_to_fp16(mn);
        uint32_t qh = 0;
        for (int j = 0; j < QK / 2; ++j) {
            // ggml converts to uint8 without a clamp: (max-min)*(1/d) + 0.5 stays below 32
            int lo = static_cast<uint8_t>((x[j] - mn) * id + 0.5f);
            int hi = static_cast<uint8_t>((x[j + QK / 2] - mn) * id + 0.5f);
            y[b].qs[j] = static_cast<uint8_t>((lo & 15) | ((hi & 15) << 4));
            qh |= static_cast<uint32_t>((lo >> 4) & 1) << j;
            qh |= static_cast<uint32_t>((hi >> 4) & 1) << (j + QK / 2);
        }
        for (int i = 0; i < 4; ++i) y[b].qh[i] = static_cast<uint8_t>(qh >> (8 * i));
    }
}

void quantize_row_q8_0_ref(const float* x, BlockQ8_0* y, int64_t k) {
    for (int64_t b = 0; b < k / QK; ++b, x += QK) {
        float amax = 0;
        for (int j = 0; j < QK; ++j) amax = std::max(amax, std::fabs(x[j]));
        const float d = amax / 127;
        const float id = d != 0 ? 1.0f / d : 0.0f;
        y[b].d = fp32_to_fp16(d);
        for (int j = 0; j < QK; ++j) y[b].qs[j] = static_cast<int8_t>(std::round(x[j] * id));
    }
}

void quantize_row_q8_1_ref(const float* x, BlockQ8_1* y, int64_t k) {
    for (int64_t b = 0; b < k / QK; ++b, x += QK) {
        float amax = 0;
        for (int j = 0; j < QK; ++j) amax = std::max(amax, std::fabs(x[j]));
        const float d = amax / 127;
        const float id = d != 0 ? 1.0f / d : 0.0f;
        y[b].d = fp32_to_fp16(d);
        int sum = 0;
        for (int j = 0; j < QK; ++j) {
            y[b].qs[j] = static_cast<int8_t>(std::round(x[j] * id));
            sum += y[b].qs[j];
        }
        y[b].s = fp32_to_fp16(static_cast<float>(sum) * d);
    }
}

void dequantize_row_q4_0(const BlockQ4_0* x, float* y, int64_t k) {
    for (int64_t b = 0; b < k / QK; ++b, y += QK) {
        const float d = fp16_to_fp32(x[b].d);
        for (int j = 0; j < QK / 2; ++j) {
            y[j] = static_cast<float>((x[b].qs[j] & 15) - 8) * d;
            y[j + QK / 2] = static_cast<float>((x[b].qs[j] >> 4) - 8) * d;
        }
    }
}

void dequantize_row_q4_1(const BlockQ4_1* x, float* y, int64_t k) {
    for (int64_t b = 0; b < k / QK; ++b, y += QK) {
        const float d = fp16_to_fp32(x[b].d), m = fp16_to_fp32(x[b].m);
        for (int j = 0; j < QK / 2; ++j) {
            y[j] = static_cast<float>(x[b].qs[j] & 15) * d + m;
            y[j + QK / 2] = static_cast<float>(x[b].qs[j] >> 4) * d + m;
        }
    }
}

namespace {
inline uint32_t load_qh(const uint8_t* p) {
    return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 | static_cast<uint32_t>(p[2]) << 16 |
           static_cast<uint32_t>(p[3]) << 24;
}
}  // namespace

void dequantize_row_q5_0(const BlockQ5_0* x, float* y, int64_t k) {
    for (int64_t b = 0; b < k / QK; ++b, y += QK) {
        const float d = fp16_to_fp32(x[b].d);
        const uint32_t qh = load_qh(x[b].qh);
        for (int j = 0; j < QK / 2; ++j) {
            int lo = (x[b].qs[j] & 15) | static_cast<int>(((qh >> j) & 1) << 4);
            int hi = (x[b].qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1) << 4);
            y[j] = static_cast<float>(lo - 16) * d;
            y[j + QK / 2] = static_cast<float>(hi - 16) * d;
        }
    }
}

void dequantize_row_q5_1(const BlockQ5_1* x, float* y, int64_t k) {
    for (int64_t b = 0; b < k / QK; ++b, y += QK) {
        const float d = fp16_to_fp32(x[b].d), m = fp16_to_fp32(x[b].m);
        const uint32_t qh = load_qh(x[b].qh);
        for (int j = 0; j < QK / 2; ++j) {
            int lo = (x[b].qs[j] & 15) | static_cast<int>(((qh >> j) & 1) << 4);
            int hi = (x[b].qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1) << 4);
            y[j] = static_cast<float>(lo) * d + m;
            y[j + QK / 2] = static_cast<float>(hi) * d + m;
        }
    }
}

void dequantize_row_q8_0(const BlockQ8_0* x, float* y, int64_t k) {
    for (int64_t b = 0; b < k / QK; ++b, y += QK) {
        const float d = fp16_to_fp32(x[b].d);
        for (int j = 0; j < QK; ++j) y[j] = static_cast<float>(x[b].qs[j]) * d;
    }
}

void dequantize_row_q8_1(const BlockQ8_1* x, float* y, int64_t k) {
    for (int64_t b = 0; b < k / QK; ++b, y += QK) {
        const float d = fp16_to_fp32(x[b].d);
        for (int j = 0; j < QK; ++j) y[j] = static_cast<float>(x[b].qs[j]) * d;
    }
}

}  // namespace calpaca::quant
