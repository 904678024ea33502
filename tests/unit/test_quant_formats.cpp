// ggml block formats: hand-built blocks with known values, byte-identical quantization
// against fixtures made from llama.cpp's own reference code (tests/fixtures/quant/, see
// tools/reference/make_quant_fixtures.py), dequantization against llama.cpp's numpy
// dequantizers, and round-trip error bounds on random data.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "calpaca/base/error.h"
#include "calpaca/base/fileio.h"
#include "calpaca/tensor/dtype.h"
#include "calpaca/tensor/quant.h"
#include "calpaca/tensor/quant_blocks.h"

using namespace calpaca;
using namespace calpaca::quant;

namespace {

const DType kAllQuant[] = {DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q8_0, DType::Q8_1,
                           DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K, DType::Q8_K};

std::vector<float> read_f32(const std::string& path) {
    std::string raw = read_file(path);
    std::vector<float> v(raw.size() / 4);
    std::memcpy(v.data(), raw.data(), v.size() * 4);
    return v;
}

std::vector<float> dequant(DType t, const void* blocks, size_t n) {
    std::vector<float> out(n);
    dequantize_row(t, blocks, out.data(), static_cast<int64_t>(n));
    return out;
}

std::vector<uint8_t> quantize(DType t, const std::vector<float>& x) {
    std::vector<uint8_t> out(row_bytes(t, x.size()));
    quantize_row_ref(t, x.data(), out.data(), static_cast<int64_t>(x.size()));
    return out;
}

uint16_t h(float f) { return fp32_to_fp16(f); }

}  // namespace

// ------------------------------------------------------------------ fixtures from llama.cpp's code
TEST(QuantFormats, QuantizeIsByteIdenticalToGgmlReference) {
    for (DType t : kAllQuant) {
        SCOPED_TRACE(dtype_name(t));
        const std::string base = std::string(CALPACA_TEST_DATA) + "/quant/" + dtype_name(t);
        const auto x = read_f32(base + ".f32");
        const std::string want = read_file(base + ".bin");
        ASSERT_EQ(want.size(), row_bytes(t, x.size()));
        const auto got = quantize(t, x);
        const size_t bs = dtype_info(t).type_size;
        for (size_t i = 0; i < got.size(); ++i)
            ASSERT_EQ(static_cast<int>(got[i]), static_cast<int>(static_cast<uint8_t>(want[i])))
                << "byte " << i << " (block " << i / bs << ", offset " << i % bs << ")";
    }
}

TEST(QuantFormats, DequantizeMatchesLlamaCppNumpy) {
    size_t checked = 0;
    for (DType t : kAllQuant) {
        SCOPED_TRACE(dtype_name(t));
        const std::string base = std::string(CALPACA_TEST_DATA) + "/quant/" + dtype_name(t);
        std::string deq_path = base + ".deq.f32";
        if (t == DType::Q8_1 || t == DType::Q8_K) continue;  // gguf-py has no dequantizer for these
        const auto want = read_f32(deq_path);
        const std::string blocks = read_file(base + ".bin");
        const auto got = dequant(t, blocks.data(), want.size());
        for (size_t i = 0; i < want.size(); ++i) {
            // gguf-py may group the scale products differently: allow one rounding step
            ASSERT_NEAR(got[i], want[i], 2.5e-7 * std::fabs(want[i]) + 1e-30) << "element " << i;
        }
        ++checked;
    }
    EXPECT_EQ(checked, 10u);
}

