#include "calpaca/serve/api.h"

#include <fmt/format.h>

#include <cstring>
#include <ctime>
#include <limits>
#include <random>

#include "calpaca/base/error.h"
#include "calpaca/base/utf8.h"
#include "calpaca/generate/generator.h"
#include "calpaca/serve/metrics.h"

namespace calpaca::serve {

using namespace std::chrono_literals;

namespace {

const char* const kFingerprint = "calpaca-0.1.0";

std::string random_id(const char* prefix) {
    thread_local std::mt19937_64 rng(std::random_device{}());
    return fmt::format("{}{:016x}{:08x}", prefix, rng(), static_cast<uint32_t>(rng()));
}

int64_t unix_now() { return static_cast<int64_t>(std::time(nullptr)); }

std::string dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }
// a float setting as the decimal the user wrote (0.2, not 0.20000000298023224)
double decimal(float f) { return std::stod(fmt::format("{}", f)); }
std::string sse(const Json& j) { return "data: " + dump(j) + "\n\n"; }

std::string token_text(const Tokenizer& tok, int32_t id) { return sanitize_utf8(tok.token_bytes(id)); }

Json byte_list(const std::string& s) {
    Json a = Json::array();
    for (char c : s) a.push_back(static_cast<int>(static_cast<unsigned char>(c)));
    return a;
}

// OpenAI chat logprobs entry
Json chat_logprob(const Tokenizer& tok, const TokenLogprob& lp) {
    Json e;
    e["token"] = token_text(tok, lp.id);
    e["logprob"] = lp.logprob;
    e["bytes"] = byte_list(tok.token_bytes(lp.id));
    Json top = Json::array();
    for (const auto& [id, l] : lp.top) {
        Json t;
        t["token"] = token_text(tok, id);
        t["logprob"] = l;
        t["bytes"] = byte_list(tok.token_bytes(id));
        top.push_back(t);
    }
    e["top_logprobs"] = top;
    return e;
}

// llama.cpp completion_probabilities entry
Json native_logprob(const Tokenizer& tok, const TokenLogprob& lp) {
    Json e;
    e["id"] = lp.id;
    e["token"] = token_text(tok, lp.id);
    e["logprob"] = lp.logprob;
    e["bytes"] = byte_list(tok.token_bytes(lp.id));
    Json top = Json::array();
    for (const auto& [id, l] : lp.top) {
        Json t;
        t["id"] = id;
        t["token"] = token_text(tok, id);
        t["logprob"] = l;
        t["bytes"] = byte_list(tok.token_bytes(id));
        top.push_back(t);
    }
    e["top_logprobs"] = top;
    return e;
}

// OpenAI legacy completions logprobs: parallel arrays. `offset` is the text offset of the first token.
struct LegacyLogprobs {
    Json tokens = Json::array(), token_logprobs = Json::array(), top_logprobs = Json::array(),
         text_offset = Json::array();
    size_t offset = 0;
    void add(const Tokenizer& tok, int32_t id, const TokenLogprob* lp) {
        const std::string t = token_text(tok, id);
        tokens.push_back(t);
        token_logprobs.push_back(lp ? Json(lp->logprob) : Json(nullptr));
        if (lp) {
            Json top = Json::object();
            for (const auto& [tid, l] : lp->top) top[token_text(tok, tid)] = l;
            top_logprobs.push_back(top);
        } else {
            top_logprobs.push_back(nullptr);
        }
        text_offset.push_back(offset);
        offset += t.size();
    }
    Json json() const {
        Json j;
        j["tokens"] = tokens;
        j["token_logprobs"] = token_logprobs;
        j["top_logprobs"] = top_logprobs;
        j["text_offset"] = text_offset;
        return j;
    }
};

// The fields every completion object and chunk starts with.
Json response_head(const std::string& id, const char* object, int64_t created, const std::string& model) {
    Json c;
    c["id"] = id;
    c["object"] = object;
    c["created"] = created;
    c["model"] = model;
    c["system_fingerprint"] = kFingerprint;
    return c;
}

Json usage_json(int64_t prompt, int64_t completion, int64_t cached) {
    Json u;
    u["prompt_tokens"] = prompt;
    u["completion_tokens"] = completion;
    u["total_tokens"] = prompt + completion;
    u["prompt_tokens_details"] = Json{{"cached_tokens", cached}};
    return u;
}

Json error_frame_body(const std::string& msg) {
    return ApiError(500, "generation failed: " + msg, "", "generation_failed", "server_error").body();
}

struct Choice {
    std::string text;
    std::vector<int32_t> tokens;
    std::vector<TokenLogprob> logprobs;
    bool done = false;
    SeqEvent final;
};

// Submits specs progressively (at most `window` in flight, so a request with many prompts or
// inputs never overflows the queue by itself) and waits for all of them.
std::vector<Choice> run_blocking(Scheduler& sched, std::vector<SeqSpec> specs, const Api::ClosedFn& closed) {
    auto job = std::make_shared<Job>();
    const size_t n = specs.size();
    std::vector<Choice> out(n);
    const size_t window = static_cast<size_t>(std::max(1, sched.n_slots()));
    size_t submitted = 0, done = 0;
    std::vector<SeqEvent> evs;
    try {
        while (done < n) {
            if (submitted < n && submitted - done < window) {
                const size_t k = std::min(n - submitted, window - (submitted - done));
                std::vector<SeqSpec> part(std::make_move_iterator(specs.begin() + static_cast<std::ptrdiff_t>(submitted)),
                                          std::make_move_iterator(specs.begin() + static_cast<std::ptrdiff_t>(submitted + k)));
                try {
                    sched.submit(job, std::move(part));
                    submitted += k;
                } catch (const QueueFull& e) {
                    if (submitted == 0) throw ApiError(503, e.what(), "", "queue_full");
                    // later parts: wait for room
                }
            }
            evs.clear();
            job->take(evs, 50ms);
            for (SeqEvent& e : evs) {
                Choice& c = out[static_cast<size_t>(e.index)];
                if (e.kind == SeqEvent::Kind::Error)
                    throw ApiError(500, "generation failed: " + e.error, "", "generation_failed", "server_error");
                c.text += e.text;
                c.tokens.insert(c.tokens.end(), e.tokens.begin(), e.tokens.end());
                for (auto& lp : e.logprobs) c.logprobs.push_back(std::move(lp));
                if (e.kind == SeqEvent::Kind::Done) {
                    c.done = true;
                    c.final = std::move(e);
                    ++done;
                }
            }
            if (done < n && closed && closed())
                throw ApiError(499, "the client closed the connection", "", "client_closed");
        }
    } catch (...) {
        job->cancel();
        throw;
    }
    return out;
}

// Pulls a Job's events and turns them into SSE frames.
class JobStream : public EventStream {
public:
    JobStream(std::shared_ptr<Job> job, size_t n) : job_(std::move(job)), n_(n) {}
    ~JobStream() override {
        if (!finished_) job_->cancel();
    }
    bool next(std::string& out, std::chrono::milliseconds wait) override {
        if (finished_) return false;
        if (!started_) {
            started_ = true;
            start(out);
            if (!out.empty()) return true;
        }
        evs_.clear();
        job_->take(evs_, wait);
        for (SeqEvent& e : evs_) {
            if (e.kind == SeqEvent::Kind::Error) {
                out += sse(error_frame_body(e.error));
                finished_ = true;
                job_->cancel();
                return false;
            }
            on_event(e, out);
            if (e.kind == SeqEvent::Kind::Done) ++done_;
        }
        if (done_ == n_) {
            end(out);
            finished_ = true;
            return false;
        }
        return true;
    }
    void cancel() override { job_->cancel(); }

protected:
    virtual void start(std::string&) {}
    virtual void on_event(SeqEvent& e, std::string& out) = 0;
    virtual void end(std::string& out) = 0;

private:
    std::shared_ptr<Job> job_;
    size_t n_, done_ = 0;
    bool started_ = false, finished_ = false;
    std::vector<SeqEvent> evs_;
};

class ChatStream final : public JobStream {
public:
    ChatStream(std::shared_ptr<Job> job, size_t n, const Tokenizer& tok, std::string model, bool include_usage,
               bool logprobs)
        : JobStream(std::move(job), n), tok_(tok), id_(random_id("chatcmpl-")), created_(unix_now()),
          model_(std::move(model)), include_usage_(include_usage), logprobs_(logprobs), pending_lp_(n) {}

private:
    Json chunk(int index, Json delta, const Json& finish, const Json& logprobs) const {
        Json c = response_head(id_, "chat.completion.chunk", created_, model_);
        Json ch;
        ch["index"] = index;
        ch["delta"] = std::move(delta);
        ch["logprobs"] = logprobs;
        ch["finish_reason"] = finish;
        c["choices"] = Json::array({ch});
        if (include_usage_) c["usage"] = nullptr;
        return c;
    }
    void content(int index, const std::string& text, std::string& out) {
        auto& lps = pending_lp_[static_cast<size_t>(index)];
        if (text.empty() && (lps.empty() || !logprobs_)) return;
        Json lp = nullptr;
        if (logprobs_) {
            Json arr = Json::array();
            for (const auto& l : lps) arr.push_back(chat_logprob(tok_, l));
            lp = Json{{"content", arr}, {"refusal", nullptr}};
            lps.clear();
        }
        out += sse(chunk(index, Json{{"content", text}}, nullptr, lp));
    }
    void start(std::string& out) override {
        for (size_t i = 0; i < pending_lp_.size(); ++i)
            out += sse(chunk(static_cast<int>(i), Json{{"role", "assistant"}, {"content", ""}}, nullptr, nullptr));
    }
    void on_event(SeqEvent& e, std::string& out) override {
        auto& lps = pending_lp_[static_cast<size_t>(e.index)];
        for (auto& l : e.logprobs) lps.push_back(std::move(l));
        content(e.index, e.text, out);
        if (e.kind != SeqEvent::Kind::Done) return;
        if (logprobs_ && !lps.empty()) content(e.index, "", out);
        out += sse(chunk(e.index, Json::object(), e.finish_reason, nullptr));
        prompt_ = e.n_prompt;
        cached_ = e.n_cached;
        completion_ += e.n_generated;
    }
    void end(std::string& out) override {
        if (include_usage_) {
            Json c = response_head(id_, "chat.completion.chunk", created_, model_);
            c["choices"] = Json::array();
            c["usage"] = usage_json(prompt_, completion_, cached_);
            out += sse(c);
        }
        out += "data: [DONE]\n\n";
    }

