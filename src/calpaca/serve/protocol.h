// Request parsing and validation for the OpenAI-compatible and llama.cpp-compatible endpoints.
//
// Each parse_* function reads the fields it knows from a JSON body, checks their types and
// ranges, and throws ApiError (HTTP 400, an OpenAI error object naming the field in `param`) on
// the first bad one. Fields it does not know are ignored, as OpenAI clients add new optional
// fields over time. Fields that would change the meaning of the answer but are not supported
// (tools, suffix, a GBNF grammar, image content...) are refused rather than ignored.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "calpaca/generate/chat_template.h"
#include "calpaca/generate/sampler.h"
#include "calpaca/serve/grammar.h"

namespace calpaca::serve {

using Json = nlohmann::ordered_json;

class ApiError : public std::runtime_error {
public:
    // type defaults from the status: 400 invalid_request_error, 401 authentication_error,
    // 404 not_found_error, 413 invalid_request_error, 503 unavailable_error, else server_error.
    ApiError(int status, const std::string& message, std::string param = "", std::string code = "",
             std::string type = "");
    int status;
    std::string type, param, code;
    // {"error":{"message","type","param","code"}} (param/code null when empty)
    Json body() const;
};

// A prompt as the client sent it: text, token ids, or (native /completion) a mix of both.
struct PromptInput {
    struct Piece {
        bool is_text = true;
        std::string text;
        std::vector<int32_t> ids;
    };
    std::vector<Piece> pieces;
    bool starts_with_text() const { return !pieces.empty() && pieces.front().is_text; }
};

struct GenParams {
    SamplingParams sampling;
    std::optional<int64_t> max_tokens;  // unset: the endpoint's default; -1 (native): until the context is full
    std::vector<std::string> stop;
    int n = 1;
    bool stream = false;
    bool include_usage = false;         // stream_options.include_usage
    int logprobs = -1;                  // -1: none; k >= 0: token logprobs with k alternatives
    bool echo = false;
    bool ignore_eos = false;
    bool cache_prompt = true;
    std::shared_ptr<const Grammar> grammar;  // response_format json_object / json_schema
    std::string response_format = "text";
};

struct ChatRequest {
    std::vector<ChatMessage> messages;
    GenParams gen;
};

struct CompletionRequest {
    std::vector<PromptInput> prompts;   // one choice set per prompt
    bool prompt_is_list = false;        // native: an array of prompts gives an array of results
    GenParams gen;
};

struct EmbeddingRequest {
    std::vector<PromptInput> inputs;
    bool base64 = false;
};

struct TokenizeRequest {
    std::string content;
    bool add_special = false;
    bool parse_special = true;
    bool with_pieces = false;
};

// Limits shared by the parsers.
struct ParseLimits {
    size_t n_vocab = 0;
    int max_n = 16;          // choices per request
    size_t max_stops = 16;
    size_t max_inputs = 2048;  // prompts / embedding inputs per request
};

// POST /v1/chat/completions
ChatRequest parse_chat(const Json& body, const SamplingParams& defaults, const ParseLimits& lim);
// POST /v1/completions
CompletionRequest parse_completion(const Json& body, const SamplingParams& defaults, const ParseLimits& lim);
// POST /completion (llama.cpp)
CompletionRequest parse_native_completion(const Json& body, const SamplingParams& defaults, const ParseLimits& lim);
// POST /v1/embeddings; `n_embd` checks `dimensions`.
EmbeddingRequest parse_embeddings(const Json& body, int64_t n_embd, const ParseLimits& lim);
// POST /tokenize, /detokenize
TokenizeRequest parse_tokenize(const Json& body);
std::vector<int32_t> parse_detokenize(const Json& body, const ParseLimits& lim);

// `response_format` (OpenAI) → grammar; null for "text". Exposed for tests.
std::shared_ptr<const Grammar> parse_response_format(const Json& rf, const std::string& param);

// Parses a request body; a syntax error is a 400 naming the position.
Json parse_body(const std::string& body);

}  // namespace calpaca::serve
