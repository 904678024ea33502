// Packed (8-row interleaved) Q4_0 / Q8_0 / Q4_K / Q6_K weights (tensor/packed.h): the layout on a hand-built
// example, pack/unpack round trips, gemm_packed against gemm_packed_ref and against per-row
// reference dot products (sub-ranges, 1 to 9 tokens, odd block counts), and matmul on a packed
// view: the same bits for any thread count and any token tiling.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "calpaca/base/threadpool.h"
#include "calpaca/tensor/dtype.h"
#include "calpaca/tensor/kernels.h"
#include "calpaca/tensor/packed.h"
#include "calpaca/tensor/quant.h"
#include "calpaca/tensor/quant_blocks.h"
#include "calpaca/tensor/quant_dot.h"
#include "quant_fixture.h"

using namespace calpaca;
using namespace calpaca::qtest;

namespace {

const DType kPackedTypes[] = {DType::Q4_0, DType::Q8_0, DType::Q4_K, DType::Q6_K};

// Quantized activations (vec_dot_type of the weights) with, for Q8_0, the f32 scales and
// block sums the fast kernels take.
struct Acts {
    DType type = DType::Q8_0;
    std::vector<uint8_t> q;
    std::vector<float> d;
    std::vector<int32_t> s;
    size_t rb = 0;
    int64_t nb = 0;
    ActPanel panel() const {
        return type == DType::Q8_0 ? ActPanel{q.data(), rb, d.data(), nb, s.data()} : ActPanel{q.data(), rb, nullptr, 0, nullptr};
    }
};

Acts make_acts(DType wt, const std::vector<float>& x, int64_t ntok, int64_t cols) {
    Acts a;
    a.type = vec_dot_type(wt);
    a.rb = row_bytes(a.type, cols);
    a.nb = cols / 32;
    a.q.resize(a.rb * ntok);
    for (int64_t t = 0; t < ntok; ++t) {
        quantize_act_ref(a.type, x.data() + t * cols, a.q.data() + t * a.rb, cols);
        if (a.type != DType::Q8_0) continue;
        for (int64_t b = 0; b < a.nb; ++b) {
            const uint8_t* blk = a.q.data() + t * a.rb + b * 34;
            uint16_t h;
            std::memcpy(&h, blk, 2);
            a.d.push_back(fp16_to_fp32(h));
            int32_t sum = 0;
            for (int i = 0; i < 32; ++i) sum += static_cast<int8_t>(blk[2 + i]);
            a.s.push_back(sum);
        }
    }
    return a;
}

}  // namespace

