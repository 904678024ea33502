// Quantized kernel micro-benchmarks (Google Benchmark), reference vs fast:
//   BM_QDot        one weight row · one activation row (vec_dot_q vs vec_dot_q_ref), n = 4096
//   BM_QMatmul     matmul through kernels.h: decode (1 token) and prompt processing (64
//                  tokens), reference / fast on one thread / fast on the pool; counters:
//                  weight GB/s (bytes of weights streamed per call) and GOP/s (2·rows·cols·tokens);
//                  modes 3/4: the same on packed Q4_0 / Q8_0 / Q4_K / Q6_K weights (tensor/packed.h)
//   BM_QDecodeDram one token against a matrix larger than the L3 (huge pages), row layout or
//                  packed, 1 and 2 threads: the weight GB/s decode can stream
//   BM_QGemmTile  gemm_q_tile (register-blocked rows × tokens) vs gemm_q_tile_ref on 8 and 64
//                  tokens of prepared activations, one thread, 512 × 4096 weights; GOP/s
//   BM_QActQuant   activation quantization Q8_0 / Q8_1 / Q8_K (fast vs ref), elements/s
//   BM_QQuantize   the reference weight quantizers (the `calpaca quantize` inner loop), elements/s
//
//   build-NAME/bench/calpaca_bench --benchmark_filter='BM_Q' --benchmark_min_time=0.2
#include <benchmark/benchmark.h>

#include <cstring>
#include <random>
#include <vector>

#include "calpaca/base/mmap.h"
#include "calpaca/base/threadpool.h"
#include "calpaca/tensor/dtype.h"
#include "calpaca/tensor/gemm.h"
#include "calpaca/tensor/kernels.h"
#include "calpaca/tensor/packed.h"
#include "bench_packed.h"
#include "calpaca/tensor/quant.h"
#include "calpaca/tensor/quant_dot.h"

using namespace calpaca;