    const Tokenizer& tok_;
    std::string id_;
    int64_t created_;
    std::string model_;
    bool include_usage_, logprobs_;
    std::vector<std::vector<TokenLogprob>> pending_lp_;
    int64_t prompt_ = 0, cached_ = 0, completion_ = 0;
};

struct PromptInfo {
    std::vector<int32_t> ids;
    std::string text;       // for echo
    bool bos_added = false;
};

class CompletionStream final : public JobStream {
public:
    CompletionStream(std::shared_ptr<Job> job, const Tokenizer& tok, std::string model, const GenParams& g,
                     std::vector<PromptInfo> prompts)
        : JobStream(std::move(job), prompts.size() * static_cast<size_t>(g.n)), tok_(tok), id_(random_id("cmpl-")),
          created_(unix_now()), model_(std::move(model)), g_(g), prompts_(std::move(prompts)),
          lp_(prompts_.size() * static_cast<size_t>(g.n)) {
        for (const auto& p : prompts_) prompt_tokens_ += static_cast<int64_t>(p.ids.size());
    }

private:
    Json chunk(int index, const std::string& text, const Json& logprobs, const Json& finish) const {
        Json c = response_head(id_, "text_completion", created_, model_);
        Json ch;
        ch["text"] = text;
        ch["index"] = index;
        ch["logprobs"] = logprobs;
        ch["finish_reason"] = finish;
        c["choices"] = Json::array({ch});
        if (g_.include_usage) c["usage"] = nullptr;
        return c;
    }
    void start(std::string& out) override {
        if (!g_.echo) return;
        for (size_t i = 0; i < lp_.size(); ++i) {
            const PromptInfo& p = prompts_[i / static_cast<size_t>(g_.n)];
            lp_[i].offset = p.text.size();
            if (!p.text.empty()) out += sse(chunk(static_cast<int>(i), p.text, nullptr, nullptr));
        }
    }
    void on_event(SeqEvent& e, std::string& out) override {
        Json lp = nullptr;
        if (g_.logprobs >= 0 && !e.tokens.empty()) {
            LegacyLogprobs l;
            l.offset = lp_[static_cast<size_t>(e.index)].offset;
            for (size_t k = 0; k < e.tokens.size(); ++k)
                l.add(tok_, e.tokens[k], k < e.logprobs.size() ? &e.logprobs[k] : nullptr);
            lp_[static_cast<size_t>(e.index)].offset = l.offset;
            lp = l.json();
        }
        const bool done = e.kind == SeqEvent::Kind::Done;
        if (!e.text.empty() || !lp.is_null()) out += sse(chunk(e.index, e.text, lp, nullptr));
        if (done) {
            out += sse(chunk(e.index, "", nullptr, e.finish_reason));
            completion_ += e.n_generated;
            cached_ += e.n_cached;
        }
    }
    void end(std::string& out) override {
        if (g_.include_usage) {
            Json c = response_head(id_, "text_completion", created_, model_);
            c["choices"] = Json::array();
            c["usage"] = usage_json(prompt_tokens_, completion_, cached_);
            out += sse(c);
        }
        out += "data: [DONE]\n\n";
    }

