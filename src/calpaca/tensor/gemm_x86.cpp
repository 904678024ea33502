// AVX2 quantized matrix × matrix tiles (gemm.h).
//
// Legacy symmetric types (Q4_0, Q5_0, Q8_0 weights against Q8_0 activations): a register
// block of RM weight rows × RN tokens. Per block, each weight row's 32 codes are unpacked
// once (and their absolute values taken once) for the RN tokens, and each token's 32
// activation bytes are loaded once for the RM rows; the activation scales come as f32
// (ActPanel::d), so no f16 conversion sits in the inner loop. Per (row, token) the integer
// block sum is ggml's (|w| · sign(a, w) through maddubs), scaled by d_w * d_a in f32.
// Other types go through vec_dot_q (one weight row against up to 4 tokens, the row unpacked
// once per block): kernels.cpp calls gemm_q_tile only for gemm_q_tiled types, the fallback
// below serves direct callers. A 2-row × 4-token tile for Q4_K and Q6_K (8 int32 super-block
// sums) was measured and did not beat the row kernels here, so it was not kept.
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)

#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "calpaca/tensor/gemm.h"
#include "calpaca/tensor/quant_blocks.h"
#include "calpaca/tensor/quant_dot.h"
#include "calpaca/tensor/simd_x86.h"

namespace calpaca {

using namespace quant;
using namespace x86;

namespace {





struct TQ4_0 {
    using B = BlockQ4_0;
    static __m256i codes(const B& b) { return _mm256_sub_epi8(nibbles32(b.qs), _mm256_set1_epi8(8)); }
};
struct TQ5_0 {
    using B = BlockQ5_0;
    static __m256i codes(const B& b) {
        return _mm256_sub_epi8(_mm256_or_si256(nibbles32(b.qs), high_bits32(b.qh)), _mm256_set1_epi8(16));
    }
};
struct TQ8_0 {
    using B = BlockQ8_0;
    static __m256i codes(const B& b) { return loadu(b.qs); }
};

// RM weight rows (w[i]: block arrays starting at the first block) × RN activation rows.
template <typename T, int RM, int RN>
void tile_sym(const typename T::B* const* w, const BlockQ8_0* const* a, const float* const* ad, int64_t nb,
              float* out /* [RM][RN] */) {
    __m256 acc[RM][RN];
    for (int i = 0; i < RM; ++i)
        for (int j = 0; j < RN; ++j) acc[i][j] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
        __m256i q[RM], aq[RM];
        __m256 dw[RM];
        for (int i = 0; i < RM; ++i) {
            q[i] = T::codes(w[i][b]);
            aq[i] = _mm256_sign_epi8(q[i], q[i]);
            dw[i] = _mm256_set1_ps(h2f(w[i][b].d));
        }
        for (int j = 0; j < RN; ++j) {
            const __m256i yv = loadu(a[j][b].qs);
            const __m256 dy = _mm256_broadcast_ss(ad[j] + b);
            for (int i = 0; i < RM; ++i) {
                const __m256i p = dot_u8s8(aq[i], _mm256_sign_epi8(yv, q[i]));
                acc[i][j] = _mm256_fmadd_ps(_mm256_mul_ps(dw[i], dy), _mm256_cvtepi32_ps(p), acc[i][j]);
            }
        }
    }
    for (int i = 0; i < RM; ++i)
        for (int j = 0; j < RN; ++j) out[i * RN + j] = hsum(acc[i][j]);
}

// Legacy types as tiles: D::codes() unpacks a block to 32 signed bytes.
template <typename D>
struct Sym {
    using B = typename D::B;
    using A = BlockQ8_0;
    template <int RM, int RN>
    static void tile(const B* const* w, const A* const* a, const float* const* ad, int64_t nb, float* out) {
        tile_sym<D, RM, RN>(w, a, ad, nb, out);
    }
};

constexpr int kRM = 2, kRN = 4;

template <typename T, int RM, int RN>
void run_tile(const uint8_t* w, size_t wrb, int64_t r, const ActPanel& a, int64_t t, int64_t kb0, int64_t nb,
              float* y, int64_t ldy, bool accumulate) {
    using B = typename T::B;
    using A = typename T::A;
    const B* wr[RM];
    const A* ar[RN];
    const float* ad[RN];
    for (int i = 0; i < RM; ++i) wr[i] = reinterpret_cast<const B*>(w + static_cast<size_t>(r + i) * wrb) + kb0;
    for (int j = 0; j < RN; ++j) {
        ar[j] = reinterpret_cast<const A*>(a.q + static_cast<size_t>(t + j) * a.rb) + kb0;
        ad[j] = a.d ? a.d + (t + j) * a.ld + kb0 : nullptr;
    }
    float o[RM * RN];
    T::template tile<RM, RN>(wr, ar, ad, nb, o);
    for (int i = 0; i < RM; ++i)
        for (int j = 0; j < RN; ++j) {
            float& dst = y[(t + j) * ldy + r + i];
            dst = accumulate ? dst + o[i * RN + j] : o[i * RN + j];
        }
}

// Edge tiles take the same per-(row, token) arithmetic with smaller RM / RN.
template <typename T, int RM>
void run_tokens(const uint8_t* w, size_t wrb, int64_t r, const ActPanel& a, int64_t t0, int64_t t1, int64_t kb0,
                int64_t nb, float* y, int64_t ldy, bool accumulate) {
    int64_t t = t0;
    for (; t + kRN <= t1; t += kRN) run_tile<T, RM, kRN>(w, wrb, r, a, t, kb0, nb, y, ldy, accumulate);
    switch (t1 - t) {
        case 3: run_tile<T, RM, 3>(w, wrb, r, a, t, kb0, nb, y, ldy, accumulate); break;
        case 2: run_tile<T, RM, 2>(w, wrb, r, a, t, kb0, nb, y, ldy, accumulate); break;
        case 1: run_tile<T, RM, 1>(w, wrb, r, a, t, kb0, nb, y, ldy, accumulate); break;
        default: break;
    }
}

template <typename T>
void gemm_tiles(const uint8_t* w, size_t wrb, int64_t r0, int64_t r1, const ActPanel& a, int64_t t0, int64_t t1,
              int64_t kb0, int64_t kb1, float* y, int64_t ldy, bool accumulate) {
    const int64_t nb = kb1 - kb0;
    int64_t r = r0;
    for (; r + kRM <= r1; r += kRM) run_tokens<T, kRM>(w, wrb, r, a, t0, t1, kb0, nb, y, ldy, accumulate);
    for (; r < r1; ++r) run_tokens<T, 1>(w, wrb, r, a, t0, t1, kb0, nb, y, ldy, accumulate);
}

}  // namespace

