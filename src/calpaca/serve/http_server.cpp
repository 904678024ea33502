#include "calpaca/serve/http_server.h"

#include <httplib.h>

#include <cstdio>
#include <set>

#include "calpaca/base/error.h"
#include "calpaca/serve/metrics.h"
#include "calpaca/serve/peer.h"
#include "calpaca/serve/web_assets.h"

namespace calpaca::serve {

using namespace std::chrono_literals;

namespace {

std::string dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

void write_error(httplib::Response& res, const ApiError& e) {
    res.status = e.status;
    if (e.status >= 400 && e.status < 500) res.set_header("x-should-retry", "false");
    if (e.status == 503) res.set_header("Retry-After", "1");
    res.set_content(dump(e.body()), "application/json");
}

bool same_key(const std::string& a, const std::string& b) {
    // constant time in the length of the expected key
    unsigned diff = a.size() == b.size() ? 0u : 1u;
    for (size_t i = 0; i < b.size(); ++i) diff |= static_cast<unsigned>(static_cast<unsigned char>(i < a.size() ? a[i] : 0) ^
                                                                        static_cast<unsigned char>(b[i]));
    return diff == 0;
}

// Counts a request as in flight for as long as this object lives.
struct InFlight {
    explicit InFlight(Metrics& m) : m_(m) { ++m_.requests_in_flight; }
    ~InFlight() { --m_.requests_in_flight; }
    Metrics& m_;
};

}  // namespace

struct HttpServer::Impl {
    Impl(const Model& model, ServerOptions o, ThreadPool* pool)
        : opt(std::move(o)), sched(model, opt.sched, pool, &metrics), api(model, sched, metrics, opt.api) {}

    ServerOptions opt;
    Metrics metrics;
    Scheduler sched;
    Api api;
    httplib::Server svr;
    std::set<std::string> public_paths{"/health", "/v1/models", "/models", "/"};
    std::set<std::string> known_paths;

    using PostFn = std::function<Reply(const Json&, const Api::ClosedFn&)>;

    void post(const std::string& path, PostFn fn) {
        known_paths.insert(path);
        svr.Post(path, [this, fn](const httplib::Request& req, httplib::Response& res) { handle_post(req, res, fn); });
    }
    void get(const std::string& path, std::function<void(httplib::Response&)> fn) {
        known_paths.insert(path);
        svr.Get(path, [fn](const httplib::Request&, httplib::Response& res) { fn(res); });
    }

    void handle_post(const httplib::Request& req, httplib::Response& res, const PostFn& fn) {
        auto guard = std::make_shared<InFlight>(metrics);
        int fd = -1;
        bool looked = false;
        auto lookup = [&] {
            if (!looked) fd = find_connection(req.remote_addr, req.remote_port, req.local_port);
            looked = true;
            return fd;
        };
        try {
            const Json body = parse_body(req.body);
            Reply r = fn(body, [&] { return peer_closed(lookup()); });
            if (!r.stream) {
                res.status = r.status;
                res.set_content(dump(r.body), "application/json");
                return;
            }
            const int sock = lookup();
            res.status = 200;
            res.set_header("Cache-Control", "no-cache");
            res.set_header("X-Accel-Buffering", "no");
            auto stream = r.stream;
            res.set_chunked_content_provider(
                "text/event-stream",
                [stream, sock, guard](size_t, httplib::DataSink& sink) {
                    std::string out;
                    const bool more = stream->next(out, 100ms);
                    if (!out.empty() && !sink.write(out.data(), out.size())) {
                        stream->cancel();
                        return false;
                    }
                    if (!more) {
                        sink.done();
                        return true;
                    }
                    if (out.empty() && peer_closed(sock)) {
                        stream->cancel();
                        return false;
                    }
                    return true;
                },
                [stream](bool success) {
                    if (!success) stream->cancel();
                });
        } catch (const ApiError& e) {
            write_error(res, e);
        } catch (const std::exception& e) {
            write_error(res, ApiError(500, std::string("internal error: ") + e.what()));
        }
    }

    void json_reply(httplib::Response& res, const Json& j) { res.set_content(dump(j), "application/json"); }

    void routes() {
        auto wrap = [this](auto method) {
            return [this, method](const Json& b, const Api::ClosedFn& closed) { return (api.*method)(b, closed); };
        };
        for (const char* p : {"/v1/chat/completions", "/chat/completions"}) post(p, wrap(&Api::chat));
        for (const char* p : {"/v1/completions", "/completions"}) post(p, wrap(&Api::completions));
        post("/completion", wrap(&Api::native_completion));
        for (const char* p : {"/v1/embeddings", "/embeddings"}) post(p, wrap(&Api::embeddings));
        post("/tokenize", [this](const Json& b, const Api::ClosedFn&) { return Reply{200, api.tokenize(b), nullptr}; });
        post("/detokenize", [this](const Json& b, const Api::ClosedFn&) { return Reply{200, api.detokenize(b), nullptr}; });
        for (const char* p : {"/v1/models", "/models"}) get(p, [this](httplib::Response& res) { json_reply(res, api.models()); });
        get("/health", [this](httplib::Response& res) { json_reply(res, api.health()); });
        get("/props", [this](httplib::Response& res) { json_reply(res, api.props()); });
        get("/metrics", [this](httplib::Response& res) {
            res.set_content(metrics.prometheus(), "text/plain; version=0.0.4; charset=utf-8");
        });
        for (const WebAsset& a : web_assets()) {
            const std::string path(a.path);
            auto serve = [a](httplib::Response& res) {
                res.set_header("Cache-Control", "no-cache");
                res.set_content(a.data.data(), a.data.size(), std::string(a.content_type));
            };
            public_paths.insert(path);
            get(path, serve);
            if (path == "/index.html") get("/", serve);
        }
    }