    const Tokenizer& tok_;
    std::string id_;
    int64_t created_;
    std::string model_;
    GenParams g_;
    std::vector<PromptInfo> prompts_;
    std::vector<LegacyLogprobs> lp_;
    int64_t prompt_tokens_ = 0, completion_ = 0, cached_ = 0;
};

Json native_final(const Tokenizer& tok, const std::string& model, const PromptInfo& p, const Choice& c,
                  const SamplingParams& sp, int n_probs) {
    const SeqEvent& f = c.final;
    Json r;
    r["index"] = f.index;
    r["content"] = c.text;
    r["tokens"] = c.tokens;
    r["id_slot"] = -1;
    r["stop"] = true;
    r["model"] = model;
    r["tokens_predicted"] = f.n_generated;
    r["tokens_evaluated"] = f.n_prompt;
    Json gs;
    gs["temperature"] = decimal(sp.temperature);
    gs["top_k"] = sp.top_k;
    gs["top_p"] = decimal(sp.top_p);
    gs["min_p"] = decimal(sp.min_p);
    gs["repeat_penalty"] = decimal(sp.repetition_penalty);
    gs["presence_penalty"] = decimal(sp.presence_penalty);
    gs["frequency_penalty"] = decimal(sp.frequency_penalty);
    r["generation_settings"] = gs;
    r["prompt"] = p.text;
    r["has_new_line"] = c.text.find('\n') != std::string::npos;
    r["truncated"] = false;
    const bool word = !f.stop_word.empty();
    r["stop_type"] = word ? "word" : f.finish_reason == "stop" ? "eos" : "limit";
    r["stopping_word"] = f.stop_word;
    r["tokens_cached"] = f.n_cached + f.n_generated;
    Json t;
    const int64_t evaluated = f.n_prompt - f.n_cached;
    t["prompt_n"] = evaluated;
    t["prompt_ms"] = f.prompt_ms;
    t["prompt_per_token_ms"] = evaluated > 0 ? f.prompt_ms / static_cast<double>(evaluated) : 0.0;
    t["prompt_per_second"] = f.prompt_ms > 0 ? 1e3 * static_cast<double>(evaluated) / f.prompt_ms : 0.0;
    t["predicted_n"] = f.n_generated;
    t["predicted_ms"] = f.gen_ms;
    t["predicted_per_token_ms"] = f.n_generated > 0 ? f.gen_ms / f.n_generated : 0.0;
    t["predicted_per_second"] = f.gen_ms > 0 ? 1e3 * f.n_generated / f.gen_ms : 0.0;
    r["timings"] = t;
    if (n_probs > 0) {
        Json arr = Json::array();
        for (const auto& lp : c.logprobs) arr.push_back(native_logprob(tok, lp));
        r["completion_probabilities"] = arr;
    }
    return r;
}

class NativeStream final : public JobStream {
public:
    NativeStream(std::shared_ptr<Job> job, const Tokenizer& tok, std::string model, const GenParams& g,
                 std::vector<PromptInfo> prompts)
        : JobStream(std::move(job), prompts.size()), tok_(tok), model_(std::move(model)), g_(g),
          prompts_(std::move(prompts)), choices_(prompts_.size()) {}

private:
    void on_event(SeqEvent& e, std::string& out) override {
        Choice& c = choices_[static_cast<size_t>(e.index)];
        c.text += e.text;
        c.tokens.insert(c.tokens.end(), e.tokens.begin(), e.tokens.end());
        if (e.kind == SeqEvent::Kind::Done) {
            c.final = e;
            Choice last;  // the final frame carries the remaining text and the totals
            last.text = e.text;
            last.tokens = c.tokens;
            last.final = e;
            Json r = native_final(tok_, model_, prompts_[static_cast<size_t>(e.index)], last, g_.sampling, 0);
            out += sse(r);
            return;
        }
        if (e.text.empty() && (g_.logprobs <= 0 || e.logprobs.empty())) return;
        Json r;
        r["index"] = e.index;
        r["content"] = e.text;
        r["tokens"] = e.tokens;
        r["stop"] = false;
        if (g_.logprobs > 0) {
            Json arr = Json::array();
            for (const auto& lp : e.logprobs) arr.push_back(native_logprob(tok_, lp));
            r["completion_probabilities"] = arr;
        }
        out += sse(r);
    }
    void end(std::string&) override {}  // llama.cpp's native stream has no [DONE]