// ------------------------------------------------------------------ hand-built blocks
TEST(QuantFormats, HandBuiltLegacyBlocks) {
    // Q4_0: d = 0.5, qs[j] = j | (15-j) << 4  →  x[j] = (j-8)/2, x[j+16] = (7-j)/2
    BlockQ4_0 b40{};
    b40.d = h(0.5f);
    for (int j = 0; j < 16; ++j) b40.qs[j] = static_cast<uint8_t>(j | ((15 - j) << 4));
    auto v = dequant(DType::Q4_0, &b40, 32);
    for (int j = 0; j < 16; ++j) {
        EXPECT_EQ(v[j], (j - 8) * 0.5f);
        EXPECT_EQ(v[j + 16], (7 - j) * 0.5f);
    }
    // and back: the element of largest magnitude (-4) sets d = -4 / -8 = 0.5
    EXPECT_EQ(quantize(DType::Q4_0, v), std::vector<uint8_t>(reinterpret_cast<uint8_t*>(&b40),
                                                              reinterpret_cast<uint8_t*>(&b40) + sizeof b40));

    // Q4_1: d = 0.25, m = -1, codes 0..15 → x = q/4 - 1
    BlockQ4_1 b41{};
    b41.d = h(0.25f);
    b41.m = h(-1.0f);
    for (int j = 0; j < 16; ++j) b41.qs[j] = static_cast<uint8_t>(j | ((15 - j) << 4));
    v = dequant(DType::Q4_1, &b41, 32);
    for (int j = 0; j < 16; ++j) {
        EXPECT_EQ(v[j], j * 0.25f - 1);
        EXPECT_EQ(v[j + 16], (15 - j) * 0.25f - 1);
    }

    // Q5_0: 5th bits in qh (u32 LE): set for elements 0, 9, 16, 31
    BlockQ5_0 b50{};
    b50.d = h(2.0f);
    const uint32_t qh = (1u << 0) | (1u << 9) | (1u << 16) | (1u << 31);
    std::memcpy(b50.qh, &qh, 4);
    for (int j = 0; j < 16; ++j) b50.qs[j] = static_cast<uint8_t>(3 | (12 << 4));
    v = dequant(DType::Q5_0, &b50, 32);
    for (int j = 0; j < 32; ++j) {
        int q = (j < 16 ? 3 : 12) + (((qh >> j) & 1) ? 16 : 0);
        EXPECT_EQ(v[j], (q - 16) * 2.0f) << j;
    }

    // Q5_1: same bits, affine
    BlockQ5_1 b51{};
    b51.d = h(0.5f);
    b51.m = h(3.0f);
    std::memcpy(b51.qh, &qh, 4);
    for (int j = 0; j < 16; ++j) b51.qs[j] = static_cast<uint8_t>(j | (j << 4));
    v = dequant(DType::Q5_1, &b51, 32);
    for (int j = 0; j < 32; ++j) {
        int q = (j % 16) + (((qh >> j) & 1) ? 16 : 0);
        EXPECT_EQ(v[j], q * 0.5f + 3.0f) << j;
    }

    // Q8_0 and Q8_1: absmax 127 → d = 1, codes are the values; roundf ties away from zero
    std::vector<float> x(32);
    for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j * 8 - 127);  // -127 .. 121
    x[5] = 2.5f;
    x[6] = -2.5f;
    const auto q8 = quantize(DType::Q8_0, x);
    const auto* b80 = reinterpret_cast<const BlockQ8_0*>(q8.data());
    EXPECT_EQ(fp16_to_fp32(b80->d), 1.0f);
    EXPECT_EQ(b80->qs[0], -127);
    EXPECT_EQ(b80->qs[5], 3);
    EXPECT_EQ(b80->qs[6], -3);
    EXPECT_EQ(b80->qs[31], 121);
    const auto q81 = quantize(DType::Q8_1, x);
    const auto* b81 = reinterpret_cast<const BlockQ8_1*>(q81.data());
    int sum = 0;
    for (int j = 0; j < 32; ++j) sum += b81->qs[j];
    EXPECT_EQ(fp16_to_fp32(b81->s), fp16_to_fp32(h(static_cast<float>(sum))));
}

