#include "calpaca/serve/protocol.h"

#include <fmt/format.h>

#include <cmath>
#include <limits>

#include "calpaca/serve/json_grammar.h"

namespace calpaca::serve {

namespace {

std::string default_type(int status) {
    switch (status) {
        case 400:
        case 413: return "invalid_request_error";
        case 401: return "authentication_error";
        case 403: return "permission_error";
        case 404: return "not_found_error";
        case 503: return "unavailable_error";
        default: return "server_error";
    }
}

[[noreturn]] void bad(const std::string& param, const std::string& msg, const std::string& code = "invalid_value") {
    throw ApiError(400, msg, param, code);
}

const Json* field(const Json& b, const char* key) {
    auto it = b.find(key);
    if (it == b.end() || it->is_null()) return nullptr;
    return &*it;
}

std::optional<double> opt_number(const Json& b, const char* key) {
    const Json* v = field(b, key);
    if (!v) return std::nullopt;
    if (!v->is_number()) bad(key, fmt::format("'{}' must be a number", key), "invalid_type");
    const double d = v->get<double>();
    if (!std::isfinite(d)) bad(key, fmt::format("'{}' must be a finite number", key));
    return d;
}

std::optional<int64_t> opt_int(const Json& b, const char* key) {
    const Json* v = field(b, key);
    if (!v) return std::nullopt;
    if (v->is_number_integer()) return v->get<int64_t>();
    if (v->is_number_float()) {
        const double d = v->get<double>();
        if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e15) return static_cast<int64_t>(d);
    }
    bad(key, fmt::format("'{}' must be an integer", key), "invalid_type");
}

std::optional<bool> opt_bool(const Json& b, const char* key) {
    const Json* v = field(b, key);
    if (!v) return std::nullopt;
    if (!v->is_boolean()) bad(key, fmt::format("'{}' must be a boolean", key), "invalid_type");
    return v->get<bool>();
}

std::optional<std::string> opt_string(const Json& b, const char* key) {
    const Json* v = field(b, key);
    if (!v) return std::nullopt;
    if (!v->is_string()) bad(key, fmt::format("'{}' must be a string", key), "invalid_type");
    return v->get<std::string>();
}

void check_range(const char* key, double v, double lo, double hi) {
    if (!(v >= lo && v <= hi)) bad(key, fmt::format("'{}' must be between {} and {}, got {}", key, lo, hi, v));
}

constexpr size_t kMaxLogitBias = 1024;
constexpr size_t kMaxStopBytes = 1024;

void parse_stop(const Json& b, GenParams& g, const ParseLimits& lim) {
    const Json* v = field(b, "stop");
    if (!v) return;
    auto add = [&](const std::string& s, const std::string& param) {
        if (s.size() > kMaxStopBytes) bad(param, fmt::format("a stop string may be at most {} bytes", kMaxStopBytes));
        if (!s.empty()) g.stop.push_back(s);
    };
    if (v->is_string()) {
        add(v->get<std::string>(), "stop");
        return;
    }
    if (!v->is_array()) bad("stop", "'stop' must be a string or an array of strings", "invalid_type");
    if (v->size() > lim.max_stops) bad("stop", fmt::format("'stop' may have at most {} strings", lim.max_stops));
    for (size_t i = 0; i < v->size(); ++i) {
        const Json& s = (*v)[i];
        if (!s.is_string()) bad(fmt::format("stop[{}]", i), "'stop' must be a string or an array of strings", "invalid_type");
        add(s.get<std::string>(), fmt::format("stop[{}]", i));
    }
}

int32_t token_id(const Json& v, const std::string& param, const ParseLimits& lim) {
    if (!v.is_number_integer()) bad(param, "a token id must be an integer", "invalid_type");
    const int64_t id = v.get<int64_t>();
    if (id < 0 || static_cast<size_t>(id) >= lim.n_vocab)
        bad(param, fmt::format("token id {} is outside the vocabulary [0, {})", id, lim.n_vocab));
    return static_cast<int32_t>(id);
}

float bias_value(const Json& v, const std::string& param) {
    if (v.is_boolean()) {
        if (v.get<bool>()) bad(param, "a logit bias must be a number, or false to ban the token");
        return -std::numeric_limits<float>::infinity();
    }
    if (!v.is_number()) bad(param, "a logit bias must be a number between -100 and 100", "invalid_type");
    const double d = v.get<double>();
    if (!(d >= -100 && d <= 100)) bad(param, fmt::format("a logit bias must be between -100 and 100, got {}", d));
    // OpenAI: -100 bans the token
    return d <= -100 ? -std::numeric_limits<float>::infinity() : static_cast<float>(d);
}

void parse_logit_bias(const Json& b, SamplingParams& sp, const ParseLimits& lim) {
    const Json* v = field(b, "logit_bias");
    if (!v) return;
    if (v->size() > kMaxLogitBias)
        bad("logit_bias", fmt::format("'logit_bias' may have at most {} entries", kMaxLogitBias));
    if (v->is_object()) {  // OpenAI: {"<token id>": bias}
        for (const auto& [k, bias] : v->items()) {
            const std::string param = "logit_bias." + k;
            size_t used = 0;
            long long id = -1;
            try {
                id = std::stoll(k, &used);
            } catch (const std::exception&) {
                used = 0;
            }
            if (used != k.size() || k.empty()) bad(param, fmt::format("logit_bias keys must be token ids, got '{}'", k));
            if (id < 0 || static_cast<size_t>(id) >= lim.n_vocab)
                bad(param, fmt::format("token id {} is outside the vocabulary [0, {})", id, lim.n_vocab));
            sp.logit_bias.emplace_back(static_cast<int32_t>(id), bias_value(bias, param));
        }
        return;
    }
    if (v->is_array()) {  // llama.cpp: [[id, bias], ...]; bias false bans
        for (size_t i = 0; i < v->size(); ++i) {
            const Json& e = (*v)[i];
            const std::string param = fmt::format("logit_bias[{}]", i);
            if (!e.is_array() || e.size() != 2) bad(param, "logit_bias entries must be [token id, bias] pairs");
            sp.logit_bias.emplace_back(token_id(e[0], param, lim), bias_value(e[1], param));
        }
        return;
    }
    bad("logit_bias", "'logit_bias' must be an object mapping token ids to biases", "invalid_type");
}

// Sampling fields shared by every generation endpoint (OpenAI names plus llama.cpp's aliases).
void parse_sampling(const Json& b, GenParams& g, const ParseLimits& lim) {
    SamplingParams& sp = g.sampling;
    if (auto t = opt_number(b, "temperature")) {
        check_range("temperature", *t, 0, 2);
        sp.temperature = static_cast<float>(*t);
    }
    if (auto v = opt_number(b, "top_p")) {
        check_range("top_p", *v, 0, 1);
        sp.top_p = static_cast<float>(*v);
    }
    if (auto v = opt_int(b, "top_k")) {
        if (*v < 0) bad("top_k", "'top_k' must be >= 0 (0 disables it)");
        sp.top_k = static_cast<int>(std::min<int64_t>(*v, std::numeric_limits<int>::max()));
    }
    if (auto v = opt_number(b, "min_p")) {
        check_range("min_p", *v, 0, 1);
        sp.min_p = static_cast<float>(*v);
    }
    for (const char* key : {"repetition_penalty", "repeat_penalty"}) {
        if (auto v = opt_number(b, key)) {
            if (!(*v > 0 && *v <= 10)) bad(key, fmt::format("'{}' must be in (0, 10] (1 disables it), got {}", key, *v));
            sp.repetition_penalty = static_cast<float>(*v);
        }
    }
    if (auto v = opt_int(b, "repeat_last_n")) {  // llama.cpp: 0 disables, -1 = the whole context
        if (*v < -1) bad("repeat_last_n", "'repeat_last_n' must be >= -1");
        if (*v == 0)
            sp.repetition_penalty = 1.0f;
        else
            sp.repetition_window = *v < 0 ? 0 : static_cast<int>(std::min<int64_t>(*v, 1 << 30));
    }
    if (auto v = opt_number(b, "presence_penalty")) {
        check_range("presence_penalty", *v, -2, 2);
        sp.presence_penalty = static_cast<float>(*v);
    }
    if (auto v = opt_number(b, "frequency_penalty")) {
        check_range("frequency_penalty", *v, -2, 2);
        sp.frequency_penalty = static_cast<float>(*v);
    }
    if (auto v = opt_int(b, "seed")) {
        if (*v >= 0) {
            sp.seed = static_cast<uint64_t>(*v);
            sp.has_seed = true;
        } else {
            sp.has_seed = false;  // -1 (llama.cpp): random
        }
    }
    parse_logit_bias(b, sp, lim);
    parse_stop(b, g, lim);
    if (auto v = opt_bool(b, "stream")) g.stream = *v;
    if (const Json* so = field(b, "stream_options")) {
        if (!so->is_object()) bad("stream_options", "'stream_options' must be an object", "invalid_type");
        auto it = so->find("include_usage");
        if (it != so->end() && !it->is_null()) {
            if (!it->is_boolean()) bad("stream_options.include_usage", "'include_usage' must be a boolean", "invalid_type");
            g.include_usage = it->get<bool>();
        }
    }
    if (auto v = opt_bool(b, "ignore_eos")) g.ignore_eos = *v;
    if (auto v = opt_bool(b, "cache_prompt")) g.cache_prompt = *v;
    if (auto v = opt_string(b, "user")) (void)v;  // accepted, not used
    if (auto v = opt_string(b, "model")) (void)v;  // one model is served: any name is accepted
    if (const Json* rf = field(b, "response_format")) {
        g.grammar = parse_response_format(*rf, "response_format");
        g.response_format = (*rf)["type"].get<std::string>();
    }
    if (const Json* tools = field(b, "tools")) {
        if (!tools->is_array()) bad("tools", "'tools' must be an array", "invalid_type");
        if (!tools->empty()) bad("tools", "tool calling is not supported by this server", "unsupported_parameter");
    }
    if (const Json* fns = field(b, "functions")) {
        if (!fns->is_array() || !fns->empty())
            bad("functions", "function calling is not supported by this server", "unsupported_parameter");
    }
    try {
        sp.validate(lim.n_vocab);
    } catch (const std::exception& e) {
        bad("", e.what());
    }
}

void parse_n(const Json& b, GenParams& g, const ParseLimits& lim) {
    if (auto v = opt_int(b, "n")) {
        if (*v < 1 || *v > lim.max_n) bad("n", fmt::format("'n' must be between 1 and {}, got {}", lim.max_n, *v));
        g.n = static_cast<int>(*v);
    }
}

void parse_max_tokens(const Json& b, GenParams& g, int64_t min_value) {
    for (const char* key : {"max_tokens", "max_completion_tokens", "n_predict"}) {
        auto v = opt_int(b, key);
        if (!v) continue;
        const bool native = std::string(key) == "n_predict";
        if (native && *v == -1) {
            g.max_tokens = -1;
            continue;
        }
        if (*v < min_value)
            bad(key, fmt::format("'{}' must be >= {}{}, got {}", key, min_value, native ? " (or -1)" : "", *v));
        g.max_tokens = *v;
    }
}

// A text or token-id prompt (OpenAI: string | number[]), or a llama.cpp mixed array.
PromptInput prompt_of(const Json& v, const std::string& param, const ParseLimits& lim, bool allow_mixed) {
    PromptInput p;
    if (v.is_string()) {
        p.pieces.push_back({true, v.get<std::string>(), {}});
        return p;
    }
    if (!v.is_array() || v.empty())
        bad(param, "a prompt must be a string or a non-empty array of token ids", "invalid_type");
    for (size_t i = 0; i < v.size(); ++i) {
        const Json& e = v[i];
        const std::string ep = fmt::format("{}[{}]", param, i);
        if (e.is_string() && allow_mixed) {
            p.pieces.push_back({true, e.get<std::string>(), {}});
        } else {
            const int32_t id = token_id(e, ep, lim);
            if (p.pieces.empty() || p.pieces.back().is_text) p.pieces.push_back({false, {}, {}});
            p.pieces.back().ids.push_back(id);
        }
    }
    return p;
}

std::vector<PromptInput> prompts_of(const Json& v, const std::string& param, const ParseLimits& lim, bool native,
                                    bool& is_list) {
    is_list = false;
    if (v.is_string()) return {prompt_of(v, param, lim, false)};
    if (!v.is_array() || v.empty())
        bad(param, fmt::format("'{}' must be a string, an array of strings, or token ids", param), "invalid_type");
    bool any_int = false, all_int = true;
    for (const Json& e : v) {
        any_int |= e.is_number();
        all_int &= e.is_number_integer();
    }
    if (all_int) return {prompt_of(v, param, lim, false)};
    if (any_int) {
        if (!native) bad(param, fmt::format("'{}' mixes token ids with other values", param), "invalid_type");
        return {prompt_of(v, param, lim, true)};
    }
    if (v.size() > lim.max_inputs) bad(param, fmt::format("'{}' may hold at most {} prompts", param, lim.max_inputs));
    is_list = true;
    std::vector<PromptInput> out;
    for (size_t i = 0; i < v.size(); ++i) out.push_back(prompt_of(v[i], fmt::format("{}[{}]", param, i), lim, native));
    return out;
}

std::string content_of(const Json& m, size_t i) {
    const std::string param = fmt::format("messages[{}].content", i);
    auto it = m.find("content");
    if (it == m.end() || it->is_null()) {
        // the v1 Chinese-Alpaca server used "message" for the text
        auto alt = m.find("message");
        if (alt != m.end() && alt->is_string()) return alt->get<std::string>();
        return "";
    }
    if (it->is_string()) return it->get<std::string>();
    if (!it->is_array()) bad(param, "message content must be a string or an array of text parts", "invalid_type");
    std::string text;
    for (size_t j = 0; j < it->size(); ++j) {
        const Json& part = (*it)[j];
        const std::string pp = fmt::format("{}[{}]", param, j);
        if (!part.is_object()) bad(pp, "a content part must be an object", "invalid_type");
        auto type = part.find("type");
        if (type == part.end() || !type->is_string()) bad(pp + ".type", "a content part needs a 'type'", "invalid_type");
        if (type->get<std::string>() != "text")
            bad(pp + ".type", fmt::format("content parts of type '{}' are not supported (only 'text')", type->get<std::string>()),
                "unsupported_parameter");
        auto t = part.find("text");
        if (t == part.end() || !t->is_string()) bad(pp + ".text", "a text part needs a string 'text'", "invalid_type");
        text += t->get<std::string>();
    }
    return text;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

ApiError::ApiError(int status_, const std::string& message, std::string param_, std::string code_, std::string type_)
    : std::runtime_error(message), status(status_), type(type_.empty() ? default_type(status_) : std::move(type_)),
      param(std::move(param_)), code(std::move(code_)) {}

Json ApiError::body() const {
    Json e;
    e["message"] = what();
    e["type"] = type;
    e["param"] = param.empty() ? Json(nullptr) : Json(param);
    e["code"] = code.empty() ? Json(nullptr) : Json(code);
    Json b;
    b["error"] = e;
    return b;
}

Json parse_body(const std::string& body) {
    Json j;
    try {
        j = Json::parse(body);
    } catch (const Json::parse_error& e) {
        throw ApiError(400, fmt::format("the request body is not valid JSON (byte {})", e.byte), "", "invalid_json");
    }
    if (!j.is_object()) throw ApiError(400, "the request body must be a JSON object", "", "invalid_json");
    return j;
}

std::shared_ptr<const Grammar> parse_response_format(const Json& rf, const std::string& param) {
    if (!rf.is_object()) bad(param, "'response_format' must be an object", "invalid_type");
    auto t = rf.find("type");
    if (t == rf.end() || !t->is_string()) bad(param + ".type", "'response_format.type' must be a string", "invalid_type");
    const std::string type = t->get<std::string>();
    auto compile = [&](const Json& schema, const std::string& sp) {
        if (!schema.is_object() && !schema.is_boolean()) bad(sp, "the JSON schema must be an object", "invalid_type");
        try {
            return json_schema_grammar(schema);
        } catch (const SchemaError& e) {
            bad(sp, fmt::format("unsupported JSON schema: {}", e.what()), "unsupported_schema");
        }
    };
    if (type == "text") return nullptr;
    if (type == "json_object") {
        auto s = rf.find("schema");  // llama.cpp extension
        if (s != rf.end() && !s->is_null()) return compile(*s, param + ".schema");
        return json_object_grammar();
    }
    if (type == "json_schema") {
        auto js = rf.find("json_schema");
        if (js != rf.end() && !js->is_null()) {
            if (!js->is_object()) bad(param + ".json_schema", "'json_schema' must be an object", "invalid_type");
            auto s = js->find("schema");
            if (s == js->end() || s->is_null()) bad(param + ".json_schema.schema", "'json_schema.schema' is required", "missing_field");
            return compile(*s, param + ".json_schema.schema");
        }
        auto s = rf.find("schema");  // llama.cpp style
        if (s != rf.end() && !s->is_null()) return compile(*s, param + ".schema");
        bad(param + ".json_schema", "'response_format.json_schema' is required for type json_schema", "missing_field");
    }
    bad(param + ".type", fmt::format("unknown response_format type '{}' (expected text, json_object or json_schema)", type));
}

ChatRequest parse_chat(const Json& b, const SamplingParams& defaults, const ParseLimits& lim) {
    ChatRequest r;
    r.gen.sampling = defaults;
    const Json* msgs = field(b, "messages");
    if (!msgs) bad("messages", "'messages' is required", "missing_field");
    if (msgs->is_string()) {  // the v1 Chinese-Alpaca server accepted a plain string
        r.messages.push_back({"user", msgs->get<std::string>()});
    } else {
        if (!msgs->is_array() || msgs->empty()) bad("messages", "'messages' must be a non-empty array", "invalid_type");
        for (size_t i = 0; i < msgs->size(); ++i) {
            const Json& m = (*msgs)[i];
            if (!m.is_object()) bad(fmt::format("messages[{}]", i), "each message must be an object", "invalid_type");
            auto role = m.find("role");
            if (role == m.end() || !role->is_string())
                bad(fmt::format("messages[{}].role", i), "each message needs a string 'role'", "invalid_type");
            std::string rl = role->get<std::string>();
            if (rl == "developer") rl = "system";
            if (rl != "system" && rl != "user" && rl != "assistant")
                bad(fmt::format("messages[{}].role", i),
                    fmt::format("role '{}' is not supported (system, developer, user, assistant)", rl));
            auto tc = m.find("tool_calls");
            if (tc != m.end() && !tc->is_null() && !(tc->is_array() && tc->empty()))
                bad(fmt::format("messages[{}].tool_calls", i), "tool calls are not supported", "unsupported_parameter");
            r.messages.push_back({rl, content_of(m, i)});
        }
    }
    parse_sampling(b, r.gen, lim);
    parse_n(b, r.gen, lim);
    parse_max_tokens(b, r.gen, 1);
    if (auto lp = opt_bool(b, "logprobs"); lp && *lp) r.gen.logprobs = 0;
    if (auto k = opt_int(b, "top_logprobs")) {
        if (*k < 0 || *k > 20) bad("top_logprobs", fmt::format("'top_logprobs' must be between 0 and 20, got {}", *k));
        if (r.gen.logprobs < 0 && *k > 0) bad("top_logprobs", "'top_logprobs' needs 'logprobs': true");
        if (r.gen.logprobs >= 0) r.gen.logprobs = static_cast<int>(*k);
    }
    return r;
}

CompletionRequest parse_completion(const Json& b, const SamplingParams& defaults, const ParseLimits& lim) {
    CompletionRequest r;
    r.gen.sampling = defaults;
    const Json* p = field(b, "prompt");
    if (!p) bad("prompt", "'prompt' is required", "missing_field");
    r.prompts = prompts_of(*p, "prompt", lim, false, r.prompt_is_list);
    parse_sampling(b, r.gen, lim);
    parse_n(b, r.gen, lim);
    parse_max_tokens(b, r.gen, 0);
    if (auto v = opt_int(b, "best_of"); v && *v != r.gen.n)
        bad("best_of", "'best_of' other than n is not supported", "unsupported_parameter");
    if (auto v = opt_string(b, "suffix"); v && !v->empty())
        bad("suffix", "'suffix' (insertion) is not supported", "unsupported_parameter");
    if (auto v = opt_bool(b, "echo")) r.gen.echo = *v;
    if (auto k = opt_int(b, "logprobs")) {
        if (*k < 0 || *k > 20) bad("logprobs", fmt::format("'logprobs' must be between 0 and 20, got {}", *k));
        r.gen.logprobs = static_cast<int>(*k);
    }
    if (r.prompts.size() * static_cast<size_t>(r.gen.n) > lim.max_inputs)
        bad("n", fmt::format("prompts x n must be at most {}", lim.max_inputs));
    return r;
}

CompletionRequest parse_native_completion(const Json& b, const SamplingParams& defaults, const ParseLimits& lim) {
    CompletionRequest r;
    r.gen.sampling = defaults;
    const Json* p = field(b, "prompt");
    if (!p) bad("prompt", "'prompt' is required", "missing_field");
    r.prompts = prompts_of(*p, "prompt", lim, true, r.prompt_is_list);
    parse_sampling(b, r.gen, lim);
    parse_max_tokens(b, r.gen, 0);
    if (auto k = opt_int(b, "n_probs")) {
        if (*k < 0 || *k > 20) bad("n_probs", fmt::format("'n_probs' must be between 0 and 20, got {}", *k));
        if (*k > 0) r.gen.logprobs = static_cast<int>(*k);
    }
    if (auto g = opt_string(b, "grammar"); g && !g->empty())
        bad("grammar", "GBNF grammars are not supported; use json_schema or response_format", "unsupported_parameter");
    if (const Json* s = field(b, "json_schema")) {
        Json rf;
        rf["type"] = "json_schema";
        rf["schema"] = *s;
        r.gen.grammar = parse_response_format(rf, "json_schema");
        r.gen.response_format = "json_schema";
    }
    if (r.prompts.size() > lim.max_inputs) bad("prompt", fmt::format("at most {} prompts", lim.max_inputs));
    return r;
}

EmbeddingRequest parse_embeddings(const Json& b, int64_t n_embd, const ParseLimits& lim) {
    EmbeddingRequest r;
    const Json* in = field(b, "input");
    if (!in) bad("input", "'input' is required", "missing_field");
    bool is_list = false;
    r.inputs = prompts_of(*in, "input", lim, false, is_list);
    if (auto f = opt_string(b, "encoding_format")) {
        if (*f != "float" && *f != "base64")
            bad("encoding_format", fmt::format("'encoding_format' must be 'float' or 'base64', got '{}'", *f));
        r.base64 = *f == "base64";
    }
    if (auto d = opt_int(b, "dimensions"); d && *d != n_embd)
        bad("dimensions", fmt::format("this model's embeddings have {} dimensions; other sizes are not supported", n_embd),
            "unsupported_parameter");
    (void)opt_string(b, "model");
    (void)opt_string(b, "user");
    return r;
}

TokenizeRequest parse_tokenize(const Json& b) {
    TokenizeRequest r;
    auto c = opt_string(b, "content");
    if (!c) bad("content", "'content' is required and must be a string", "missing_field");
    r.content = *c;
    if (auto v = opt_bool(b, "add_special")) r.add_special = *v;
    if (auto v = opt_bool(b, "parse_special")) r.parse_special = *v;
    if (auto v = opt_bool(b, "with_pieces")) r.with_pieces = *v;
    return r;
}

std::vector<int32_t> parse_detokenize(const Json& b, const ParseLimits& lim) {
    const Json* t = field(b, "tokens");
    if (!t) bad("tokens", "'tokens' is required", "missing_field");
    if (!t->is_array()) bad("tokens", "'tokens' must be an array of token ids", "invalid_type");
    std::vector<int32_t> ids;
    for (size_t i = 0; i < t->size(); ++i) ids.push_back(token_id((*t)[i], fmt::format("tokens[{}]", i), lim));
    return ids;
}

}  // namespace calpaca::serve
