// Reference quantized dot products: plain loops over the decoded integer codes, one f32
// scale product per (sub-)block, summed in order. The yardstick for quant_dot_x86.cpp /
// quant_dot_neon.cpp.
#include "calpaca/base/error.h"
#include "calpaca/tensor/quant.h"
#include "calpaca/tensor/quant_blocks.h"
#include "calpaca/tensor/quant_dot.h"

namespace calpaca {

using namespace quant;

DType vec_dot_type(DType w) {
    switch (w) {
        case DType::Q4_0: case DType::Q5_0: case DType::Q8_0: return DType::Q8_0;
        case DType::Q4_1: case DType::Q5_1: return DType::Q8_1;
        case DType::Q2_K: case DType::Q3_K: case DType::Q4_K: case DType::Q5_K: case DType::Q6_K: return DType::Q8_K;
        default: fail("no quantized dot product for weight type {}", dtype_name(w));
    }
}

void quantize_act_ref(DType act, const float* x, void* y, int64_t n) {
    if (act != DType::Q8_0 && act != DType::Q8_1 && act != DType::Q8_K)
        fail("quantize_act: {} is not an activation format (Q8_0, Q8_1, Q8_K)", dtype_name(act));
    quantize_row_ref(act, x, y, n);
}

namespace {

inline float h2f(uint16_t h) { return fp16_to_fp32(h); }

// Legacy weight code j of a block (0..31), already offset (signed value).
int code_q4_0(const BlockQ4_0& b, int j) { return (j < 16 ? b.qs[j] & 15 : b.qs[j - 16] >> 4) - 8; }
int code_q4_1(const BlockQ4_1& b, int j) { return j < 16 ? b.qs[j] & 15 : b.qs[j - 16] >> 4; }
int high_bit(const uint8_t* qh, int j) { return (qh[j / 8] >> (j % 8)) & 1; }
int code_q5_0(const BlockQ5_0& b, int j) {
    return ((j < 16 ? b.qs[j] & 15 : b.qs[j - 16] >> 4) | (high_bit(b.qh, j) << 4)) - 16;
}
int code_q5_1(const BlockQ5_1& b, int j) { return (j < 16 ? b.qs[j] & 15 : b.qs[j - 16] >> 4) | (high_bit(b.qh, j) << 4); }

template <typename B, int (*code)(const B&, int)>
float dot_sym_q8_0(const void* w, const void* a, int64_t n) {
    const B* x = static_cast<const B*>(w);
    const BlockQ8_0* y = static_cast<const BlockQ8_0*>(a);
    float sum = 0;
    for (int64_t b = 0; b < n / QK; ++b) {
        int isum = 0;
        for (int j = 0; j < QK; ++j) isum += code(x[b], j) * y[b].qs[j];
        sum += static_cast<float>(isum) * (h2f(x[b].d) * h2f(y[b].d));
    }
    return sum;
}

template <typename B, int (*code)(const B&, int)>
float dot_affine_q8_1(const void* w, const void* a, int64_t n) {
    const B* x = static_cast<const B*>(w);
    const BlockQ8_1* y = static_cast<const BlockQ8_1*>(a);
    float sum = 0;
    for (int64_t b = 0; b < n / QK; ++b) {
        int isum = 0;
        for (int j = 0; j < QK; ++j) isum += code(x[b], j) * y[b].qs[j];
        sum += static_cast<float>(isum) * (h2f(x[b].d) * h2f(y[b].d)) + h2f(x[b].m) * h2f(y[b].s);
    }
    return sum;
}

int code_q8_0(const BlockQ8_0& b, int j) { return b.qs[j]; }

float dot_q2_K(const void* w, const void* a, int64_t n) {
    const BlockQ2_K* x = static_cast<const BlockQ2_K*>(w);
    const BlockQ8_K* y = static_cast<const BlockQ8_K*>(a);
    float sum = 0;
    for (int64_t b = 0; b < n / QK_K; ++b) {
        int isum = 0, msum = 0;
        for (int s = 0; s < 16; ++s) {
            int sub = 0;
            for (int i = 16 * s; i < 16 * s + 16; ++i) {
                const int h = i / 128, j = (i / 32) % 4, l = i % 32;
                sub += ((x[b].qs[32 * h + l] >> (2 * j)) & 3) * y[b].qs[i];
            }
            isum += (x[b].scales[s] & 15) * sub;
            msum += (x[b].scales[s] >> 4) * y[b].bsums[s];
        }
        sum += y[b].d * h2f(x[b].d) * static_cast<float>(isum) - y[b].d * h2f(x[b].dmin) * static_cast<float>(msum);
    }
    return sum;
}

float dot_q3_K(const void* w, const void* a, int64_t n) {
    const BlockQ3_K* x = static_cast<const BlockQ3_K*>(w);
    const BlockQ8_K* y = static_cast<const BlockQ8_K*>(a);
    float sum = 0;
    for (int64_t b = 0; b < n / QK_K; ++b) {
        int8_t sc[16];
        unpack_q3k_scales(x[b].scales, sc);
        int isum = 0;
        for (int s = 0; s < 16; ++s) {
            int sub = 0;
            for (int i = 16 * s; i < 16 * s + 16; ++i) {
                const int h = i / 128, j = (i / 32) % 4, l = i % 32;
                const int lo = (x[b].qs[32 * h + l] >> (2 * j)) & 3;
                const int hi = (x[b].hmask[l] >> (4 * h + j)) & 1;
                sub += (lo + 4 * hi - 4) * y[b].qs[i];
            }
            isum += sc[s] * sub;
        }
        sum += h2f(x[b].d) * y[b].d * static_cast<float>(isum);
    }
    return sum;
}

template <bool kFive, typename B>
float dot_q45_K(const void* w, const void* a, int64_t n) {
    const B* x = static_cast<const B*>(w);
    const BlockQ8_K* y = static_cast<const BlockQ8_K*>(a);
    float sum = 0;
    for (int64_t b = 0; b < n / QK_K; ++b) {
        int isum = 0, msum = 0;
        for (int s = 0; s < 8; ++s) {
            uint8_t sc, m;
            scale_min_k4(s, x[b].scales, sc, m);
            const int p = s / 2, half = s % 2;
            int sub = 0;
            for (int l = 0; l < 32; ++l) {
                const uint8_t q = x[b].qs[32 * p + l];
                int v = half ? q >> 4 : q & 15;
                if constexpr (kFive) v |= ((x[b].qh[l] >> s) & 1) << 4;
                sub += v * y[b].qs[32 * s + l];
            }
            isum += sc * sub;
            msum += m * (y[b].bsums[2 * s] + y[b].bsums[2 * s + 1]);
        }
        sum += y[b].d * h2f(x[b].d) * static_cast<float>(isum) - y[b].d * h2f(x[b].dmin) * static_cast<float>(msum);
    }
    return sum;
}

float dot_q6_K(const void* w, const void* a, int64_t n) {
    const BlockQ6_K* x = static_cast<const BlockQ6_K*>(w);
    const BlockQ8_K* y = static_cast<const BlockQ8_K*>(a);
    float sum = 0;
    for (int64_t b = 0; b < n / QK_K; ++b) {
        int isum = 0;
        for (int s = 0; s < 16; ++s) {
            int sub = 0;
            for (int i = 16 * s; i < 16 * s + 16; ++i) {
                const int h = i / 128, c = (i / 32) % 4, l = i % 32;
                const uint8_t lb = x[b].ql[64 * h + l + 32 * (c & 1)];
                const int lo = (c >> 1) ? lb >> 4 : lb & 15;
                const int hi = (x[b].qh[32 * h + l] >> (2 * c)) & 3;
                sub += ((lo | (hi << 4)) - 32) * y[b].qs[i];
            }
            isum += x[b].scales[s] * sub;
        }
        sum += h2f(x[b].d) * y[b].d * static_cast<float>(isum);
    }
    return sum;
}

}  // namespace

float vec_dot_q_ref(DType w, const void* wrow, const void* arow, int64_t n) {
    if (n % dtype_info(w).block_size) fail("dot: row of {} elements is not a multiple of the {} block size", n, dtype_name(w));
    switch (w) {
        case DType::Q4_0: return dot_sym_q8_0<BlockQ4_0, code_q4_0>(wrow, arow, n);
        case DType::Q5_0: return dot_sym_q8_0<BlockQ5_0, code_q5_0>(wrow, arow, n);
        case DType::Q8_0: return dot_sym_q8_0<BlockQ8_0, code_q8_0>(wrow, arow, n);
        case DType::Q4_1: return dot_affine_q8_1<BlockQ4_1, code_q4_1>(wrow, arow, n);
        case DType::Q5_1: return dot_affine_q8_1<BlockQ5_1, code_q5_1>(wrow, arow, n);
        case DType::Q2_K: return dot_q2_K(wrow, arow, n);
        case DType::Q3_K: return dot_q3_K(wrow, arow, n);
        case DType::Q4_K: return dot_q45_K<false, BlockQ4_K>(wrow, arow, n);
        case DType::Q5_K: return dot_q45_K<true, BlockQ5_K>(wrow, arow, n);
        case DType::Q6_K: return dot_q6_K(wrow, arow, n);
        default: fail("no quantized dot product for weight type {}", dtype_name(w));
    }
}

}  // namespace calpaca
