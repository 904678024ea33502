// `calpaca bench`: prompt-processing and generation speed of a model on this machine, set
// against the machine's measured memory read bandwidth.
//
// Method (as llama.cpp's llama-bench): a warm-up pass (16 prompt tokens + 1 generated token,
// which also faults the mmap'd weights in), then `reps` repetitions of each test from an
// empty KV cache with random token ids (BOS first in the prompt):
//   pp N: one eval() of N tokens (logits of the last one only);
//   tg N: N evals of one token each;
//   tg N x B (--batch): B sequences of a MultiSession decoding together, N steps of one forward
//     over all B (each sequence's next token and its logits), as `serve --parallel` batches its
//     streams: aggregate tokens/s = B·N / time, and its ratio to tg N (one sequence). No
//     sampling, HTTP or client: the engine's share of serve's throughput.
// Decode bandwidth efficiency = weight bytes read per generated token x tg tokens/s
// / measured read bandwidth: the share of the machine's memory bandwidth that decode turns
// into useful weight reads (decode of one sequence must stream every weight once per token).
// With a tg test the bandwidth is measured right after each tg repetition (3 passes) and the
// efficiency is the median over repetitions of each run's speed against the bandwidth measured
// next to it: on a shared host the bandwidth drifts by tens of percent within a minute, so a
// single measurement at the end compared decode and bandwidth from different moments. Without
// tg, one measurement of 9 passes at the end.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "calpaca/base/cpuinfo.h"
#include "calpaca/base/membw.h"
#include "calpaca/tensor/dtype.h"

namespace calpaca {

class Model;
class ThreadPool;

struct SampleStats {
    std::vector<double> samples;  // in measurement order
    double median = 0, min = 0, max = 0, mean = 0, stddev = 0;  // stddev: sample (n-1), 0 for n = 1
};
// Summary of samples (empty input gives all zeros).
SampleStats summarize(std::vector<double> samples);

struct BenchOptions {
    int64_t n_prompt = 512;   // 0 = skip the pp test
    int64_t n_gen = 128;      // 0 = skip the tg test
    int reps = 5;
    int64_t ubatch = 128;     // prompt tokens per forward (SessionOptions::ubatch); 0 = the whole prompt
    DType kv_type = DType::F16;
    bool measure_bandwidth = true;
    uint64_t bandwidth_buffer_bytes = 0;  // 0 = default_bandwidth_buffer_bytes()
    uint64_t seed = 1234;     // token ids
    bool progress = true;     // a Progress bar on stderr when it is a terminal
    std::vector<int> batch;   // tg N x B tests, one per entry (1..256 sequences); needs n_gen > 0
};

// What one decode step must read: every weight matrix once, one embedding row, the norms.
struct WeightTraffic {
    uint64_t bytes_per_token = 0;
    uint64_t n_params = 0;    // all tensors of the file
    std::string types;        // matrix types with counts, e.g. "F16" or "Q4_K x193, Q6_K x33"
};
WeightTraffic weight_traffic(const Model& m);

struct BenchResult {
    std::string model_path, model_name;
    uint64_t file_bytes = 0;
    WeightTraffic weights;
    CpuInfo cpu;
    int threads = 0;
    int reps = 0;
    int64_t n_prompt = 0, n_gen = 0;
    std::string kv_type;
    uint64_t kv_cache_bytes = 0;
    SampleStats pp_tps, tg_tps;   // tokens per second; empty when the test was skipped
    struct Batched {
        int streams = 0;
        SampleStats tps;          // aggregate tokens per second over the streams
        double vs_tg = 0;         // tps.median / tg_tps.median
    };
    std::vector<Batched> batched; // one per BenchOptions::batch entry
    uint64_t batched_kv_bytes = 0;  // the batched tests' KV caches (in the peak RSS too)
    bool bandwidth_measured = false;
    BandwidthResult bandwidth;
    double efficiency = 0;        // median of efficiency_reps; 0 when tg or bandwidth is missing
    std::vector<double> efficiency_reps;  // per tg repetition, against the bandwidth measured after it
    uint64_t peak_rss_bytes = 0;  // peak over the tests, not counting the bandwidth probe's buffer
};

// Throws Error for bad options (negative sizes, reps < 1, nothing to run).
BenchResult run_bench(const Model& m, ThreadPool& pool, const BenchOptions& o);

std::string bench_table(const BenchResult& r);  // human-readable, ends in '\n'
nlohmann::json bench_json(const BenchResult& r);

}  // namespace calpaca