TEST(Packed, LayoutOfAHandBuiltMatrix) {
    // 8 rows x 64 columns of Q8_0 whose code bytes encode (row, block, index)
    const int64_t rows = 8, cols = 64;
    std::vector<uint8_t> w(row_bytes(DType::Q8_0, cols) * rows);
    for (int r = 0; r < rows; ++r)
        for (int b = 0; b < 2; ++b) {
            uint8_t* blk = w.data() + r * 68 + b * 34;
            blk[0] = static_cast<uint8_t>(r);
            blk[1] = static_cast<uint8_t>(0x3c + b);
            for (int i = 0; i < 32; ++i) blk[2 + i] = static_cast<uint8_t>(r * 64 + b * 32 + i);
        }
    ASSERT_TRUE(packed_bytes(DType::Q8_0, rows, cols) == w.size());
    std::vector<uint8_t> p(w.size());
    pack_weights(DType::Q8_0, w.data(), cols, 0, 1, p.data());
    // block 1: scales of rows 0..7, then 4-byte slices: byte 32j + 4r + i = row r's code 4j + i
    const uint8_t* b1 = p.data() + 272;
    for (int r = 0; r < 8; ++r) {
        EXPECT_EQ(b1[2 * r], r);
        EXPECT_EQ(b1[2 * r + 1], 0x3d);
    }
    EXPECT_EQ(b1[16 + 32 * 5 + 4 * 3 + 2], static_cast<uint8_t>(3 * 64 + 32 + 5 * 4 + 2));
    EXPECT_EQ(b1[16 + 32 * 7 + 4 * 7 + 3], static_cast<uint8_t>(7 * 64 + 32 + 31));
    // Q4_0: 16 code bytes per row and block, 4 slices of 4 bytes
    std::vector<uint8_t> w4(row_bytes(DType::Q4_0, cols) * rows);
    for (size_t i = 0; i < w4.size(); ++i) w4[i] = static_cast<uint8_t>(i * 7 + 1);
    std::vector<uint8_t> p4(w4.size());
    pack_weights(DType::Q4_0, w4.data(), cols, 0, 1, p4.data());
    const int r = 6, b = 1, j = 2, i = 1;
    EXPECT_EQ(p4[b * 144 + 16 + 32 * j + 4 * r + i], w4[r * 36 + b * 18 + 2 + 4 * j + i]);
    EXPECT_EQ(p4[b * 144 + 2 * r], w4[r * 36 + b * 18]);

    // Q4_K: d, dmin, the unpacked 6-bit scales (8s + r) and mins (16(s/2) + 2r + s%2), codes at
    // 160 + 256p + 32j + 4r + i
    std::mt19937 rng(3);
    const auto wk = quantized(DType::Q4_K, random_vec(8 * 256, rng));
    std::vector<uint8_t> pk(packed_bytes(DType::Q4_K, 8, 256));
    ASSERT_EQ(pk.size(), 1184u);
    pack_weights(DType::Q4_K, wk.data(), 256, 0, 1, pk.data());
    for (int row = 0; row < 8; ++row) {
        const auto* blk = reinterpret_cast<const quant::BlockQ4_K*>(wk.data()) + row;
        EXPECT_EQ(std::memcmp(pk.data() + 2 * row, &blk->d, 2), 0);
        EXPECT_EQ(std::memcmp(pk.data() + 16 + 2 * row, &blk->dmin, 2), 0);
        for (int sb = 0; sb < 8; ++sb) {
            uint8_t sc, mn;
            quant::scale_min_k4(sb, blk->scales, sc, mn);
            EXPECT_EQ(pk[32 + 8 * sb + row], sc);
            EXPECT_EQ(pk[96 + 16 * (sb / 2) + 2 * row + sb % 2], mn);
        }
        EXPECT_EQ(pk[160 + 256 * 3 + 32 * 5 + 4 * row + 1], blk->qs[32 * 3 + 4 * 5 + 1]);
    }

    // Q6_K: d, the int8 scales (16 + 8s + r), then per 64 elements p and step pair u a 96-byte
    // chunk at 144 + 96(4p + u): the low nibbles of steps 2u and 2u + 1 (low nibble: elements
    // 64p + 4j + i, high nibble: 64p + 32 + 4j + i), then their high 2 bits (bits 0-1 / 2-3: the
    // low half's steps 2u / 2u + 1, bits 4-5 / 6-7: the high half's). Codes set by hand: row r's
    // element e has the 6-bit code (5e + 3r) % 64, written in ggml's block_q6_K bit positions.
    std::vector<quant::BlockQ6_K> w6(8);
    for (int row = 0; row < 8; ++row) {
        auto& b6 = w6[static_cast<size_t>(row)];
        std::memset(&b6, 0, sizeof b6);
        b6.d = static_cast<uint16_t>(0x3c00 + row);
        for (int sb = 0; sb < 16; ++sb) b6.scales[sb] = static_cast<int8_t>(sb * 8 - 60 + row);
        for (int e = 0; e < 256; ++e) {
            const int code = (5 * e + 3 * row) % 64, h = e / 128, c = e / 32 % 4, l = e % 32;
            b6.ql[64 * h + l + 32 * (c & 1)] |= static_cast<uint8_t>((code & 15) << (4 * (c >> 1)));
            b6.qh[32 * h + l] |= static_cast<uint8_t>((code >> 4) << (2 * c));
        }
    }
    ASSERT_EQ(packed_bytes(DType::Q6_K, 8, 256), 1680u);
    std::vector<uint8_t> p6(1680);
    pack_weights(DType::Q6_K, w6.data(), 256, 0, 1, p6.data());
    auto code_at = [&](int row, int e) {  // read back through the documented positions
        const int pp = e / 64, x = e % 64, half = x / 32, j = x % 32 / 4, i = e % 4;
        const uint8_t* chunk = p6.data() + 144 + 96 * (4 * pp + j / 2);
        const int lo = (chunk[32 * (j % 2) + 4 * row + i] >> (4 * half)) & 15;
        const int hi = (chunk[64 + 4 * row + i] >> (2 * (2 * half + j % 2))) & 3;
        return lo | hi << 4;
    };
    for (int row = 0; row < 8; ++row) {
        uint16_t d6;
        std::memcpy(&d6, p6.data() + 2 * row, 2);
        EXPECT_EQ(d6, 0x3c00 + row);
        for (int sb = 0; sb < 16; ++sb) EXPECT_EQ(static_cast<int8_t>(p6[16 + 8 * sb + row]), sb * 8 - 60 + row);
        for (int e = 0; e < 256; ++e) ASSERT_EQ(code_at(row, e), (5 * e + 3 * row) % 64) << "row " << row << " element " << e;
    }
}

