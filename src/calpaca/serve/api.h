// The endpoints, independent of the HTTP library: a parsed JSON body in, a JSON reply (or a
// stream of server-sent-event frames) out. http_server.cpp maps routes onto these; the unit
// tests call them directly.
//
// Protocol decisions (docs/serve.md has the full list):
//  - chat prompts are rendered with the model's chat template (GGUF calpaca.chat_template, else
//    the vocabulary size: 49954 → alpaca, 55296 → alpaca-2; --chat-template forces one) and
//    tokenized part by part, so message text can never inject BOS/EOS;
//  - completion and embedding text is tokenized like HF `tokenizer(text)`: BOS first, special
//    token strings ("<s>", "</s>") parsed; token-id prompts are used as given;
//  - max_tokens defaults to 512 for chat (the original Alpaca-2 server) and 16 for
//    /v1/completions (OpenAI's legacy default); it is capped so prompt + answer fit the slot's
//    context, and a prompt longer than the context is a 400 (code context_length_exceeded);
//  - logprobs are the log-softmax of the raw model logits (before penalties and temperature);
//  - usage counts every prompt once and every choice's generated tokens (EOS not counted).
#pragma once
#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "calpaca/generate/chat_template.h"
#include "calpaca/model/model.h"
#include "calpaca/serve/protocol.h"
#include "calpaca/serve/scheduler.h"

namespace calpaca::serve {

class Metrics;

struct ApiOptions {
    std::string model_id;         // the name /v1/models reports and responses carry
    std::string chat_template;    // template name; empty = from the model
    SamplingParams defaults;      // server-wide sampling defaults (Alpaca-2 demo: 0.2/0.9/40/1.1)
    int chat_max_tokens = 512;
    int completion_max_tokens = 16;
    ParseLimits limits;
};

// Server-sent events of one streaming request.
class EventStream {
public:
    virtual ~EventStream() = default;
    // Appends the frames that are ready to `out`, waiting up to `wait` for some. Returns false
    // when the stream is over (its last frames are in `out`).
    virtual bool next(std::string& out, std::chrono::milliseconds wait) = 0;
    // The client went away: stop generating.
    virtual void cancel() = 0;
};

struct Reply {
    int status = 200;
    Json body;
    std::shared_ptr<EventStream> stream;  // set for streaming replies
};

class Api {
public:
    Api(const Model& model, Scheduler& sched, Metrics& metrics, ApiOptions opt);

    // Polled while a non-streaming request waits: true = the client is gone (cancels it).
    using ClosedFn = std::function<bool()>;

    // Each throws ApiError for a bad request (and 503 when the queue is full).
    Reply chat(const Json& body, const ClosedFn& closed);
    Reply completions(const Json& body, const ClosedFn& closed);         // POST /v1/completions
    Reply native_completion(const Json& body, const ClosedFn& closed);   // POST /completion
    Reply embeddings(const Json& body, const ClosedFn& closed);
    Json tokenize(const Json& body) const;
    Json detokenize(const Json& body) const;
    Json models() const;
    Json health() const;
    Json props() const;

    const ChatTemplate* chat_template() const { return tmpl_.get(); }
    const std::string& model_id() const { return opt_.model_id; }

private:
    struct Prepared;  // tokenized prompts + the per-choice specs
    std::vector<int32_t> tokenize_prompt(const PromptInput& p, const std::string& param) const;
    int max_new_for(int64_t n_prompt, std::optional<int64_t> requested, int def, const std::string& param) const;
    SeqSpec base_spec(const GenParams& g) const;
    std::shared_ptr<Job> submit(std::vector<SeqSpec> specs) const;

    const Model& model_;
    Scheduler& sched_;
    Metrics& metrics_;
    ApiOptions opt_;
    std::unique_ptr<ChatTemplate> tmpl_;
    int64_t created_;
};

// Base64 of the little-endian float32 bytes (OpenAI's encoding_format "base64").
std::string base64_floats(const std::vector<float>& v);

}  // namespace calpaca::serve