    void setup() {
        const size_t threads = opt.http_threads > 0
                                   ? static_cast<size_t>(opt.http_threads)
                                   : static_cast<size_t>(opt.sched.n_slots + opt.sched.max_queue + 8);
        svr.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
        svr.set_tcp_nodelay(true);
        // SO_REUSEADDR only: httplib's default also sets SO_REUSEPORT, which lets a second server
        // bind the same port silently instead of failing
        svr.set_socket_options([](socket_t sock) {
            int yes = 1;
            setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, reinterpret_cast<const void*>(&yes), sizeof yes);
        });
        svr.set_payload_max_length(opt.max_body);
        svr.set_keep_alive_timeout(5);
        svr.set_keep_alive_max_count(1000);
        svr.set_read_timeout(30, 0);
        svr.set_write_timeout(30, 0);
        if (!opt.cors_origin.empty()) {
            svr.set_default_headers({{"Access-Control-Allow-Origin", opt.cors_origin}, {"Vary", "Origin"}});
        }
        svr.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
            if (req.method == "OPTIONS") {
                if (opt.cors_origin.empty()) {
                    write_error(res, ApiError(405, "CORS is disabled on this server (start it with --cors ORIGIN)", "",
                                              "cors_disabled", "invalid_request_error"));
                    return httplib::Server::HandlerResponse::Handled;
                }
                res.status = 204;
                res.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
                const std::string asked = req.get_header_value("Access-Control-Request-Headers");
                res.set_header("Access-Control-Allow-Headers", asked.empty() ? "Authorization, Content-Type" : asked);
                res.set_header("Access-Control-Max-Age", "600");
                return httplib::Server::HandlerResponse::Handled;
            }
            if (!opt.api_key.empty() && !public_paths.count(req.path)) {
                const std::string h = req.get_header_value("Authorization");
                const std::string prefix = "Bearer ";
                const bool ok = h.size() > prefix.size() && h.compare(0, prefix.size(), prefix) == 0 &&
                                same_key(h.substr(prefix.size()), opt.api_key);
                if (!ok) {
                    write_error(res, ApiError(401,
                                              h.empty() ? "missing API key: send 'Authorization: Bearer <key>'"
                                                        : "invalid API key",
                                              "", "invalid_api_key"));
                    return httplib::Server::HandlerResponse::Handled;
                }
            }
            return httplib::Server::HandlerResponse::Unhandled;
        });
        svr.set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
            if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
            std::string msg;
            switch (res.status) {
                case 404: msg = "no route for " + req.method + " " + req.path; break;
                case 413: msg = "the request body is too large (see --max-body)"; break;
                case 405: msg = "method not allowed"; break;
                default: msg = fmt::format("HTTP error {}", res.status);
            }
            write_error(res, ApiError(res.status, msg));
            return httplib::Server::HandlerResponse::Handled;
        }));
        svr.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
            std::string msg = "internal error";
            try {
                if (ep) std::rethrow_exception(ep);
            } catch (const std::exception& e) {
                msg += std::string(": ") + e.what();
            } catch (...) {
            }
            write_error(res, ApiError(500, msg));
        });
        svr.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
            metrics.request_done(known_paths.count(req.path) ? req.path : "other", res.status);
            if (opt.log_requests)
                std::fprintf(stderr, "calpaca serve: %s %s %s %d\n", req.remote_addr.c_str(), req.method.c_str(),
                             req.path.c_str(), res.status);
        });
        routes();
    }
};

HttpServer::HttpServer(const Model& model, ServerOptions opt, ThreadPool* pool)
    : impl_(std::make_unique<Impl>(model, std::move(opt), pool)) {
    impl_->setup();
}

HttpServer::~HttpServer() { stop(); }

void HttpServer::bind() {
    auto& o = impl_->opt;
    if (o.port < 0 || o.port > 65535) fail("--port must be in [0, 65535], got {}", o.port);
    if (o.port == 0) {
        port_ = impl_->svr.bind_to_any_port(o.host);
        if (port_ <= 0) fail("cannot listen on {} (any port)", o.host);
    } else {
        if (!impl_->svr.bind_to_port(o.host, o.port))
            fail("cannot listen on {}:{} (in use, or not an address of this machine)", o.host, o.port);
        port_ = o.port;
    }
}

void HttpServer::run() {
    if (port_ == 0) bind();
    impl_->svr.listen_after_bind();
}

void HttpServer::stop() {
    if (!impl_) return;
    // the scheduler first: running and queued generations end (with an error event), so the
    // connection threads that stream them finish and the HTTP server can join them
    impl_->sched.stop();
    impl_->svr.stop();
}

Metrics& HttpServer::metrics() { return impl_->metrics; }
Scheduler& HttpServer::scheduler() { return impl_->sched; }

}  // namespace calpaca::serve
