#include "common.h"

#include <algorithm>
#include <iostream>
#include <iterator>

#include "calpaca/base/error.h"
#include "calpaca/base/fileio.h"
#include "calpaca/convert/lora_runtime.h"

namespace calpaca::cli {

namespace {
std::vector<std::pair<std::string, CommandFactory>>& registry() {
    static std::vector<std::pair<std::string, CommandFactory>> r;
    return r;
}
}  // namespace

Registration::Registration(const char* name, CommandFactory f) { registry().emplace_back(name, f); }

std::vector<std::pair<std::string, CommandFactory>> registered_commands() {
    auto r = registry();
    std::sort(r.begin(), r.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    return r;
}

void ModelOptions::add(CLI::App* app, bool required) {
    auto* o = app->add_option("-m,--model", model, "model file (GGUF)");
    if (required) o->required();
    app->add_option("--vocab", vocab, "tokenizer.model to use instead of the GGUF's vocabulary (sizes must agree)");
    app->add_option("--lora", lora, "PEFT LoRA adapter directories merged into the weights at load time, in order (comma-separated)")
        ->delimiter(',');
    app->add_option("-t,--threads", threads, "threads (default: physical cores)");
    app->add_option("-c,--ctx-size", ctx, "context size in tokens (default: model's, at most 4096)");
    app->add_option("--kv-type", kv_type, "KV cache type: f16 (default) or f32")->check(CLI::IsMember({"f16", "f32"}));
    app->add_flag("--reference", reference, "use the plain single-threaded reference kernels (slow; for checking)");
}

std::unique_ptr<Model> ModelOptions::load(ThreadPool* pool) const {
    auto m = lora.empty() ? Model::load(model, vocab) : Model::load(model);
    if (!lora.empty()) apply_lora_in_memory(*m, lora, vocab, pool);
    if (!reference) m->pack_weights(pool);  // --reference runs matmul_ref on the row layout
    return m;
}

SessionOptions ModelOptions::session() const {
    SessionOptions s;
    s.n_ctx = ctx;
    s.kv_type = kv_type == "f32" ? DType::F32 : DType::F16;
    s.reference = reference;
    s.ubatch = kDefaultUbatch;
    return s;
}

std::unique_ptr<ThreadPool> ModelOptions::pool() const {
    if (threads < 0) fail("--threads must be positive, got {}", threads);
    return std::make_unique<ThreadPool>(threads > 0 ? threads : default_thread_count());
}

void SamplingOptions::add(CLI::App* app) {
    app->add_option("-n,--max-new-tokens", max_new, "maximum new tokens (default 512)");
    app->add_option("--temp,--temperature", p.temperature, "temperature; 0 = greedy (default 0.2)");
    app->add_option("--top-k", p.top_k, "top-k; 0 = off (default 40)");
    app->add_option("--top-p", p.top_p, "top-p; 1 = off (default 0.9)");
    app->add_option("--min-p", p.min_p, "min-p; 0 = off (default 0)");
    app->add_option("--repeat-penalty,--repetition-penalty", p.repetition_penalty,
                    "repetition penalty, HF semantics; 1 = off (default 1.1)");
    app->add_option("--repeat-last-n", p.repetition_window, "penalise only the last N tokens; 0 = all (default 0)");
    app->add_option("--presence-penalty", p.presence_penalty, "presence penalty (default 0)");
    app->add_option("--frequency-penalty", p.frequency_penalty, "frequency penalty (default 0)");
    app->add_option("--seed", seed, "random seed (default: random)");
    app->add_option("--stop", stop, "stop string (repeatable)");
}

SamplingParams SamplingOptions::params() const {
    SamplingParams q = p;
    if (seed >= 0) {
        q.seed = static_cast<uint64_t>(seed);
        q.has_seed = true;
    }
    if (max_new < 0) fail("--max-new-tokens must be >= 0, got {}", max_new);
    q.validate();
    return q;
}

std::string read_text_arg(const std::string& path) {
    if (path == "-") return std::string(std::istreambuf_iterator<char>(std::cin), {});
    return read_file(path);
}

}  // namespace calpaca::cli