    const Tokenizer& tok_;
    std::string model_;
    GenParams g_;
    std::vector<PromptInfo> prompts_;
    std::vector<Choice> choices_;
};

}  // namespace

// ---------------------------------------------------------------------------------------------

std::string base64_floats(const std::vector<float>& v) {
    static const char* const kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string bytes(v.size() * 4, '\0');
    for (size_t i = 0; i < v.size(); ++i) {
        uint32_t u;
        std::memcpy(&u, &v[i], 4);
        for (int b = 0; b < 4; ++b) bytes[4 * i + b] = static_cast<char>((u >> (8 * b)) & 0xFF);  // little-endian
    }
    std::string out;
    out.reserve((bytes.size() + 2) / 3 * 4);
    for (size_t i = 0; i < bytes.size(); i += 3) {
        const uint32_t b0 = static_cast<unsigned char>(bytes[i]);
        const uint32_t b1 = i + 1 < bytes.size() ? static_cast<unsigned char>(bytes[i + 1]) : 0;
        const uint32_t b2 = i + 2 < bytes.size() ? static_cast<unsigned char>(bytes[i + 2]) : 0;
        const uint32_t w = (b0 << 16) | (b1 << 8) | b2;
        out += kAlphabet[(w >> 18) & 63];
        out += kAlphabet[(w >> 12) & 63];
        out += i + 1 < bytes.size() ? kAlphabet[(w >> 6) & 63] : '=';
        out += i + 2 < bytes.size() ? kAlphabet[w & 63] : '=';
    }
    return out;
}

