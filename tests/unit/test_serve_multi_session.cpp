// MultiSession (batched multi-sequence forward) against the single-sequence Session.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include "calpaca/base/error.h"
#include "calpaca/base/threadpool.h"
#include "calpaca/convert/random_model.h"
#include "calpaca/model/multi_session.h"
#include "calpaca/model/session.h"

using namespace calpaca;

namespace {

std::string make_model(const std::string& name, DType type, int64_t heads_kv, bool tie) {
    auto dir = std::filesystem::temp_directory_path() / "calpaca-test-multisession";
    std::filesystem::create_directories(dir);
    std::string path = (dir / (name + ".gguf")).string();
    RandomModelSpec s;
    s.vocab_path = std::string(CALPACA_TEST_DATA) + "/tokenizers/llama/tokenizer.model";
    s.n_embd = 48, s.n_layer = 2, s.n_head = 4, s.n_head_kv = heads_kv, s.n_ff = 72, s.n_ctx = 256;
    s.std = 0.3f, s.type = type, s.seed = 7, s.tie_embeddings = tie, s.progress = false;
    write_random_model(s, path);
    return path;
}

void expect_close(const float* a, const float* b, int64_t n, const std::string& what) {
    double max_rel = 0;
    for (int64_t i = 0; i < n; ++i) {
        const double d = std::fabs(static_cast<double>(a[i]) - b[i]);
        const double scale = std::max(1.0, std::fabs(static_cast<double>(b[i])));
        max_rel = std::max(max_rel, d / scale);
    }
    EXPECT_LE(max_rel, 1e-5) << what;
}

std::vector<int32_t> random_tokens(std::mt19937& rng, size_t n, int32_t vocab) {
    std::uniform_int_distribution<int32_t> d(3, vocab - 1);
    std::vector<int32_t> v(n);
    for (auto& t : v) t = d(rng);
    return v;
}

// Four sequences of different lengths, driven the way the scheduler drives them: prompt chunks of
// uneven sizes interleaved with single-token decode steps of other slots, in one forward per step.
void check_model(const std::string& path, DType kv, ThreadPool* pool) {
    auto model = Model::load(path);
    const int32_t V = static_cast<int32_t>(model->config().n_vocab);
    const int64_t nv = model->config().n_vocab, E = model->config().n_embd;
    std::mt19937 rng(11);
    const int S = 4;
    std::vector<std::vector<int32_t>> seqs;
    for (size_t len : {23u, 5u, 40u, 1u}) seqs.push_back(random_tokens(rng, len, V));

    MultiSession ms(*model, {S, 128, kv}, pool);
    std::vector<std::unique_ptr<Session>> ref;
    for (int s = 0; s < S; ++s) ref.push_back(std::make_unique<Session>(*model, SessionOptions{128, kv, false}, pool));

    std::vector<size_t> done(S, 0);
    const size_t chunk[S] = {7, 2, 16, 1};
    for (int step = 0; step < 12; ++step) {
        std::vector<MultiSession::Item> items;
        std::vector<int> slot_of;
        std::vector<std::vector<int32_t>> toks(S);
        for (int s = 0; s < S; ++s) {
            // after its prompt, a slot decodes one new random token per step
            if (done[s] >= seqs[s].size()) seqs[s].push_back(random_tokens(rng, 1, V)[0]);
            size_t n = std::min(chunk[s], seqs[s].size() - done[s]);
            if ((step + s) % 3 == 2) continue;  // not every slot in every step
            toks[s].assign(seqs[s].begin() + done[s], seqs[s].begin() + done[s] + n);
            // slot 2 wants every row's logits; slot 1 on even steps none (a prompt chunk that is not
            // the last: its last layer stops after K and V, and later steps must still match);
            // slot 0 on odd steps every row's hidden state besides its last logits (embeddings)
            MultiSession::Output out = s == 2 ? MultiSession::Output::All : MultiSession::Output::Last;
            if (s == 1 && step % 2 == 0) out = MultiSession::Output::None;
            items.push_back({s, toks[s], out, s == 0 && step % 2 == 1});
            slot_of.push_back(s);
        }
        ms.forward(items);
        for (size_t i = 0; i < items.size(); ++i) {
            const int s = slot_of[i];
            const bool all = items[i].logits == MultiSession::Output::All;
            const bool none = items[i].logits == MultiSession::Output::None;
            const bool every_hidden = all || items[i].hidden;
            ref[s]->eval(toks[s], every_hidden);
            const int64_t n = static_cast<int64_t>(toks[s].size());
            const int64_t rows = all ? n : none ? 0 : 1;
            for (int64_t r = 0; r < rows; ++r)
                expect_close(ms.logits(i, r), ref[s]->logits().data() + (every_hidden && !all ? n - 1 : r) * nv, nv,
                             "step " + std::to_string(step) + " slot " + std::to_string(s) + " row " + std::to_string(r));
            // (Session keeps the hidden states of the rows that got logits: all, or the last)
            for (int64_t r = every_hidden ? 0 : none ? n : n - 1; r < n; ++r)
                expect_close(ms.hidden(i, r), ref[s]->hidden().data() + (every_hidden ? r : 0) * E, E,
                             "hidden slot " + std::to_string(s));
            if (none || (!every_hidden && n > 1)) {
                EXPECT_THROW(ms.hidden(i, 0), Error) << "a row the last layer skipped";
            }
            done[s] += toks[s].size();
            EXPECT_EQ(ms.n_past(s), ref[s]->n_past());
        }
    }
    // prefix reuse: roll slot 2 back and re-feed a different continuation
    ms.truncate(2, 10);
    ref[2]->truncate(10);
    auto cont = random_tokens(rng, 6, V);
    MultiSession::Item it{2, cont, MultiSession::Output::Last};
    ms.forward(std::span<const MultiSession::Item>(&it, 1));
    ref[2]->eval(cont);
    expect_close(ms.logits(0), ref[2]->last_logits(), nv, "after truncate");
}

}  // namespace

