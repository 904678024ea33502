#include "calpaca/convert/lora_delta.h"

// torch (and the original merge) computes B·A with separate multiplies and adds, k in order;
// a fused multiply-add rounds differently, so contraction is off for this file: the merged
// weights then match torch's bit for bit.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include <algorithm>
#include <cstring>

#include "calpaca/base/error.h"
#include "calpaca/base/threadpool.h"

namespace calpaca {

void round_to_storage(float* x, size_t n, DType storage) {
    if (storage == DType::F16) {
        for (size_t i = 0; i < n; ++i) x[i] = fp16_to_fp32(fp32_to_fp16(x[i]));
    } else if (storage == DType::BF16) {
        for (size_t i = 0; i < n; ++i) x[i] = bf16_to_fp32(fp32_to_bf16(x[i]));
    }
}

namespace {

void check(const LoraFactors& f, int64_t r0, int64_t r1) {
    const int64_t rows = f.fan_in_fan_out ? f.n_in : f.n_out;
    if (r0 < 0 || r1 > rows || r0 > r1) fail("LoRA delta: rows [{}, {}) outside a {}-row weight", r0, r1, rows);
}

// One weight row i: out[c] = sum_k B[i,k] * A[k,c] (k ascending, f32), then * scaling.
void delta_row(const LoraFactors& f, int64_t i, float* out) {
    const int64_t n = f.n_in;
    std::fill(out, out + n, 0.0f);
    const float* b = f.B + i * f.rank;
    for (int64_t k = 0; k < f.rank; ++k) {
        const float bk = b[k];
        const float* a = f.A + k * n;
        for (int64_t c = 0; c < n; ++c) out[c] += bk * a[c];
    }
    for (int64_t c = 0; c < n; ++c) out[c] *= f.scaling;
}

// fan_in_fan_out row j (an input feature): out[i] = sum_k B[i,k] * A[k,j], then * scaling.
void delta_row_fifo(const LoraFactors& f, int64_t j, float* out) {
    for (int64_t i = 0; i < f.n_out; ++i) {
        float s = 0;
        for (int64_t k = 0; k < f.rank; ++k) s += f.B[i * f.rank + k] * f.A[k * f.n_in + j];
        out[i] = s * f.scaling;
    }
}

}  // namespace

void add_lora_delta_rows_ref(const LoraFactors& f, int64_t r0, int64_t r1, float* W, DType storage) {
    check(f, r0, r1);
    const int64_t cols = f.fan_in_fan_out ? f.n_out : f.n_in;
    for (int64_t r = r0; r < r1; ++r) {
        float* w = W + (r - r0) * cols;
        for (int64_t c = 0; c < cols; ++c) {
            float s = 0;
            for (int64_t k = 0; k < f.rank; ++k)
                s += f.fan_in_fan_out ? f.B[c * f.rank + k] * f.A[k * f.n_in + r] : f.B[r * f.rank + k] * f.A[k * f.n_in + c];
            w[c] = w[c] + s * f.scaling;
        }
        round_to_storage(w, static_cast<size_t>(cols), storage);
    }
}

void add_lora_delta_rows(const LoraFactors& f, int64_t r0, int64_t r1, float* W, DType storage, ThreadPool* pool) {
    check(f, r0, r1);
    const int64_t cols = f.fan_in_fan_out ? f.n_out : f.n_in;
    auto work = [&](size_t b, size_t e) {
        std::vector<float> d(static_cast<size_t>(cols));
        for (size_t k = b; k < e; ++k) {
            const int64_t r = r0 + static_cast<int64_t>(k);
            if (f.fan_in_fan_out) delta_row_fifo(f, r, d.data());
            else delta_row(f, r, d.data());
            float* w = W + (r - r0) * cols;
            for (int64_t c = 0; c < cols; ++c) w[c] += d[c];
            round_to_storage(w, static_cast<size_t>(cols), storage);
        }
    };
    if (pool) pool->parallel_for(static_cast<size_t>(r1 - r0), work);
    else work(0, static_cast<size_t>(r1 - r0));
}

namespace {

void permute(float* rows, int64_t n_rows, int64_t cols, int64_t d, std::vector<float>& scratch, bool to_interleaved) {
    if (d <= 0 || d % 2 || n_rows % d) fail("q/k permutation: {} rows are not whole heads of dimension {}", n_rows, d);
    scratch.resize(static_cast<size_t>(d * cols));
    const size_t rb = static_cast<size_t>(cols) * sizeof(float);
    for (int64_t h = 0; h < n_rows / d; ++h) {
        float* head = rows + h * d * cols;
        std::memcpy(scratch.data(), head, static_cast<size_t>(d) * rb);
        for (int64_t i = 0; i < d / 2; ++i)
            for (int64_t j = 0; j < 2; ++j) {
                const int64_t hf = j * (d / 2) + i, il = 2 * i + j;
                if (to_interleaved) std::memcpy(head + il * cols, scratch.data() + hf * cols, rb);
                else std::memcpy(head + hf * cols, scratch.data() + il * cols, rb);
            }
    }
}

}  // namespace

void qk_rows_hf_to_interleaved(float* rows, int64_t n_rows, int64_t cols, int64_t head_dim, std::vector<float>& scratch) {
    permute(rows, n_rows, cols, head_dim, scratch, true);
}

void qk_rows_interleaved_to_hf(float* rows, int64_t n_rows, int64_t cols, int64_t head_dim, std::vector<float>& scratch) {
    permute(rows, n_rows, cols, head_dim, scratch, false);
}

}  // namespace calpaca