TEST(Packed, PackUnpackRoundTripIsByteExact) {
    std::mt19937 rng(5);
    for (DType t : kPackedTypes) {
        const int64_t rows = 24, cols = 7 * dtype_info(t).block_size;
        const auto w = quantized(t, random_vec(rows * cols, rng));
        std::vector<uint8_t> p(packed_bytes(t, rows, cols)), back(w.size());
        pack_weights(t, w.data(), cols, 0, 1, p.data());  // groups in any order and split
        pack_weights(t, w.data(), cols, 2, 3, p.data());
        pack_weights(t, w.data(), cols, 1, 2, p.data());
        unpack_weights(t, p.data(), rows, cols, back.data());
        EXPECT_EQ(back, w) << dtype_name(t);
    }
    EXPECT_FALSE(packable(DType::Q4_0, 7, 64));  // not one whole group
    EXPECT_TRUE(packable(DType::Q4_0, 12, 64));  // one group packed, 4 rows in the row layout
    EXPECT_EQ(packed_bytes(DType::Q4_0, 12, 64), packed_bytes(DType::Q4_0, 8, 64));
    EXPECT_FALSE(packable(DType::Q5_K, 16, 256));
    EXPECT_FALSE(packable(DType::Q4_K, 16, 96));  // not whole super-blocks
}

TEST(Packed, GemmMatchesReferenceTwinAndRowDots) {
    std::mt19937 rng(6);
    for (DType t : kPackedTypes) {
        SCOPED_TRACE(dtype_name(t));
        for (int64_t nbk : {1, 3, 13}) {
            const int64_t rows = 32, cols = nbk * dtype_info(t).block_size, ntok = 9;
            const auto w = quantized(t, random_vec(rows * cols, rng, 0.5f));
            std::vector<uint8_t> p(packed_bytes(t, rows, cols));
            pack_weights(t, w.data(), cols, 0, rows / 8, p.data());
            const Acts a = make_acts(t, random_vec(ntok * cols, rng), ntok, cols);
            for (int64_t t1 = 1; t1 <= ntok; ++t1) {
                const int64_t g0 = 1, g1 = 4, t0 = t1 > 3 ? 2 : 0;
                std::vector<float> fast(ntok * rows, 0.25f), ref(ntok * rows, 0.25f);
                gemm_packed(t, p.data(), cols, g0, g1, a.panel(), t0, t1, fast.data(), rows);
                gemm_packed_ref(t, p.data(), cols, g0, g1, a.panel(), t0, t1, ref.data(), rows);
                for (int64_t tok = 0; tok < ntok; ++tok)
                    for (int64_t r = 0; r < rows; ++r) {
                        const size_t i = tok * rows + r;
                        if (tok < t0 || tok >= t1 || r < 8 * g0 || r >= 8 * g1) {
                            ASSERT_EQ(fast[i], 0.25f) << "wrote outside the tile";
                            ASSERT_EQ(ref[i], 0.25f);
                            continue;
                        }
                        const uint8_t* wrow = w.data() + r * row_bytes(t, cols);
                        const uint8_t* arow = a.q.data() + tok * a.rb;
                        const float want = vec_dot_q_ref(t, wrow, arow, cols);
                        ASSERT_EQ(ref[i], want);
                        const double tol = 2e-6 * magnitude(t, wrow, a.type, arow, cols) + 1e-7;
                        ASSERT_NEAR(fast[i], want, tol) << "tok " << tok << " row " << r;
                    }
            }
        }
    }
}