TEST(MultiSession, MatchesSessionF16WeightsGqa) {
    ThreadPool pool(2);
    check_model(make_model("f16-gqa", DType::F16, 2, false), DType::F16, &pool);
}

TEST(MultiSession, MatchesSessionF32WeightsTiedF32Cache) {
    check_model(make_model("f32-tied", DType::F32, 4, true), DType::F32, nullptr);
}

TEST(MultiSession, RejectsBadBatches) {
    auto model = Model::load(make_model("f16-gqa-2", DType::F16, 2, false));
    MultiSession ms(*model, {2, 8, DType::F16}, nullptr);
    std::vector<int32_t> a{1, 2, 3}, big(9, 5), bad{1, 1 << 30};
    std::vector<MultiSession::Item> twice{{0, a}, {0, a}};
    EXPECT_THROW(ms.forward(twice), Error);
    MultiSession::Item over{1, big};
    EXPECT_THROW(ms.forward(std::span(&over, 1)), Error);
    MultiSession::Item badid{1, bad};
    EXPECT_THROW(ms.forward(std::span(&badid, 1)), Error);
    MultiSession::Item noslot{2, a};
    EXPECT_THROW(ms.forward(std::span(&noslot, 1)), Error);
    EXPECT_EQ(ms.n_past(0), 0);  // nothing was written by the rejected batches
    EXPECT_EQ(ms.n_past(1), 0);
    EXPECT_THROW(ms.truncate(0, 1), Error);
    EXPECT_THROW(MultiSession(*model, {0, 8, DType::F16}, nullptr), Error);
}

// KV caches larger than the machine: a clear error naming the sizes, not std::bad_alloc's "out of
// memory". Where the kernel refuses an allocation beyond RAM + swap (vm.overcommit_memory 0 or 2);
// with 1 ("always") the zero-filled cache would be touched instead, so the test does not run there.
TEST(MultiSession, KvCacheTooLargeForMemoryIsAClearError) {
#if defined(__SANITIZE_ADDRESS__)
    GTEST_SKIP() << "AddressSanitizer's allocator would reserve the 768 GiB instead of failing";
#endif
    std::ifstream f("/proc/sys/vm/overcommit_memory");
    int mode = -1;
    if (!(f >> mode) || mode == 1) GTEST_SKIP() << "overcommit mode " << mode;
    auto model = Model::load(make_model("f16-gqa-2", DType::F16, 2, false));
    // 1024 slots x 4M positions x 2 layers x 24 (K) x 4 bytes: 768 GiB per cache
    try {
        MultiSession ms(*model, {1024, int64_t(1) << 22, DType::F32}, nullptr);
        FAIL() << "no error";
    } catch (const Error& e) {
        const std::string m = e.what();
        EXPECT_NE(m.find("KV caches of 1024 slots x 4194304 positions"), std::string::npos) << m;
        EXPECT_NE(m.find("--parallel"), std::string::npos) << m;
    }
}
