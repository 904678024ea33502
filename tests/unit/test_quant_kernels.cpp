// Fast quantized kernels against their `_ref` twins on random data, odd sizes included:
// activation quantizers (byte-identical), row dot products for 1..4 activation rows, and
// the quantized matmul through kernels.h (threaded and not), and the tiled matmul
// (gemm.h) for 1 to 13 tokens.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "calpaca/base/threadpool.h"
#include "calpaca/tensor/dtype.h"
#include "calpaca/tensor/gemm.h"
#include "calpaca/tensor/kernels.h"
#include "calpaca/tensor/quant.h"
#include "calpaca/tensor/quant_dot.h"
#include "quant_fixture.h"

using namespace calpaca;
using namespace calpaca::qtest;

namespace {

const DType kWeightTypes[] = {DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q8_0,
                              DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K};

}  // namespace

TEST(QuantKernels, IsaIsReported) {
    const std::string isa = quant_kernel_isa();
    EXPECT_TRUE(isa == "avx512-vnni" || isa == "avx-vnni" || isa == "avx2" || isa == "neon-dotprod" || isa == "neon" ||
                isa == "scalar")
        << isa;
    std::printf("[ quant ] fast kernels: %s\n", isa.c_str());
}

TEST(QuantKernels, ActivationQuantizersAreByteIdenticalToReference) {
    std::mt19937 rng(11);
    for (DType act : {DType::Q8_0, DType::Q8_1, DType::Q8_K}) {
        SCOPED_TRACE(dtype_name(act));
        const int64_t bs = dtype_info(act).block_size;
        for (int64_t nb : {1, 2, 3, 7}) {
            auto x = random_vec(bs * nb, rng, 2.0f);
            // exact ties for roundf / nearest-even, a zero block-part, equal +/- maxima
            for (int64_t i = 0; i < bs; i += 5) x[i] = static_cast<float>(i % 9) * 0.5f - 2.0f;
            if (nb > 1) std::fill(x.begin() + bs, x.begin() + 2 * bs, 0.0f);
            if (nb > 2) {
                x[2 * bs + 3] = 9.0f;
                x[2 * bs + 1] = -9.0f;
            }
            std::vector<uint8_t> a(row_bytes(act, x.size())), b(a.size());
            quantize_act_ref(act, x.data(), a.data(), static_cast<int64_t>(x.size()));
            quantize_act(act, x.data(), b.data(), static_cast<int64_t>(x.size()));
            ASSERT_EQ(a, b) << nb << " blocks";
        }
    }
}

TEST(QuantKernels, DotMatchesReferenceForOneToFourRows) {
    std::mt19937 rng(12);
    for (DType wt : kWeightTypes) {
        SCOPED_TRACE(dtype_name(wt));
        const DType at = vec_dot_type(wt);
        const int64_t bs = dtype_info(wt).block_size;
        for (int64_t nb : {1, 2, 3, 5, 17}) {
            const int64_t n = bs * nb;
            const auto wq = quantized(wt, random_vec(n, rng, 0.7f));
            std::vector<std::vector<uint8_t>> acts;
            for (int k = 0; k < 4; ++k) {
                auto x = random_vec(n, rng, 1.5f);
                std::vector<uint8_t> a(row_bytes(at, n));
                quantize_act(at, x.data(), a.data(), n);
                acts.push_back(std::move(a));
            }
            for (int nt = 1; nt <= 4; ++nt) {
                const void* rows[4];
                for (int k = 0; k < nt; ++k) rows[k] = acts[k].data();
                float out[4];
                vec_dot_q(wt, wq.data(), rows, nt, n, out);
                for (int k = 0; k < nt; ++k) {
                    const float ref = vec_dot_q_ref(wt, wq.data(), acts[k].data(), n);
                    const double tol = 2e-6 * magnitude(wt, wq.data(), at, acts[k].data(), n) + 1e-6;
                    ASSERT_NEAR(out[k], ref, tol) << "n=" << n << " nt=" << nt << " row " << k;
                }
            }
        }
    }
}