Api::Api(const Model& model, Scheduler& sched, Metrics& metrics, ApiOptions opt)
    : model_(model), sched_(sched), metrics_(metrics), opt_(std::move(opt)), created_(unix_now()) {
    opt_.limits.n_vocab = model_.tokenizer().size();
    std::string name = opt_.chat_template;
    if (name.empty()) name = model_.config().chat_template;
    if (name.empty()) name = template_for_vocab_size(model_.tokenizer().size());
    if (!name.empty()) tmpl_ = make_chat_template(name);
    opt_.defaults.validate(model_.tokenizer().size());
}

std::vector<int32_t> Api::tokenize_prompt(const PromptInput& p, const std::string& param) const {
    const Tokenizer& tok = model_.tokenizer();
    std::vector<int32_t> ids;
    if (p.starts_with_text() && tok.vocab().add_bos) ids.push_back(tok.bos());
    for (const auto& piece : p.pieces) {
        if (!piece.is_text) {
            ids.insert(ids.end(), piece.ids.begin(), piece.ids.end());
            continue;
        }
        try {
            auto e = tok.encode(piece.text, Tokenizer::Options{false, false, true});
            ids.insert(ids.end(), e.begin(), e.end());
        } catch (const Error& e) {
            throw ApiError(400, fmt::format("'{}' cannot be tokenized: {}", param, e.what()), param);
        }
    }
    if (ids.empty()) throw ApiError(400, fmt::format("'{}' gives no tokens", param), param);
    return ids;
}

int Api::max_new_for(int64_t n_prompt, std::optional<int64_t> requested, int def, const std::string& param) const {
    const int64_t n_ctx = sched_.n_ctx();
    if (n_prompt > n_ctx)
        throw ApiError(400,
                       fmt::format("this model's context is {} tokens per request, but the prompt has {} tokens", n_ctx,
                                   n_prompt),
                       param, "context_length_exceeded");
    const int64_t room = n_ctx - n_prompt + 1;  // the last generated token needs no cache position
    int64_t want = requested ? (*requested < 0 ? room : *requested) : def;
    return static_cast<int>(std::min(want, room));
}

