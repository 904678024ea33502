// Sampler: each pipeline step against hand-computed values on tiny vocabularies, the whole
// pipeline against a naive HF-style reference, seeded determinism and empirical frequencies.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <set>

#include "calpaca/base/error.h"
#include "calpaca/generate/sampler.h"

using namespace calpaca;

namespace {

const float kNegInf = -std::numeric_limits<float>::infinity();

// Params with every transform off (temperature 1, no truncation, no penalties).
SamplingParams neutral() {
    SamplingParams p;
    p.temperature = 1.0f;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.repetition_penalty = 1.0f;
    p.has_seed = true;
    p.seed = 1234;
    return p;
}

// id → probability of a normalized candidate list.
std::map<int32_t, double> probs_of(const Candidates& c) {
    std::map<int32_t, double> m;
    for (const auto& x : c.items) m[x.id] = x.prob;
    return m;
}

std::vector<int32_t> ids_of(const Candidates& c) {
    std::vector<int32_t> v;
    for (const auto& x : c.items) v.push_back(x.id);
    return v;
}

std::vector<float> logs(std::initializer_list<double> probs) {
    std::vector<float> v;
    for (double p : probs) v.push_back(static_cast<float>(std::log(p)));
    return v;
}

void expect_error_contains(const std::function<void()>& fn, const std::string& needle) {
    try {
        fn();
        ADD_FAILURE() << "expected an Error containing '" << needle << "'";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// processors

TEST(SamplerRepetitionPenalty, PositiveDividedNegativeMultipliedDistinctOnce) {
    std::vector<float> l = {2.0f, -1.0f, 0.5f, 3.0f, -2.0f, 1.0f};
    std::vector<int32_t> window = {0, 1, 1, 4, 1};  // token 1 thrice: still penalized once
    sampling::apply_repetition_penalty(l, window, 2.0f);
    EXPECT_EQ(l, (std::vector<float>{1.0f, -2.0f, 0.5f, 3.0f, -4.0f, 1.0f}));
}

TEST(SamplerRepetitionPenalty, ZeroLogitUnchangedAndPenaltyBelowOne) {
    std::vector<float> l = {0.0f, 2.0f, -2.0f};
    std::vector<int32_t> window = {0, 1, 2};
    sampling::apply_repetition_penalty(l, window, 0.5f);  // < 1 encourages repetition
    EXPECT_EQ(l, (std::vector<float>{0.0f, 4.0f, -1.0f}));
}

TEST(SamplerRepetitionPenalty, WindowCoversPromptAndGeneratedTail) {
    auto p = neutral();
    p.repetition_penalty = 2.0f;
    p.repetition_window = 2;
    Sampler s(p, 5);
    std::vector<float> logits = {4.0f, 4.0f, 4.0f, -4.0f, 4.0f};
    std::vector<int32_t> history = {0, 1, 2, 3};  // window = {2, 3}
    std::vector<float> out;
    s.process(logits, history, 3, out);
    EXPECT_EQ(out, (std::vector<float>{4.0f, 4.0f, 2.0f, -8.0f, 4.0f}));

    p.repetition_window = 0;  // all of prompt + generated
    Sampler all(p, 5);
    all.process(logits, history, 3, out);
    EXPECT_EQ(out, (std::vector<float>{2.0f, 2.0f, 2.0f, -8.0f, 4.0f}));
}

TEST(SamplerPresenceFrequency, CountsGeneratedTokensOnly) {
    auto p = neutral();
    p.presence_penalty = 0.5f;
    p.frequency_penalty = 0.25f;
    Sampler s(p, 5);
    std::vector<float> logits(5, 0.0f);
    std::vector<int32_t> history = {0, 0, 1, /*generated:*/ 2, 2, 2, 3};
    std::vector<float> out;
    s.process(logits, history, 3, out);
    // token 2: -(0.5 + 3*0.25) = -1.25; token 3: -(0.5 + 0.25) = -0.75; prompt tokens untouched
    EXPECT_EQ(out, (std::vector<float>{0.0f, 0.0f, -1.25f, -0.75f, 0.0f}));
}

TEST(SamplerPresenceFrequency, NegativePenaltiesEncourage) {
    std::vector<float> l = {1.0f, 1.0f, 1.0f};
    std::vector<int32_t> gen = {1, 1};
    sampling::apply_presence_frequency(l, gen, -1.0f, -0.5f);
    EXPECT_EQ(l, (std::vector<float>{1.0f, 3.0f, 1.0f}));
}

TEST(SamplerLogitBias, AddsAndBans) {
    auto p = neutral();
    p.logit_bias = {{1, 5.0f}, {2, kNegInf}, {1, 1.0f}};
    Sampler s(p, 4);
    std::vector<float> logits = {0.0f, 0.0f, 10.0f, 0.0f};
    std::vector<float> out;
    s.process(logits, std::span<const int32_t>(), 0, out);
    EXPECT_EQ(out[0], 0.0f);
    EXPECT_EQ(out[1], 6.0f);
    EXPECT_EQ(out[2], kNegInf);
    EXPECT_EQ(out[3], 0.0f);
    // The banned token is never a candidate.
    auto d = s.distribution(logits, std::span<const int32_t>(), 0);
    EXPECT_EQ(probs_of(d).count(2), 0u);
    EXPECT_EQ(d.size(), 3u);
}

TEST(SamplerOrder, BiasBeforeRepetitionBeforePresence) {
    auto p = neutral();
    p.logit_bias = {{0, -3.0f}};
    p.repetition_penalty = 2.0f;
    p.presence_penalty = 1.0f;
    Sampler s(p, 2);
    std::vector<float> logits = {1.0f, 0.0f};
    std::vector<int32_t> history = {0};  // generated (n_prompt = 0)
    std::vector<float> out;
    s.process(logits, history, 0, out);
    // bias: 1 - 3 = -2; repetition: -2 * 2 = -4; presence: -4 - 1 = -5.
    // (repetition first would give 0.5 - 3 - 1 = -3.5)
    EXPECT_FLOAT_EQ(out[0], -5.0f);
}

// ---------------------------------------------------------------------------------------------
// warpers

TEST(SamplerTemperature, ScalesLogits) {
    auto p = neutral();
    p.temperature = 0.5f;
    Sampler s(p, 3);
    std::vector<float> logits = {0.0f, static_cast<float>(std::log(2.0)), static_cast<float>(std::log(4.0))};
    auto d = probs_of(s.distribution(logits, {}, 0));
    // logits doubled: weights 1, 4, 16
    EXPECT_NEAR(d[0], 1.0 / 21, 1e-6);
    EXPECT_NEAR(d[1], 4.0 / 21, 1e-6);
    EXPECT_NEAR(d[2], 16.0 / 21, 1e-6);

    p.temperature = 2.0f;  // weights 1, sqrt2, 2
    Sampler hot(p, 3);
    d = probs_of(hot.distribution(logits, {}, 0));
    double z = 1 + std::sqrt(2.0) + 2;
    EXPECT_NEAR(d[0], 1 / z, 1e-6);
    EXPECT_NEAR(d[1], std::sqrt(2.0) / z, 1e-6);
    EXPECT_NEAR(d[2], 2 / z, 1e-6);
}

TEST(SamplerTopK, KeepsKLargestSorted) {
    auto c = Candidates::from_logits(std::vector<float>{1, 3, 2, 5, 4, 0});
    sampling::apply_top_k(c, 3);
    EXPECT_TRUE(c.sorted);
    EXPECT_EQ(ids_of(c), (std::vector<int32_t>{3, 4, 1}));
    c.normalize();
    double z = std::exp(5.0) + std::exp(4.0) + std::exp(3.0);
    EXPECT_NEAR(c.items[0].prob, std::exp(5.0) / z, 1e-9);
    EXPECT_NEAR(c.items[1].prob, std::exp(4.0) / z, 1e-9);
    EXPECT_NEAR(c.items[2].prob, std::exp(3.0) / z, 1e-9);
}

TEST(SamplerTopK, BoundaryTiesAreAllKeptLikeHF) {
    // HF removes `scores < topk(scores, k)[-1]`: every token equal to the k-th value stays.
    auto c = Candidates::from_logits(std::vector<float>{1, 2, 2, 2, 0});
    sampling::apply_top_k(c, 2);
    EXPECT_EQ(ids_of(c), (std::vector<int32_t>{1, 2, 3}));
    // Same when the list is already sorted.
    auto s = Candidates::from_logits(std::vector<float>{1, 2, 2, 2, 0, 3});
    s.sort();
    sampling::apply_top_k(s, 2);
    EXPECT_EQ(ids_of(s), (std::vector<int32_t>{5, 1, 2, 3}));
}

TEST(SamplerTopK, DisabledOrLargerThanVocab) {
    auto c = Candidates::from_logits(std::vector<float>{1, 3, 2});
    sampling::apply_top_k(c, 0);
    EXPECT_EQ(ids_of(c), (std::vector<int32_t>{0, 1, 2}));
    sampling::apply_top_k(c, 10);
    EXPECT_EQ(c.size(), 3u);
}

TEST(SamplerTopK, FromLogitsEqualsAssignThenTopK) {
    std::mt19937_64 gen(21);
    std::uniform_int_distribution<int> small(-4, 4);
    for (int trial = 0; trial < 200; ++trial) {
        size_t n = 1 + gen() % 300;
        std::vector<float> l(n);
        for (auto& x : l) x = (gen() % 10 == 0) ? kNegInf : static_cast<float>(small(gen));  // many ties
        int k = static_cast<int>(gen() % (n + 3));
        Candidates a = Candidates::from_logits(l);
        sampling::apply_top_k(a, k);
        a.sort();
        Candidates b;
        sampling::top_k_from_logits(l, k, b);
        if (k > 0 && static_cast<size_t>(k) < n) {
            EXPECT_TRUE(b.sorted);
        }
        b.sort();  // k disabled: both are the unsorted full list
        ASSERT_EQ(ids_of(a), ids_of(b)) << "trial " << trial << " k " << k;
    }
    Candidates c;
    EXPECT_THROW(sampling::top_k_from_logits(std::vector<float>{1, std::nanf(""), 2}, 2, c), Error);
    // a NaN inside a 16-logit block the scan tests at once (SIMD where built), before or after
    // the k-th value settles
    for (size_t at : {3u, 40u, 77u}) {
        std::vector<float> l(100);
        for (size_t i = 0; i < l.size(); ++i) l[i] = static_cast<float>((i * 37) % 101) * 0.01f;
        l[at] = std::nanf("");
        EXPECT_THROW(sampling::top_k_from_logits(l, 5, c), Error) << "NaN at " << at;
    }
}

// Vocabulary-sized inputs, where the block-maxima bound is used: the same survivors as the full
// list cut by apply_top_k, for peaked, flat, tied and partly -inf logits and k around the number
// of 64-logit blocks.
TEST(SamplerTopK, FromLogitsLargeVocabularies) {
    std::mt19937_64 gen(77);
    std::normal_distribution<float> nd(0.0f, 3.0f);
    for (size_t n : {1000u, 4097u, 55296u}) {
        for (int shape = 0; shape < 4; ++shape) {
            std::vector<float> l(n);
            for (size_t i = 0; i < n; ++i) {
                float x = nd(gen);
                if (shape == 1) x = std::round(x);                     // many ties
                if (shape == 2 && gen() % 3 == 0) x = kNegInf;          // a third masked
                if (shape == 3) x = (i % 997 == 5) ? 20.0f + static_cast<float>(i % 7) : x * 0.1f;  // peaked
                l[i] = x;
            }
            for (int k : {1, 2, 15, 40, 64, 200, static_cast<int>(n / 64), static_cast<int>(n / 64) + 1, static_cast<int>(n) - 1}) {
                Candidates a = Candidates::from_logits(l);
                sampling::apply_top_k(a, k);
                a.sort();
                Candidates b;
                sampling::top_k_from_logits(l, k, b);
                ASSERT_TRUE(b.sorted);
                ASSERT_EQ(ids_of(a), ids_of(b)) << "n " << n << " shape " << shape << " k " << k;
            }
        }
    }
    // every value -inf but a few: fewer finite values than k
    std::vector<float> l(5000, kNegInf);
    l[17] = 1.0f, l[4000] = 2.0f, l[4999] = 1.0f;
    Candidates c;
    sampling::top_k_from_logits(l, 100, c);
    EXPECT_EQ(ids_of(c), (std::vector<int32_t>{4000, 17, 4999}));
    // +inf is an error like NaN
    l[2500] = std::numeric_limits<float>::infinity();
    EXPECT_THROW(sampling::top_k_from_logits(l, 100, c), Error);
}

TEST(SamplerTopP, QuickselectEqualsSortedScanWithTies) {
    std::mt19937_64 gen(8);
    std::uniform_int_distribution<int> small(-3, 3);
    for (int trial = 0; trial < 500; ++trial) {
        size_t n = 1 + gen() % 200;
        std::vector<float> l(n);
        for (auto& x : l) x = static_cast<float>(small(gen)) * 0.5f;
        float p = static_cast<float>(gen() % 101) / 100.0f;
        Candidates a = Candidates::from_logits(l);  // unsorted: quickselect path
        sampling::apply_top_p(a, p);
        Candidates b = Candidates::from_logits(l);  // sorted: linear scan path
        b.sort();
        sampling::apply_top_p(b, p);
        a.sort();  // (p == 1 leaves `a` untouched)
        ASSERT_EQ(ids_of(a), ids_of(b)) << "trial " << trial << " p " << p;
    }
}

TEST(SamplerTopP, HandComputed) {
    // probs 0.5, 0.3, 0.15, 0.05 (ascending cumsum 0.05, 0.2, 0.5, 1.0)
    auto base = Candidates::from_logits(logs({0.15, 0.5, 0.05, 0.3}));
    {
        auto c = base;  // 1-p = 0.3: remove cum <= 0.3 → ids 2 (0.05) and 0 (0.15 → cum 0.2)
        sampling::apply_top_p(c, 0.7f);
        EXPECT_EQ(ids_of(c), (std::vector<int32_t>{1, 3}));
        c.normalize();
        EXPECT_NEAR(c.items[0].prob, 0.5 / 0.8, 1e-6);
        EXPECT_NEAR(c.items[1].prob, 0.3 / 0.8, 1e-6);
    }
    {
        auto c = base;  // 1-p = 0.1: only the 0.05 token goes
        sampling::apply_top_p(c, 0.9f);
        EXPECT_EQ(ids_of(c), (std::vector<int32_t>{1, 3, 0}));
        c.normalize();
        EXPECT_NEAR(c.items[2].prob, 0.15 / 0.95, 1e-6);
    }
    {
        auto c = base;  // p = 0.4: the 0.5 token alone already covers it
        sampling::apply_top_p(c, 0.4f);
        EXPECT_EQ(ids_of(c), (std::vector<int32_t>{1}));
    }
    {
        auto c = base;  // p = 1 disables (order untouched)
        sampling::apply_top_p(c, 1.0f);
        EXPECT_EQ(ids_of(c), (std::vector<int32_t>{0, 1, 2, 3}));
    }
}

TEST(SamplerTopP, ExactBoundaryIsRemovedAndAtLeastOneKept) {
    // Four equal logits: probabilities exactly 0.25, cumulative exactly 0.25/0.5/0.75/1.
    std::vector<float> eq(4, 0.0f);
    {
        auto c = Candidates::from_logits(eq);  // 1-p = 0.25: the token at cum == 0.25 is removed
        sampling::apply_top_p(c, 0.75f);
        // ties: lower id is "larger", so the highest id is the one removed
        EXPECT_EQ(ids_of(c), (std::vector<int32_t>{0, 1, 2}));
    }
    {
        auto c = Candidates::from_logits(eq);  // 1-p = 0.5: two removed
        sampling::apply_top_p(c, 0.5f);
        EXPECT_EQ(ids_of(c), (std::vector<int32_t>{0, 1}));
    }
    {
        auto c = Candidates::from_logits(eq);  // 1-p = 0.24: nothing at or below it
        sampling::apply_top_p(c, 0.76f);
        EXPECT_EQ(c.size(), 4u);
    }
    {
        auto c = Candidates::from_logits(eq);  // p = 0: everything would go; keep one
        sampling::apply_top_p(c, 0.0f);
        EXPECT_EQ(ids_of(c), (std::vector<int32_t>{0}));
    }
    {
        auto c = Candidates::from_logits(std::vector<float>{0.0f, 9.0f, 1.0f});
        sampling::apply_top_p(c, 1e-6f);
        EXPECT_EQ(ids_of(c), (std::vector<int32_t>{1}));
    }
}

TEST(SamplerTopP, LargeVocabMatchesFullSortReference) {
    // Exercises the growing partial sort: peaked, flat and mixed distributions on 55296 tokens.
    std::mt19937_64 rng(7);
    for (int trial = 0; trial < 6; ++trial) {
        const size_t n = 55296;
        std::vector<float> l(n);
        std::normal_distribution<float> nd(0.0f, trial < 2 ? 0.05f : (trial < 4 ? 1.0f : 4.0f));
        for (auto& x : l) x = nd(rng);
        float p = trial % 2 ? 0.9f : 0.5f;

        auto c = Candidates::from_logits(l);
        sampling::apply_top_p(c, p);

        // Reference: HF, ascending sort, cumulative softmax (double), remove cum <= 1-p.
        std::vector<int32_t> order(n);
        std::iota(order.begin(), order.end(), 0);
        std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
            return l[a] != l[b] ? l[a] < l[b] : a > b;
        });
        double mx = *std::max_element(l.begin(), l.end()), z = 0;
        for (float x : l) z += std::exp(x - mx);
        std::set<int32_t> want;
        double cum = 0;
        for (size_t i = 0; i < n; ++i) {
            cum += std::exp(l[order[i]] - mx) / z;
            if (cum > 1.0 - p || i + 1 == n) want.insert(order[i]);
        }
        std::set<int32_t> got;
        for (const auto& x : c.items) got.insert(x.id);
        EXPECT_EQ(got, want) << "trial " << trial;
        EXPECT_TRUE(std::is_sorted(c.items.begin(), c.items.end(), [](const Candidate& a, const Candidate& b) {
            return a.logit != b.logit ? a.logit > b.logit : a.id < b.id;
        }));
    }
}

TEST(SamplerMinP, DropsBelowFractionOfMax) {
    // probs 0.5, 0.25, 0.15, 0.1 → relative to max: 1, 0.5, 0.3, 0.2
    auto c = Candidates::from_logits(logs({0.5, 0.25, 0.15, 0.1}));
    sampling::apply_min_p(c, 0.25f);
    EXPECT_EQ(ids_of(c), (std::vector<int32_t>{0, 1, 2}));  // order preserved
    c.normalize();
    EXPECT_NEAR(c.items[0].prob, 0.5 / 0.9, 1e-6);
    EXPECT_NEAR(c.items[1].prob, 0.25 / 0.9, 1e-6);
    EXPECT_NEAR(c.items[2].prob, 0.15 / 0.9, 1e-6);

    auto d = Candidates::from_logits(logs({0.5, 0.25, 0.15, 0.1}));
    sampling::apply_min_p(d, 1.0f);  // only the max survives
    EXPECT_EQ(ids_of(d), (std::vector<int32_t>{0}));
    auto e = Candidates::from_logits(logs({0.5, 0.25, 0.15, 0.1}));
    sampling::apply_min_p(e, 0.0f);  // disabled
    EXPECT_EQ(e.size(), 4u);
}

TEST(SamplerPipeline, TopKThenTopPThenMinP) {
    // probs 0.4 0.3 0.2 0.1; top_k 3 → 4/9 3/9 2/9; top_p 0.75 on THAT → keeps 2 → 4/7 3/7.
    // (top-p on the full distribution would keep 3.)
    auto p = neutral();
    p.top_k = 3;
    p.top_p = 0.75f;
    Sampler s(p, 4);
    auto d = probs_of(s.distribution(logs({0.1, 0.4, 0.2, 0.3}), {}, 0));
    ASSERT_EQ(d.size(), 2u);
    EXPECT_NEAR(d[1], 4.0 / 7, 1e-6);
    EXPECT_NEAR(d[3], 3.0 / 7, 1e-6);

    p.top_p = 1.0f;
    p.min_p = 0.6f;  // after top-k: relative 1, .75, .5 → drops the .2 token
    Sampler m(p, 4);
    d = probs_of(m.distribution(logs({0.1, 0.4, 0.2, 0.3}), {}, 0));
    ASSERT_EQ(d.size(), 2u);
    EXPECT_NEAR(d[1], 4.0 / 7, 1e-6);
}

TEST(SamplerGreedy, ArgmaxLowestIdOnTiesAfterProcessors) {
    auto p = neutral();
    p.temperature = 0.0f;
    p.top_k = 1;  // ignored in greedy mode
    Sampler s(p, 4);
    std::vector<float> logits = {1.0f, 3.0f, 3.0f, 2.0f};
    EXPECT_EQ(s.sample(logits, {}, 0), 1);

    p.repetition_penalty = 2.0f;  // processors still apply: 3 → 1.5 for token 1
    Sampler r(p, 4);
    std::vector<int32_t> hist = {1};
    EXPECT_EQ(r.sample(logits, hist, 1), 2);
    auto d = r.distribution(logits, hist, 1);
    ASSERT_EQ(d.size(), 1u);
    EXPECT_EQ(d.items[0].id, 2);
    EXPECT_EQ(d.items[0].prob, 1.0);

    EXPECT_EQ(sampling::argmax(std::vector<float>{kNegInf, -5.0f, kNegInf}), 1);
    EXPECT_THROW(sampling::argmax(std::vector<float>{kNegInf, kNegInf}), Error);
}

// ---------------------------------------------------------------------------------------------
// drawing

TEST(SamplerDraw, WalksCumulativeInListOrder) {
    Candidates c;
    c.items = {{7, 0, 0.5}, {3, 0, 0.3}, {9, 0, 0.2}};
    EXPECT_EQ(sampling::draw(c, 0.0), 7);
    EXPECT_EQ(sampling::draw(c, 0.4999), 7);
    EXPECT_EQ(sampling::draw(c, 0.5), 3);
    EXPECT_EQ(sampling::draw(c, 0.7999), 3);
    EXPECT_EQ(sampling::draw(c, 0.8), 9);
    EXPECT_EQ(sampling::draw(c, 0.9999999999), 9);
    EXPECT_EQ(sampling::draw(c, 1.5), 9);  // beyond the total (rounding) → last nonzero
}

TEST(SamplerDraw, Uniform01IsTop53Bits) {
    std::mt19937_64 a(42), b(42);
    for (int i = 0; i < 100; ++i) {
        double u = sampling::uniform01(a);
        EXPECT_EQ(u, static_cast<double>(b() >> 11) / 9007199254740992.0);
        EXPECT_GE(u, 0.0);
        EXPECT_LT(u, 1.0);
    }
}

TEST(SamplerSeed, SameSeedSameTokens) {
    auto p = SamplingParams{};  // the defaults: temp 0.2, top_k 40, top_p 0.9, rep 1.1
    p.temperature = 1.0f;
    p.has_seed = true;
    p.seed = 99;
    std::mt19937_64 gen(5);
    std::normal_distribution<float> nd(0.0f, 2.0f);
    std::vector<std::vector<float>> steps(50, std::vector<float>(1000));
    for (auto& s : steps)
        for (auto& x : s) x = nd(gen);

    auto run = [&](uint64_t seed) {
        auto q = p;
        q.seed = seed;
        Sampler s(q, 1000);
        std::vector<int32_t> hist = {1, 2, 3};
        for (const auto& l : steps) hist.push_back(s.sample(l, hist, 3));
        return hist;
    };
    EXPECT_EQ(run(99), run(99));
    EXPECT_NE(run(99), run(100));

    Sampler s(p, 10);
    EXPECT_EQ(s.seed(), 99u);
    SamplingParams unseeded;
    Sampler u(unseeded, 10);  // seeded from random_device; reseed makes it reproducible
    u.reseed(99);
    EXPECT_EQ(u.seed(), 99u);
}

TEST(SamplerEmpirical, FrequenciesMatchDistribution) {
    auto p = neutral();
    p.temperature = 0.8f;
    p.top_k = 5;
    p.top_p = 0.95f;
    p.repetition_penalty = 1.3f;
    Sampler s(p, 8);
    std::vector<float> logits = {1.0f, 0.5f, 2.0f, -1.0f, 1.5f, 0.2f, 0.9f, -3.0f};
    std::vector<int32_t> hist = {2, 4};
    auto dist = probs_of(s.distribution(logits, hist, 2));
    ASSERT_GE(dist.size(), 3u);
    const int n = 20000;
    std::map<int32_t, int> counts;
    for (int i = 0; i < n; ++i) counts[s.sample(logits, hist, 2)]++;
    for (const auto& [id, c] : counts) EXPECT_TRUE(dist.count(id)) << "sampled a removed token " << id;
    for (const auto& [id, pr] : dist) {
        double f = static_cast<double>(counts[id]) / n;
        double sigma = std::sqrt(pr * (1 - pr) / n);
        EXPECT_NEAR(f, pr, 5 * sigma + 1e-3) << "token " << id;
    }
}

// ---------------------------------------------------------------------------------------------
// the whole pipeline against a naive HF-style reference

namespace {

std::map<int32_t, double> reference_distribution(std::vector<float> l, const SamplingParams& p,
                                                 const std::vector<int32_t>& hist, size_t n_prompt) {
    const size_t n = l.size();
    for (auto [id, b] : p.logit_bias) l[id] += b;
    std::set<int32_t> seen;
    size_t start = p.repetition_window > 0 && hist.size() > static_cast<size_t>(p.repetition_window)
                       ? hist.size() - p.repetition_window
                       : 0;
    for (size_t i = start; i < hist.size(); ++i) seen.insert(hist[i]);
    for (int32_t id : seen) l[id] = l[id] < 0 ? l[id] * p.repetition_penalty : l[id] / p.repetition_penalty;
    std::map<int32_t, int> cnt;
    for (size_t i = n_prompt; i < hist.size(); ++i) cnt[hist[i]]++;
    for (auto [id, c] : cnt) {
        l[id] -= p.frequency_penalty * c;
        l[id] -= p.presence_penalty;
    }
    std::vector<double> s(n);
    for (size_t i = 0; i < n; ++i) s[i] = static_cast<double>(l[i] / p.temperature);  // float, as the sampler
    const double ninf = -std::numeric_limits<double>::infinity();
    if (p.top_k > 0 && static_cast<size_t>(p.top_k) < n) {
        std::vector<double> sorted = s;
        std::sort(sorted.rbegin(), sorted.rend());
        double kth = sorted[p.top_k - 1];
        for (auto& x : s)
            if (x < kth) x = ninf;
    }
    auto softmax = [&](const std::vector<double>& v) {
        double mx = *std::max_element(v.begin(), v.end()), z = 0;
        std::vector<double> r(v.size());
        for (size_t i = 0; i < v.size(); ++i) z += (r[i] = std::exp(v[i] - mx));
        for (auto& x : r) x /= z;
        return r;
    };
    if (p.top_p < 1.0f) {
        std::vector<int32_t> order(n);
        std::iota(order.begin(), order.end(), 0);
        std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return s[a] != s[b] ? s[a] < s[b] : a > b; });
        auto pr = softmax(s);
        double cum = 0;
        std::vector<bool> remove(n, false);
        for (size_t i = 0; i < n; ++i) {
            cum += pr[order[i]];
            if (cum <= 1.0 - p.top_p && i + 1 < n) remove[order[i]] = true;
        }
        for (size_t i = 0; i < n; ++i)
            if (remove[i]) s[i] = ninf;
    }
    if (p.min_p > 0) {
        auto pr = softmax(s);
        double mx = *std::max_element(pr.begin(), pr.end());
        for (size_t i = 0; i < n; ++i)
            if (pr[i] < p.min_p * mx) s[i] = ninf;
    }
    auto pr = softmax(s);
    std::map<int32_t, double> m;
    for (size_t i = 0; i < n; ++i)
        if (pr[i] > 0) m[static_cast<int32_t>(i)] = pr[i];
    return m;
}

}  // namespace

