#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "calpaca/base/error.h"
#include "calpaca/serve/http_server.h"
#include "common.h"

namespace calpaca::cli {

namespace {
int g_stop_pipe[2] = {-1, -1};

extern "C" void on_stop_signal(int sig) {
    const unsigned char c = static_cast<unsigned char>(sig);
    (void)!::write(g_stop_pipe[1], &c, 1);
}

struct ServeOpts {
    ModelOptions mo;
    serve::ServerOptions so;
    std::string kv_type = "f16";
    std::string alias;
    std::string max_body = "8M";
    bool quiet = false;
};

size_t parse_size(const std::string& s) {
    size_t used = 0;
    double v = 0;
    try {
        v = std::stod(s, &used);
    } catch (const std::exception&) {
        used = 0;
    }
    if (used == 0 || v <= 0) fail("--max-body must be a size like 8M, 512K or 1000000, got '{}'", s);
    const std::string unit = s.substr(used);
    double mult = 1;
    if (unit == "K" || unit == "k" || unit == "KiB") mult = 1024;
    else if (unit == "M" || unit == "m" || unit == "MiB") mult = 1024.0 * 1024;
    else if (unit == "G" || unit == "g" || unit == "GiB") mult = 1024.0 * 1024 * 1024;
    else if (!unit.empty()) fail("--max-body: unknown unit '{}' (use K, M or G)", unit);
    return static_cast<size_t>(v * mult);
}
}  // namespace

static Command add_serve(CLI::App& root) {
    auto* app = root.add_subcommand("serve", "OpenAI-compatible HTTP API with continuous batching, and a web chat page");
    auto o = std::make_shared<ServeOpts>();
    auto& so = o->so;
    app->add_option("-m,--model", o->mo.model, "model file (GGUF)")->required();
    app->add_option("--vocab", o->mo.vocab, "tokenizer.model to use instead of the GGUF's vocabulary (sizes must agree)");
    app->add_option("--lora", o->mo.lora, "PEFT LoRA adapter directories merged into the weights at load time, in order (comma-separated)")
        ->delimiter(',');
    app->add_option("-t,--threads", o->mo.threads, "threads for the model (default: physical cores)");
    app->add_option("-c,--ctx-size", so.sched.n_ctx, "context size of each slot in tokens (default: model's, at most 2048)");
    app->add_option("--kv-type", o->kv_type, "KV cache type: f16 (default) or f32")->check(CLI::IsMember({"f16", "f32"}));
    app->add_option("--host", so.host, "address to listen on (default 127.0.0.1: this machine only)");
    app->add_option("--port", so.port, "port (default 19327, as the original API server; 0 = any free port)");
    app->add_option("-P,--parallel,--np", so.sched.n_slots, "slots: sequences generated at the same time (default 4)");
    app->add_option("--max-queue", so.sched.max_queue, "sequences that may wait for a slot before requests get 503 (default 64)");
    app->add_option("-b,--batch-size", so.sched.batch, "tokens per forward step: one per generating slot, the rest for prompts (default 256)");
    app->add_option("--api-key", so.api_key, "require 'Authorization: Bearer KEY' (also $CALPACA_API_KEY); /health is exempt");
    app->add_option("--cors", so.cors_origin, "allow browser requests from ORIGIN (e.g. http://localhost:3000, or *); off by default");
    app->add_option("--max-body", o->max_body, "largest request body (default 8M)");
    app->add_option("-a,--alias", o->alias, "model name the API reports (default: the file name)");
    std::string names;
    for (const auto& n : chat_template_names()) names += (names.empty() ? "" : ", ") + n;
    app->add_option("--chat-template", so.api.chat_template, "chat template: " + names + " (default: from the model)");
    app->add_option("--temp,--temperature", so.api.defaults.temperature, "default temperature (default 0.2)");
    app->add_option("--top-p", so.api.defaults.top_p, "default top-p (default 0.9)");
    app->add_option("--top-k", so.api.defaults.top_k, "default top-k (default 40)");
    app->add_option("--min-p", so.api.defaults.min_p, "default min-p (default 0)");
    app->add_option("--repeat-penalty,--repetition-penalty", so.api.defaults.repetition_penalty,
                    "default repetition penalty (default 1.1)");
    app->add_option("--max-tokens", so.api.chat_max_tokens, "default max_tokens of a chat reply (default 512)");
    app->add_option("--http-threads", so.http_threads, "HTTP connection threads (default: parallel + max-queue + 8)");
    app->add_flag("-q,--quiet", o->quiet, "do not log one line per request");
    app->footer(
        "Endpoints: POST /v1/chat/completions, /v1/completions, /v1/embeddings, /completion, /tokenize, /detokenize;\n"
        "GET /v1/models, /health, /metrics, /props; the chat page at /. Stop with Ctrl-C. See docs/serve.md.\n"
        "Examples:\n"
        "  calpaca serve -m models/calpaca-demo.gguf\n"
        "  calpaca serve -m alpaca-2-7b-q4_k.gguf --parallel 8 -c 4096 --api-key \"$KEY\"\n"
        "  curl http://127.0.0.1:19327/v1/chat/completions -H 'Content-Type: application/json' \\\n"
        "       -d '{\"messages\":[{\"role\":\"user\",\"content\":\"你好\"}]}'");
    return {app, [o]() {
                auto& so = o->so;
                if (so.api_key.empty())
                    if (const char* k = std::getenv("CALPACA_API_KEY")) so.api_key = k;
                so.max_body = parse_size(o->max_body);
                so.log_requests = !o->quiet;
                so.sched.kv_type = o->kv_type == "f32" ? DType::F32 : DType::F16;
                so.api.defaults.validate();
                if (so.api.chat_max_tokens < 1) fail("--max-tokens must be >= 1, got {}", so.api.chat_max_tokens);
                if (so.sched.n_ctx < 0) fail("--ctx-size must be >= 0, got {}", so.sched.n_ctx);
                so.api.model_id = o->alias.empty() ? std::filesystem::path(o->mo.model).stem().string() : o->alias;

                // SIGINT/SIGTERM: the handler (on whatever thread gets it) writes the signal number
                // to a pipe; a waiting thread reads it and stops the server
                if (::pipe2(g_stop_pipe, O_CLOEXEC) != 0) fail("cannot create a pipe for signal handling");
                struct sigaction sa {};
                sa.sa_handler = on_stop_signal;
                sigemptyset(&sa.sa_mask);
                sigaction(SIGINT, &sa, nullptr);
                sigaction(SIGTERM, &sa, nullptr);
                std::signal(SIGPIPE, SIG_IGN);

                auto pool = o->mo.pool();
                auto model = o->mo.load(pool.get());
                serve::HttpServer server(*model, so, pool.get());
                server.bind();
                const auto& sch = server.scheduler();
                std::fprintf(stderr,
                             "calpaca serve: model %s (%s), %d slots x %lld tokens (KV cache %.1f MiB), %d threads\n",
                             model->path().c_str(), so.api.model_id.c_str(), sch.n_slots(),
                             static_cast<long long>(sch.n_ctx()), static_cast<double>(sch.kv_bytes()) / (1 << 20),
                             pool->size());
                if (so.host != "127.0.0.1" && so.host != "localhost" && so.host != "::1" && so.api_key.empty())
                    std::fprintf(stderr, "calpaca serve: warning: listening on %s without --api-key\n", so.host.c_str());
                std::fprintf(stderr, "calpaca serve: listening on http://%s:%d\n", so.host.c_str(), server.port());
                std::fflush(stderr);

                std::thread waiter([&] {
                    unsigned char sig = 0;
                    while (::read(g_stop_pipe[0], &sig, 1) < 0 && errno == EINTR) {
                    }
                    if (sig == 0) return;  // the server stopped by itself
                    std::fprintf(stderr, "calpaca serve: %s received, shutting down\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
                    server.stop();
                });
                server.run();
                const unsigned char zero = 0;
                (void)!::write(g_stop_pipe[1], &zero, 1);  // wakes the waiter if no signal came
                waiter.join();
                server.stop();
                return 0;
            }};
}

static const Registration kRegistration("serve", add_serve);

}  // namespace calpaca::cli