SeqSpec Api::base_spec(const GenParams& g) const {
    SeqSpec s;
    s.sampling = g.sampling;
    if (g.ignore_eos && model_.tokenizer().eos() >= 0)
        s.sampling.logit_bias.emplace_back(model_.tokenizer().eos(), -std::numeric_limits<float>::infinity());
    s.stop = g.stop;
    s.grammar = g.grammar;
    s.top_logprobs = g.logprobs;
    s.cache_prompt = g.cache_prompt;
    return s;
}

std::shared_ptr<Job> Api::submit(std::vector<SeqSpec> specs) const {
    auto job = std::make_shared<Job>();
    try {
        sched_.submit(job, std::move(specs));
    } catch (const QueueFull& e) {
        throw ApiError(503, e.what(), "", "queue_full");
    }
    return job;
}

Reply Api::chat(const Json& body, const ClosedFn& closed) {
    ChatRequest req = parse_chat(body, opt_.defaults, opt_.limits);
    if (!tmpl_)
        throw ApiError(400,
                       "this model has no chat template (its vocabulary is neither Chinese-Alpaca's nor Alpaca-2's); "
                       "use /v1/completions or start the server with --chat-template",
                       "messages", "no_chat_template");
    const Tokenizer& tok = model_.tokenizer();
    std::vector<int32_t> ids;
    try {
        ids = tokenize_parts(tok, tmpl_->render(req.messages, tok.bos(), tok.eos()));
    } catch (const Error& e) {
        throw ApiError(400, e.what(), "messages");
    }
    const int max_new = max_new_for(static_cast<int64_t>(ids.size()), req.gen.max_tokens, opt_.chat_max_tokens, "messages");
    std::vector<SeqSpec> specs;
    for (int j = 0; j < req.gen.n; ++j) {
        SeqSpec s = base_spec(req.gen);
        s.prompt = ids;
        s.max_new = max_new;
        s.strip_leading_space = true;
        s.index = j;
        if (s.sampling.has_seed) s.sampling.seed += static_cast<uint64_t>(j);
        specs.push_back(std::move(s));
    }
    if (req.gen.stream) {
        auto job = submit(std::move(specs));
        return Reply{200, {}, std::make_shared<ChatStream>(job, static_cast<size_t>(req.gen.n), tok, opt_.model_id,
                                                           req.gen.include_usage, req.gen.logprobs >= 0)};
    }
    auto results = run_blocking(sched_, std::move(specs), closed);
    Json r = response_head(random_id("chatcmpl-"), "chat.completion", unix_now(), opt_.model_id);
    Json choices = Json::array();
    int64_t completion = 0;
    for (size_t i = 0; i < results.size(); ++i) {
        const Choice& c = results[i];
        Json ch;
        ch["index"] = i;
        ch["message"] = Json{{"role", "assistant"}, {"content", c.text}, {"refusal", nullptr}};
        if (req.gen.logprobs >= 0) {
            Json arr = Json::array();
            for (const auto& lp : c.logprobs) arr.push_back(chat_logprob(tok, lp));
            ch["logprobs"] = Json{{"content", arr}, {"refusal", nullptr}};
        } else {
            ch["logprobs"] = nullptr;
        }
        ch["finish_reason"] = c.final.finish_reason;
        choices.push_back(ch);
        completion += c.final.n_generated;
    }
    r["choices"] = choices;
    r["usage"] = usage_json(static_cast<int64_t>(ids.size()), completion, results.empty() ? 0 : results[0].final.n_cached);
    return Reply{200, r, nullptr};
}