TEST(SamplerPipeline, MatchesNaiveReference) {
    std::mt19937_64 gen(11);
    std::normal_distribution<float> nd(0.0f, 3.0f);
    std::uniform_int_distribution<int32_t> tok(0, 299);
    struct Case { float t; int k; float top_p; float min_p; float rep; int win; float pres, freq; };
    std::vector<Case> cases = {
        {0.2f, 40, 0.9f, 0.0f, 1.1f, 0, 0, 0},     // the reference defaults
        {1.0f, 0, 1.0f, 0.0f, 1.0f, 0, 0, 0},      // plain softmax
        {0.7f, 0, 0.8f, 0.0f, 1.3f, 16, 0, 0},     // top-p only, windowed penalty
        {1.5f, 100, 1.0f, 0.05f, 1.0f, 0, 1.0f, 0.5f},
        {0.5f, 7, 0.5f, 0.1f, 0.9f, 0, -0.5f, 0.2f},
    };
    for (size_t ci = 0; ci < cases.size(); ++ci) {
        const auto& cs = cases[ci];
        SamplingParams p;
        p.temperature = cs.t;
        p.top_k = cs.k;
        p.top_p = cs.top_p;
        p.min_p = cs.min_p;
        p.repetition_penalty = cs.rep;
        p.repetition_window = cs.win;
        p.presence_penalty = cs.pres;
        p.frequency_penalty = cs.freq;
        p.logit_bias = {{5, 2.0f}, {6, kNegInf}};
        p.has_seed = true;
        Sampler s(p, 300);
        std::vector<float> l(300);
        for (auto& x : l) x = nd(gen);
        std::vector<int32_t> hist;
        for (int i = 0; i < 60; ++i) hist.push_back(tok(gen));
        auto got = probs_of(s.distribution(l, hist, 20));
        auto want = reference_distribution(l, p, hist, 20);
        ASSERT_EQ(got.size(), want.size()) << "case " << ci;
        for (const auto& [id, pr] : want) {
            ASSERT_TRUE(got.count(id)) << "case " << ci << " token " << id;
            EXPECT_NEAR(got[id], pr, 1e-9) << "case " << ci << " token " << id;
        }
    }
}