TEST(QuantFormats, HandBuiltKQuantBlocks) {
    // Q2_K: d = 1, dmin = 0.5; sub-block s has scale s%16 and min 15-s; codes q = (i/7)%4
    {
        BlockQ2_K b{};
        b.d = h(1.0f);
        b.dmin = h(0.5f);
        for (int s = 0; s < 16; ++s) b.scales[s] = static_cast<uint8_t>(s | ((15 - s) << 4));
        auto code = [](int i) { return (i / 7) % 4; };
        // element 128*hh + 32*j + l: bits 2j..2j+1 of qs[32*hh + l]
        for (int i = 0; i < 256; ++i) b.qs[32 * (i / 128) + i % 32] |= static_cast<uint8_t>(code(i) << (2 * ((i / 32) % 4)));
        const auto v = dequant(DType::Q2_K, &b, 256);
        for (int i = 0; i < 256; ++i) EXPECT_EQ(v[i], 1.0f * (i / 16) * code(i) - 0.5f * (15 - i / 16)) << i;
    }
    // Q3_K: d = 0.25; scale s (6 bits, minus 32) = s*3 + 10 - 32; codes -4..3
    {
        BlockQ3_K b{};
        b.d = h(0.25f);
        int sc[16];
        for (int s = 0; s < 16; ++s) {
            sc[s] = s * 3 + 10;  // stored value; the scale is sc - 32
            if (s < 8)
                b.scales[s] |= static_cast<uint8_t>(sc[s] & 15);
            else
                b.scales[s - 8] |= static_cast<uint8_t>((sc[s] & 15) << 4);
            b.scales[8 + s % 4] |= static_cast<uint8_t>((sc[s] >> 4) << (2 * (s / 4)));
        }
        auto code = [](int i) { return (i * 5) % 8 - 4; };
        for (int i = 0; i < 256; ++i) {
            const int q = code(i) + 4, hh = i / 128, j = (i / 32) % 4, l = i % 32;
            b.qs[32 * hh + l] |= static_cast<uint8_t>((q & 3) << (2 * j));
            if (q & 4) b.hmask[l] |= static_cast<uint8_t>(1 << (4 * hh + j));
        }
        const auto v = dequant(DType::Q3_K, &b, 256);
        for (int i = 0; i < 256; ++i) EXPECT_EQ(v[i], 0.25f * (sc[i / 16] - 32) * code(i)) << i;
    }
    // Q4_K and Q5_K: d = 0.5, dmin = 0.25; sub-block s: scale 5 + 7s (6 bits), min 60 - 3s
    for (DType t : {DType::Q4_K, DType::Q5_K}) {
        SCOPED_TRACE(dtype_name(t));
        const bool five = t == DType::Q5_K;
        uint8_t scales[12] = {};
        int sc[8], mn[8];
        for (int s = 0; s < 8; ++s) {
            sc[s] = 5 + 7 * s;
            mn[s] = 60 - 3 * s;
            if (s < 4) {
                scales[s] = static_cast<uint8_t>(sc[s]);
                scales[s + 4] = static_cast<uint8_t>(mn[s]);
            } else {
                scales[s + 4] = static_cast<uint8_t>((sc[s] & 15) | ((mn[s] & 15) << 4));
                scales[s - 4] |= static_cast<uint8_t>((sc[s] >> 4) << 6);
                scales[s] |= static_cast<uint8_t>((mn[s] >> 4) << 6);
            }
        }
        auto code = [five](int i) { return (i * 7 + 3) % (five ? 32 : 16); };
        std::vector<uint8_t> blk(dtype_info(t).type_size, 0);
        uint8_t *qs, *qh = nullptr;
        if (five) {
            auto* b = reinterpret_cast<BlockQ5_K*>(blk.data());
            b->d = h(0.5f);
            b->dmin = h(0.25f);
            std::memcpy(b->scales, scales, 12);
            qs = b->qs;
            qh = b->qh;
        } else {
            auto* b = reinterpret_cast<BlockQ4_K*>(blk.data());
            b->d = h(0.5f);
            b->dmin = h(0.25f);
            std::memcpy(b->scales, scales, 12);
            qs = b->qs;
        }
        // element 64p + l: low nibble of qs[32p + l]; 64p + 32 + l: high nibble; 5th bit: qh[l] bit (i/32)
        for (int i = 0; i < 256; ++i) {
            const int p = i / 64, l = i % 32, hi = (i / 32) % 2, q = code(i);
            qs[32 * p + l] |= static_cast<uint8_t>((q & 15) << (4 * hi));
            if (five && (q & 16)) qh[l] |= static_cast<uint8_t>(1 << (i / 32));
        }
        const auto v = dequant(t, blk.data(), 256);
        for (int i = 0; i < 256; ++i) EXPECT_EQ(v[i], 0.5f * sc[i / 32] * code(i) - 0.25f * mn[i / 32]) << i;
    }
    // Q6_K: d = 0.125; int8 scales -64 + 9s; codes -32..31
    {
        BlockQ6_K b{};
        b.d = h(0.125f);
        for (int s = 0; s < 16; ++s) b.scales[s] = static_cast<int8_t>(-64 + 9 * s);
        auto code = [](int i) { return (i * 13 + 1) % 64 - 32; };
        // element 128*hh + 32*c + l: nibble c/2 of ql[64hh + l + 32(c%2)], bits 2c of qh[32hh + l]
        for (int i = 0; i < 256; ++i) {
            const int q = code(i) + 32, hh = i / 128, c = (i / 32) % 4, l = i % 32;
            b.ql[64 * hh + l + 32 * (c % 2)] |= static_cast<uint8_t>((q & 15) << (4 * (c / 2)));
            b.qh[32 * hh + l] |= static_cast<uint8_t>((q >> 4) << (2 * c));
        }
        const auto v = dequant(DType::Q6_K, &b, 256);
        for (int i = 0; i < 256; ++i) EXPECT_EQ(v[i], 0.125f * b.scales[i / 16] * code(i)) << i;
    }
    // Q8_K: the signed absmax maps to -127 exactly; bsums are sums of 16 codes
    {
        std::vector<float> x(256);
        for (int i = 0; i < 256; ++i) x[i] = static_cast<float>((i % 17) - 8) * 0.5f;
        x[100] = 10.0f;  // absmax, positive → code -127, d = -10/127
        const auto q = quantize(DType::Q8_K, x);
        const auto* b = reinterpret_cast<const BlockQ8_K*>(q.data());
        EXPECT_EQ(b->qs[100], -127);
        EXPECT_FLOAT_EQ(b->d, -10.0f / 127.0f);
        for (int s = 0; s < 16; ++s) {
            int sum = 0;
            for (int i = 0; i < 16; ++i) sum += b->qs[16 * s + i];
            EXPECT_EQ(b->bsums[s], sum);
        }
    }
}

