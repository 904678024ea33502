// Portable fallback for the fast quantized kernels, used when the build targets neither AVX2
// (quant_dot_x86.cpp) nor AArch64 NEON (quant_dot_neon.cpp) — older x86, 32-bit ARM, other
// CPUs: the reference loops. Exactly one of the three files compiles on any target.
#if !(defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)) && !(defined(__ARM_NEON) && defined(__aarch64__))

#include "calpaca/base/error.h"
#include "calpaca/tensor/quant_dot.h"

namespace calpaca {

void quantize_act(DType act, const float* x, void* y, int64_t n) { quantize_act_ref(act, x, y, n); }

void vec_dot_q(DType w, const void* wrow, const void* const* arows, int nt, int64_t n, float* out) {
    if (nt < 1 || nt > 4) fail("vec_dot_q: {} activation rows (expected 1 to 4)", nt);
    for (int k = 0; k < nt; ++k) out[k] = vec_dot_q_ref(w, wrow, arows[k], n);
}

const char* quant_kernel_isa() { return "scalar"; }

}  // namespace calpaca

#endif
