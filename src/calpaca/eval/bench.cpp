#include "calpaca/eval/bench.h"

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>

#include "calpaca/base/error.h"
#include "calpaca/base/progress.h"
#include "calpaca/base/threadpool.h"
#include "calpaca/model/model.h"
#include "calpaca/model/multi_session.h"
#include "calpaca/model/session.h"

namespace calpaca {

SampleStats summarize(std::vector<double> samples) {
    SampleStats s;
    s.samples = samples;
    if (samples.empty()) return s;
    std::sort(samples.begin(), samples.end());
    const size_t n = samples.size();
    s.median = n % 2 ? samples[n / 2] : 0.5 * (samples[n / 2 - 1] + samples[n / 2]);
    s.min = samples.front();
    s.max = samples.back();
    double sum = 0;
    for (double v : samples) sum += v;
    s.mean = sum / static_cast<double>(n);
    if (n > 1) {
        double ss = 0;
        for (double v : samples) ss += (v - s.mean) * (v - s.mean);
        s.stddev = std::sqrt(ss / static_cast<double>(n - 1));
    }
    return s;
}

namespace {

uint64_t matrix_bytes(const MatrixView& w) { return static_cast<uint64_t>(w.rows) * row_bytes(w.type, w.cols); }

// The peak RSS so far: VmHWM of /proc/self/status (which reset_peak_rss can lower), else getrusage.
uint64_t peak_rss() {
    std::ifstream f("/proc/self/status");
    std::string line;
    while (std::getline(f, line))
        if (line.rfind("VmHWM:", 0) == 0) return std::stoull(line.substr(6)) * 1024;  // "VmHWM:  1234 kB"
    struct rusage ru {};
    if (::getrusage(RUSAGE_SELF, &ru) != 0) return 0;
    return static_cast<uint64_t>(ru.ru_maxrss) * 1024;  // Linux reports KiB
}

// Lowers the peak RSS to the current RSS (proc(5), clear_refs "5"), so that a bandwidth probe's
// freed buffer does not count as the model's memory. False when the kernel refuses.
bool reset_peak_rss() {
    std::ofstream f("/proc/self/clear_refs");
    if (!f) return false;
    f << "5";
    f.flush();
    return static_cast<bool>(f);
}

// Deterministic token ids in [0, n_vocab) (a 64-bit LCG's high bits).
struct TokenStream {
    uint64_t s;
    int64_t n_vocab;
    int32_t next() {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        return static_cast<int32_t>((s >> 33) % static_cast<uint64_t>(n_vocab));
    }
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

WeightTraffic weight_traffic(const Model& m) {
    const LlamaConfig& c = m.config();
    WeightTraffic w;
    std::map<std::string, int> types;
    auto add = [&](const MatrixView& v) {
        w.bytes_per_token += matrix_bytes(v);
        ++types[dtype_name(v.type)];
    };
    for (const LayerWeights& L : m.layers) {
        for (const MatrixView* v : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}) add(*v);
        w.bytes_per_token += (L.attn_norm.size() + L.ffn_norm.size()) * sizeof(float);
    }
    add(m.output);
    w.bytes_per_token += row_bytes(m.tok_embd.type, static_cast<uint64_t>(c.n_embd));  // one embedding row
    w.bytes_per_token += m.output_norm.size() * sizeof(float);
    for (const auto& t : m.file().tensors()) w.n_params += t.n_elements();
    for (const auto& [name, count] : types) {
        if (!w.types.empty()) w.types += ", ";
        w.types += types.size() == 1 ? name : name + " x" + std::to_string(count);
    }
    return w;
}

BenchResult run_bench(const Model& m, ThreadPool& pool, const BenchOptions& o) {
    if (o.n_prompt < 0) fail("bench: -p/--n-prompt must be >= 0, got {}", o.n_prompt);
    if (o.ubatch < 0) fail("bench: -u/--ubatch must be >= 0, got {}", o.ubatch);
    if (o.n_gen < 0) fail("bench: -n/--n-gen must be >= 0, got {}", o.n_gen);
    if (o.n_prompt == 0 && o.n_gen == 0) fail("bench: nothing to measure (-p 0 and -n 0)");
    if (o.reps < 1) fail("bench: -r/--repetitions must be >= 1, got {}", o.reps);
    if (!o.batch.empty() && o.n_gen == 0) fail("bench: -b/--batch needs a tg test (-n > 0)");
    for (int b : o.batch)
        if (b < 1 || b > 256) fail("bench: -b/--batch: each entry must be 1..256 sequences, got {}", b);
    const LlamaConfig& c = m.config();
    const int64_t n_ctx = std::max<int64_t>({o.n_prompt, o.n_gen, 16 + 1});
    if (n_ctx > (int64_t(1) << 20)) fail("bench: {} tokens is too many for one test", n_ctx);

    BenchResult r;
    r.model_path = m.path();
    r.model_name = c.name;
    r.file_bytes = m.file().file_size();
    r.weights = weight_traffic(m);
    r.cpu = cpu_info();
    r.threads = pool.size();
    r.reps = o.reps;
    r.n_prompt = o.n_prompt;
    r.n_gen = o.n_gen;
    r.kv_type = dtype_name(o.kv_type);

    SessionOptions so;
    so.n_ctx = n_ctx;
    so.kv_type = o.kv_type;
    so.ubatch = o.ubatch;  // default 128 as generate/chat: bounded activation memory for the prompt
    Session s(m, so, &pool);
    r.kv_cache_bytes = 2 * static_cast<uint64_t>(c.n_layer) * n_ctx * c.n_embd_kv() * (o.kv_type == DType::F16 ? 2 : 4);
    TokenStream ts{o.seed, c.n_vocab};
    const int32_t bos = m.tokenizer().bos();

    // Warm-up: touches every weight page once and lets the threads spin up.
    {
        std::vector<int32_t> warm(16);
        for (auto& t : warm) t = ts.next();
        s.eval(warm, false);
        int32_t one = ts.next();
        s.eval(std::span<const int32_t>(&one, 1), false);
    }

    const int64_t total = o.reps * ((o.n_prompt > 0) + (o.n_gen > 0) + static_cast<int64_t>(o.batch.size()));
    Progress prog("bench", static_cast<uint64_t>(total), o.progress);
    int64_t done = 0;
    std::vector<double> pp, tg;
    // tg N x B: one MultiSession per entry (its KV caches: B x (N + 1) positions), made up front
    std::vector<std::unique_ptr<MultiSession>> multi;
    std::vector<std::vector<double>> batched(o.batch.size());
    for (int b : o.batch) {
        MultiSessionOptions mo;
        mo.n_slots = b;
        mo.n_ctx = o.n_gen + 1;
        mo.kv_type = o.kv_type;
        multi.push_back(std::make_unique<MultiSession>(m, mo, &pool));
        r.batched_kv_bytes += multi.back()->kv_bytes();
    }
    // Peak RSS is sampled before each bandwidth probe and reset after it; if the reset is refused,
    // the value from before the first probe stands (the tests allocate nothing after their first
    // repetition).
    uint64_t rss_peak = 0;
    bool rss_tracking = true;
    auto note_rss = [&] {
        if (rss_tracking) rss_peak = std::max(rss_peak, peak_rss());
    };
    const bool paired = o.measure_bandwidth && o.n_gen > 0;
    std::vector<double> bw_passes;
    std::vector<int32_t> prompt(static_cast<size_t>(o.n_prompt));
    for (int rep = 0; rep < o.reps; ++rep) {
        if (o.n_prompt > 0) {
            for (auto& t : prompt) t = ts.next();
            if (bos >= 0 && bos < c.n_vocab) prompt[0] = bos;
            s.truncate(0);
            auto t0 = std::chrono::steady_clock::now();
            s.eval(prompt, false);
            pp.push_back(static_cast<double>(o.n_prompt) / seconds_since(t0));
            prog.update(static_cast<uint64_t>(++done), "pp" + std::to_string(o.n_prompt));
        }
        if (o.n_gen > 0) {
            s.truncate(0);
            int32_t tok = bos >= 0 && bos < c.n_vocab ? bos : ts.next();
            auto t0 = std::chrono::steady_clock::now();
            for (int64_t i = 0; i < o.n_gen; ++i) {
                s.eval(std::span<const int32_t>(&tok, 1), false);
                tok = ts.next();
            }
            tg.push_back(static_cast<double>(o.n_gen) / seconds_since(t0));
            if (paired) {
                note_rss();
                const BandwidthResult b = measure_read_bandwidth(&pool, o.bandwidth_buffer_bytes, 3);
                rss_tracking = rss_tracking && reset_peak_rss();
                bw_passes.insert(bw_passes.end(), b.passes_gbps.begin(), b.passes_gbps.end());
                r.bandwidth.buffer_bytes = b.buffer_bytes;
                r.bandwidth.threads = b.threads;
                if (b.median_gbps > 0)
                    r.efficiency_reps.push_back(static_cast<double>(r.weights.bytes_per_token) * tg.back() /
                                                (b.median_gbps * 1e9));
            }
            prog.update(static_cast<uint64_t>(++done), "tg" + std::to_string(o.n_gen));
        }
        for (size_t e = 0; e < o.batch.size(); ++e) {
            MultiSession& ms = *multi[e];
            const int b = o.batch[e];
            std::vector<int32_t> toks(static_cast<size_t>(b));
            std::vector<MultiSession::Item> items(static_cast<size_t>(b));
            for (int i = 0; i < b; ++i) {
                ms.truncate(i, 0);
                toks[static_cast<size_t>(i)] = bos >= 0 && bos < c.n_vocab ? bos : ts.next();
                items[static_cast<size_t>(i)] = {i, std::span<const int32_t>(&toks[static_cast<size_t>(i)], 1),
                                                 MultiSession::Output::Last};
            }
            auto t0 = std::chrono::steady_clock::now();
            for (int64_t step = 0; step < o.n_gen; ++step) {
                ms.forward(items);
                for (auto& t : toks) t = ts.next();
            }
            batched[e].push_back(static_cast<double>(b) * static_cast<double>(o.n_gen) / seconds_since(t0));
            prog.update(static_cast<uint64_t>(++done), "tg" + std::to_string(o.n_gen) + "x" + std::to_string(b));
        }
    }
    prog.finish();
    r.pp_tps = summarize(pp);
    r.tg_tps = summarize(tg);
    for (size_t e = 0; e < o.batch.size(); ++e) {
        const SampleStats st = summarize(batched[e]);
        r.batched.push_back({o.batch[e], st, r.tg_tps.median > 0 ? st.median / r.tg_tps.median : 0.0});
    }
    note_rss();
    r.peak_rss_bytes = rss_peak;

    if (paired) {
        const SampleStats bw = summarize(bw_passes);
        r.bandwidth.passes_gbps = bw.samples;
        r.bandwidth.median_gbps = bw.median;
        r.bandwidth.min_gbps = bw.min;
        r.bandwidth.max_gbps = bw.max;
        r.bandwidth_measured = true;
        r.efficiency = summarize(r.efficiency_reps).median;
    } else if (o.measure_bandwidth) {
        r.bandwidth = measure_read_bandwidth(&pool, o.bandwidth_buffer_bytes);
        r.bandwidth_measured = true;
    }
    return r;
}

namespace {

std::string human_bytes(uint64_t b) {
    if (b >= (uint64_t(1) << 30)) return fmt::format("{:.2f} GiB", static_cast<double>(b) / (1 << 30));
    if (b >= (uint64_t(1) << 20)) return fmt::format("{:.1f} MiB", static_cast<double>(b) / (1 << 20));
    return fmt::format("{:.1f} KiB", static_cast<double>(b) / 1024);
}

nlohmann::json stats_json(const SampleStats& s) {
    return {{"median", s.median}, {"min", s.min}, {"max", s.max}, {"mean", s.mean}, {"stddev", s.stddev},
            {"samples", s.samples}};
}

}  // namespace

std::string bench_table(const BenchResult& r) {
    std::string out;
    out += fmt::format("model    {} ({}), {}, {:.3f} B params, weights {}\n", r.model_path,
                       r.model_name.empty() ? "unnamed" : r.model_name, human_bytes(r.file_bytes),
                       static_cast<double>(r.weights.n_params) / 1e9, r.weights.types);
    std::string simd;
    for (const auto& f : r.cpu.simd) simd += (simd.empty() ? "" : " ") + f;
    out += fmt::format("cpu      {} ({} threads used; {} cores, {} hardware threads) [{}]\n",
                       r.cpu.model.empty() ? "unknown" : r.cpu.model, r.threads, r.cpu.physical, r.cpu.logical, simd);
    out += fmt::format("kv cache {} ({})\n\n", r.kv_type, human_bytes(r.kv_cache_bytes));
    out += fmt::format("{:<8} {:>12} {:>12} {:>12} {:>10} {:>5}\n", "test", "t/s median", "min", "max", "stddev", "reps");
    auto row = [&](const std::string& name, const SampleStats& s) {
        out += fmt::format("{:<8} {:>12.2f} {:>12.2f} {:>12.2f} {:>10.2f} {:>5}\n", name, s.median, s.min, s.max, s.stddev,
                           s.samples.size());
    };
    if (r.n_prompt > 0) row("pp" + std::to_string(r.n_prompt), r.pp_tps);
    if (r.n_gen > 0) row("tg" + std::to_string(r.n_gen), r.tg_tps);
    for (const auto& b : r.batched) row("tg" + std::to_string(r.n_gen) + "x" + std::to_string(b.streams), b.tps);
    out += "\n";
    if (!r.batched.empty()) {
        std::string ratios;
        for (const auto& b : r.batched)
            ratios += fmt::format("{}x{} {:.2f}", ratios.empty() ? "" : ", ", b.streams, b.vs_tg);
        out += fmt::format("batched decode           {} (aggregate t/s of B sequences decoding together / tg{})\n",
                           ratios, r.n_gen);
    }
    out += fmt::format("weights read per token   {:.3f} GB\n", static_cast<double>(r.weights.bytes_per_token) / 1e9);
    if (r.bandwidth_measured) {
        out += fmt::format("memory read bandwidth    {:.2f} GB/s (median of {} passes over {} with {} threads{}; {:.2f}-{:.2f})\n",
                           r.bandwidth.median_gbps, r.bandwidth.passes_gbps.size(), human_bytes(r.bandwidth.buffer_bytes),
                           r.bandwidth.threads, r.n_gen > 0 ? ", 3 after each tg run" : "", r.bandwidth.min_gbps,
                           r.bandwidth.max_gbps);
        if (r.n_gen > 0) {
            std::string reps;
            for (double e : r.efficiency_reps) reps += fmt::format("{}{:.1f}", reps.empty() ? "" : " ", 100 * e);
            out += fmt::format("decode bandwidth use     {:.2f} GB/s; {:.1f} % of the bandwidth measured next to it "
                               "(median of the runs: {} %)\n",
                               static_cast<double>(r.weights.bytes_per_token) * r.tg_tps.median / 1e9, 100 * r.efficiency,
                               reps);
        }
    }
    out += fmt::format("peak RSS                 {} (file {} + KV cache {}{})\n", human_bytes(r.peak_rss_bytes),
                       human_bytes(r.file_bytes), human_bytes(r.kv_cache_bytes),
                       r.batched_kv_bytes > 0 ? " + batched tests' KV caches " + human_bytes(r.batched_kv_bytes) : "");
    return out;
}

nlohmann::json bench_json(const BenchResult& r) {
    nlohmann::json j;
    j["model"] = r.model_path;
    j["model_name"] = r.model_name;
    j["model_size_bytes"] = r.file_bytes;
    j["n_params"] = r.weights.n_params;
    j["weight_types"] = r.weights.types;
    j["cpu"] = {{"model", r.cpu.model}, {"cores", r.cpu.physical}, {"hardware_threads", r.cpu.logical}, {"simd", r.cpu.simd}};
    j["threads"] = r.threads;
    j["repetitions"] = r.reps;
    j["n_prompt"] = r.n_prompt;
    j["n_gen"] = r.n_gen;
    j["kv_type"] = r.kv_type;
    j["kv_cache_bytes"] = r.kv_cache_bytes;
    j["batched_kv_cache_bytes"] = r.batched_kv_bytes;
    j["pp_tokens_per_s"] = r.n_prompt > 0 ? stats_json(r.pp_tps) : nlohmann::json(nullptr);
    j["tg_tokens_per_s"] = r.n_gen > 0 ? stats_json(r.tg_tps) : nlohmann::json(nullptr);
    j["batched_decode"] = nlohmann::json::array();
    for (const auto& b : r.batched)
        j["batched_decode"].push_back({{"streams", b.streams},
                                       {"aggregate_tokens_per_s", stats_json(b.tps)},
                                       {"vs_tg", b.vs_tg}});
    j["weight_bytes_per_token"] = r.weights.bytes_per_token;
    if (r.bandwidth_measured) {
        j["mem_read_bandwidth_gbps"] = {{"median", r.bandwidth.median_gbps}, {"min", r.bandwidth.min_gbps},
                                        {"max", r.bandwidth.max_gbps}, {"passes", r.bandwidth.passes_gbps},
                                        {"buffer_bytes", r.bandwidth.buffer_bytes}, {"threads", r.bandwidth.threads}};
        j["decode_bandwidth_efficiency"] = r.n_gen > 0 ? nlohmann::json(r.efficiency) : nlohmann::json(nullptr);
        j["decode_bandwidth_efficiency_per_run"] = r.efficiency_reps;
    } else {
        j["mem_read_bandwidth_gbps"] = nullptr;
        j["decode_bandwidth_efficiency"] = nullptr;
    }
    j["peak_rss_bytes"] = r.peak_rss_bytes;
    return j;
}

}  // namespace calpaca
