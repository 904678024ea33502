// calpaca bench's pieces: the memory bandwidth measurement (sane numbers, bad arguments),
// sample statistics, the weight traffic per token, and a tiny end-to-end run.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <nlohmann/json.hpp>

#include "calpaca/base/error.h"
#include "calpaca/base/membw.h"
#include "calpaca/base/threadpool.h"
#include "calpaca/convert/random_model.h"
#include "calpaca/eval/bench.h"
#include "calpaca/model/model.h"

using namespace calpaca;

TEST(MemBandwidth, MeasuresPositiveFiniteRates) {
    ThreadPool pool(2);
    const BandwidthResult r = measure_read_bandwidth(&pool, uint64_t(8) << 20, 3);
    EXPECT_EQ(r.threads, 2);
    EXPECT_GT(r.buffer_bytes, uint64_t(7) << 20);
    EXPECT_LE(r.buffer_bytes, uint64_t(8) << 20);
    EXPECT_EQ(r.buffer_bytes % (2 * 4096), 0u);
    ASSERT_EQ(r.passes_gbps.size(), 3u);
    for (double g : r.passes_gbps) {
        EXPECT_TRUE(std::isfinite(g));
        EXPECT_GT(g, 0.0);
    }
    EXPECT_LE(r.min_gbps, r.median_gbps);
    EXPECT_LE(r.median_gbps, r.max_gbps);
    // single-threaded form
    const BandwidthResult one = measure_read_bandwidth(nullptr, uint64_t(2) << 20, 1);
    EXPECT_EQ(one.threads, 1);
    EXPECT_GT(one.median_gbps, 0.0);
    EXPECT_EQ(one.median_gbps, one.min_gbps);
}

TEST(MemBandwidth, RejectsBadArgumentsAndSizesTheDefaultBuffer) {
    EXPECT_THROW(measure_read_bandwidth(nullptr, uint64_t(8) << 20, 0), Error);
    EXPECT_THROW(measure_read_bandwidth(nullptr, 4096, 1), Error);
    const uint64_t d = default_bandwidth_buffer_bytes();
    EXPECT_GE(d, uint64_t(256) << 20);
    EXPECT_LE(d, uint64_t(1) << 30);
    EXPECT_GE(d, std::min<uint64_t>(16 * largest_cache_bytes(), uint64_t(1) << 30));
}

TEST(BenchStats, SummarizeByHand) {
    const SampleStats s = summarize({4, 1, 3, 2});
    EXPECT_DOUBLE_EQ(s.median, 2.5);
    EXPECT_DOUBLE_EQ(s.min, 1);
    EXPECT_DOUBLE_EQ(s.max, 4);
    EXPECT_DOUBLE_EQ(s.mean, 2.5);
    EXPECT_NEAR(s.stddev, std::sqrt(5.0 / 3.0), 1e-12);  // sample variance: (2.25+.25+.25+2.25)/3
    EXPECT_EQ(s.samples, (std::vector<double>{4, 1, 3, 2}));
    const SampleStats one = summarize({7});
    EXPECT_DOUBLE_EQ(one.median, 7);
    EXPECT_DOUBLE_EQ(one.stddev, 0);
    EXPECT_DOUBLE_EQ(summarize({}).median, 0);
}

namespace {
std::string bench_model(bool tie) {
    auto dir = std::filesystem::temp_directory_path() / "calpaca-test-bench";
    std::filesystem::create_directories(dir);
    std::string path = (dir / (tie ? "tied.gguf" : "untied.gguf")).string();
    RandomModelSpec s;
    s.vocab_path = std::string(CALPACA_TEST_DATA) + "/tokenizers/llama/tokenizer.model";
    s.n_embd = 32, s.n_layer = 2, s.n_head = 4, s.n_head_kv = 2, s.n_ff = 48, s.n_ctx = 128;
    s.type = DType::F16, s.seed = 3, s.tie_embeddings = tie, s.progress = false;
    write_random_model(s, path);
    return path;
}
}  // namespace

TEST(BenchWeights, TrafficCountsEveryMatrixOnce) {
    for (bool tie : {false, true}) {
        auto m = Model::load(bench_model(tie));
        const WeightTraffic w = weight_traffic(*m);
        // per layer: q, o 32x32; k, v 16x32; gate, up 48x32; down 32x48 (F16) + two f32 norms
        const uint64_t layer = 2 * 32 * 32 * 2 + 2 * 16 * 32 * 2 + 3 * 48 * 32 * 2 + 2 * 32 * 4;
        const uint64_t head = 32000ull * 32 * 2, embd_row = 32 * 2, out_norm = 32 * 4;
        EXPECT_EQ(w.bytes_per_token, 2 * layer + head + embd_row + out_norm) << "tie " << tie;
        const uint64_t params = 2 * (32 * 32 * 2 + 16 * 32 * 2 + 3 * 48 * 32 + 2 * 32) + 32000ull * 32 * (tie ? 1 : 2) + 32;
        EXPECT_EQ(w.n_params, params);
        EXPECT_EQ(w.types, "F16");
    }
}

