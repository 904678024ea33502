// Quantized matrix × matrix tiles for matmul (kernels.cpp): a tile of weight rows against a
// tile of activation rows (tokens), over a range of blocks of the inner dimension.
//
// The activations of a matmul are quantized once (to vec_dot_type(w)) and their Q8_0 block
// scales converted to f32 once (ActPanel::d), then every tile reads them. The fast tile
// (gemm_x86.cpp with AVX2; gemm_generic.cpp elsewhere) keeps a register block of 2 weight
// rows × 4 tokens for Q4_0 / Q5_0 / Q8_0, so each unpacked weight block and each
// loaded activation block is used several times, and falls back to vec_dot_q (one weight row
// against up to 4 tokens) for the other types. gemm_q_tile_ref (gemm_ref.cpp) is the plain
// twin on vec_dot_q_ref. Both compute, per (row, token), the same integer block sums as
// vec_dot_q_ref, so results differ from it only by f32 summation order; the fast tile gives
// bit-identical results whatever tile shape or thread split covers an element.
#pragma once
#include <cstddef>
#include <cstdint>

#include "calpaca/tensor/dtype.h"

namespace calpaca {

// Quantized activations: token t's row at q + t * rb (type vec_dot_type(w)); for Q8_0 rows
// also their block scales as f32 at d + t * ld (nullptr for the other activation types), and
// the sums of each block's 32 codes at s + t * ld (packed Q4_0 kernels: the -8 offset).
struct ActPanel {
    const uint8_t* q = nullptr;
    size_t rb = 0;
    const float* d = nullptr;
    int64_t ld = 0;
    const int32_t* s = nullptr;
};

// For r in [r0, r1), t in [t0, t1):
//   y[t * ldy + r] (+)= sum over weight blocks [kb0, kb1) of (row r of w) · (activation row t)
// where row r starts at w + r * wrb; accumulate adds to y, otherwise y is overwritten.
// Blocks are the weight type's blocks (32 elements, 256 for the K-quants).
void gemm_q_tile(DType wt, const uint8_t* w, size_t wrb, int64_t r0, int64_t r1, const ActPanel& a, int64_t t0,
                 int64_t t1, int64_t kb0, int64_t kb1, float* y, int64_t ldy, bool accumulate);
void gemm_q_tile_ref(DType wt, const uint8_t* w, size_t wrb, int64_t r0, int64_t r1, const ActPanel& a, int64_t t0,
                     int64_t t1, int64_t kb0, int64_t kb1, float* y, int64_t ldy, bool accumulate);

// Whether gemm_q_tile has a register-blocked kernel for weight type wt (otherwise it runs
// vec_dot_q on up to 4 tokens at a time).
bool gemm_q_tiled(DType wt);

// gemm_q_tile's row form, shared by every build (gemm_ref.cpp): vec_dot_q of each weight row
// against up to 4 tokens at a time — the decode path and the types without a tile kernel.
void gemm_q_rows(DType wt, const uint8_t* w, size_t wrb, int64_t r0, int64_t r1, const ActPanel& a, int64_t t0,
                 int64_t t1, int64_t kb0, int64_t kb1, float* y, int64_t ldy, bool accumulate);

}  // namespace calpaca
