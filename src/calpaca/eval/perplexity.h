// Perplexity of a model on a text, computed as llama.cpp's `perplexity` tool does:
//
//   1. the whole text is tokenized once, with BOS in front when the tokenizer adds one
//      (LLaMA's does: tokenizer.ggml.add_bos_token), as llama.cpp's common_tokenize(.., true);
//   2. the tokens are cut into non-overlapping windows of n_ctx tokens (a trailing partial
//      window is dropped);
//   3. each window is evaluated from an empty KV cache with its first token replaced by BOS;
//   4. only the second half is scored: the logits at positions first = n_ctx/2 .. n_ctx-2 each
//      predict the next token of the window (n_ctx - 1 - n_ctx/2 scores per window), so every
//      scored token has at least n_ctx/2 tokens of context.
//
// With NLL_i = -log softmax(logits_i)[target_i] over the N scored tokens:
//   PPL = exp(mean NLL);  stderr(mean NLL) = sqrt((mean(NLL^2) - mean(NLL)^2) / (N - 1));
//   PPL error = PPL x stderr(mean NLL)  (first-order propagation through exp), as llama.cpp.
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "calpaca/tensor/dtype.h"

namespace calpaca {

class Model;
class ThreadPool;

// -log softmax(logits)[target], computed in double with the maximum subtracted.
double token_nll(const float* logits, int64_t n_vocab, int32_t target);

// Running mean of NLLs and the perplexity with its standard error (formulas above).
class NllStats {
public:
    void add(double nll);
    int64_t count() const { return n_; }
    double mean() const;            // 0 when empty
    double perplexity() const;      // exp(mean)
    double mean_stderr() const;     // 0 when count < 2
    double perplexity_stderr() const { return perplexity() * mean_stderr(); }

private:
    int64_t n_ = 0;
    double sum_ = 0, sum2_ = 0;
};

struct PerplexityOptions {
    int64_t n_ctx = 512;        // window size, >= 4
    int64_t max_chunks = 0;     // 0 = every full window
    DType kv_type = DType::F16;
    bool reference = false;     // Session's reference path
};

struct PerplexityResult {
    int64_t n_ctx = 0;
    int64_t n_tokens = 0;        // tokens of the whole text
    int64_t n_chunks = 0;        // windows evaluated
    int64_t n_scored = 0;        // NLL terms
    double nll_mean = 0, ppl = 0, ppl_stderr = 0;
    std::vector<double> chunk_ppl;  // running perplexity after each window (llama.cpp's [1]x,[2]y...)
    std::vector<double> nll;        // every scored token's NLL, in text order
    double seconds = 0;             // evaluation time
};

// Number of windows perplexity() will evaluate; throws Error when the text is shorter than
// one window or n_ctx < 4. `source` names the text in messages.
int64_t perplexity_chunks(int64_t n_tokens, const PerplexityOptions& o, const std::string& source);

// on_chunk(i, n_chunks, stats_so_far) is called after window i (0-based) is scored.
using PerplexityCallback = std::function<void(int64_t, int64_t, const NllStats&)>;

PerplexityResult perplexity(const Model& m, std::span<const int32_t> tokens, const PerplexityOptions& o,
                            ThreadPool* pool, const std::string& source = "text",
                            const PerplexityCallback& on_chunk = {});

// The token stream of step 1: BOS (when the vocabulary's add_bos is set and BOS is a valid id)
// followed by the text's tokens (no special-token parsing). Errors (empty text, invalid UTF-8)
// name `source`.
std::vector<int32_t> perplexity_tokenize(const Model& m, const std::string& text, const std::string& source = "text");

// perplexity(m, perplexity_tokenize(m, text, source), ...).
PerplexityResult perplexity_of_text(const Model& m, const std::string& text, const PerplexityOptions& o,
                                    ThreadPool* pool, const std::string& source = "text",
                                    const PerplexityCallback& on_chunk = {});

}  // namespace calpaca
