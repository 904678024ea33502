// An inference session: the KV cache of one sequence and the forward pass over it.
//
// eval(tokens) runs the LLaMA forward for a batch of tokens at positions n_past..,
// appending their keys/values to the cache, and leaves the logits of the last token (or of
// every token) in logits(). Two paths share this code: `reference` (plain loops,
// single-threaded, double accumulation: the yardstick in tests) and the default fast path
// (SIMD kernels, rows and heads split over the thread pool).
//
// The fast path keeps its activation buffers between calls (no allocation per token once
// the largest batch has been seen), computes the RoPE angles once per eval for all layers,
// and splits norms, RoPE, KV stores, attention (per head, model/attention.h) and the
// element-wise steps over the pool. Matrix products go to kernels' matmul, which blocks the
// tokens of a prompt so that each weight row is streamed once per block.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "calpaca/model/model.h"

namespace calpaca {

class ThreadPool;

struct SessionOptions {
    int64_t n_ctx = 0;            // 0 = min(model context, 4096)
    DType kv_type = DType::F16;   // F16 (default) or F32
    bool reference = false;
    // > 0: eval() without all_logits runs the forward over at most this many tokens at a time,
    // so a long prompt's activation buffers stay small (peak memory ~ ubatch, not prompt length);
    // every token attends to the same cache either way, so the results equal one big batch's bit
    // for bit with dense weights (quantized matmuls round activations per call: last bits may differ).
    // hidden() then holds the last row only, as without chunks. 0 = the whole batch at once.
    int64_t ubatch = 0;
};
// The ubatch the CLI and `calpaca bench` use: large enough that each weight row is still reused
// across many tokens, small enough that activations of a 4096-wide model stay ~ 30 MiB.
inline constexpr int64_t kDefaultUbatch = 128;

class Session {
public:
    Session(const Model& m, SessionOptions o, ThreadPool* pool);

    // Appends tokens; throws Error if the context would overflow or an id is invalid.
    void eval(std::span<const int32_t> tokens, bool all_logits = false);
    // Same, leaving logits for tokens first_logit..n-1 only (rows [n - first_logit][n_vocab]):
    // e.g. perplexity scores only the second half of a window. 0 <= first_logit < n.
    void eval_tail(std::span<const int32_t> tokens, int64_t first_logit);
    // Logits of the last eval: [n_tokens][n_vocab] if all_logits, else [1][n_vocab].
    const std::vector<float>& logits() const { return logits_; }
    const float* last_logits() const { return logits_.data() + logits_.size() - cfg_.n_vocab; }
    // Final-norm hidden states of the rows that got logits in the last eval (the last layer runs
    // for those rows only): [n_tokens][n_embd] with all_logits, else the last row
    // (eval_tail: rows first_logit..n-1). Embeddings of every token need all_logits.
    const std::vector<float>& hidden() const { return hidden_; }

    int64_t n_past() const { return n_past_; }
    int64_t n_ctx() const { return n_ctx_; }
    const Model& model() const { return model_; }
    // Forget cached positions >= n (n <= n_past): the next eval continues from n.
    void truncate(int64_t n);

private:
    // queries of rows [t0, n_tok) of this eval (q and out indexed by row)
    void attention(int64_t layer, const float* q, int64_t t0, int64_t n_tok, float* out);
    void rope(float* x, int64_t t0, int64_t n_tok, int64_t n_heads);  // rows [t0, n_tok)
    void prepare_rope(int64_t n_tok);
    void store_kv(int64_t layer, const float* k, const float* v, int64_t n_tok);
    void norm_rows(const float* x, const std::vector<float>& w, float* out, int64_t n_tok);
    uint8_t* k_at(int64_t layer, int64_t pos);
    uint8_t* v_at(int64_t layer, int64_t pos);
    void mm(const MatrixView& w, const float* x, int64_t n, float* y);
    void check_batch(std::span<const int32_t> tokens) const;
    // The forward pass; logits and hidden states for rows [first, n) (first == n: none, the
    // tokens only enter the cache).
    void forward(std::span<const int32_t> tokens, int64_t first);
    // fn(begin, end) over [0, n): split over the pool when the fast path has one and the work
    // (n x cost_per_item) is worth a hand-off, else run here.
    template <typename F>
    void split(int64_t n, int64_t cost_per_item, F&& fn);

    const Model& model_;
    const LlamaConfig& cfg_;
    SessionOptions opt_;
    ThreadPool* pool_;
    int64_t n_ctx_;
    int64_t n_past_ = 0;
    size_t kv_elem_;
    std::vector<uint8_t> k_cache_, v_cache_;  // [layer][pos][n_embd_kv]
    std::vector<float> inv_freq_;
    std::vector<float> rope_cos_, rope_sin_;  // [n_tok][head_dim/2] for the current eval
    std::vector<float> logits_, hidden_;
    // activation buffers of the forward pass, grown to the largest batch seen
    std::vector<float> x_, xn_, q_, k_, v_, att_, tmp_, g_, u_;
};

}  // namespace calpaca