// The integer dot products equal the dequantized f64 dot product up to f32 rounding: this
// pins the reference itself (scales, offsets and mins applied correctly).
TEST(QuantKernels, ReferenceDotEqualsDequantizedProduct) {
    std::mt19937 rng(13);
    for (DType wt : kWeightTypes) {
        SCOPED_TRACE(dtype_name(wt));
        const DType at = vec_dot_type(wt);
        const int64_t n = dtype_info(wt).block_size * 3;
        const auto wq = quantized(wt, random_vec(n, rng));
        const auto aq = quantized(at, random_vec(n, rng));
        std::vector<float> wf(n), af(n);
        dequantize_row(wt, wq.data(), wf.data(), n);
        dequantize_row(at, aq.data(), af.data(), n);
        double exact = 0;
        for (int64_t i = 0; i < n; ++i) exact += static_cast<double>(wf[i]) * af[i];
        // Q8_1's block sum s is stored as f16: allow for its rounding on the affine types
        const double tol = (at == DType::Q8_1 ? 2e-3 : 2e-6) * magnitude(wt, wq.data(), at, aq.data(), n);
        EXPECT_NEAR(vec_dot_q_ref(wt, wq.data(), aq.data(), n), exact, tol);
    }
}

TEST(QuantKernels, MatmulMatchesReferenceOnRandomShapes) {
    std::mt19937 rng(14);
    ThreadPool pool(3);
    for (DType wt : kWeightTypes) {
        SCOPED_TRACE(dtype_name(wt));
        const int64_t bs = dtype_info(wt).block_size;
        const int64_t shapes[][3] = {{1, 1, 1}, {7, 3, 2}, {65, 1, 5}, {130, 2, 9}, {67, 3, 70}};  // rows, blocks, tokens
        for (const auto& s : shapes) {
            const int64_t rows = s[0], cols = s[1] * bs, ntok = s[2];
            const auto wq = quantized(wt, random_vec(rows * cols, rng, 0.5f));
            MatrixView m{wq.data(), wt, rows, cols};
            const auto x = random_vec(ntok * cols, rng);
            std::vector<float> ref(ntok * rows), fast(ntok * rows), fast1(ntok * rows);
            matmul_ref(m, x.data(), ntok, ref.data());
            matmul(m, x.data(), ntok, fast.data(), &pool);
            matmul(m, x.data(), ntok, fast1.data(), nullptr);
            // tolerance: f32 reordering on a sum of cols terms of magnitude ~0.5 * 1 * code scale
            std::vector<float> wf(cols);
            for (int64_t t = 0; t < ntok; ++t) {
                for (int64_t r = 0; r < rows; ++r) {
                    const size_t i = t * rows + r;
                    dequantize_row(wt, m.row(r), wf.data(), cols);
                    double mag = 0;
                    for (int64_t c = 0; c < cols; ++c) mag += std::fabs(wf[c] * x[t * cols + c]);
                    ASSERT_NEAR(fast[i], ref[i], 4e-6 * mag + 1e-6) << rows << "x" << cols << " tok " << t << " row " << r;
                    ASSERT_EQ(fast[i], fast1[i]) << "result depends on the thread count";
                }
            }
        }
    }
}

// Quantized matmul against the f64 product of the dequantized weights with the f32
// activations: only the 8-bit activation rounding separates them.
TEST(QuantKernels, MatmulIsCloseToDequantizedProduct) {
    std::mt19937 rng(15);
    for (DType wt : kWeightTypes) {
        SCOPED_TRACE(dtype_name(wt));
        const int64_t rows = 33, cols = 512, ntok = 3;
        const auto wq = quantized(wt, random_vec(rows * cols, rng));
        MatrixView m{wq.data(), wt, rows, cols};
        const auto x = random_vec(ntok * cols, rng);
        std::vector<float> y(ntok * rows), wf(cols);
        matmul(m, x.data(), ntok, y.data(), nullptr);
        double num = 0, den = 0;
        for (int64_t t = 0; t < ntok; ++t) {
            for (int64_t r = 0; r < rows; ++r) {
                dequantize_row(wt, m.row(r), wf.data(), cols);
                double exact = 0;
                for (int64_t c = 0; c < cols; ++c) exact += static_cast<double>(wf[c]) * x[t * cols + c];
                num += (y[t * rows + r] - exact) * (y[t * rows + r] - exact);
                den += exact * exact;
            }
        }
        EXPECT_LT(std::sqrt(num / den), 0.01);
    }
}

