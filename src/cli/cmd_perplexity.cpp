#include <cstdio>
#include <nlohmann/json.hpp>

#include "calpaca/base/error.h"
#include "calpaca/base/progress.h"
#include "calpaca/eval/perplexity.h"
#include "common.h"

namespace calpaca::cli {

static Command add_perplexity(CLI::App& root) {
    auto* app = root.add_subcommand("perplexity", "Perplexity of a model on a text file (llama.cpp's method)");
    struct Opts {
        std::string model, vocab, file;
        int threads = 0;
        PerplexityOptions p;
        std::string kv_type = "f16";
        bool json = false;
    };
    auto o = std::make_shared<Opts>();
    app->add_option("-m,--model", o->model, "model file (GGUF)")->required();
    app->add_option("-f,--file", o->file, "UTF-8 text file ('-' = stdin)")->required();
    app->add_option("-c,--ctx-size", o->p.n_ctx, "window size in tokens (default 512)");
    app->add_option("--chunks", o->p.max_chunks, "evaluate at most this many windows; 0 = all (default)");
    app->add_option("--vocab", o->vocab, "tokenizer.model to use instead of the GGUF's vocabulary (sizes must agree)");
    app->add_option("-t,--threads", o->threads, "threads (default: physical cores)");
    app->add_option("--kv-type", o->kv_type, "KV cache type: f16 (default) or f32")->check(CLI::IsMember({"f16", "f32"}));
    app->add_flag("--reference", o->p.reference, "use the plain single-threaded reference kernels (slow; for checking)");
    app->add_flag("--json", o->json, "print one JSON object instead of the summary line");
    app->footer(
        "The text is tokenized whole (BOS first) and cut into windows of -c tokens; each window starts\n"
        "with BOS in place of its first token and only its second half is scored (llama.cpp's method,\n"
        "docs/perplexity.md). Prints\n"
        "PPL = exp(mean NLL) +/- PPL x stderr(mean NLL); on a terminal, the running estimate after\n"
        "each window goes to stderr as [1]x,[2]y,...\n\n"
        "Examples:\n"
        "  calpaca perplexity -m model.gguf -f heldout.txt\n"
        "  calpaca perplexity -m models/calpaca-demo.gguf -f tests/fixtures/corpus/sample.txt -c 128 --json");
    return {app, [=]() {
                if (o->threads < 0) fail("--threads must be positive, got {}", o->threads);
                PerplexityOptions p = o->p;
                p.kv_type = o->kv_type == "f32" ? DType::F32 : DType::F16;
                const std::string text = read_text_arg(o->file);
                const std::string source = o->file == "-" ? "stdin" : o->file;
                auto model = Model::load(o->model, o->vocab);
                const std::vector<int32_t> tokens = perplexity_tokenize(*model, text, source);
                const int64_t n_chunks = perplexity_chunks(static_cast<int64_t>(tokens.size()), p, source);
                ThreadPool pool(o->threads > 0 ? o->threads : default_thread_count());
                model->pack_weights(&pool);
                const bool tty = Progress::stderr_is_terminal();
                if (tty)
                    std::fprintf(stderr, "perplexity: %lld windows of %lld tokens, %lld tokens in the text\n",
                                 (long long)n_chunks, (long long)p.n_ctx, (long long)tokens.size());
                auto on_chunk = [&](int64_t k, int64_t, const NllStats& s) {
                    if (!tty) return;
                    std::fprintf(stderr, "[%lld]%.4f,", (long long)(k + 1), s.perplexity());
                    std::fflush(stderr);
                };
                PerplexityResult r = perplexity(*model, tokens, p, &pool, source, on_chunk);
                if (tty) std::fprintf(stderr, "\n");
                if (o->json) {
                    nlohmann::json j;
                    j["model"] = o->model;
                    j["file"] = o->file;
                    j["n_ctx"] = r.n_ctx;
                    j["n_tokens"] = r.n_tokens;
                    j["n_chunks"] = r.n_chunks;
                    j["n_scored"] = r.n_scored;
                    j["nll_mean"] = r.nll_mean;
                    j["ppl"] = r.ppl;
                    j["ppl_stderr"] = r.ppl_stderr;
                    j["chunk_ppl"] = r.chunk_ppl;
                    j["threads"] = pool.size();
                    j["seconds"] = r.seconds;
                    j["tokens_per_s"] = r.seconds > 0 ? static_cast<double>(r.n_chunks * r.n_ctx) / r.seconds : 0.0;
                    std::printf("%s\n", j.dump(2).c_str());
                } else {
                    std::printf("%lld windows of %lld tokens (%lld of %lld tokens), %lld scored, %.2f s\n",
                                (long long)r.n_chunks, (long long)r.n_ctx, (long long)(r.n_chunks * r.n_ctx),
                                (long long)r.n_tokens, (long long)r.n_scored, r.seconds);
                    std::printf("Final estimate: PPL = %.4f +/- %.5f\n", r.ppl, r.ppl_stderr);
                }
                return 0;
            }};
}

static const Registration kRegistration("perplexity", add_perplexity);

}  // namespace calpaca::cli
