// Dot products of quantized weight rows with quantized activation rows, as ggml computes
// them: the activations are quantized on the fly to an 8-bit block format (Q8_0 for Q4_0 /
// Q5_0 / Q8_0 weights, Q8_1 for Q4_1 / Q5_1 — it carries the block sum the weight's
// offset needs — and Q8_K for the K-quants), products are summed as integers within a
// (sub-)block and scaled in f32 once per block.
//
// Each operation has a plain `_ref` twin (quant_dot_ref.cpp). The fast versions
// (quant_dot_x86.cpp with AVX2, and AVX-512 VNNI / AVX-VNNI dot instructions where the
// build targets them) compute the same integer sums, so they differ from the reference
// only by f32 summation order; the fast activation quantizers are byte-identical to the
// reference ones. AArch64 builds use quant_dot_neon.cpp (NEON s8×s8 products, `vdotq_s32`
// when the build targets the dot-product extension), with the same integer sums; builds
// with neither use the reference loops (quant_dot_generic.cpp).
#pragma once
#include <cstdint>

#include "calpaca/tensor/dtype.h"

namespace calpaca {

// Activation block type for weight type w (Error for a type with no quantized dot product).
DType vec_dot_type(DType w);

// Quantize n activations (a multiple of act's block size) into act = Q8_0, Q8_1 or Q8_K.
void quantize_act_ref(DType act, const float* x, void* y, int64_t n);
void quantize_act(DType act, const float* x, void* y, int64_t n);

// Dot product of one weight row (type w, n elements) with one activation row of type
// vec_dot_type(w).
float vec_dot_q_ref(DType w, const void* wrow, const void* arow, int64_t n);
// out[k] = dot(wrow, arows[k]) for k < nt, 1 <= nt <= 4: the weight row is unpacked once
// for all nt activation rows (prompt processing / batched decode).
void vec_dot_q(DType w, const void* wrow, const void* const* arows, int nt, int64_t n, float* out);
// out[r] = dot(wrows[r], arow) for r < nr: the same values as vec_dot_q one row at a time (bit
// for bit); Q6_K with nr = 4 reads the 4 rows side by side (4 memory streams: decode).
void vec_dot_q_rows(DType w, const void* const* wrows, int nr, const void* arow, int64_t n, float* out);

// The instruction set the fast kernels were built for: "avx512-vnni", "avx-vnni", "avx2",
// "neon-dotprod", "neon" or "scalar".
const char* quant_kernel_isa();

}  // namespace calpaca