Reply Api::completions(const Json& body, const ClosedFn& closed) {
    CompletionRequest req = parse_completion(body, opt_.defaults, opt_.limits);
    const Tokenizer& tok = model_.tokenizer();
    std::vector<PromptInfo> prompts;
    std::vector<SeqSpec> specs;
    for (size_t p = 0; p < req.prompts.size(); ++p) {
        const std::string param = req.prompt_is_list ? fmt::format("prompt[{}]", p) : "prompt";
        PromptInfo info;
        info.ids = tokenize_prompt(req.prompts[p], param);
        info.bos_added = req.prompts[p].starts_with_text() && tok.vocab().add_bos;
        if (req.prompts[p].pieces.size() == 1 && req.prompts[p].pieces[0].is_text)
            info.text = req.prompts[p].pieces[0].text;
        else
            info.text = tok.decode(info.ids);
        const int max_new = max_new_for(static_cast<int64_t>(info.ids.size()), req.gen.max_tokens,
                                        opt_.completion_max_tokens, param);
        for (int j = 0; j < req.gen.n; ++j) {
            SeqSpec s = base_spec(req.gen);
            s.prompt = info.ids;
            s.max_new = max_new;
            s.index = static_cast<int>(p) * req.gen.n + j;
            s.prompt_logprobs = req.gen.echo && req.gen.logprobs >= 0;
            if (s.sampling.has_seed) s.sampling.seed += static_cast<uint64_t>(j);
            specs.push_back(std::move(s));
        }
        prompts.push_back(std::move(info));
    }
    if (req.gen.stream) {
        auto job = submit(std::move(specs));
        return Reply{200, {}, std::make_shared<CompletionStream>(job, tok, opt_.model_id, req.gen, std::move(prompts))};
    }
    auto results = run_blocking(sched_, std::move(specs), closed);
    Json r = response_head(random_id("cmpl-"), "text_completion", unix_now(), opt_.model_id);
    Json choices = Json::array();
    int64_t prompt_tokens = 0, completion = 0, cached = 0;
    for (const auto& p : prompts) prompt_tokens += static_cast<int64_t>(p.ids.size());
    for (size_t i = 0; i < results.size(); ++i) {
        const Choice& c = results[i];
        const PromptInfo& p = prompts[i / static_cast<size_t>(req.gen.n)];
        Json ch;
        ch["text"] = req.gen.echo ? p.text + c.text : c.text;
        ch["index"] = i;
        if (req.gen.logprobs >= 0) {
            LegacyLogprobs l;
            if (req.gen.echo) {
                const size_t first = p.bos_added ? 1 : 0;
                for (size_t k = first; k < p.ids.size(); ++k)
                    l.add(tok, p.ids[k], k >= 1 && k - 1 < c.final.prompt_logprobs.size() ? &c.final.prompt_logprobs[k - 1] : nullptr);
                l.offset = p.text.size();
            }
            for (size_t k = 0; k < c.tokens.size(); ++k) l.add(tok, c.tokens[k], k < c.logprobs.size() ? &c.logprobs[k] : nullptr);
            ch["logprobs"] = l.json();
        } else {
            ch["logprobs"] = nullptr;
        }
        ch["finish_reason"] = c.final.finish_reason;
        choices.push_back(ch);
        completion += c.final.n_generated;
        if (i % static_cast<size_t>(req.gen.n) == 0) cached += c.final.n_cached;
    }
    r["choices"] = choices;
    r["usage"] = usage_json(prompt_tokens, completion, cached);
    return Reply{200, r, nullptr};
}

Reply Api::native_completion(const Json& body, const ClosedFn& closed) {
    CompletionRequest req = parse_native_completion(body, opt_.defaults, opt_.limits);
    const Tokenizer& tok = model_.tokenizer();
    std::vector<PromptInfo> prompts;
    std::vector<SeqSpec> specs;
    for (size_t p = 0; p < req.prompts.size(); ++p) {
        const std::string param = req.prompt_is_list ? fmt::format("prompt[{}]", p) : "prompt";
        PromptInfo info;
        info.ids = tokenize_prompt(req.prompts[p], param);
        info.text = req.prompts[p].pieces.size() == 1 && req.prompts[p].pieces[0].is_text ? req.prompts[p].pieces[0].text
                                                                                           : tok.decode(info.ids);
        SeqSpec s = base_spec(req.gen);
        s.prompt = info.ids;
        s.max_new = max_new_for(static_cast<int64_t>(info.ids.size()), req.gen.max_tokens.value_or(-1), 0, param);
        s.index = static_cast<int>(p);
        specs.push_back(std::move(s));
        prompts.push_back(std::move(info));
    }
    if (req.gen.stream) {
        auto job = submit(std::move(specs));
        return Reply{200, {}, std::make_shared<NativeStream>(job, tok, opt_.model_id, req.gen, std::move(prompts))};
    }
    auto results = run_blocking(sched_, std::move(specs), closed);
    Json out = Json::array();
    for (size_t i = 0; i < results.size(); ++i)
        out.push_back(native_final(tok, opt_.model_id, prompts[i], results[i], req.gen.sampling, req.gen.logprobs));
    return Reply{200, req.prompt_is_list ? out : out[0], nullptr};
}