TEST(QuantFormats, ZeroAndConstantBlocks) {
    for (DType t : kAllQuant) {
        SCOPED_TRACE(dtype_name(t));
        const size_t n = dtype_info(t).block_size * 2;
        std::vector<float> zero(n, 0.0f);
        auto v = dequant(t, quantize(t, zero).data(), n);
        for (float f : v) EXPECT_EQ(f, 0.0f);
        std::vector<float> c(n, -1.5f);
        v = dequant(t, quantize(t, c).data(), n);
        for (float f : v) EXPECT_NEAR(f, -1.5f, 1.5f * 0.02f);
    }
}

TEST(QuantFormats, BadLengthsAreErrors) {
    std::vector<float> x(33);
    std::vector<uint8_t> y(1024);
    EXPECT_THROW(quantize_row_ref(DType::Q4_0, x.data(), y.data(), 33), Error);
    EXPECT_THROW(quantize_row_ref(DType::Q4_K, x.data(), y.data(), 32), Error);
    EXPECT_THROW(quantize_row_ref(DType::F16, x.data(), y.data(), 32), Error);
    EXPECT_THROW(dequantize_row(DType::Q6_K, y.data(), x.data(), 31), Error);
}

// ------------------------------------------------------------------ round trip on random data
// Relative RMS error ‖x - deq(q(x))‖ / ‖x‖ on N(0, 1) data (64 K-blocks); the bounds sit ~20 %
// above the values measured when this test was written (docs/quantization.md lists them).
TEST(QuantFormats, RoundTripErrorBounds) {
    struct Bound {
        DType t;
        double rel_rmse;
    };
    const Bound bounds[] = {
        {DType::Q8_0, 0.0064}, {DType::Q8_1, 0.0064}, {DType::Q8_K, 0.0083}, {DType::Q6_K, 0.0213},
        {DType::Q5_1, 0.0453}, {DType::Q5_0, 0.0507}, {DType::Q5_K, 0.0432}, {DType::Q4_1, 0.0936},
        {DType::Q4_0, 0.1027}, {DType::Q4_K, 0.0853}, {DType::Q3_K, 0.1807}, {DType::Q2_K, 0.3553},
    };
    std::mt19937 rng(7);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> x(64 * 256);
    for (auto& v : x) v = nd(rng);
    for (const auto& b : bounds) {
        const auto q = quantize(b.t, x);
        const auto y = dequant(b.t, q.data(), x.size());
        double num = 0, den = 0, worst = 0;
        for (size_t i = 0; i < x.size(); ++i) {
            num += (x[i] - y[i]) * (x[i] - y[i]);
            den += x[i] * x[i];
            worst = std::max(worst, static_cast<double>(std::fabs(x[i] - y[i])));
        }
        const double rel = std::sqrt(num / den);
        EXPECT_LE(rel, b.rel_rmse) << dtype_name(b.t);
        EXPECT_GT(rel, b.rel_rmse / 3) << dtype_name(b.t) << ": suspiciously small error";
        // no element is off by more than a generous bound (catches a misplaced code)
        EXPECT_LT(worst, b.rel_rmse * 12) << dtype_name(b.t);
        std::printf("[ roundtrip ] %-5s rel RMSE %.5f  max abs err %.4f  bits/weight %.3f\n", dtype_name(b.t), rel, worst,
                    8.0 * dtype_info(b.t).type_size / dtype_info(b.t).block_size);
    }
}

// Q8_0 per element: |x - x̂| <= d/2 (plus the f16 rounding of d) for every element.
TEST(QuantFormats, Q8_0ElementwiseBound) {
    std::mt19937 rng(8);
    std::uniform_real_distribution<float> ud(-3.0f, 3.0f);
    std::vector<float> x(32 * 50);
    for (auto& v : x) v = ud(rng);
    const auto q = quantize(DType::Q8_0, x);
    const auto y = dequant(DType::Q8_0, q.data(), x.size());
    for (size_t b = 0; b < x.size() / 32; ++b) {
        float amax = 0;
        for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[32 * b + j]));
        const float d = amax / 127;
        for (int j = 0; j < 32; ++j) EXPECT_LE(std::fabs(x[32 * b + j] - y[32 * b + j]), d * 0.5f + amax / 1024.0f);
    }
}
