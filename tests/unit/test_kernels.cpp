// Fast kernels against their plain reference twins on random data, odd sizes included.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "calpaca/base/error.h"
#include "calpaca/base/threadpool.h"
#include "calpaca/tensor/dtype.h"
#include "calpaca/tensor/kernels.h"
#include "calpaca/tensor/quant.h"

using namespace calpaca;

namespace {

std::vector<uint8_t> random_matrix(DType t, int64_t rows, int64_t cols, std::mt19937& rng) {
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<uint8_t> buf(row_bytes(t, cols) * rows);
    for (int64_t i = 0; i < rows * cols; ++i) {
        float v = nd(rng);
        if (t == DType::F32) {
            std::memcpy(&buf[4 * i], &v, 4);
        } else {
            uint16_t h = t == DType::F16 ? fp32_to_fp16(v) : fp32_to_bf16(v);
            std::memcpy(&buf[2 * i], &h, 2);
        }
    }
    return buf;
}

}  // namespace

TEST(Kernels, MatmulMatchesReferenceOnRandomShapes) {
    std::mt19937 rng(1234);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    ThreadPool pool(3);
    const int64_t shapes[][3] = {{1, 1, 1}, {7, 13, 1}, {64, 33, 5}, {130, 257, 3}, {65, 16, 9}, {3, 1000, 70}};
    for (DType t : {DType::F32, DType::F16, DType::BF16}) {
        for (const auto& s : shapes) {
            const int64_t rows = s[0], cols = s[1], ntok = s[2];
            auto w = random_matrix(t, rows, cols, rng);
            MatrixView m{w.data(), t, rows, cols};
            std::vector<float> x(ntok * cols);
            for (auto& v : x) v = nd(rng);
            std::vector<float> ref(ntok * rows), fast(ntok * rows), fast1(ntok * rows);
            matmul_ref(m, x.data(), ntok, ref.data());
            matmul(m, x.data(), ntok, fast.data(), &pool);
            matmul(m, x.data(), ntok, fast1.data(), nullptr);
            for (int64_t i = 0; i < ntok * rows; ++i) {
                double tol = 1e-5 * std::sqrt(static_cast<double>(cols)) * 4 + 1e-6;
                ASSERT_NEAR(fast[i], ref[i], tol) << dtype_name(t) << " " << rows << "x" << cols << " i=" << i;
                ASSERT_EQ(fast[i], fast1[i]) << "result depends on the thread count";
            }
        }
    }
}

TEST(Kernels, DotAndAxpyMatchReference) {
    std::mt19937 rng(99);
    std::normal_distribution<float> nd;
    for (DType t : {DType::F32, DType::F16, DType::BF16}) {
        for (int64_t n : {1, 7, 8, 15, 16, 17, 128, 131}) {
            auto w = random_matrix(t, 1, n, rng);
            std::vector<float> x(n);
            for (auto& v : x) v = nd(rng);
            EXPECT_NEAR(dot(t, w.data(), x.data(), n), dot_ref(t, w.data(), x.data(), n), 1e-4 * std::sqrt(n));
            std::vector<float> a(n), b(n);
            for (int64_t i = 0; i < n; ++i) a[i] = b[i] = nd(rng);
            axpy(t, w.data(), 0.37f, a.data(), n);
            axpy_ref(t, w.data(), 0.37f, b.data(), n);
            for (int64_t i = 0; i < n; ++i) EXPECT_NEAR(a[i], b[i], 1e-5);
        }
    }
}