Reply Api::embeddings(const Json& body, const ClosedFn& closed) {
    EmbeddingRequest req = parse_embeddings(body, model_.config().n_embd, opt_.limits);
    std::vector<SeqSpec> specs;
    int64_t n_tokens = 0;
    for (size_t i = 0; i < req.inputs.size(); ++i) {
        const std::string param = req.inputs.size() > 1 ? fmt::format("input[{}]", i) : "input";
        SeqSpec s;
        s.prompt = tokenize_prompt(req.inputs[i], param);
        if (static_cast<int64_t>(s.prompt.size()) > sched_.n_ctx())
            throw ApiError(400,
                           fmt::format("this model's context is {} tokens per request, but {} has {} tokens",
                                       sched_.n_ctx(), param, s.prompt.size()),
                           param, "context_length_exceeded");
        s.embedding = true;
        s.cache_prompt = false;
        s.max_new = 0;
        s.index = static_cast<int>(i);
        n_tokens += static_cast<int64_t>(s.prompt.size());
        specs.push_back(std::move(s));
    }
    auto results = run_blocking(sched_, std::move(specs), closed);
    Json data = Json::array();
    for (size_t i = 0; i < results.size(); ++i) {
        Json e;
        e["object"] = "embedding";
        e["index"] = i;
        if (req.base64)
            e["embedding"] = base64_floats(results[i].final.embedding);
        else
            e["embedding"] = results[i].final.embedding;
        data.push_back(e);
    }
    Json r;
    r["object"] = "list";
    r["data"] = data;
    r["model"] = opt_.model_id;
    r["usage"] = Json{{"prompt_tokens", n_tokens}, {"total_tokens", n_tokens}};
    return Reply{200, r, nullptr};
}

Json Api::tokenize(const Json& body) const {
    TokenizeRequest req = parse_tokenize(body);
    const Tokenizer& tok = model_.tokenizer();
    std::vector<int32_t> ids;
    try {
        ids = tok.encode(req.content, Tokenizer::Options{req.add_special && tok.vocab().add_bos, false, req.parse_special});
    } catch (const Error& e) {
        throw ApiError(400, fmt::format("'content' cannot be tokenized: {}", e.what()), "content");
    }
    Json arr = Json::array();
    for (int32_t id : ids) {
        if (!req.with_pieces) {
            arr.push_back(id);
            continue;
        }
        const std::string piece = tok.token_bytes(id);
        Json e;
        e["id"] = id;
        // a piece that is not valid UTF-8 (half of a Chinese character) is given as its bytes
        e["piece"] = utf8::is_valid(piece) ? Json(piece) : byte_list(piece);
        arr.push_back(e);
    }
    return Json{{"tokens", arr}};
}

Json Api::detokenize(const Json& body) const {
    auto ids = parse_detokenize(body, opt_.limits);
    return Json{{"content", model_.tokenizer().decode(ids, false)}};
}

Json Api::models() const {
    const LlamaConfig& c = model_.config();
    Json m;
    m["id"] = opt_.model_id;
    m["object"] = "model";
    m["created"] = created_;
    m["owned_by"] = "calpaca";
    m["meta"] = Json{{"n_vocab", c.n_vocab},   {"n_ctx_train", c.n_ctx_train}, {"n_embd", c.n_embd},
                     {"n_layer", c.n_layer},   {"n_ctx_slot", sched_.n_ctx()}, {"path", model_.path()}};
    return Json{{"object", "list"}, {"data", Json::array({m})}};
}

Json Api::health() const {
    const int busy = metrics_.slots_busy.load();
    return Json{{"status", "ok"}, {"slots_idle", sched_.n_slots() - busy}, {"slots_processing", busy}};
}

Json Api::props() const {
    const SamplingParams& d = opt_.defaults;
    Json gs;
    gs["temperature"] = decimal(d.temperature);
    gs["top_p"] = decimal(d.top_p);
    gs["top_k"] = d.top_k;
    gs["min_p"] = decimal(d.min_p);
    gs["repetition_penalty"] = decimal(d.repetition_penalty);
    gs["presence_penalty"] = decimal(d.presence_penalty);
    gs["frequency_penalty"] = decimal(d.frequency_penalty);
    gs["max_tokens"] = opt_.chat_max_tokens;
    Json r;
    r["default_generation_settings"] = gs;
    r["total_slots"] = sched_.n_slots();
    r["n_ctx"] = sched_.n_ctx();
    r["model"] = opt_.model_id;
    r["chat_template"] = tmpl_ ? tmpl_->name() : "";
    r["default_system_prompt"] = tmpl_ ? tmpl_->default_system() : "";
    r["build_info"] = kFingerprint;
    return r;
}

}  // namespace calpaca::serve
