// The generation loop shared by `generate`, `chat` (and later serve/eval): evaluate the
// prompt (reusing whatever prefix the session already holds), then sample → append → stream
// until EOS, max_new_tokens, a stop string, or cancellation.
#pragma once
#include <atomic>
#include <functional>
#include <string>
#include <vector>

#include "calpaca/generate/chat_template.h"
#include "calpaca/generate/sampler.h"
#include "calpaca/model/session.h"
#include "calpaca/tokenizer/tokenizer.h"

namespace calpaca {

struct GenerateParams {
    int max_new_tokens = 512;
    std::vector<std::string> stop;     // stop strings (not emitted)
    bool stop_at_eos = true;
    bool strip_leading_space = false;  // true for chat replies (HF decode + strip semantics)
    int batch = 256;                   // prompt tokens per forward call
};

struct GenerateResult {
    std::string text;                  // emitted text (stop string excluded)
    std::vector<int32_t> tokens;       // generated ids (EOS excluded)
    std::string finish_reason;         // "stop" (EOS or stop string), "length", "cancelled"
    size_t n_prompt = 0, n_reused = 0; // prompt tokens, of which served from the cache
};

// `cached` holds the ids whose keys/values are in `session` (in order); it is updated to the
// new contents (prompt + generated). on_text receives complete UTF-8 pieces; returning false
// cancels. `cancel` (optional) is polled every token.
GenerateResult generate(Session& session, std::vector<int32_t>& cached, const std::vector<int32_t>& prompt,
                        Sampler& sampler, const GenerateParams& params,
                        const std::function<bool(const std::string&)>& on_text,
                        const std::atomic<bool>* cancel = nullptr);

// Tokenizes a rendered template: adjacent text parts are joined and encoded as plain text
// (literal "<s>" typed by a user stays text), special parts become their ids. Each text run
// between specials gets its own dummy prefix, as HF's legacy LlamaTokenizer does.
std::vector<int32_t> tokenize_parts(const Tokenizer& tok, const std::vector<PromptPart>& parts);

// Evaluates prompt[i..] after reusing the longest common prefix with `cached`. Leaves the
// logits of the last prompt token in the session. Returns the number of reused tokens.
size_t feed_prompt(Session& session, std::vector<int32_t>& cached, const std::vector<int32_t>& prompt, int batch);

}  // namespace calpaca
