// Attention of one query vector over one head of the KV cache:
//   out = softmax(scale * q . K[j], j < n_keys) . V
// K and V rows are F16 or F32 (the cache types), `stride` bytes apart (one cache position to
// the next); k and v point at the head's first element of position 0.
//
// attend_ref is the plain yardstick (double accumulation, as kernels' dot_ref/softmax);
// attend is the SIMD version (four keys per step sharing the query loads, F16C conversion
// of the F16 cache, V accumulated in registers); it sums in the same order as kernels'
// dot() / softmax() / axpy() do, so a caller built on those (MultiSession) gets the same bits.
// tests/unit/test_attention.cpp compares attend with attend_ref on random data with odd sizes.
#pragma once
#include <cstddef>
#include <cstdint>

#include "calpaca/tensor/dtype.h"

namespace calpaca {

struct KVHead {
    const uint8_t* k = nullptr;
    const uint8_t* v = nullptr;
    DType type = DType::F16;  // F16 or F32
    size_t stride = 0;        // bytes between consecutive positions
};

// scratch holds at least n_keys floats (it receives the attention weights). n_keys >= 1.
void attend_ref(const KVHead& kv, const float* q, int64_t head_dim, int64_t n_keys, float scale, float* out,
                float* scratch);
void attend(const KVHead& kv, const float* q, int64_t head_dim, int64_t n_keys, float scale, float* out,
            float* scratch);

// Four queries of one head at consecutive positions: query i (at q + i * q_stride) attends to
// the first n_keys0 + i keys, its output goes to out + i * out_stride. Each query gets attend()'s
// bits; with the AVX2 kernels and head_dim a multiple of 16 every K and V row is converted once
// for all four (a prompt's attention; else four attend() calls). scratch holds 4 * (n_keys0 + 3)
// floats. n_keys0 >= 1.
void attend4(const KVHead& kv, const float* q, int64_t q_stride, int64_t head_dim, int64_t n_keys0, float scale,
             float* out, int64_t out_stride, float* scratch);

// Stores n floats into a cache row of type t (F16: round to nearest even; F32: copy).
void store_row(DType t, const float* x, uint8_t* dst, int64_t n);

}  // namespace calpaca
