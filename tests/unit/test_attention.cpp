// The fast forward path against its reference: the attention kernel (model/attention.h) on
// random data with odd sizes, the F16 cache store, and whole Sessions (fast vs reference,
// thread-count independence, eval_tail vs eval).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>

#include "calpaca/base/error.h"
#include "calpaca/base/threadpool.h"
#include "calpaca/convert/random_model.h"
#include "calpaca/model/attention.h"
#include "calpaca/model/session.h"

using namespace calpaca;

namespace {

std::vector<uint8_t> random_rows(DType t, int64_t rows, int64_t cols, std::mt19937& rng) {
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> f(static_cast<size_t>(rows * cols));
    for (auto& v : f) v = nd(rng);
    std::vector<uint8_t> out(static_cast<size_t>(rows * cols) * (t == DType::F16 ? 2 : 4));
    store_row(t, f.data(), out.data(), rows * cols);
    return out;
}

std::string tiny_model(const std::string& name, int64_t embd, int64_t heads, int64_t heads_kv, DType type) {
    auto dir = std::filesystem::temp_directory_path() / "calpaca-test-attention";
    std::filesystem::create_directories(dir);
    std::string path = (dir / (name + ".gguf")).string();
    RandomModelSpec s;
    s.vocab_path = std::string(CALPACA_TEST_DATA) + "/tokenizers/llama/tokenizer.model";
    s.n_embd = embd, s.n_layer = 2, s.n_head = heads, s.n_head_kv = heads_kv, s.n_ff = 50, s.n_ctx = 256;
    s.std = 0.4f, s.type = type, s.seed = 5, s.tie_embeddings = true, s.progress = false;
    write_random_model(s, path);
    return path;
}

std::vector<int32_t> random_tokens(std::mt19937& rng, size_t n) {
    std::uniform_int_distribution<int32_t> d(3, 31999);
    std::vector<int32_t> v(n);
    for (auto& t : v) t = d(rng);
    return v;
}

double max_rel(const float* a, const float* b, size_t n) {
    double worst = 0;
    for (size_t i = 0; i < n; ++i)
        worst = std::max(worst, std::fabs(static_cast<double>(a[i]) - b[i]) / std::max(1.0, std::fabs(static_cast<double>(b[i]))));
    return worst;
}

}  // namespace

TEST(Attention, FastMatchesReferenceOnRandomShapes) {
    std::mt19937 rng(2024);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (DType t : {DType::F16, DType::F32}) {
        for (int64_t hd : {2, 6, 8, 12, 40, 64, 128, 130}) {
            for (int64_t n_keys : {1, 3, 4, 5, 17, 64, 301}) {
                // the head sits inside wider cache rows (3 heads per position, ours is the middle one)
                const int64_t row = 3 * hd;
                auto k = random_rows(t, n_keys, row, rng), v = random_rows(t, n_keys, row, rng);
                const size_t esz = t == DType::F16 ? 2 : 4;
                KVHead kv{k.data() + hd * esz, v.data() + hd * esz, t, static_cast<size_t>(row) * esz};
                std::vector<float> q(hd), ref(hd), fast(hd), s1(n_keys), s2(n_keys);
                for (auto& x : q) x = nd(rng);
                const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
                attend_ref(kv, q.data(), hd, n_keys, scale, ref.data(), s1.data());
                attend(kv, q.data(), hd, n_keys, scale, fast.data(), s2.data());
                for (int64_t i = 0; i < hd; ++i)
                    ASSERT_NEAR(fast[i], ref[i], 2e-5) << dtype_name(t) << " hd " << hd << " keys " << n_keys << " i " << i;
                for (int64_t j = 0; j < n_keys; ++j) ASSERT_NEAR(s2[j], s1[j], 2e-6) << "attention weight " << j;
            }
        }
    }
}