TEST(SamplerPipeline, DefaultsOnFullVocabulary) {
    SamplingParams p;  // temp 0.2, top_k 40, top_p 0.9, rep 1.1
    p.has_seed = true;
    p.seed = 3;
    Sampler s(p, 55296);
    std::mt19937_64 gen(1);
    std::normal_distribution<float> nd(0.0f, 2.0f);
    std::vector<float> l(55296);
    for (auto& x : l) x = nd(gen);
    std::vector<int32_t> hist = {1, 100, 200};
    for (int i = 0; i < 50; ++i) {
        int32_t t = s.sample(l, hist, 3);
        ASSERT_GE(t, 0);
        ASSERT_LT(t, 55296);
        hist.push_back(t);
    }
    auto d = s.distribution(l, hist, 3);
    EXPECT_LE(d.size(), 40u);
    double total = 0;
    for (const auto& c : d.items) total += c.prob;
    EXPECT_NEAR(total, 1.0, 1e-12);
}

// ---------------------------------------------------------------------------------------------
// errors

TEST(SamplerValidate, NamesTheBadParameter) {
    auto bad = [](auto mutate, const std::string& msg) {
        SamplingParams p;
        mutate(p);
        expect_error_contains([&] { p.validate(); }, msg);
    };
    bad([](SamplingParams& p) { p.temperature = -1.0f; }, "temperature must be >= 0, got -1");
    bad([](SamplingParams& p) { p.temperature = std::nanf(""); }, "temperature must be >= 0");
    bad([](SamplingParams& p) { p.top_k = -1; }, "top_k must be >= 0");
    bad([](SamplingParams& p) { p.top_p = 1.5f; }, "top_p must be in [0, 1], got 1.5");
    bad([](SamplingParams& p) { p.min_p = -0.1f; }, "min_p must be in [0, 1]");
    bad([](SamplingParams& p) { p.repetition_penalty = 0.0f; }, "repetition_penalty must be > 0");
    bad([](SamplingParams& p) { p.repetition_window = -2; }, "repetition_window must be >= 0");
    bad([](SamplingParams& p) { p.presence_penalty = 3.0f; }, "presence_penalty must be in [-2, 2], got 3");
    bad([](SamplingParams& p) { p.frequency_penalty = -2.5f; }, "frequency_penalty must be in [-2, 2]");
    bad([](SamplingParams& p) { p.logit_bias = {{-1, 1.0f}}; }, "logit_bias: token id must be >= 0");
    bad([](SamplingParams& p) { p.logit_bias = {{3, std::nanf("")}}; }, "logit_bias for token 3");
    SamplingParams ok;
    EXPECT_NO_THROW(ok.validate());
    ok.logit_bias = {{10, 1.0f}};
    expect_error_contains([&] { Sampler s(ok, 10); }, "token id 10 is out of range for a vocabulary of 10");
    EXPECT_NE(SamplingParams{}.describe().find("top_k=40"), std::string::npos);
}

TEST(SamplerValidate, BadInputs) {
    Sampler s(neutral(), 3);
    expect_error_contains([&] { s.sample(std::vector<float>{1, 2}, {}, 0); }, "got 2 logits for a vocabulary of 3");
    expect_error_contains([&] { s.sample(std::vector<float>{1, std::nanf(""), 2}, {}, 0); }, "logit for token 1");
    expect_error_contains([&] { s.sample(std::vector<float>{kNegInf, kNegInf, kNegInf}, {}, 0); },
                          "every logit is -inf");
    std::vector<int32_t> hist = {0, 1};
    expect_error_contains([&] { s.sample(std::vector<float>{1, 2, 3}, hist, 5); }, "n_prompt 5 exceeds");
    auto p = neutral();
    p.repetition_penalty = 1.2f;
    Sampler r(p, 3);
    std::vector<int32_t> bad_hist = {0, 7};
    expect_error_contains([&] { r.sample(std::vector<float>{1, 2, 3}, bad_hist, 0); }, "token id 7 is out of range");
}