// The quantized matmul (row kernels up to 16 tokens; above, gemm.h tiles for Q4_0 / Q5_0 /
// Q8_0, row kernels for the rest) against per-row dot products on the same quantized
// activations: every type, an odd row count, 1 to 13 tokens and 17 to 20 (tiles with edge tiles
// of 1-3 tokens), 1 and 3 threads. The integer block sums are the same, so only f32 summation
// order may differ.
TEST(QuantKernels, TiledMatmulMatchesRowDotsForOneToThirteenTokens) {
    std::mt19937 rng(77);
    ThreadPool pool(3);
    for (DType wt : kWeightTypes) {
        SCOPED_TRACE(dtype_name(wt));
        const int64_t bs = dtype_info(wt).block_size;
        const int64_t rows = 37, cols = (bs == 32 ? 45 : 5) * bs;
        const auto wq = quantized(wt, random_vec(rows * cols, rng, 0.5f));
        MatrixView m{wq.data(), wt, rows, cols};
        const DType at = vec_dot_type(wt);
        for (int64_t ntok : {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 17, 18, 19, 20}) {
            const auto x = random_vec(ntok * cols, rng);
            std::vector<uint8_t> aq(row_bytes(at, cols) * ntok);
            for (int64_t t = 0; t < ntok; ++t) quantize_act_ref(at, x.data() + t * cols, aq.data() + t * row_bytes(at, cols), cols);
            std::vector<float> y1(ntok * rows), y3(ntok * rows);
            matmul(m, x.data(), ntok, y1.data(), nullptr);
            matmul(m, x.data(), ntok, y3.data(), &pool);
            for (int64_t t = 0; t < ntok; ++t) {
                const uint8_t* arow = aq.data() + t * row_bytes(at, cols);
                for (int64_t r = 0; r < rows; ++r) {
                    const size_t i = t * rows + r;
                    const float want = vec_dot_q_ref(wt, m.row(r), arow, cols);
                    const double tol = 2e-6 * magnitude(wt, m.row(r), at, arow, cols) + 1e-7;
                    ASSERT_NEAR(y1[i], want, tol) << "tok " << t << "/" << ntok << " row " << r;
                    ASSERT_EQ(y1[i], y3[i]) << "result depends on the thread count";
                }
            }
        }
    }
}

// Batched decode in the server must give the logits of decoding alone: with up to 16 tokens a
// token's outputs are the bits of a 1-token matmul, for every type in the row layout (the packed
// types are held to the same in test_packed.cpp), 1 and 3 threads, rows of 1, 4 and 45 blocks.
TEST(QuantKernels, BatchedDecodeIsBitIdenticalToOneToken) {
    std::mt19937 rng(91);
    ThreadPool pool(3);
    for (DType wt : kWeightTypes) {
        SCOPED_TRACE(dtype_name(wt));
        const int64_t bs = dtype_info(wt).block_size;
        for (int64_t nbk : {int64_t{1}, int64_t{4}, bs == 32 ? int64_t{45} : int64_t{5}}) {
            const int64_t rows = 37, cols = nbk * bs;
            const auto wq = quantized(wt, random_vec(rows * cols, rng, 0.5f));
            MatrixView m{wq.data(), wt, rows, cols};
            for (int64_t ntok : {2, 4, 5, 8, 13, 16}) {
                const auto x = random_vec(ntok * cols, rng);
                std::vector<float> y(ntok * rows), y1(rows);
                matmul(m, x.data(), ntok, y.data(), &pool);
                for (int64_t t = 0; t < ntok; ++t) {
                    matmul(m, x.data() + t * cols, 1, y1.data(), t % 2 ? &pool : nullptr);
                    for (int64_t r = 0; r < rows; ++r)
                        ASSERT_EQ(y[t * rows + r], y1[r]) << "cols " << cols << " ntok " << ntok << " tok " << t << " row " << r;
                }
            }
        }
    }
}

// gemm_q_tile against gemm_q_tile_ref on sub-ranges of rows, tokens and blocks, overwriting
// and accumulating.
TEST(QuantKernels, GemmTileMatchesReferenceTwin) {
    std::mt19937 rng(78);
    for (DType wt : kWeightTypes) {
        SCOPED_TRACE(dtype_name(wt));
        const int64_t bs = dtype_info(wt).block_size, nbk = bs == 32 ? 9 : 3;
        const int64_t rows = 11, cols = nbk * bs, ntok = 7;
        const auto wq = quantized(wt, random_vec(rows * cols, rng, 0.5f));
        const size_t wrb = row_bytes(wt, cols);
        const DType at = vec_dot_type(wt);
        const size_t arb = row_bytes(at, cols);
        const auto x = random_vec(ntok * cols, rng);
        std::vector<uint8_t> aq(arb * ntok);
        std::vector<float> ad;
        for (int64_t t = 0; t < ntok; ++t) quantize_act(at, x.data() + t * cols, aq.data() + t * arb, cols);
        ActPanel a{aq.data(), arb, nullptr, 0};
        if (at == DType::Q8_0) {  // the f32 block scales the tiled kernels take
            std::vector<float> f(cols);
            for (int64_t t = 0; t < ntok; ++t)
                for (int64_t b = 0; b < nbk; ++b) {
                    uint16_t h;
                    std::memcpy(&h, aq.data() + t * arb + b * dtype_info(at).type_size, 2);
                    ad.push_back(fp16_to_fp32(h));
                }
            a.d = ad.data();
            a.ld = nbk;
        }
        for (bool acc : {false, true}) {
            const int64_t r0 = 1, r1 = rows, t0 = 2, t1 = ntok, kb0 = 1, kb1 = nbk;
            std::vector<float> fast(ntok * rows, 0.25f), ref(ntok * rows, 0.25f);
            gemm_q_tile(wt, wq.data(), wrb, r0, r1, a, t0, t1, kb0, kb1, fast.data(), rows, acc);
            gemm_q_tile_ref(wt, wq.data(), wrb, r0, r1, a, t0, t1, kb0, kb1, ref.data(), rows, acc);
            for (int64_t t = 0; t < ntok; ++t)
                for (int64_t r = 0; r < rows; ++r) {
                    const size_t i = t * rows + r;
                    if (t < t0 || r < r0) {
                        ASSERT_EQ(fast[i], 0.25f) << "wrote outside the tile";
                        continue;
                    }
                    const size_t wo = r * wrb + kb0 * dtype_info(wt).type_size;
                    const size_t ao = t * arb + kb0 * dtype_info(at).type_size * (bs / dtype_info(at).block_size);
                    const double tol = 2e-6 * magnitude(wt, wq.data() + wo, at, aq.data() + ao, (kb1 - kb0) * bs) + 1e-6;
                    ASSERT_NEAR(fast[i], ref[i], tol) << "acc " << acc << " tok " << t << " row " << r;
                }
        }
    }
}