// attend4 (a prompt's four consecutive queries of one head, K and V rows converted once for the
// four) gives each query attend()'s bits, on head sizes with and without the 16-lane fast path.
TEST(Attention, FourQueriesEqualFourSingleQueries) {
    std::mt19937 rng(2025);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (DType t : {DType::F16, DType::F32}) {
        for (int64_t hd : {16, 40, 48, 64, 128}) {
            for (int64_t n0 : {1, 2, 4, 5, 33, 200}) {
                const int64_t row = 3 * hd, n_keys = n0 + 3;
                auto k = random_rows(t, n_keys, row, rng), v = random_rows(t, n_keys, row, rng);
                const size_t esz = t == DType::F16 ? 2 : 4;
                KVHead kv{k.data() + hd * esz, v.data() + hd * esz, t, static_cast<size_t>(row) * esz};
                const int64_t qs = hd + 5, os = hd + 3;  // queries and outputs in wider rows
                std::vector<float> q(4 * qs), one(4 * os, 9.0f), four(4 * os, 9.0f), s1(n_keys), s4(4 * (n0 + 3));
                for (auto& x : q) x = nd(rng);
                const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
                for (int u = 0; u < 4; ++u) attend(kv, q.data() + u * qs, hd, n0 + u, scale, one.data() + u * os, s1.data());
                attend4(kv, q.data(), qs, hd, n0, scale, four.data(), os, s4.data());
                ASSERT_EQ(0, std::memcmp(one.data(), four.data(), one.size() * sizeof(float)))
                    << dtype_name(t) << " hd " << hd << " n0 " << n0;
            }
        }
    }
}

TEST(Attention, OneKeyReturnsItsValue) {
    const float q[4] = {1, 2, 3, 4}, k[4] = {0.5f, 0.5f, 0.5f, 0.5f}, v[4] = {-1, 2.5f, 0, 7};
    KVHead kv{reinterpret_cast<const uint8_t*>(k), reinterpret_cast<const uint8_t*>(v), DType::F32, 16};
    float out[4], s[1];
    attend(kv, q, 4, 1, 0.5f, out, s);
    EXPECT_FLOAT_EQ(s[0], 1.0f);
    for (int i = 0; i < 4; ++i) EXPECT_FLOAT_EQ(out[i], v[i]);
}

TEST(Attention, StoreRowRoundsLikeScalarFp16) {
    std::mt19937 rng(7);
    std::vector<float> x;
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (int i = 0; i < 997; ++i) x.push_back(nd(rng) * std::pow(2.0f, static_cast<float>(i % 40 - 28)));
    for (float special : {0.0f, -0.0f, 65504.0f, 65520.0f, 1e9f, -1e9f, 5.96e-8f, 3e-8f, 6.1e-5f, INFINITY, -INFINITY})
        x.push_back(special);
    std::vector<uint8_t> out(x.size() * 2);
    store_row(DType::F16, x.data(), out.data(), static_cast<int64_t>(x.size()));
    for (size_t i = 0; i < x.size(); ++i) {
        uint16_t h;
        std::memcpy(&h, &out[2 * i], 2);
        ASSERT_EQ(h, fp32_to_fp16(x[i])) << "value " << x[i];
    }
    std::vector<uint8_t> out32(x.size() * 4);
    store_row(DType::F32, x.data(), out32.data(), static_cast<int64_t>(x.size()));
    EXPECT_EQ(std::memcmp(out32.data(), x.data(), out32.size()), 0);
    EXPECT_THROW(store_row(DType::BF16, x.data(), out.data(), 4), Error);
}

