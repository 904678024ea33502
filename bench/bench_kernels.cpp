// Kernel micro-benchmarks (Google Benchmark): dense matmul (F32/F16/BF16 weights) reference vs
// fast at decode (1 token), batched-decode (8 tokens) and prompt-processing (64 tokens) shapes, and attention over one
// head of the KV cache. Counters: GFLOPS (2 x rows x cols x tokens per call) and weight GB/s
// (weight bytes streamed per call; the decode figure to set against the memory bandwidth).
//
//   build-NAME/bench/calpaca_bench --benchmark_filter=Matmul --benchmark_repetitions=5
//       --benchmark_report_aggregates_only=true      (one command line)
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "calpaca/base/threadpool.h"
#include "calpaca/model/attention.h"
#include "calpaca/tensor/dtype.h"
#include "calpaca/tensor/kernels.h"
#include "calpaca/tensor/packed.h"
#include "bench_packed.h"

using namespace calpaca;

namespace {

std::vector<uint8_t> random_weights(DType t, int64_t rows, int64_t cols) {
    std::mt19937 rng(42);
    std::normal_distribution<float> nd(0.0f, 0.02f);
    std::vector<uint8_t> buf(row_bytes(t, static_cast<uint64_t>(cols)) * static_cast<size_t>(rows));
    for (int64_t i = 0; i < rows * cols; ++i) {
        const float v = nd(rng);
        if (t == DType::F32) {
            std::memcpy(&buf[4 * i], &v, 4);
        } else {
            const uint16_t h = t == DType::F16 ? fp32_to_fp16(v) : fp32_to_bf16(v);
            std::memcpy(&buf[2 * i], &h, 2);
        }
    }
    return buf;
}

ThreadPool& shared_pool() {
    static ThreadPool pool(default_thread_count());
    return pool;
}

enum Mode { kRef = 0, kFast1 = 1, kFastAll = 2, kPacked1 = 3, kPackedAll = 4 };  // packed: F16 only (tensor/packed.h)

// args: dtype, mode, rows, cols, tokens
void BM_Matmul(benchmark::State& st) {
    const DType t = static_cast<DType>(st.range(0));
    const Mode mode = static_cast<Mode>(st.range(1));
    const int64_t rows = st.range(2), cols = st.range(3), ntok = st.range(4);
    const auto w = random_weights(t, rows, cols);
    MatrixView m{w.data(), t, rows, cols};
    std::vector<uint8_t> packed;
    if (mode >= kPacked1 && !attach_packed(st, m, packed)) return;
    std::vector<float> x(static_cast<size_t>(ntok * cols)), y(static_cast<size_t>(ntok * rows));
    std::mt19937 rng(1);
    std::normal_distribution<float> nd;
    for (auto& v : x) v = nd(rng);
    ThreadPool* pool = mode == kFastAll || mode == kPackedAll ? &shared_pool() : nullptr;
    for (auto _ : st) {
        if (mode == kRef)
            matmul_ref(m, x.data(), ntok, y.data());
        else
            matmul(m, x.data(), ntok, y.data(), pool);
        benchmark::DoNotOptimize(y.data());
        benchmark::ClobberMemory();
    }
    const double calls = static_cast<double>(st.iterations());
    st.counters["GFLOPS"] = benchmark::Counter(calls * 2.0 * rows * cols * ntok / 1e9, benchmark::Counter::kIsRate);
    st.counters["weightGB/s"] = benchmark::Counter(calls * static_cast<double>(w.size()) / 1e9, benchmark::Counter::kIsRate);
    st.counters["threads"] = pool ? shared_pool().size() : 1;
    const char* label[] = {" ref", " fast 1 thread", " fast all threads", " packed 1 thread", " packed all threads"};
    st.SetLabel(std::string(dtype_name(t)) + label[mode]);
}

void matmul_args(benchmark::internal::Benchmark* b) {
    for (DType t : {DType::F32, DType::F16, DType::BF16}) {
        const int64_t ti = static_cast<int64_t>(t);
        // decode: the 7B / 1.3B FFN shape (11008 x 4096, 90 MB of F16: streamed from memory)
        for (int mode : {kRef, kFast1, kFastAll}) b->Args({ti, mode, 11008, 4096, 1});
        // prompt processing: 64 tokens through a 4096 x 4096 matrix
        for (int mode : {kRef, kFast1, kFastAll}) b->Args({ti, mode, 4096, 4096, 64});
        // batched decode (8 server streams) through the 3-row × 4-token tiles
        for (int mode : {kFast1, kFastAll}) b->Args({ti, mode, 4096, 4096, 8});
    }
    const int64_t f16 = static_cast<int64_t>(DType::F16);
    for (int mode : {kPacked1, kPackedAll}) {
        b->Args({f16, mode, 11008, 4096, 1});
        b->Args({f16, mode, 4096, 4096, 64});
        b->Args({f16, mode, 4096, 4096, 128});
        b->Args({f16, mode, 4096, 4096, 8});
    }
}
BENCHMARK(BM_Matmul)->Apply(matmul_args)->ArgNames({"type", "mode", "rows", "cols", "tok"})->Unit(benchmark::kMillisecond)->UseRealTime();

// args: kv dtype, fast?, n_keys; one head of 128 dims
void BM_Attention(benchmark::State& st) {
    const DType t = static_cast<DType>(st.range(0));
    const bool fast = st.range(1) != 0;
    const int64_t n_keys = st.range(2), hd = 128, row = 32 * hd;  // a 4096-wide cache row, head 5
    const size_t esz = t == DType::F16 ? 2 : 4;
    const auto k = random_weights(t, n_keys, row), v = random_weights(t, n_keys, row);
    const KVHead kv{k.data() + 5 * hd * esz, v.data() + 5 * hd * esz, t, static_cast<size_t>(row) * esz};
    std::vector<float> q(hd, 0.1f), out(hd), scratch(static_cast<size_t>(n_keys));
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    for (auto _ : st) {
        if (fast)
            attend(kv, q.data(), hd, n_keys, scale, out.data(), scratch.data());
        else
            attend_ref(kv, q.data(), hd, n_keys, scale, out.data(), scratch.data());
        benchmark::DoNotOptimize(out.data());
    }
    st.counters["keys/s"] = benchmark::Counter(static_cast<double>(st.iterations()) * n_keys, benchmark::Counter::kIsRate);
    st.SetLabel(std::string(dtype_name(t)) + (fast ? " fast" : " ref"));
}
BENCHMARK(BM_Attention)
    ->ArgsProduct({{static_cast<int64_t>(DType::F16), static_cast<int64_t>(DType::F32)}, {0, 1}, {512, 2048}})
    ->ArgNames({"type", "fast", "keys"})
    ->Unit(benchmark::kMicrosecond);

}  // namespace