// matmul on a view with a packed copy: close to the row layout's reference, and bit-identical
// for 1 or 3 threads and for any number of tokens around it (tile edges; one token runs the
// multi-stream decode kernels). 130 groups: more than two of the pieces the pool hands out
// (64 groups in decode, 16 otherwise) and a short last piece; 5 rows past them in the row layout.
TEST(Packed, MatmulOnPackedViewIsThreadAndTilingInvariant) {
    if (!packed_kernels_available()) GTEST_SKIP() << "no packed kernels in this build";
    std::mt19937 rng(7);
    ThreadPool pool(3);
    for (DType t : kPackedTypes) {
        SCOPED_TRACE(dtype_name(t));
        const int64_t rows = 8 * 130 + 5, cols = 4096 + 5 * dtype_info(t).block_size, ntok = 23;
        const auto w = quantized(t, random_vec(rows * cols, rng, 0.5f));
        std::vector<uint8_t> p(packed_bytes(t, rows, cols));
        pack_weights(t, w.data(), cols, 0, rows / 8, p.data());
        MatrixView m{w.data(), t, rows, cols};
        m.packed = p.data();
        ASSERT_TRUE(packable(t, rows, cols));
        const auto x = random_vec(ntok * cols, rng);
        std::vector<float> all1(ntok * rows), all3(ntok * rows), ref(ntok * rows);
        matmul(m, x.data(), ntok, all1.data(), nullptr);
        matmul(m, x.data(), ntok, all3.data(), &pool);
        matmul_ref(m, x.data(), ntok, ref.data());
        const Acts a = make_acts(t, x, ntok, cols);
        for (int64_t tok = 0; tok < ntok; ++tok) {
            std::vector<float> one(rows), one1(rows);
            matmul(m, x.data() + tok * cols, 1, one.data(), &pool);    // decode: pieces of 64 groups
            matmul(m, x.data() + tok * cols, 1, one1.data(), nullptr);  // 130 groups: 4 streams × 32 + 2
            for (int64_t r = 0; r < rows; ++r) {
                ASSERT_EQ(one1[r], one[r]) << "decode depends on the thread count";
                const size_t i = tok * rows + r;
                const double tol = 2e-6 * magnitude(t, m.row(r), a.type, a.q.data() + tok * a.rb, cols) + 1e-7;
                ASSERT_NEAR(all1[i], ref[i], tol) << "tok " << tok << " row " << r;
                ASSERT_EQ(all1[i], all3[i]) << "depends on the thread count";
                ASSERT_EQ(all1[i], one[r]) << "depends on the token tiling";
            }
        }
    }
}

