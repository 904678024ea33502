// gemm_q_tile for builds without AVX2 (older x86, ARM): vec_dot_q on up to 4 tokens per
// weight row — on AArch64 that is the NEON row kernel (quant_dot_neon.cpp); there are no
// NEON tile kernels.
#if !(defined(__AVX2__) && defined(__FMA__) && defined(__F16C__))

#include "calpaca/tensor/gemm.h"
#include "calpaca/tensor/quant_dot.h"

namespace calpaca {

bool gemm_q_tiled(DType) { return false; }

void gemm_q_tile(DType wt, const uint8_t* w, size_t wrb, int64_t r0, int64_t r1, const ActPanel& a, int64_t t0,
                 int64_t t1, int64_t kb0, int64_t kb1, float* y, int64_t ldy, bool accumulate) {
    gemm_q_rows(wt, w, wrb, r0, r1, a, t0, t1, kb0, kb1, y, ldy, accumulate);
}

}  // namespace calpaca

#endif