// Quantized MatrixViews go through the same entry points (detailed kernel tests:
// test_quant_kernels.cpp): matmul / matmul_ref / dot / dot_ref / to_f32.
TEST(Kernels, QuantizedWeightsThroughTheDenseEntryPoints) {
    std::mt19937 rng(4321);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    ThreadPool pool(2);
    for (DType t : {DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q8_0, DType::Q2_K, DType::Q3_K,
                    DType::Q4_K, DType::Q5_K, DType::Q6_K}) {
        SCOPED_TRACE(dtype_name(t));
        EXPECT_TRUE(matmul_supports(t));
        const int64_t rows = 67, cols = 512, ntok = 5;
        std::vector<float> wf(rows * cols), x(ntok * cols);
        for (auto& v : wf) v = nd(rng);
        for (auto& v : x) v = nd(rng);
        std::vector<uint8_t> wq(row_bytes(t, cols) * rows);
        quantize_row_ref(t, wf.data(), wq.data(), rows * cols);
        MatrixView m{wq.data(), t, rows, cols};
        // to_f32 dequantizes
        std::vector<float> row(cols), want(cols);
        to_f32(t, m.row(3), row.data(), cols);
        dequantize_row(t, m.row(3), want.data(), cols);
        EXPECT_EQ(row, want);
        // matmul vs matmul_ref vs dot / dot_ref, and vs the exact product of the dequantized weights
        std::vector<float> ref(ntok * rows), fast(ntok * rows);
        matmul_ref(m, x.data(), ntok, ref.data());
        matmul(m, x.data(), ntok, fast.data(), &pool);
        for (int64_t tk = 0; tk < ntok; ++tk) {
            for (int64_t r = 0; r < rows; r += 11) {
                const size_t i = tk * rows + r;
                EXPECT_NEAR(fast[i], ref[i], 1e-3);
                EXPECT_NEAR(dot(t, m.row(r), x.data() + tk * cols, cols), fast[i], 1e-3);
                EXPECT_NEAR(dot_ref(t, m.row(r), x.data() + tk * cols, cols), ref[i], 1e-3);
                to_f32(t, m.row(r), row.data(), cols);
                double exact = 0;
                for (int64_t c = 0; c < cols; ++c) exact += static_cast<double>(row[c]) * x[tk * cols + c];
                EXPECT_NEAR(ref[i], exact, 0.03 * std::sqrt(static_cast<double>(cols)));
            }
        }
    }
    EXPECT_TRUE(matmul_supports(DType::F16));
    EXPECT_FALSE(matmul_supports(DType::Q8_K));  // activation-only format
    EXPECT_FALSE(matmul_supports(DType::I32));
    std::vector<float> x(32), y(1);
    std::vector<uint8_t> w(128);
    MatrixView bad{w.data(), DType::I32, 1, 32};
    EXPECT_THROW(matmul(bad, x.data(), 1, y.data(), nullptr), Error);
    EXPECT_THROW(to_f32(DType::I32, w.data(), x.data(), 4), Error);
}

TEST(Kernels, RmsNormAndSoftmaxByHand) {
    const float x[4] = {1, 2, 3, 4}, w[4] = {1, 0.5f, 2, 1};
    float out[4];
    rmsnorm(x, w, out, 4, 0.0f);
    const float inv = 1.0f / std::sqrt(7.5f);  // mean of squares = 30/4
    EXPECT_NEAR(out[0], 1 * inv, 1e-6);
    EXPECT_NEAR(out[1], 2 * inv * 0.5f, 1e-6);
    EXPECT_NEAR(out[2], 3 * inv * 2, 1e-6);
    float s[3] = {0, std::log(2.0f), std::log(5.0f)};
    softmax(s, 3);
    EXPECT_NEAR(s[0], 1.0 / 8, 1e-6);
    EXPECT_NEAR(s[1], 2.0 / 8, 1e-6);
    EXPECT_NEAR(s[2], 5.0 / 8, 1e-6);
}

TEST(DType, HalfAndBfloatConversions) {
    // exhaustive: every finite half converts to float and back unchanged
    for (uint32_t h = 0; h < 65536; ++h) {
        uint16_t x = static_cast<uint16_t>(h);
        if ((x & 0x7c00) == 0x7c00 && (x & 0x3ff)) continue;  // NaN payloads
        ASSERT_EQ(fp32_to_fp16(fp16_to_fp32(x)), x) << h;
    }
    EXPECT_EQ(fp32_to_fp16(1.0f), 0x3c00);
    EXPECT_EQ(fp32_to_fp16(65504.0f), 0x7bff);
    EXPECT_EQ(fp32_to_fp16(65520.0f), 0x7c00);          // rounds to inf
    EXPECT_EQ(fp32_to_fp16(1.0f + 1.0f / 2048), 0x3c00);  // tie → even
    EXPECT_EQ(fp32_to_fp16(1.0f + 3.0f / 2048), 0x3c02);  // tie → even (up)
    EXPECT_EQ(fp32_to_fp16(5.9604645e-8f), 0x0001);      // smallest subnormal
    EXPECT_EQ(fp32_to_fp16(2.9802322e-8f), 0x0000);      // half of it: tie → even (0)
    EXPECT_EQ(fp32_to_bf16(1.0f), 0x3f80);
    EXPECT_EQ(fp32_to_bf16(fp32_from_bits(0x3f808000)), 0x3f80);  // tie → even
    EXPECT_EQ(fp32_to_bf16(fp32_from_bits(0x3f818000)), 0x3f82);
    EXPECT_EQ(bf16_to_fp32(0x4049), fp32_from_bits(0x40490000));
    DType t;
    EXPECT_TRUE(dtype_from_name("q4_k", t));
    EXPECT_EQ(t, DType::Q4_K);
    EXPECT_FALSE(dtype_from_name("q9", t));
    EXPECT_EQ(row_bytes(DType::Q4_0, 64), 36u);
}

