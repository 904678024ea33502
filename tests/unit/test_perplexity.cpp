// Perplexity math by hand, window/error handling, and perplexity() on a tiny random model
// against an independent computation (the reference Session's full logits, log-softmax
// written out here, windows cut by hand).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <random>

#include "calpaca/base/error.h"
#include "calpaca/base/threadpool.h"
#include "calpaca/convert/random_model.h"
#include "calpaca/eval/perplexity.h"
#include "calpaca/model/session.h"

using namespace calpaca;

TEST(PerplexityMath, TokenNllByHand) {
    // softmax of (0, ln 2, ln 3, ln 4) = (1, 2, 3, 4) / 10
    const float l[4] = {0.0f, std::log(2.0f), std::log(3.0f), std::log(4.0f)};
    EXPECT_NEAR(token_nll(l, 4, 0), std::log(10.0), 1e-6);
    EXPECT_NEAR(token_nll(l, 4, 3), std::log(10.0 / 4.0), 1e-6);
    // shifting every logit changes nothing; huge logits do not overflow
    const float big[3] = {1000.0f, 1000.0f, 1000.0f};
    EXPECT_NEAR(token_nll(big, 3, 1), std::log(3.0), 1e-9);
    const float uniform[5] = {0, 0, 0, 0, 0};
    EXPECT_NEAR(token_nll(uniform, 5, 2), std::log(5.0), 1e-12);
    EXPECT_THROW(token_nll(l, 4, 4), Error);
    EXPECT_THROW(token_nll(l, 4, -1), Error);
}

TEST(PerplexityMath, StatsAndStandardError) {
    NllStats s;
    EXPECT_EQ(s.count(), 0);
    EXPECT_DOUBLE_EQ(s.perplexity(), 1.0);
    EXPECT_DOUBLE_EQ(s.mean_stderr(), 0.0);
    s.add(1.0);
    EXPECT_DOUBLE_EQ(s.perplexity(), std::exp(1.0));
    EXPECT_DOUBLE_EQ(s.mean_stderr(), 0.0);  // one sample: no spread estimate
    s.add(2.0);
    s.add(3.0);
    // mean 2; mean of squares 14/3; population variance 2/3; stderr = sqrt((2/3) / (3 - 1))
    EXPECT_NEAR(s.mean(), 2.0, 1e-15);
    EXPECT_NEAR(s.perplexity(), std::exp(2.0), 1e-12);
    EXPECT_NEAR(s.mean_stderr(), std::sqrt(1.0 / 3.0), 1e-12);
    EXPECT_NEAR(s.perplexity_stderr(), std::exp(2.0) * std::sqrt(1.0 / 3.0), 1e-11);
    NllStats same;
    for (int i = 0; i < 10; ++i) same.add(0.5);
    EXPECT_DOUBLE_EQ(same.mean_stderr(), 0.0);
}

TEST(PerplexityMath, WindowCounts) {
    PerplexityOptions o;
    o.n_ctx = 64;
    EXPECT_EQ(perplexity_chunks(64, o, "t"), 1);
    EXPECT_EQ(perplexity_chunks(191, o, "t"), 2);  // the partial third window is dropped
    o.max_chunks = 1;
    EXPECT_EQ(perplexity_chunks(1000, o, "t"), 1);
    o.max_chunks = 0;
    try {
        perplexity_chunks(63, o, "short.txt");
        FAIL() << "no error for a text shorter than one window";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("short.txt: 63 tokens is fewer than one window of 64"), std::string::npos)
            << e.what();
    }
    o.n_ctx = 3;
    EXPECT_THROW(perplexity_chunks(100, o, "t"), Error);
    o.n_ctx = 8, o.max_chunks = -1;
    EXPECT_THROW(perplexity_chunks(100, o, "t"), Error);
}

namespace {
std::unique_ptr<Model> tiny_model() {
    auto dir = std::filesystem::temp_directory_path() / "calpaca-test-perplexity";
    std::filesystem::create_directories(dir);
    std::string path = (dir / "tiny.gguf").string();
    RandomModelSpec s;
    s.vocab_path = std::string(CALPACA_TEST_DATA) + "/tokenizers/chinese-llama-2/tokenizer.model";
    s.n_embd = 32, s.n_layer = 2, s.n_head = 4, s.n_head_kv = 2, s.n_ff = 48, s.n_ctx = 128;
    s.std = 0.5f, s.type = DType::F32, s.seed = 11, s.tie_embeddings = true, s.progress = false;
    write_random_model(s, path);
    return Model::load(path);
}
}  // namespace

