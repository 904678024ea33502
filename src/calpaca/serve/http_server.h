// `calpaca serve`: the HTTP server (Debian's cpp-httplib) in front of the Api and the Scheduler.
//
// Routes (docs/serve.md): POST /v1/chat/completions, /v1/completions, /v1/embeddings (also
// without /v1), llama.cpp's /completion, /tokenize, /detokenize; GET /v1/models (/models),
// /health, /metrics (Prometheus text), /props, and the web chat page at /.
//
// Safety: binds 127.0.0.1 unless told otherwise; with an API key every route but /health,
// /v1/models and the page's static files needs `Authorization: Bearer KEY` (401 otherwise);
// bodies larger than max_body are refused (413); every error is an OpenAI error object; CORS
// headers only with --cors ORIGIN. A streaming client that disconnects cancels its generation at
// the next token (failed write) or within 100 ms while it waits; a non-streaming one within 50 ms.
#pragma once
#include <cstddef>
#include <memory>
#include <string>

#include "calpaca/serve/api.h"
#include "calpaca/serve/scheduler.h"

namespace calpaca {
class ThreadPool;
}

namespace calpaca::serve {

struct ServerOptions {
    std::string host = "127.0.0.1";
    int port = 19327;               // 0 = any free port (port() tells which)
    std::string api_key;
    std::string cors_origin;        // empty = no CORS headers
    size_t max_body = 8u << 20;
    int http_threads = 0;           // 0 = slots + queue + 8
    bool log_requests = true;
    SchedulerOptions sched;
    ApiOptions api;
};

class HttpServer {
public:
    HttpServer(const Model& model, ServerOptions opt, ThreadPool* pool);
    ~HttpServer();

    // Binds the socket (throws Error naming host:port on failure); port() is then known.
    void bind();
    int port() const { return port_; }
    // Serves until stop() (from another thread or a signal handler thread).
    void run();
    void stop();

    Metrics& metrics();
    Scheduler& scheduler();

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
    int port_ = 0;
};

}  // namespace calpaca::serve