TEST(BenchRun, TinyModelGivesAllFields) {
    auto m = Model::load(bench_model(false));
    ThreadPool pool(2);
    BenchOptions o;
    o.n_prompt = 8, o.n_gen = 4, o.reps = 2, o.progress = false;
    o.bandwidth_buffer_bytes = uint64_t(4) << 20;
    const BenchResult r = run_bench(*m, pool, o);
    ASSERT_EQ(r.pp_tps.samples.size(), 2u);
    ASSERT_EQ(r.tg_tps.samples.size(), 2u);
    EXPECT_GT(r.pp_tps.median, 0);
    EXPECT_GT(r.tg_tps.median, 0);
    EXPECT_TRUE(r.bandwidth_measured);
    EXPECT_GT(r.efficiency, 0);
    EXPECT_TRUE(std::isfinite(r.efficiency));
    ASSERT_EQ(r.efficiency_reps.size(), 2u);  // one per tg run, against the bandwidth measured after it
    EXPECT_EQ(r.bandwidth.passes_gbps.size(), 6u);
    EXPECT_DOUBLE_EQ(r.efficiency, summarize(r.efficiency_reps).median);
    EXPECT_GT(r.peak_rss_bytes, 0u);
    EXPECT_EQ(r.kv_cache_bytes, 2ull * 2 * 17 * 16 * 2);  // layers x ctx (max(8, 4, 17)) x kv dim x f16, K and V
    const auto j = bench_json(r);
    for (const char* k : {"model", "model_size_bytes", "pp_tokens_per_s", "tg_tokens_per_s", "mem_read_bandwidth_gbps",
                          "decode_bandwidth_efficiency", "weight_bytes_per_token", "threads", "cpu"})
        EXPECT_TRUE(j.contains(k)) << k;
    EXPECT_NE(bench_table(r).find("tg4"), std::string::npos);

    // A 256 MiB bandwidth buffer is not the model's memory: the reported peak leaves it out
    // (where the kernel lets the process reset its peak RSS: proc(5) clear_refs).
    if (std::ofstream("/proc/self/clear_refs") << "5") {
        auto rss_kib = [](const char* key) {
            std::ifstream f("/proc/self/status");
            std::string line;
            while (std::getline(f, line))
                if (line.rfind(key, 0) == 0) return std::stoull(line.substr(std::string(key).size()));
            return 0ull;
        };
        o.bandwidth_buffer_bytes = uint64_t(256) << 20;
        const BenchResult big = run_bench(*m, pool, o);
        EXPECT_LT(big.peak_rss_bytes, rss_kib("VmRSS:") * 1024 + (uint64_t(128) << 20));
        EXPECT_EQ(big.bandwidth.buffer_bytes, uint64_t(256) << 20);
    }

    // tg N x B: B sequences decoding together through a MultiSession
    o.bandwidth_buffer_bytes = uint64_t(4) << 20;
    o.batch = {1, 3};
    const BenchResult multi = run_bench(*m, pool, o);
    ASSERT_EQ(multi.batched.size(), 2u);
    EXPECT_EQ(multi.batched[0].streams, 1);
    EXPECT_EQ(multi.batched[1].streams, 3);
    for (const auto& b : multi.batched) {
        ASSERT_EQ(b.tps.samples.size(), 2u);
        EXPECT_GT(b.tps.median, 0);
    }
    EXPECT_NE(bench_table(multi).find("tg4x3"), std::string::npos);
    EXPECT_NE(bench_table(multi).find("batched decode"), std::string::npos);
    // slots x (n_gen + 1) positions x layers x kv dim x f16, K and V: 1 + 3 slots
    EXPECT_EQ(multi.batched_kv_bytes, 2ull * (1 + 3) * 5 * 2 * 16 * 2);
    EXPECT_EQ(r.batched_kv_bytes, 0u);
    const auto mj = bench_json(multi);
    ASSERT_EQ(mj["batched_decode"].size(), 2u);
    EXPECT_EQ(mj["batched_decode"][1]["streams"], 3);
    EXPECT_DOUBLE_EQ(mj["batched_decode"][1]["vs_tg"].get<double>(), multi.batched[1].tps.median / multi.tg_tps.median);
    EXPECT_TRUE(bench_json(r)["batched_decode"].empty());
    o.batch = {0};
    EXPECT_THROW(run_bench(*m, pool, o), Error);
    o.batch = {257};
    EXPECT_THROW(run_bench(*m, pool, o), Error);
    o.batch = {2};
    o.n_gen = 0;
    EXPECT_THROW(run_bench(*m, pool, o), Error);  // a batched test needs tg steps
    o.batch.clear();

    o.n_gen = 0;
    o.measure_bandwidth = false;
    const BenchResult pp_only = run_bench(*m, pool, o);
    EXPECT_TRUE(pp_only.tg_tps.samples.empty());
    EXPECT_EQ(pp_only.efficiency, 0);
    EXPECT_TRUE(bench_json(pp_only)["tg_tokens_per_s"].is_null());

    o.n_prompt = 0;
    EXPECT_THROW(run_bench(*m, pool, o), Error);
    o.n_prompt = 8, o.reps = 0;
    EXPECT_THROW(run_bench(*m, pool, o), Error);
    o.reps = 1, o.n_gen = -1;
    EXPECT_THROW(run_bench(*m, pool, o), Error);
}