// Packed F16 against f32 activations: the reference twin (double sums) on sub-ranges, column
// chunks continuing bit for bit, and matmul on a packed view that gives every token the same bits
// alone, in a batch of up to 16 (whole rows) or of more (token blocks × column chunks), on 1 or 3
// threads.
TEST(Packed, F16GemmMatchesReferenceAndIsOrderInvariant) {
    std::mt19937 rng(8);
    const int64_t rows = 40, cols = 1000, ntok = 15;
    const auto wf = random_vec(rows * cols, rng, 0.5f);
    std::vector<uint8_t> w(rows * cols * 2);
    for (size_t i = 0; i < wf.size(); ++i) {
        const uint16_t h = fp32_to_fp16(wf[i]);
        std::memcpy(w.data() + 2 * i, &h, 2);
    }
    ASSERT_EQ(packed_bytes(DType::F16, rows, cols), w.size());
    std::vector<uint8_t> p(w.size()), back(w.size());
    pack_weights(DType::F16, w.data(), cols, 0, rows / 8, p.data());
    unpack_weights(DType::F16, p.data(), rows, cols, back.data());
    ASSERT_EQ(back, w);
    uint16_t h0;  // row 3, column 7 sits at 16·7 + 2·3 of group 0
    std::memcpy(&h0, p.data() + 16 * 7 + 2 * 3, 2);
    EXPECT_EQ(h0, fp32_to_fp16(wf[3 * cols + 7]));
    const auto x = random_vec(ntok * cols, rng);
    for (int64_t t1 = 1; t1 <= ntok; ++t1) {
        const int64_t g0 = 1, g1 = 5, t0 = t1 > 4 ? 1 : 0;
        std::vector<float> fast(ntok * rows, 0.25f), ref(ntok * rows, 0.25f), chunked(ntok * rows, 0.25f);
        gemm_packed_f16(p.data(), cols, g0, g1, 0, cols, x.data(), cols, t0, t1, fast.data(), rows);
        gemm_packed_f16_ref(p.data(), cols, g0, g1, 0, cols, x.data(), cols, t0, t1, ref.data(), rows);
        gemm_packed_f16(p.data(), cols, g0, g1, 0, 301, x.data(), cols, t0, t1, chunked.data(), rows);
        gemm_packed_f16(p.data(), cols, g0, g1, 301, cols, x.data(), cols, t0, t1, chunked.data(), rows);
        for (int64_t t = 0; t < ntok; ++t)
            for (int64_t r = 0; r < rows; ++r) {
                const size_t i = t * rows + r;
                if (t < t0 || t >= t1 || r < 8 * g0 || r >= 8 * g1) {
                    ASSERT_EQ(fast[i], 0.25f) << "wrote outside the tile";
                    continue;
                }
                double mag = 0;
                for (int64_t k = 0; k < cols; ++k)
                    mag += std::fabs(static_cast<double>(fp16_to_fp32(fp32_to_fp16(wf[r * cols + k]))) * x[t * cols + k]);
                ASSERT_NEAR(fast[i], ref[i], 1e-6 * mag) << "tok " << t << " row " << r;
                if (packed_kernels_available()) {  // (without them gemm_packed_f16 is the double-sum reference)
                    ASSERT_EQ(fast[i], chunked[i]) << "column chunks changed the sum";
                }
            }
    }
    if (!packed_kernels_available()) return;
    // matmul on a packed view: 33 groups (more than two pieces of 16, handed out dynamically,
    // and an odd last group) and 3 rows past them (row layout), 131 tokens (two token blocks,
    // 66 + 65) or 9 (one panel), against one token at a time, on 1 and 3 threads
    const int64_t mrows = 267, mcols = 600;
    const auto mf = random_vec(mrows * mcols, rng, 0.5f);
    std::vector<uint8_t> mw(mrows * mcols * 2), mp(packed_bytes(DType::F16, mrows, mcols));
    for (size_t i = 0; i < mf.size(); ++i) {
        const uint16_t h = fp32_to_fp16(mf[i]);
        std::memcpy(mw.data() + 2 * i, &h, 2);
    }
    pack_weights(DType::F16, mw.data(), mcols, 0, mrows / 8, mp.data());
    ThreadPool pool(3);
    MatrixView m{mw.data(), DType::F16, mrows, mcols};
    m.packed = mp.data();
    const int64_t big = 131;
    const auto xb = random_vec(big * mcols, rng);
    std::vector<float> all1(big * mrows), all3(big * mrows), few(9 * mrows), one(mrows), ref(mrows);
    matmul(m, xb.data(), big, all1.data(), nullptr);
    matmul(m, xb.data(), big, all3.data(), &pool);
    matmul(m, xb.data(), 9, few.data(), &pool);
    for (int64_t t = 0; t < big; ++t) {
        matmul(m, xb.data() + t * mcols, 1, one.data(), &pool);
        gemm_packed_f16_ref(mp.data(), mcols, 0, mrows / 8, 0, mcols, xb.data() + t * mcols, mcols, 0, 1, ref.data(), 0);
        for (int64_t r = mrows / 8 * 8; r < mrows; ++r) ref[r] = dot_ref(DType::F16, m.row(r), xb.data() + t * mcols, mcols);
        for (int64_t r = 0; r < mrows; ++r) {
            ASSERT_EQ(all1[t * mrows + r], all3[t * mrows + r]) << "depends on the thread count";
            ASSERT_EQ(all1[t * mrows + r], one[r]) << "decode alone differs from the batch, tok " << t;
            ASSERT_NEAR(one[r], ref[r], 1e-4f) << "tok " << t << " row " << r;
            if (t < 9) {
                ASSERT_EQ(few[t * mrows + r], one[r]);
            }
        }
    }
}
