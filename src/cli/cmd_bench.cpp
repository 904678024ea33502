#include <cstdio>
#include <nlohmann/json.hpp>

#include "calpaca/base/error.h"
#include "calpaca/eval/bench.h"
#include "common.h"

namespace calpaca::cli {

static Command add_bench(CLI::App& root) {
    auto* app = root.add_subcommand(
        "bench", "Measure prompt-processing and generation speed, and decode's use of the memory bandwidth");
    struct Opts {
        std::string model;
        int threads = 0;
        BenchOptions b;
        std::string kv_type = "f16";
        bool json = false, no_bandwidth = false;
    };
    auto o = std::make_shared<Opts>();
    app->add_option("-m,--model", o->model, "model file (GGUF)")->required();
    app->add_option("-p,--n-prompt", o->b.n_prompt, "prompt tokens per pp test; 0 = skip (default 512)");
    app->add_option("-n,--n-gen", o->b.n_gen, "generated tokens per tg test; 0 = skip (default 128)");
    app->add_option("-t,--threads", o->threads, "threads (default: physical cores)");
    app->add_option("-r,--repetitions", o->b.reps, "repetitions of each test (default 5)");
    app->add_option("-u,--ubatch", o->b.ubatch,
                    "prompt tokens per forward pass, as generate/chat use (default 128; 0 = the whole prompt at once: "
                    "faster prompt processing, more activation memory)");
    app->add_option("-b,--batch", o->b.batch,
                    "also decode B sequences together (tgN x B: N steps of one forward over all B, as serve "
                    "--parallel batches its streams); a list, e.g. 4,8")
        ->delimiter(',');
    app->add_option("--kv-type", o->kv_type, "KV cache type: f16 (default) or f32")->check(CLI::IsMember({"f16", "f32"}));
    app->add_flag("--json", o->json, "print one JSON object instead of the table");
    app->add_flag("--no-bandwidth", o->no_bandwidth, "skip the memory bandwidth measurement (and the efficiency)");
    app->footer(
        "Prints tokens/s (median, min, max, stddev over the repetitions) for pp (one batch of -p tokens)\n"
        "and tg (-n single-token steps), the measured memory read bandwidth, and decode bandwidth\n"
        "efficiency = weight bytes read per token x tg tokens/s / bandwidth. With a tg test the\n"
        "bandwidth is measured right after each tg run and the efficiency is the median of the\n"
        "runs' ratios (a shared host's bandwidth drifts within a minute). With -b, tgN x B is the\n"
        "aggregate tokens/s of B sequences decoding together (weights read once per step for all\n"
        "of them) and its ratio to tgN: the engine's part of serve's multi-client throughput.\n\n"
        "Examples:\n"
        "  calpaca bench -m models/calpaca-demo.gguf\n"
        "  calpaca bench -m rand-1.3b-f16.gguf -p 512 -n 128 -t 2 -r 3\n"
        "  calpaca bench -m models/calpaca-demo.gguf -p 0 -n 64 -b 1,4,8 -r 3\n"
        "  calpaca bench -m model.gguf -p 64 -n 16 -r 1 --json | python3 -m json.tool");
    return {app, [=]() {
                if (o->threads < 0) fail("--threads must be positive, got {}", o->threads);
                BenchOptions b = o->b;
                b.kv_type = o->kv_type == "f32" ? DType::F32 : DType::F16;
                b.measure_bandwidth = !o->no_bandwidth;
                auto model = Model::load(o->model);
                ThreadPool pool(o->threads > 0 ? o->threads : default_thread_count());
                model->pack_weights(&pool);
                BenchResult r = run_bench(*model, pool, b);
                if (o->json)
                    std::printf("%s\n", bench_json(r).dump(2).c_str());
                else
                    std::fputs(bench_table(r).c_str(), stdout);
                return 0;
            }};
}

static const Registration kRegistration("bench", add_bench);

}  // namespace calpaca::cli