// Prefill-sized calls of the tiled types (more than 16 tokens, rows longer than one 4096-element
// K chunk): the chunked, accumulated sums against per-row dot products, 1 and 3 threads.
TEST(QuantKernels, TiledMatmulAcrossKChunks) {
    std::mt19937 rng(79);
    ThreadPool pool(3);
    for (DType wt : {DType::Q4_0, DType::Q5_0, DType::Q8_0}) {
        SCOPED_TRACE(dtype_name(wt));
        const int64_t rows = 19, cols = 4096 + 2 * 32, ntok = 21;
        const auto wq = quantized(wt, random_vec(rows * cols, rng, 0.5f));
        MatrixView m{wq.data(), wt, rows, cols};
        const DType at = vec_dot_type(wt);
        const size_t arb = row_bytes(at, cols);
        const auto x = random_vec(ntok * cols, rng);
        std::vector<uint8_t> aq(arb * ntok);
        for (int64_t t = 0; t < ntok; ++t) quantize_act_ref(at, x.data() + t * cols, aq.data() + t * arb, cols);
        std::vector<float> y1(ntok * rows), y3(ntok * rows);
        matmul(m, x.data(), ntok, y1.data(), nullptr);
        matmul(m, x.data(), ntok, y3.data(), &pool);
        for (int64_t t = 0; t < ntok; ++t)
            for (int64_t r = 0; r < rows; ++r) {
                const size_t i = t * rows + r;
                const uint8_t* arow = aq.data() + t * arb;
                const double tol = 2e-6 * magnitude(wt, m.row(r), at, arow, cols) + 1e-7;
                ASSERT_NEAR(y1[i], vec_dot_q_ref(wt, m.row(r), arow, cols), tol) << "tok " << t << " row " << r;
                ASSERT_EQ(y1[i], y3[i]) << "result depends on the thread count";
            }
    }
}

// vec_dot_q_rows (several weight rows against one activation row, read side by side) gives
// vec_dot_q's bits for every type and row count.
TEST(QuantKernels, RowsFormEqualsOneRowAtATime) {
    std::mt19937 rng(80);
    for (DType wt : kWeightTypes) {
        SCOPED_TRACE(dtype_name(wt));
        const int64_t cols = (dtype_info(wt).block_size == 32 ? 9 : 3) * dtype_info(wt).block_size;
        const DType at = vec_dot_type(wt);
        std::vector<uint8_t> a(row_bytes(at, cols));
        quantize_act_ref(at, random_vec(cols, rng).data(), a.data(), cols);
        const void* arow = a.data();
        for (int nr = 1; nr <= 4; ++nr) {
            const auto w = quantized(wt, random_vec(nr * cols, rng, 0.5f));
            const void* rows[4];
            for (int r = 0; r < nr; ++r) rows[r] = w.data() + r * row_bytes(wt, cols);
            float got[4], want;
            vec_dot_q_rows(wt, rows, nr, arow, cols, got);
            for (int r = 0; r < nr; ++r) {
                vec_dot_q(wt, rows[r], &arow, 1, cols, &want);
                ASSERT_EQ(got[r], want) << nr << " rows, row " << r;
            }
        }
    }
}
