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

// Stores n floats into a cache row of type t (F16: round to nearest even; F32: copy).
void store_row(DType t, const float* x, uint8_t* dst, int64_t n);

}  // namespace calpaca