// The register-blocked dense matmul (3 rows × 4 tokens, K chunks of 512, tails) for 1 to 13
// tokens and the prefill order (17 and 40 tokens: 48-row blocks, a partial one), an odd row count
// and a row spanning three K chunks, on 1 and 3 threads.
TEST(Kernels, TiledDenseMatmulForOneToThirteenTokens) {
    std::mt19937 rng(555);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    ThreadPool pool(3);
    for (DType t : {DType::F32, DType::F16, DType::BF16}) {
        const int64_t rows = 67, cols = 1100;
        auto w = random_matrix(t, rows, cols, rng);
        MatrixView m{w.data(), t, rows, cols};
        for (int64_t ntok : {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 17, 40}) {
            std::vector<float> x(ntok * cols);
            for (auto& v : x) v = nd(rng);
            std::vector<float> ref(ntok * rows), y1(ntok * rows), y3(ntok * rows);
            matmul_ref(m, x.data(), ntok, ref.data());
            matmul(m, x.data(), ntok, y1.data(), nullptr);
            matmul(m, x.data(), ntok, y3.data(), &pool);
            for (int64_t i = 0; i < ntok * rows; ++i) {
                // f32 summation of 1100 products of N(0,1) values (the reference sums in f64)
                ASSERT_NEAR(y1[i], ref[i], 2e-4) << dtype_name(t) << " ntok " << ntok << " i=" << i;
                ASSERT_EQ(y1[i], y3[i]) << "result depends on the thread count";
            }
        }
    }
}

// A token's outputs do not depend on the other tokens of the call (batched decode in the
// server must give the same logits as decoding alone): bit-identical to a 1-token matmul.
TEST(Kernels, DenseMatmulIsBatchInvariant) {
    std::mt19937 rng(556);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    ThreadPool pool(2);
    for (DType t : {DType::F32, DType::F16, DType::BF16}) {
        for (int64_t cols : {48, 72, 1100}) {
            const int64_t rows = 70;
            auto w = random_matrix(t, rows, cols, rng);
            MatrixView m{w.data(), t, rows, cols};
            for (int64_t ntok : {2, 5, 9, 17, 38}) {
                std::vector<float> x(ntok * cols), y(ntok * rows), y1(rows);
                for (auto& v : x) v = nd(rng);
                matmul(m, x.data(), ntok, y.data(), &pool);
                for (int64_t k = 0; k < ntok; ++k) {
                    matmul(m, x.data() + k * cols, 1, y1.data(), &pool);
                    for (int64_t r = 0; r < rows; ++r)
                        ASSERT_EQ(y[k * rows + r], y1[r]) << dtype_name(t) << " cols " << cols << " ntok " << ntok << " tok " << k << " row " << r;
                }
            }
        }
    }
}

// to_f32 for F16 / BF16 (vectorised with F16C / AVX2 where built) against the scalar
// conversions, on all 65536 bit patterns: bit-identical except that NaNs only need to stay NaN
// (hardware conversion quiets signalling NaNs). Odd offsets and lengths exercise the tails.
TEST(Kernels, ToF32MatchesScalarConversionOnEveryPattern) {
    std::vector<uint16_t> all(65536 + 3);
    for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<uint16_t>(i * 40503u);  // odd multiplier: a permutation
    for (DType t : {DType::F16, DType::BF16}) {
        for (size_t off : {size_t{0}, size_t{3}}) {
            const size_t n = all.size() - off;
            std::vector<float> got(n);
            to_f32(t, all.data() + off, got.data(), n);
            for (size_t i = 0; i < n; ++i) {
                const uint16_t h = all[off + i];
                const float want = t == DType::F16 ? fp16_to_fp32(h) : bf16_to_fp32(h);
                if (std::isnan(want)) {
                    ASSERT_TRUE(std::isnan(got[i])) << dtype_name(t) << " pattern " << h;
                    continue;
                }
                uint32_t a, b;
                std::memcpy(&a, &want, 4);
                std::memcpy(&b, &got[i], 4);
                ASSERT_EQ(a, b) << dtype_name(t) << " pattern 0x" << std::hex << h;
            }
        }
    }
}
