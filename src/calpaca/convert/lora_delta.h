// The LoRA merge arithmetic, exactly as peft / the original merge scripts do it:
//   delta = (B · A) * scaling            (f32; transposed when fan_in_fan_out)
//   W     = round_to_storage(W + delta)  (torch's in-place add into an f16 tensor)
// plus the per-head q/k row permutations between the HF (rotate-half) and the
// Meta/GGUF (interleaved) layouts. Each fast routine has a plain `_ref` twin.
#pragma once
#include <cstdint>
#include <vector>

#include "calpaca/tensor/dtype.h"

namespace calpaca {

class ThreadPool;

struct LoraFactors {
    const float* A = nullptr;  // [rank][n_in]
    const float* B = nullptr;  // [n_out][rank]
    int64_t rank = 0, n_in = 0, n_out = 0;
    bool fan_in_fan_out = false;  // W is stored [n_in][n_out]
    float scaling = 1.0f;
};

// W holds rows [r0, r1) of the weight (row length n_in, or n_out when fan_in_fan_out).
// Adds the delta to them and rounds each result to `storage` (F32: no rounding; F16/BF16).
void add_lora_delta_rows_ref(const LoraFactors& f, int64_t r0, int64_t r1, float* W, DType storage);
void add_lora_delta_rows(const LoraFactors& f, int64_t r0, int64_t r1, float* W, DType storage, ThreadPool* pool);

// Rounds values to F16/BF16 precision in place (F32: nothing).
void round_to_storage(float* x, size_t n, DType storage);

// q/k rows of whole heads (n_rows a multiple of head_dim), permuted in place within each head.
// HF → interleaved: out row 2i+j = in row j*(d/2)+i ; interleaved → HF is the inverse.
void qk_rows_hf_to_interleaved(float* rows, int64_t n_rows, int64_t cols, int64_t head_dim, std::vector<float>& scratch);
void qk_rows_interleaved_to_hf(float* rows, int64_t n_rows, int64_t cols, int64_t head_dim, std::vector<float>& scratch);

}  // namespace calpaca