bool gemm_q_tiled(DType wt) { return wt == DType::Q4_0 || wt == DType::Q5_0 || wt == DType::Q8_0; }

void gemm_q_tile(DType wt, const uint8_t* w, size_t wrb, int64_t r0, int64_t r1, const ActPanel& a, int64_t t0,
                 int64_t t1, int64_t kb0, int64_t kb1, float* y, int64_t ldy, bool accumulate) {
    if (r0 >= r1 || t0 >= t1) return;
    // One token (decode): vec_dot_q's row kernels, which keep two accumulators per row, are
    // faster than a 2 × 1 tile (measured with BM_QMatmul tok:1).
    if (t1 - t0 == 1) return gemm_q_rows(wt, w, wrb, r0, r1, a, t0, t1, kb0, kb1, y, ldy, accumulate);
    if (a.d) {
        switch (wt) {
            case DType::Q4_0: return gemm_tiles<Sym<TQ4_0>>(w, wrb, r0, r1, a, t0, t1, kb0, kb1, y, ldy, accumulate);
            case DType::Q5_0: return gemm_tiles<Sym<TQ5_0>>(w, wrb, r0, r1, a, t0, t1, kb0, kb1, y, ldy, accumulate);
            case DType::Q8_0: return gemm_tiles<Sym<TQ8_0>>(w, wrb, r0, r1, a, t0, t1, kb0, kb1, y, ldy, accumulate);
            default: break;
        }
    }
    gemm_q_rows(wt, w, wrb, r0, r1, a, t0, t1, kb0, kb1, y, ldy, accumulate);
}

}  // namespace calpaca

#endif  // AVX2
