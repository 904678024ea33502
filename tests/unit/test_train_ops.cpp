// Training kernels (fast vs _ref on odd sizes, every base type), op backward passes against
// central finite differences, LoRA dropout, schedules and the q/k B-row permutation.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "calpaca/base/error.h"
#include "calpaca/base/threadpool.h"
#include "calpaca/tensor/quant.h"
#include "calpaca/train/lora.h"
#include "calpaca/train/ops.h"
#include "calpaca/train/optimizer.h"
#include "calpaca/train/train_kernels.h"

namespace calpaca {
namespace {

std::vector<float> randv(size_t n, uint32_t seed, float scale = 1.0f) {
    std::mt19937 g(seed);
    std::normal_distribution<float> d(0.0f, scale);
    std::vector<float> v(n);
    for (float& x : v) x = d(g);
    return v;
}

std::vector<uint16_t> to_half(const std::vector<float>& v, DType t) {
    std::vector<uint16_t> h(v.size());
    for (size_t i = 0; i < v.size(); ++i) h[i] = t == DType::F16 ? fp32_to_fp16(v[i]) : fp32_to_bf16(v[i]);
    return h;
}

TEST(TrainKernels, MatmulTnMatchesReference) {
    ThreadPool pool(3);
    // rows 131: several 64-row chunks; cols 301 = 256 + 2*16 + 8 + 5: every tile width and a remainder
    int round = 0;
    for (DType t : {DType::F32, DType::F16, DType::BF16, DType::F32, DType::BF16}) {
        const int64_t rows = round++ < 3 ? 37 : 131, cols = 301, T = 21;
        auto w = randv(rows * cols, 1);
        auto h = to_half(w, t);
        MatrixView m{t == DType::F32 ? static_cast<const void*>(w.data()) : h.data(), t, rows, cols};
        auto dy = randv(T * rows, 2);
        std::vector<float> a(T * cols, 0.5f), b(T * cols, 0.5f), c(T * cols, 0.5f);
        matmul_tn_ref(m, dy.data(), T, a.data());
        matmul_tn(m, dy.data(), T, b.data(), &pool);
        matmul_tn(m, dy.data(), T, c.data(), nullptr);
        for (size_t i = 0; i < a.size(); ++i) {
            ASSERT_NEAR(a[i], b[i], 1e-4f * (1.0f + std::abs(a[i]))) << dtype_name(t) << " " << i;
            ASSERT_EQ(b[i], c[i]) << "thread count changed the result";
        }
    }
}

// Frozen quantized bases: the forward (matmul_frozen) and the input gradient (matmul_tn) of a
// quantized matrix against their _ref twins, which dequantize whole rows and sum in double; odd row
// and token counts, a partial 256-column block for the 32-element block types.
TEST(TrainKernels, QuantizedFrozenMatmulsMatchReference) {
    ThreadPool pool(3);
    for (DType t : {DType::Q8_0, DType::Q4_0, DType::Q6_K}) {
        const int64_t rows = 37, cols = t == DType::Q6_K ? 512 : 288, T = 21;
        auto w = randv(rows * cols, 5);
        std::vector<uint8_t> q(row_bytes(t, static_cast<uint64_t>(cols)) * rows);
        for (int64_t r = 0; r < rows; ++r)
            quantize_row_ref(t, w.data() + r * cols, q.data() + r * row_bytes(t, static_cast<uint64_t>(cols)), cols);
        const MatrixView m{q.data(), t, rows, cols};
        // the same matrix dequantized: the f32 model the quantized base stands for
        std::vector<float> deq(rows * cols);
        to_f32(t, q.data(), deq.data(), deq.size());
        const MatrixView md{deq.data(), DType::F32, rows, cols};
        auto x = randv(T * cols, 6), dy = randv(T * rows, 7);
        std::vector<float> ya(T * rows), yb(T * rows), yc(T * rows), yd(T * rows);
        matmul_frozen_ref(m, x.data(), T, ya.data());
        matmul_frozen(m, x.data(), T, yb.data(), &pool);
        matmul_frozen(m, x.data(), T, yc.data(), nullptr);
        matmul_ref(md, x.data(), T, yd.data());
        for (size_t i = 0; i < ya.size(); ++i) {
            ASSERT_NEAR(ya[i], yb[i], 1e-4f * (1.0f + std::abs(ya[i]))) << dtype_name(t) << " y " << i;
            ASSERT_EQ(yb[i], yc[i]) << "thread count changed the result";
            ASSERT_NEAR(ya[i], yd[i], 1e-5f * (1.0f + std::abs(ya[i]))) << "not the dequantized f32 product";
        }
        std::vector<float> a(T * cols, 0.5f), b(T * cols, 0.5f), c(T * cols, 0.5f), d(T * cols, 0.5f);
        matmul_tn_ref(m, dy.data(), T, a.data());
        matmul_tn(m, dy.data(), T, b.data(), &pool);
        matmul_tn(m, dy.data(), T, c.data(), nullptr);
        matmul_tn_ref(md, dy.data(), T, d.data());
        for (size_t i = 0; i < a.size(); ++i) {
            ASSERT_NEAR(a[i], b[i], 1e-4f * (1.0f + std::abs(a[i]))) << dtype_name(t) << " dx " << i;
            ASSERT_EQ(b[i], c[i]) << "thread count changed the result";
            ASSERT_NEAR(a[i], d[i], 1e-5f * (1.0f + std::abs(a[i]))) << "not the dequantized f32 transpose";
        }
    }
    // a row length the blocks do not divide is an error naming the operation
    std::vector<uint8_t> q(64);
    const MatrixView bad{q.data(), DType::Q8_0, 1, 40};
    std::vector<float> x(40), y(1);
    EXPECT_THROW(matmul_frozen(bad, x.data(), 1, y.data(), nullptr), Error);
    EXPECT_THROW(matmul_tn(bad, y.data(), 1, x.data(), nullptr), Error);
}

TEST(TrainKernels, OuterAccMatchesReference) {
    ThreadPool pool(2);
    for (const int64_t cols : {67, 91, 8}) {  // 4*16 + 3; 5*16 + 8 + 3; a LoRA rank
        const int64_t rows = 29, T = 7;
        auto dy = randv(T * rows, 3), x = randv(T * cols, 4);
        std::vector<float> a(rows * cols, 1.0f), b(rows * cols, 1.0f), c(rows * cols, 1.0f);
        outer_acc_ref(dy.data(), rows, x.data(), cols, T, 0.25f, a.data());
        outer_acc(dy.data(), rows, x.data(), cols, T, 0.25f, b.data(), &pool);
        outer_acc(dy.data(), rows, x.data(), cols, T, 0.25f, c.data(), nullptr);
        for (size_t i = 0; i < a.size(); ++i) {
            ASSERT_NEAR(a[i], b[i], 1e-5f * (1.0f + std::abs(a[i]))) << cols;
            ASSERT_EQ(b[i], c[i]);
        }
    }
}

// f(x) = sum(out * probe): checks an op's backward by central differences in float.
template <typename Fwd>
void finite_diff(std::vector<float>& x, const std::vector<float>& analytic, Fwd fwd, double tol) {
    const float h = 1e-2f;
    double num = 0, den = 0;
    for (size_t i = 0; i < x.size(); ++i) {
        const float x0 = x[i];
        x[i] = x0 + h;
        const double fp = fwd();
        x[i] = x0 - h;
        const double fm = fwd();
        x[i] = x0;
        const double fd = (fp - fm) / (2.0 * h);
        num += (fd - analytic[i]) * (fd - analytic[i]);
        den += fd * fd;
    }
    EXPECT_LE(std::sqrt(num / den), tol);
}

double dotp(const std::vector<float>& a, const std::vector<float>& b) {
    double s = 0;
    for (size_t i = 0; i < a.size(); ++i) s += static_cast<double>(a[i]) * b[i];
    return s;
}

TEST(TrainOps, RmsNormBackward) {
    const int64_t T = 3, n = 13;
    auto x = randv(T * n, 5), w = randv(n, 6), probe = randv(T * n, 7);
    std::vector<float> y(T * n), r(T), dx(T * n, 0.0f);
    auto f = [&] {
        rmsnorm_fwd(x.data(), w.data(), T, n, 1e-5f, y.data(), r.data());
        return dotp(y, probe);
    };
    f();
    rmsnorm_bwd(x.data(), w.data(), r.data(), probe.data(), T, n, dx.data());
    finite_diff(x, dx, f, 1e-3);
}

TEST(TrainOps, RopeBackwardIsInverseRotation) {
    const int64_t T = 6, nh = 3, hd = 8;
    RopeTable rt;
    rt.build(T, hd, 10000.0f, 2.0f);
    auto x = randv(T * nh * hd, 8), probe = randv(T * nh * hd, 9);
    auto f = [&] {
        std::vector<float> y = x;
        rope_fwd(y.data(), T, nh, rt);
        return dotp(y, probe);
    };
    std::vector<float> dx = probe;
    rope_bwd(dx.data(), T, nh, rt);
    finite_diff(x, dx, f, 1e-3);
    std::vector<float> y = x;  // rotating forward then backward is the identity
    rope_fwd(y.data(), T, nh, rt);
    rope_bwd(y.data(), T, nh, rt);
    for (size_t i = 0; i < y.size(); ++i) ASSERT_NEAR(y[i], x[i], 1e-5f);
}

TEST(TrainOps, AttentionBackwardGqa) {
    const int64_t T = 5, nh = 4, nkv = 2, hd = 6;
    auto q = randv(T * nh * hd, 10), k = randv(T * nkv * hd, 11), v = randv(T * nkv * hd, 12);
    auto probe = randv(T * nh * hd, 13);
    std::vector<float> probs(nh * T * T), out(T * nh * hd);
    auto f = [&] {
        attention_fwd(q.data(), k.data(), v.data(), T, nh, nkv, hd, probs.data(), out.data(), nullptr);
        return dotp(out, probe);
    };
    f();
    std::vector<float> dq(q.size(), 0.0f), dk(k.size(), 0.0f), dv(v.size(), 0.0f);
    attention_bwd(q.data(), k.data(), v.data(), probs.data(), probe.data(), T, nh, nkv, hd, dq.data(), dk.data(),
                  dv.data(), nullptr);
    finite_diff(q, dq, f, 2e-3);
    finite_diff(k, dk, f, 2e-3);
    finite_diff(v, dv, f, 2e-3);
    // causal: the first query sees only the first key
    for (int64_t h = 0; h < nh; ++h) EXPECT_FLOAT_EQ(probs[(h * T) * T], 1.0f);
    ThreadPool pool(3);  // threads do not change the result
    std::vector<float> dq2(q.size(), 0.0f), dk2(k.size(), 0.0f), dv2(v.size(), 0.0f);
    attention_bwd(q.data(), k.data(), v.data(), probs.data(), probe.data(), T, nh, nkv, hd, dq2.data(), dk2.data(),
                  dv2.data(), &pool);
    EXPECT_EQ(dq, dq2);
    EXPECT_EQ(dk, dk2);
    EXPECT_EQ(dv, dv2);
}

TEST(TrainOps, SwigluBackward) {
    const int64_t n = 17;
    auto g = randv(n, 14, 2.0f), u = randv(n, 15), probe = randv(n, 16);
    std::vector<float> h(n), dg(n, 0.0f), du(n, 0.0f);
    auto f = [&] {
        swiglu_fwd(g.data(), u.data(), n, h.data());
        return dotp(h, probe);
    };
    swiglu_bwd(g.data(), u.data(), probe.data(), n, dg.data(), du.data());
    finite_diff(g, dg, f, 1e-3);
    finite_diff(u, du, f, 1e-3);
}

TEST(TrainOps, CrossEntropyIgnoresMinus100) {
    const int64_t n = 4, V = 11;
    auto logits = randv(n * V, 17, 3.0f);
    std::vector<int32_t> tgt = {3, kIgnoreIndex, 10, 0};
    const double l = cross_entropy_fwd(logits.data(), tgt.data(), n, V);
    std::vector<float> g = logits;
    EXPECT_NEAR(cross_entropy_fwd_bwd(g.data(), tgt.data(), n, V, 1.0f), l, 1e-9);
    for (int64_t i = 0; i < V; ++i) EXPECT_EQ(g[V + i], 0.0f);  // ignored row
    finite_diff(logits, g, [&] { return cross_entropy_fwd(logits.data(), tgt.data(), n, V); }, 1e-3);
    std::vector<int32_t> bad = {11, 0, 0, 0};
    EXPECT_THROW(cross_entropy_fwd(logits.data(), bad.data(), n, V), Error);
}

TEST(TrainLora, QkRowPermutationRoundTrips) {
    const int64_t out = 16, r = 3, heads = 2;
    auto b = randv(out * r, 18);
    auto c = b;
    TrainableParams::b_gguf_to_hf(c, out, r, heads);
    EXPECT_NE(b, c);
    // GGUF row 2i+j of a head = HF row j*d/2+i: row 1 (i=0, j=1) goes to HF row 4 (d = 8)
    for (int64_t k = 0; k < r; ++k) EXPECT_EQ(c[4 * r + k], b[1 * r + k]);
    TrainableParams::b_hf_to_gguf(c, out, r, heads);
    EXPECT_EQ(b, c);
}

TEST(TrainLora, TargetsParse) {
    EXPECT_EQ(parse_lora_targets("v_proj,q").size(), 2u);
    EXPECT_EQ(parse_lora_targets("v_proj,q")[0], LoraTarget::Q);
    EXPECT_EQ(parse_lora_targets("all").size(), 7u);
    EXPECT_THROW(parse_lora_targets("qq_proj"), Error);
}

TEST(TrainLora, HashUniformIsUniformAndStable) {
    double s = 0;
    int below = 0;
    for (uint64_t i = 0; i < 100000; ++i) {
        const double u = hash_uniform(42, i);
        ASSERT_GE(u, 0.0);
        ASSERT_LT(u, 1.0);
        s += u;
        below += u < 0.05;
    }
    EXPECT_NEAR(s / 100000, 0.5, 0.01);
    EXPECT_NEAR(below / 100000.0, 0.05, 0.005);  // the dropout rate of the original's recipe
    EXPECT_EQ(hash_uniform(42, 7), hash_uniform(42, 7));
    EXPECT_NE(hash_uniform(42, 7), hash_uniform(43, 7));
}

TEST(TrainOptim, Schedules) {
    // transformers: warm-up from 0, cosine to 0 at the end, linear to 0
    EXPECT_DOUBLE_EQ(lr_at(0, 100, 10, LrSchedule::Cosine, 1.0), 0.0);
    EXPECT_DOUBLE_EQ(lr_at(5, 100, 10, LrSchedule::Cosine, 1.0), 0.5);
    EXPECT_DOUBLE_EQ(lr_at(10, 100, 10, LrSchedule::Cosine, 1.0), 1.0);
    EXPECT_NEAR(lr_at(55, 100, 10, LrSchedule::Cosine, 1.0), 0.5, 1e-12);
    EXPECT_NEAR(lr_at(55, 100, 10, LrSchedule::Linear, 1.0), 0.5, 1e-12);
    EXPECT_DOUBLE_EQ(lr_at(70, 100, 10, LrSchedule::Constant, 2.0), 2.0);
    EXPECT_THROW(parse_lr_schedule("cosinus"), Error);
}

TEST(TrainOptim, ClipGradNorm) {
    std::vector<std::unique_ptr<Param>> ps;
    ps.push_back(std::make_unique<Param>());
    ps[0]->w = {0, 0};
    ps[0]->g = {3, 4};
    EXPECT_DOUBLE_EQ(clip_grad_norm(ps, 1.0), 5.0);
    EXPECT_NEAR(ps[0]->g[0], 0.6, 1e-6);
    EXPECT_NEAR(ps[0]->g[1], 0.8, 1e-6);
    EXPECT_NEAR(clip_grad_norm(ps, 10.0), 1.0, 1e-6);  // no scaling below the limit
    EXPECT_NEAR(ps[0]->g[1], 0.8, 1e-6);
}

}  // namespace
}  // namespace calpaca
