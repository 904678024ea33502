#include "calpaca/eval/perplexity.h"

#include <chrono>
#include <cmath>

#include "calpaca/base/error.h"
#include "calpaca/model/model.h"
#include "calpaca/model/session.h"

namespace calpaca {

double token_nll(const float* logits, int64_t n_vocab, int32_t target) {
    if (target < 0 || target >= n_vocab) fail("perplexity: target token {} is outside the vocabulary [0, {})", target, n_vocab);
    float mx = logits[0];
    for (int64_t i = 1; i < n_vocab; ++i) mx = std::max(mx, logits[i]);
    double sum = 0;
    for (int64_t i = 0; i < n_vocab; ++i) sum += std::exp(static_cast<double>(logits[i]) - mx);
    return -(static_cast<double>(logits[target]) - mx - std::log(sum));
}

void NllStats::add(double nll) {
    ++n_;
    sum_ += nll;
    sum2_ += nll * nll;
}

double NllStats::mean() const { return n_ ? sum_ / static_cast<double>(n_) : 0.0; }

double NllStats::perplexity() const { return std::exp(mean()); }

double NllStats::mean_stderr() const {
    if (n_ < 2) return 0.0;
    const double m = mean(), var = sum2_ / static_cast<double>(n_) - m * m;
    return var > 0 ? std::sqrt(var / static_cast<double>(n_ - 1)) : 0.0;
}

int64_t perplexity_chunks(int64_t n_tokens, const PerplexityOptions& o, const std::string& source) {
    if (o.n_ctx < 4) fail("perplexity: the window (-c/--ctx-size) must be at least 4 tokens, got {}", o.n_ctx);
    if (o.max_chunks < 0) fail("perplexity: --chunks must be >= 0, got {}", o.max_chunks);
    const int64_t n = n_tokens / o.n_ctx;
    if (n < 1)
        fail("{}: {} tokens is fewer than one window of {} tokens (-c/--ctx-size); use a longer text or a smaller window",
             source, n_tokens, o.n_ctx);
    return o.max_chunks > 0 ? std::min(n, o.max_chunks) : n;
}

PerplexityResult perplexity(const Model& m, std::span<const int32_t> tokens, const PerplexityOptions& o,
                            ThreadPool* pool, const std::string& source, const PerplexityCallback& on_chunk) {
    const int64_t n_vocab = m.config().n_vocab;
    const int64_t n_chunks = perplexity_chunks(static_cast<int64_t>(tokens.size()), o, source);
    for (size_t i = 0; i < tokens.size(); ++i)
        if (tokens[i] < 0 || tokens[i] >= n_vocab)
            fail("{}: token {} at position {} is outside the model's vocabulary [0, {})", source, tokens[i], i, n_vocab);
    const int64_t c = o.n_ctx, first = c / 2;
    const int32_t bos = m.tokenizer().bos();

    SessionOptions so;
    so.n_ctx = c;
    so.kv_type = o.kv_type;
    so.reference = o.reference;
    Session s(m, so, pool);

    PerplexityResult r;
    r.n_ctx = c;
    r.n_tokens = static_cast<int64_t>(tokens.size());
    r.n_chunks = n_chunks;
    NllStats stats;
    std::vector<int32_t> window(static_cast<size_t>(c));
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t k = 0; k < n_chunks; ++k) {
        const int32_t* w = tokens.data() + k * c;
        std::copy(w, w + c, window.begin());
        if (bos >= 0 && bos < n_vocab) window[0] = bos;
        s.truncate(0);
        s.eval_tail(window, first);  // logits rows for positions first .. c-1
        const float* logits = s.logits().data();
        for (int64_t p = first; p + 1 < c; ++p) {
            // the window's own tokens are the targets (the original text, BOS replaces only position 0)
            const double nll = token_nll(logits + (p - first) * n_vocab, n_vocab, w[p + 1]);
            if (!std::isfinite(nll)) fail("{}: window {} position {}: the model produced a non-finite log-probability", source, k + 1, p);
            stats.add(nll);
            r.nll.push_back(nll);
        }
        r.chunk_ppl.push_back(stats.perplexity());
        if (on_chunk) on_chunk(k, n_chunks, stats);
    }
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    r.n_scored = stats.count();
    r.nll_mean = stats.mean();
    r.ppl = stats.perplexity();
    r.ppl_stderr = stats.perplexity_stderr();
    return r;
}

std::vector<int32_t> perplexity_tokenize(const Model& m, const std::string& text, const std::string& source) {
    const Tokenizer& tok = m.tokenizer();
    std::vector<int32_t> tokens;
    if (tok.vocab().add_bos && tok.bos() >= 0 && tok.bos() < m.config().n_vocab) tokens.push_back(tok.bos());
    const size_t before = tokens.size();
    with_context(source, [&] { tok.encode_into(text, tokens); });
    if (tokens.size() == before) fail("{}: the text is empty", source);
    return tokens;
}

PerplexityResult perplexity_of_text(const Model& m, const std::string& text, const PerplexityOptions& o,
                                    ThreadPool* pool, const std::string& source, const PerplexityCallback& on_chunk) {
    return perplexity(m, perplexity_tokenize(m, text, source), o, pool, source, on_chunk);
}

}  // namespace calpaca
