// Shared helpers of the quantized-kernel tests (test_quant_kernels.cpp, test_packed.cpp):
// seeded random data, a reference-quantized row, and the scale of f32 rounding differences.
#pragma once
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "calpaca/tensor/dtype.h"
#include "calpaca/tensor/quant.h"

namespace calpaca::qtest {

inline std::vector<float> random_vec(size_t n, std::mt19937& rng, float scale = 1.0f) {
    std::normal_distribution<float> nd(0.0f, scale);
    std::vector<float> v(n);
    for (auto& x : v) x = nd(rng);
    return v;
}

inline std::vector<uint8_t> quantized(DType t, const std::vector<float>& x) {
    std::vector<uint8_t> q(row_bytes(t, x.size()));
    quantize_row_ref(t, x.data(), q.data(), static_cast<int64_t>(x.size()));
    return q;
}

// Σ |w_i a_i| over the dequantized operands: the scale of f32 rounding differences.
inline double magnitude(DType wt, const void* w, DType at, const void* a, int64_t n) {
    std::vector<float> wf(n), af(n);
    dequantize_row(wt, w, wf.data(), n);
    dequantize_row(at, a, af.data(), n);
    double m = 0;
    for (int64_t i = 0; i < n; ++i) m += std::fabs(static_cast<double>(wf[i]) * af[i]);
    return m;
}
}  // namespace calpaca::qtest