// Whole forward: fast path (threaded, any pool size) against the reference path, prefill then
// decode, on shapes whose head size is not a multiple of the SIMD width and with GQA.
TEST(SessionFast, MatchesReferenceAndIgnoresThreadCount) {
    const std::string path = tiny_model("gqa-hd12", 36, 3, 1, DType::F16);
    auto model = Model::load(path);
    const int64_t V = model->config().n_vocab;
    std::mt19937 rng(3);
    const auto prompt = random_tokens(rng, 37), more = random_tokens(rng, 5);
    ThreadPool p1(1), p2(2), p3(3);
    for (DType kv : {DType::F16, DType::F32}) {
        SessionOptions ro{128, kv, true}, fo{128, kv, false};
        Session ref(*model, ro, nullptr), a(*model, fo, &p1), b(*model, fo, &p2), c(*model, fo, &p3);
        for (Session* s : {&ref, &a, &b, &c}) s->eval(prompt, true);
        // an F16 cache rounds slightly different k/v values (float vs double sums upstream) to
        // different halves now and then; an F32 cache keeps the paths within float noise
        const double tol = kv == DType::F16 ? 2e-3 : 2e-4;
        EXPECT_LE(max_rel(a.logits().data(), ref.logits().data(), ref.logits().size()), tol) << dtype_name(kv);
        EXPECT_EQ(a.logits(), b.logits()) << "logits depend on the thread count";
        EXPECT_EQ(a.logits(), c.logits()) << "logits depend on the thread count";
        for (int32_t t : more) {
            for (Session* s : {&ref, &a, &c}) s->eval(std::vector<int32_t>{t}, false);
            EXPECT_LE(max_rel(a.last_logits(), ref.last_logits(), V), tol);
            EXPECT_EQ(0, std::memcmp(a.last_logits(), c.last_logits(), V * sizeof(float)));
        }
        EXPECT_EQ(a.hidden(), c.hidden());
    }
}

TEST(SessionFast, PrefillEqualsTokenByToken) {
    const std::string path = tiny_model("mha-hd8", 32, 4, 4, DType::F32);
    auto model = Model::load(path);
    const int64_t V = model->config().n_vocab;
    std::mt19937 rng(4);
    const auto prompt = random_tokens(rng, 20);
    ThreadPool pool(2);
    Session whole(*model, {64, DType::F32, false}, &pool), steps(*model, {64, DType::F32, false}, &pool);
    whole.eval(prompt, true);
    for (size_t i = 0; i < prompt.size(); ++i) {
        steps.eval(std::span<const int32_t>(&prompt[i], 1), false);
        EXPECT_LE(max_rel(steps.last_logits(), whole.logits().data() + i * V, V), 1e-5) << "position " << i;
    }
}

// The last layer runs past its K and V for the rows that get logits only: the logits and hidden
// states of those rows are the full batch's bit for bit (dense weights, packed F16 included), and
// the cache holds every row's keys and values (decoding on gives the same logits).
TEST(SessionFast, LastLayerRunsForTheLogitRowsOnly) {
    for (DType wt : {DType::F32, DType::F16}) {
        const std::string path = tiny_model(std::string("lastrows-") + dtype_name(wt), 64, 4, 2, wt);
        auto model = Model::load(path);
        const int64_t V = model->config().n_vocab, E = model->config().n_embd;
        std::mt19937 rng(31);
        const auto prompt = random_tokens(rng, 40), more = random_tokens(rng, 3);
        ThreadPool pool(2);
        Session full(*model, {64, DType::F16, false}, &pool), last(*model, {64, DType::F16, false}, &pool),
            tail(*model, {64, DType::F16, false}, &pool);
        full.eval(prompt, true);
        last.eval(prompt, false);
        tail.eval_tail(prompt, 25);
        ASSERT_EQ(last.logits().size(), static_cast<size_t>(V));
        ASSERT_EQ(last.hidden().size(), static_cast<size_t>(E));
        ASSERT_EQ(tail.hidden().size(), static_cast<size_t>(15 * E));
        EXPECT_EQ(0, std::memcmp(last.last_logits(), full.logits().data() + 39 * V, V * sizeof(float))) << dtype_name(wt);
        EXPECT_EQ(0, std::memcmp(last.hidden().data(), full.hidden().data() + 39 * E, E * sizeof(float)));
        EXPECT_EQ(0, std::memcmp(tail.logits().data(), full.logits().data() + 25 * V, 15 * V * sizeof(float)));
        EXPECT_EQ(0, std::memcmp(tail.hidden().data(), full.hidden().data() + 25 * E, 15 * E * sizeof(float)));
        for (int32_t t : more) {
            for (Session* s : {&full, &last, &tail}) s->eval(std::vector<int32_t>{t}, false);
            EXPECT_EQ(0, std::memcmp(last.last_logits(), full.last_logits(), V * sizeof(float))) << dtype_name(wt);
            EXPECT_EQ(0, std::memcmp(tail.last_logits(), full.last_logits(), V * sizeof(float))) << dtype_name(wt);
        }
    }
}