namespace {

const DType kQTypes[] = {DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q8_0,
                         DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K};

std::vector<float> qbench_floats(size_t n, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> v(n);
    for (auto& x : v) x = nd(rng);
    return v;
}

std::vector<uint8_t> qbench_weights(DType t, int64_t rows, int64_t cols) {
    const auto f = qbench_floats(static_cast<size_t>(rows * cols), 42);
    std::vector<uint8_t> q(row_bytes(t, static_cast<uint64_t>(cols)) * static_cast<size_t>(rows));
    quantize_row_ref(t, f.data(), q.data(), rows * cols);
    return q;
}

ThreadPool& qbench_pool() {
    static ThreadPool pool(default_thread_count());
    return pool;
}

void qtype_args(benchmark::internal::Benchmark* b, std::initializer_list<int64_t> modes) {
    for (DType t : kQTypes)
        for (int64_t m : modes) b->Args({static_cast<int64_t>(t), m});
}

// args: weight type, fast (1) / ref (0)
void BM_QDot(benchmark::State& st) {
    const DType t = static_cast<DType>(st.range(0));
    const bool fast = st.range(1) != 0;
    const int64_t n = 4096;
    const auto w = qbench_weights(t, 1, n);
    const DType at = vec_dot_type(t);
    const auto x = qbench_floats(n, 7);
    std::vector<uint8_t> a(row_bytes(at, n));
    quantize_act_ref(at, x.data(), a.data(), n);
    const void* rows[1] = {a.data()};
    for (auto _ : st) {
        float out;
        if (fast)
            vec_dot_q(t, w.data(), rows, 1, n, &out);
        else
            out = vec_dot_q_ref(t, w.data(), a.data(), n);
        benchmark::DoNotOptimize(out);
    }
    st.SetLabel(std::string(dtype_name(t)) + (fast ? " fast/" + std::string(quant_kernel_isa()) : " ref"));
    st.counters["weights/s"] = benchmark::Counter(static_cast<double>(n), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_QDot)->Apply([](benchmark::internal::Benchmark* b) { qtype_args(b, {0, 1}); })->ArgNames({"type", "fast"});

// Decode from DRAM: one token against a 32768 x 4096 matrix (64-142 MB, larger than the L3),
// held in huge-page memory as Model::pack_weights holds weights; args: weight type, packed
// (Q4_0 / Q8_0 / Q4_K / Q6_K only), threads. weight_GB/s is the streaming rate decode reaches per matrix.
void BM_QDecodeDram(benchmark::State& st) {
    const DType t = static_cast<DType>(st.range(0));
    const bool pack = st.range(1) != 0;
    const int threads = static_cast<int>(st.range(2));
    const int64_t rows = 32768, cols = 4096, tile = 256;
    if (pack && !packable(t, rows, cols)) {
        st.SkipWithError("no packed kernel for this type in this build");
        return;
    }
    const auto one = qbench_weights(t, tile, cols);  // quantized once, repeated (timing only)
    AnonBuffer w(one.size() * (rows / tile));
    for (int64_t i = 0; i < rows / tile; ++i) std::memcpy(w.data() + static_cast<size_t>(i) * one.size(), one.data(), one.size());
    MatrixView m{w.data(), t, rows, cols};
    AnonBuffer p(pack ? packed_bytes(t, rows, cols) : 1);
    if (pack) {
        pack_weights(t, w.data(), cols, 0, rows / kPackRows, p.data());
        m.packed = p.data();
    }
    ThreadPool pool(threads);
    const auto x = qbench_floats(static_cast<size_t>(cols), 10);
    std::vector<float> y(static_cast<size_t>(rows));
    for (auto _ : st) {
        matmul(m, x.data(), 1, y.data(), &pool);
        benchmark::DoNotOptimize(y.data());
    }
    st.SetLabel(std::string(dtype_name(t)) + (pack ? " packed" : " rows") + ", " + std::to_string(threads) + " thread(s)");
    st.counters["weight_GB/s"] = benchmark::Counter(static_cast<double>(row_bytes(t, cols) * rows) / 1e9,
                                                    benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_QDecodeDram)
    ->Apply([](benchmark::internal::Benchmark* b) {
        for (DType t : {DType::Q4_0, DType::Q8_0, DType::Q4_K, DType::Q6_K})
            for (int64_t pack : {0, 1})
                for (int64_t th : {1, 2})
                    b->Args({static_cast<int64_t>(t), pack, th});
    })
    ->ArgNames({"type", "packed", "threads"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// args: weight type, mode (0 ref, 1 fast one thread, 2 fast pool, 3 packed one thread, 4
// packed pool: tensor/packed.h, Q4_0 / Q8_0 / Q4_K / Q6_K only), tokens
void BM_QMatmul(benchmark::State& st) {
    const DType t = static_cast<DType>(st.range(0));
    const int mode = static_cast<int>(st.range(1));
    const int64_t ntok = st.range(2);
    const int64_t cols = 4096, rows = mode == 0 ? 256 : 4096;  // the reference is slow: fewer rows
    const auto w = qbench_weights(t, rows, cols);
    MatrixView m{w.data(), t, rows, cols};
    std::vector<uint8_t> packed;
    if (mode >= 3 && !attach_packed(st, m, packed)) return;
    const auto x = qbench_floats(static_cast<size_t>(ntok * cols), 9);
    std::vector<float> y(static_cast<size_t>(ntok * rows));
    for (auto _ : st) {
        if (mode == 0)
            matmul_ref(m, x.data(), ntok, y.data());
        else
            matmul(m, x.data(), ntok, y.data(), mode == 2 || mode == 4 ? &qbench_pool() : nullptr);
        benchmark::DoNotOptimize(y.data());
    }
    const char* label[] = {" ref", " fast 1 thread", " fast pool", " packed 1 thread", " packed pool"};
    st.SetLabel(std::string(dtype_name(t)) + label[mode]);
    st.counters["weight_GB/s"] = benchmark::Counter(static_cast<double>(w.size()) / 1e9, benchmark::Counter::kIsIterationInvariantRate);
    st.counters["GOP/s"] =
        benchmark::Counter(2.0 * static_cast<double>(rows * cols * ntok) / 1e9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_QMatmul)
    ->Apply([](benchmark::internal::Benchmark* b) {
        for (DType t : kQTypes)
            for (int64_t mode : {0, 1, 2})
                for (int64_t ntok : {1, 8, 64}) b->Args({static_cast<int64_t>(t), mode, ntok});
        for (DType t : {DType::Q4_0, DType::Q8_0, DType::Q4_K, DType::Q6_K})
            for (int64_t mode : {3, 4})
                for (int64_t ntok : {1, 8, 64}) b->Args({static_cast<int64_t>(t), mode, ntok});
    })
    ->ArgNames({"type", "mode", "tok"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// args: weight type, fast (1) / ref (0), tokens
void BM_QGemmTile(benchmark::State& st) {
    const DType t = static_cast<DType>(st.range(0));
    const bool fast = st.range(1) != 0;
    const int64_t ntok = st.range(2);
    const int64_t cols = 4096, rows = fast ? 512 : 32;
    const auto w = qbench_weights(t, rows, cols);
    const DType at = vec_dot_type(t);
    const size_t arb = row_bytes(at, cols);
    const auto x = qbench_floats(static_cast<size_t>(ntok * cols), 11);
    std::vector<uint8_t> a(arb * static_cast<size_t>(ntok));
    for (int64_t k = 0; k < ntok; ++k) quantize_act(at, x.data() + k * cols, a.data() + k * arb, cols);
    const int64_t nbk = cols / dtype_info(t).block_size;
    std::vector<float> ad;
    ActPanel panel{a.data(), arb, nullptr, 0};
    if (at == DType::Q8_0) {
        std::vector<float> f(static_cast<size_t>(cols));
        for (int64_t k = 0; k < ntok; ++k)
            for (int64_t b = 0; b < nbk; ++b) {
                uint16_t h;
                std::memcpy(&h, a.data() + k * arb + b * dtype_info(at).type_size, 2);
                ad.push_back(fp16_to_fp32(h));
            }
        panel.d = ad.data();
        panel.ld = nbk;
    }
    std::vector<float> y(static_cast<size_t>(ntok * rows));
    const size_t wrb = row_bytes(t, cols);
    for (auto _ : st) {
        if (fast)
            gemm_q_tile(t, w.data(), wrb, 0, rows, panel, 0, ntok, 0, nbk, y.data(), rows, false);
        else
            gemm_q_tile_ref(t, w.data(), wrb, 0, rows, panel, 0, ntok, 0, nbk, y.data(), rows, false);
        benchmark::DoNotOptimize(y.data());
    }
    st.SetLabel(std::string(dtype_name(t)) + (fast ? (gemm_q_tiled(t) ? " tiled" : " row dots") : " ref"));
    st.counters["GOP/s"] =
        benchmark::Counter(2.0 * static_cast<double>(rows * cols * ntok) / 1e9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_QGemmTile)
    ->Apply([](benchmark::internal::Benchmark* b) {
        for (DType t : kQTypes)
            for (int64_t f : {0, 1})
                for (int64_t ntok : {8, 64}) b->Args({static_cast<int64_t>(t), f, ntok});
    })
    ->ArgNames({"type", "fast", "tok"})
    ->Unit(benchmark::kMillisecond);

// args: activation type, fast (1) / ref (0)
void BM_QActQuant(benchmark::State& st) {
    const DType t = static_cast<DType>(st.range(0));
    const bool fast = st.range(1) != 0;
    const int64_t n = 4096;
    const auto x = qbench_floats(n, 3);
    std::vector<uint8_t> y(row_bytes(t, n));
    for (auto _ : st) {
        if (fast)
            quantize_act(t, x.data(), y.data(), n);
        else
            quantize_act_ref(t, x.data(), y.data(), n);
        benchmark::DoNotOptimize(y.data());
    }
    st.SetLabel(std::string(dtype_name(t)) + (fast ? " fast" : " ref"));
    st.counters["elements/s"] = benchmark::Counter(static_cast<double>(n), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_QActQuant)
    ->Apply([](benchmark::internal::Benchmark* b) {
        for (DType t : {DType::Q8_0, DType::Q8_1, DType::Q8_K})
            for (int64_t f : {0, 1}) b->Args({static_cast<int64_t>(t), f});
    })
    ->ArgNames({"type", "fast"});

// args: weight type
void BM_QQuantize(benchmark::State& st) {
    const DType t = static_cast<DType>(st.range(0));
    const int64_t n = 16 * 4096;
    const auto x = qbench_floats(n, 5);
    std::vector<uint8_t> y(row_bytes(t, n));
    for (auto _ : st) {
        quantize_row_ref(t, x.data(), y.data(), n);
        benchmark::DoNotOptimize(y.data());
    }
    st.SetLabel(dtype_name(t));
    st.counters["elements/s"] = benchmark::Counter(static_cast<double>(n), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_QQuantize)->Apply([](benchmark::internal::Benchmark* b) {
    for (DType t : kQTypes) b->Arg(static_cast<int64_t>(t));
});

}  // namespace
