#include "calpaca/generate/generator.h"

#include <algorithm>

#include "calpaca/base/error.h"
#include "calpaca/generate/stop.h"

namespace calpaca {

std::vector<int32_t> tokenize_parts(const Tokenizer& tok, const std::vector<PromptPart>& parts) {
    std::vector<int32_t> ids;
    std::string run;
    auto flush = [&] {
        if (run.empty()) return;
        auto e = tok.encode(run);
        ids.insert(ids.end(), e.begin(), e.end());
        run.clear();
    };
    for (const auto& p : parts) {
        if (p.is_special()) {
            flush();
            ids.push_back(p.special);
        } else {
            run += p.text;
        }
    }
    flush();
    return ids;
}

size_t feed_prompt(Session& session, std::vector<int32_t>& cached, const std::vector<int32_t>& prompt, int batch) {
    if (prompt.empty()) fail("empty prompt: at least one token (e.g. BOS) is needed");
    if (static_cast<int64_t>(prompt.size()) > session.n_ctx())
        fail("prompt of {} tokens does not fit in the context of {} tokens", prompt.size(), session.n_ctx());
    size_t common = 0;
    const size_t lim = std::min({cached.size(), prompt.size(), static_cast<size_t>(session.n_past())});
    while (common < lim && cached[common] == prompt[common]) ++common;
    if (common == prompt.size()) --common;  // the last prompt token must be evaluated for its logits
    session.truncate(static_cast<int64_t>(common));
    cached.resize(common);
    const size_t step = static_cast<size_t>(std::max(1, batch));
    for (size_t i = common; i < prompt.size(); i += step) {
        size_t n = std::min(step, prompt.size() - i);
        session.eval(std::span<const int32_t>(prompt.data() + i, n), false);
        cached.insert(cached.end(), prompt.begin() + i, prompt.begin() + i + n);
    }
    return common;
}

GenerateResult generate(Session& session, std::vector<int32_t>& cached, const std::vector<int32_t>& prompt,
                        Sampler& sampler, const GenerateParams& params,
                        const std::function<bool(const std::string&)>& on_text, const std::atomic<bool>* cancel) {
    GenerateResult r;
    r.n_prompt = prompt.size();
    r.n_reused = feed_prompt(session, cached, prompt, params.batch);
    const Tokenizer& tok = session.model().tokenizer();
    StreamDecoder dec(tok, params.strip_leading_space);
    StopMatcher stops(params.stop);
    std::vector<int32_t> history = prompt;
    const int64_t n_vocab = session.model().config().n_vocab;
    r.finish_reason = "length";
    auto emit = [&](const std::string& s) -> bool {
        if (s.empty()) return true;
        r.text += s;
        return on_text ? on_text(s) : true;
    };
    bool stopped = false;
    for (int i = 0; i < params.max_new_tokens; ++i) {
        if (cancel && cancel->load()) {
            r.finish_reason = "cancelled";
            stopped = true;
            break;
        }
        const float* lg = session.last_logits();
        int32_t id = sampler.sample(std::span<const float>(lg, static_cast<size_t>(n_vocab)), history, prompt.size());
        if (params.stop_at_eos && id == tok.eos()) {
            r.finish_reason = "stop";
            break;
        }
        r.tokens.push_back(id);
        history.push_back(id);
        auto res = stops.push(dec.push(id));
        bool keep = emit(res.text);
        if (res.stopped) {
            r.finish_reason = "stop";
            stopped = true;
            break;
        }
        if (!keep) {
            r.finish_reason = "cancelled";
            stopped = true;
            break;
        }
        // Feed the token unless this was the last one we are allowed to generate.
        if (i + 1 < params.max_new_tokens) {
            if (session.n_past() >= session.n_ctx()) {
                r.finish_reason = "length";
                break;
            }
            session.eval(std::span<const int32_t>(&id, 1), false);
            cached.push_back(id);
        }
    }
    if (!stopped) {
        auto res = stops.push(dec.flush());
        emit(res.text);
        if (!res.stopped) emit(stops.flush());
    }
    return r;
}

}  // namespace calpaca