TEST(SessionFast, EvalTailKeepsTheRequestedRows) {
    const std::string path = tiny_model("mha-hd8", 32, 4, 4, DType::F32);
    auto model = Model::load(path);
    const size_t V = static_cast<size_t>(model->config().n_vocab);
    std::mt19937 rng(5);
    const auto prompt = random_tokens(rng, 16);
    ThreadPool pool(2);
    for (bool reference : {true, false}) {
        Session all(*model, {32, DType::F16, reference}, &pool), tail(*model, {32, DType::F16, reference}, &pool);
        all.eval(prompt, true);
        tail.eval_tail(prompt, 9);
        ASSERT_EQ(tail.logits().size(), 7 * V);
        EXPECT_TRUE(std::equal(tail.logits().begin(), tail.logits().end(), all.logits().begin() + 9 * V));
        EXPECT_EQ(tail.n_past(), 16);
        EXPECT_THROW(tail.eval_tail(prompt, 16), Error);  // first row outside the batch
        EXPECT_THROW(tail.eval_tail(prompt, -1), Error);
        EXPECT_EQ(tail.n_past(), 16);
    }
}

// SessionOptions::ubatch: a long prompt evaluated in chunks gives the logits of one big batch
// (dense weights: the kernels are batch-invariant, so bit for bit), decode continues identically,
// and an error in a later chunk (bad id, overflow) is caught before anything is cached.
TEST(SessionFast, UbatchChunksEqualOneBatch) {
    for (DType wt : {DType::F32, DType::F16}) {
        const std::string path = tiny_model(std::string("ubatch-") + dtype_name(wt), 36, 3, 1, wt);
        auto model = Model::load(path);
        const int64_t V = model->config().n_vocab;
        std::mt19937 rng(11);
        const auto prompt = random_tokens(rng, 61), more = random_tokens(rng, 4);
        ThreadPool pool(2);
        SessionOptions whole{128, DType::F16, false}, chunked{128, DType::F16, false};
        chunked.ubatch = 8;  // 61 = 7 x 8 + 5: a short last chunk
        Session a(*model, whole, &pool), b(*model, chunked, &pool);
        a.eval(prompt, false);
        b.eval(prompt, false);
        ASSERT_EQ(b.n_past(), 61);
        ASSERT_EQ(b.logits().size(), static_cast<size_t>(V));
        EXPECT_EQ(0, std::memcmp(a.last_logits(), b.last_logits(), V * sizeof(float))) << dtype_name(wt);
        for (int32_t t : more) {
            a.eval(std::vector<int32_t>{t}, false);
            b.eval(std::vector<int32_t>{t}, false);
            EXPECT_EQ(0, std::memcmp(a.last_logits(), b.last_logits(), V * sizeof(float))) << dtype_name(wt);
        }
        auto bad = prompt;
        bad[50] = static_cast<int32_t>(V);  // in the 7th chunk
        Session c(*model, chunked, &pool);
        EXPECT_THROW(c.eval(bad, false), Error);
        EXPECT_EQ(c.n_past(), 0) << "a failed chunked eval left tokens in the cache";
        std::vector<int32_t> too_long(129, 5);
        EXPECT_THROW(c.eval(too_long, false), Error);
        EXPECT_EQ(c.n_past(), 0);
    }
}
