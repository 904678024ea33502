// Dense kernels for the forward pass. Each fast kernel has a plain `_ref` twin with the
// same signature; tests compare the two on random data (tests/unit/test_kernels.cpp).
//
// Weights are row-major matrices [rows=out][cols=in] stored as F32, F16, BF16 or one of
// ggml's quantized block types Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K (views into the
// mmap'd GGUF). Activations are f32; for quantized weights they are quantized on the fly to
// the 8-bit format the weight type's dot product takes (tensor/quant_dot.h), as ggml does,
// by both the fast kernels and their `_ref` twins.
#pragma once
#include <cstddef>
#include <cstdint>

#include "calpaca/tensor/dtype.h"

namespace calpaca {

class ThreadPool;

struct MatrixView {
    const void* data = nullptr;
    DType type = DType::F32;
    int64_t rows = 0;  // output features (GGUF ne[1])
    int64_t cols = 0;  // input features  (GGUF ne[0])
    // Optional copy of the same weights in the packed 8-row layout (tensor/packed.h), made at
    // model load where packable(); matmul uses it, matmul_ref and row() use data. Whoever
    // replaces data must reset it.
    const uint8_t* packed = nullptr;
    const uint8_t* row(int64_t r) const { return static_cast<const uint8_t*>(data) + r * row_bytes(type, cols); }
};

// Whether matmul / dot accept weights of type t (F32, F16, BF16 and the quantized weight types).
bool matmul_supports(DType t);

// n elements of an F32/F16/BF16 or quantized buffer to f32 (throws for other types; n must
// be a multiple of a quantized type's block size).
void to_f32(DType t, const void* src, float* dst, size_t n);

// dot(w_row, x) for one weight row of type t and length n (a quantized row quantizes x first).
float dot_ref(DType t, const void* w, const float* x, int64_t n);
float dot(DType t, const void* w, const float* x, int64_t n);

// out[i] += a * v[i] for a row v of type t (F32/F16/BF16): attention's weighted sum of V.
void axpy_ref(DType t, const void* v, float a, float* out, int64_t n);
void axpy(DType t, const void* v, float a, float* out, int64_t n);

// y[t][r] = sum_k W[r][k] * x[t][k] for t in [0, n_tok): x is [n_tok][cols], y is [n_tok][rows].
void matmul_ref(const MatrixView& w, const float* x, int64_t n_tok, float* y);
// Same, SIMD dot products, rows split over the pool (nullptr = this thread), tokens blocked
// so that each weight row is read from memory once per block of tokens.
void matmul(const MatrixView& w, const float* x, int64_t n_tok, float* y, ThreadPool* pool);

// RMSNorm: out = x / sqrt(mean(x^2) + eps) * weight
void rmsnorm(const float* x, const float* weight, float* out, int64_t n, float eps);
// In-place softmax of n values.
void softmax(float* x, int64_t n);
inline float silu(float x) { return x / (1.0f + __builtin_expf(-x)); }

}  // namespace calpaca