TEST(Perplexity, MatchesAnIndependentComputation) {
    auto m = tiny_model();
    const int64_t V = m->config().n_vocab;
    std::mt19937 rng(8);
    std::uniform_int_distribution<int32_t> d(3, static_cast<int32_t>(V) - 1);
    std::vector<int32_t> tokens(3 * 16 + 5);
    for (auto& t : tokens) t = d(rng);
    const int64_t c = 16;

    // by hand: windows of 16 with BOS first, every logit row, score rows 8..14 -> tokens 9..15
    double sum = 0, sum2 = 0;
    int64_t n = 0;
    for (int64_t k = 0; k < 3; ++k) {
        std::vector<int32_t> w(tokens.begin() + k * c, tokens.begin() + (k + 1) * c);
        w[0] = 1;
        Session s(*m, {c, DType::F32, true}, nullptr);
        s.eval(w, true);
        for (int64_t p = c / 2; p < c - 1; ++p) {
            const float* row = s.logits().data() + p * V;
            double mx = row[0];
            for (int64_t i = 0; i < V; ++i) mx = std::max(mx, static_cast<double>(row[i]));
            double z = 0;
            for (int64_t i = 0; i < V; ++i) z += std::exp(row[i] - mx);
            const double nll = mx + std::log(z) - row[w[p + 1]];
            sum += nll, sum2 += nll * nll, ++n;
        }
    }
    const double mean = sum / n, ppl = std::exp(mean);
    const double se = std::sqrt((sum2 / n - mean * mean) / (n - 1)) * ppl;

    PerplexityOptions o;
    o.n_ctx = c, o.kv_type = DType::F32, o.reference = true;
    std::vector<std::pair<int64_t, double>> seen;
    const PerplexityResult r = perplexity(*m, tokens, o, nullptr, "tokens",
                                          [&](int64_t k, int64_t total, const NllStats& s) {
                                              EXPECT_EQ(total, 3);
                                              seen.emplace_back(k, s.perplexity());
                                          });
    EXPECT_EQ(r.n_chunks, 3);
    EXPECT_EQ(r.n_scored, 3 * 7);
    EXPECT_EQ(r.n_tokens, 53);
    EXPECT_EQ(static_cast<int64_t>(r.nll.size()), r.n_scored);
    EXPECT_NEAR(r.ppl, ppl, 1e-9 * ppl);
    EXPECT_NEAR(r.ppl_stderr, se, 1e-9 * ppl);
    ASSERT_EQ(seen.size(), 3u);
    EXPECT_EQ(seen[2].first, 2);
    EXPECT_DOUBLE_EQ(seen[2].second, r.ppl);
    EXPECT_EQ(r.chunk_ppl.back(), r.ppl);
    EXPECT_GT(r.ppl, 1.0);

    // the fast threaded path agrees; --chunks limits the windows
    ThreadPool pool(2);
    o.reference = false;
    const PerplexityResult fast32 = perplexity(*m, tokens, o, &pool);
    EXPECT_NEAR(fast32.ppl, r.ppl, 1e-4 * r.ppl);
    o.kv_type = DType::F16;
    const PerplexityResult fast = perplexity(*m, tokens, o, &pool);
    EXPECT_NEAR(fast.ppl, r.ppl, 5e-3 * r.ppl);
    o.max_chunks = 2;
    EXPECT_EQ(perplexity(*m, tokens, o, &pool).n_chunks, 2);

    // errors: too short, token outside the vocabulary
    o.max_chunks = 0;
    EXPECT_THROW(perplexity(*m, std::span<const int32_t>(tokens.data(), 15), o, &pool), Error);
    std::vector<int32_t> bad(tokens.begin(), tokens.begin() + 16);
    bad[5] = static_cast<int32_t>(V);
    EXPECT_THROW(perplexity(*m, bad, o, &pool), Error);
}

TEST(Perplexity, OfTextPutsBosFirst) {
    auto m = tiny_model();
    const std::string text = "白日依山尽，黄河入海流。欲穷千里目，更上一层楼。Hello world, this is a test of perplexity.";
    const auto body = m->tokenizer().encode(text);
    const auto ids = perplexity_tokenize(*m, text, "poem.txt");
    ASSERT_EQ(ids.size(), body.size() + 1);
    EXPECT_EQ(ids[0], m->tokenizer().bos());
    EXPECT_TRUE(std::equal(body.begin(), body.end(), ids.begin() + 1));
    ASSERT_GE(ids.size(), 16u);
    PerplexityOptions o;
    o.n_ctx = 8;
    ThreadPool pool(2);
    const auto a = perplexity_of_text(*m, text, o, &pool);
    const auto b = perplexity(*m, ids, o, &pool);
    EXPECT_EQ(a.n_tokens, static_cast<int64_t>(ids.size()));
    EXPECT_EQ(a.ppl, b.ppl);
    o.n_ctx = static_cast<int64_t>(ids.size()) + 1;
    EXPECT_THROW(perplexity_of_text(*m, text, o, &pool, "poem.txt"), Error);
    EXPECT_THROW(perplexity_tokenize(*m, "ab\xff", "bad.txt"), Error);
    EXPECT_THROW(perplexity_tokenize(*m, "", "empty.txt"), Error);
}
