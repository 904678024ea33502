// Plain twin of gemm_q_tile (gemm.h): one vec_dot_q_ref per (row, token) over the block range;
// and gemm_q_rows, the row-kernel form every build's gemm_q_tile falls back to.
#include "calpaca/tensor/gemm.h"

#include <algorithm>

#include "calpaca/tensor/quant_dot.h"

namespace calpaca {

void gemm_q_tile_ref(DType wt, const uint8_t* w, size_t wrb, int64_t r0, int64_t r1, const ActPanel& a, int64_t t0,
                     int64_t t1, int64_t kb0, int64_t kb1, float* y, int64_t ldy, bool accumulate) {
    const auto& wi = dtype_info(wt);
    const auto& ai = dtype_info(vec_dot_type(wt));
    const int64_t n = (kb1 - kb0) * wi.block_size;
    // activation blocks per weight block (1: legacy/Q8_0/Q8_1 and K-quants/Q8_K have equal block sizes)
    const int64_t ablocks = wi.block_size / ai.block_size;
    for (int64_t t = t0; t < t1; ++t) {
        const uint8_t* arow = a.q + static_cast<size_t>(t) * a.rb + static_cast<size_t>(kb0 * ablocks) * ai.type_size;
        for (int64_t r = r0; r < r1; ++r) {
            const uint8_t* wrow = w + static_cast<size_t>(r) * wrb + static_cast<size_t>(kb0) * wi.type_size;
            const float v = vec_dot_q_ref(wt, wrow, arow, n);
            float& out = y[t * ldy + r];
            out = accumulate ? out + v : v;
        }
    }
}

void gemm_q_rows(DType wt, const uint8_t* w, size_t wrb, int64_t r0, int64_t r1, const ActPanel& a, int64_t t0,
                 int64_t t1, int64_t kb0, int64_t kb1, float* y, int64_t ldy, bool accumulate) {
    const auto& wi = dtype_info(wt);
    const auto& ai = dtype_info(vec_dot_type(wt));
    const int64_t n = (kb1 - kb0) * wi.block_size;
    const size_t aoff = static_cast<size_t>(kb0 * (wi.block_size / ai.block_size)) * ai.type_size;
    for (int64_t r = r0; r < r1; ++r) {
        const uint8_t* wrow = w + static_cast<size_t>(r) * wrb + static_cast<size_t>(kb0) * wi.type_size;
        for (int64_t t = t0; t < t1; t += 4) {
            const int nt = static_cast<int>(std::min<int64_t>(4, t1 - t));
            const void* rows[4];
            for (int k = 0; k < nt; ++k) rows[k] = a.q + static_cast<size_t>(t + k) * a.rb + aoff;
            float o[4];
            vec_dot_q(wt, wrow, rows, nt, n, o);
            for (int k = 0; k < nt; ++k) {
                float& out = y[(t + k) * ldy + r];
                out = accumulate ? out + o[k] : o[k];
            }
        }
    }
}

#if !(defined(__AVX2__) && defined(__FMA__) && defined(__F16C__))
// Builds without the x86 kernels: one row at a time.
void vec_dot_q_rows(DType w, const void* const* wrows, int nr, const void* arow, int64_t n, float* out) {
    for (int r = 0; r < nr; ++r) vec_dot_q(w, wrows[r], &arow, 1, n, out + r);
}
#endif

}  // namespace calpaca
