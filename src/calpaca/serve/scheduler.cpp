#include "calpaca/serve/scheduler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>

#include "calpaca/base/error.h"
#include "calpaca/base/threadpool.h"
#include "calpaca/generate/stop.h"
#include "calpaca/serve/metrics.h"
#include "calpaca/serve/token_trie.h"
#include "calpaca/tokenizer/tokenizer.h"

namespace calpaca::serve {

using Clock = std::chrono::steady_clock;

namespace {

double ms_between(Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
}

// log-softmax of the raw model logits at `id`, plus the k most likely tokens.
TokenLogprob logprob_of(const float* logits, int64_t n_vocab, int32_t id, int k) {
    float mx = -std::numeric_limits<float>::infinity();
    for (int64_t i = 0; i < n_vocab; ++i) mx = std::max(mx, logits[i]);
    double sum = 0;
    for (int64_t i = 0; i < n_vocab; ++i) sum += std::exp(static_cast<double>(logits[i]) - mx);
    const double log_z = mx + std::log(sum);
    TokenLogprob r;
    r.id = id;
    r.logprob = static_cast<float>(logits[id] - log_z);
    if (k > 0) {
        // a size-k min-heap of (logit, -id): larger logit first, then lower id
        std::vector<std::pair<float, int32_t>> heap;
        auto worse = [](const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
            return a.first != b.first ? a.first > b.first : a.second < b.second;
        };
        for (int64_t i = 0; i < n_vocab; ++i) {
            std::pair<float, int32_t> c{logits[i], static_cast<int32_t>(i)};
            if (heap.size() < static_cast<size_t>(k)) {
                heap.push_back(c);
                std::push_heap(heap.begin(), heap.end(), worse);
            } else if (worse(c, heap.front())) {
                std::pop_heap(heap.begin(), heap.end(), worse);
                heap.back() = c;
                std::push_heap(heap.begin(), heap.end(), worse);
            }
        }
        std::sort(heap.begin(), heap.end(), worse);
        for (const auto& [l, i] : heap) r.top.emplace_back(i, static_cast<float>(l - log_z));
    }
    return r;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Job

Job::Job() : created_(Clock::now()) {}

void Job::push(SeqEvent e) {
    {
        std::lock_guard<std::mutex> lk(mu_);
        events_.push_back(std::move(e));
    }
    cv_.notify_all();
}

bool Job::take(std::vector<SeqEvent>& out, std::chrono::milliseconds wait) {
    std::unique_lock<std::mutex> lk(mu_);
    if (events_.empty()) cv_.wait_for(lk, wait, [&] { return !events_.empty(); });
    if (events_.empty()) return false;
    while (!events_.empty()) {
        out.push_back(std::move(events_.front()));
        events_.pop_front();
    }
    return true;
}

// ---------------------------------------------------------------------------------------------
// Slot

struct Scheduler::Slot {
    enum class State { Idle, Prefill, Decode };
    int id = 0;
    State state = State::Idle;
    std::vector<int32_t> cached;  // tokens whose keys/values are in this slot's cache, in order
    uint64_t last_used = 0;

    std::shared_ptr<Job> job;
    SeqSpec spec;
    size_t n_fed = 0, n_reused = 0;
    std::unique_ptr<Sampler> sampler;
    std::unique_ptr<StreamDecoder> dec;
    std::unique_ptr<StopMatcher> stops;
    std::optional<GrammarState> grammar;
    std::vector<int32_t> history;
    int n_gen = 0;
    int32_t pending = -1;
    Clock::time_point t_queued, t_start, t_prompt_done;
    std::vector<double> emb_sum;
    std::vector<TokenLogprob> prompt_lp;
    std::vector<uint8_t> allowed;
    std::vector<float> masked;

    // set by after_forward, acted on by the scheduler thread
    bool finished = false;
    int sampled = 0;
};

// ---------------------------------------------------------------------------------------------

Scheduler::Scheduler(const Model& model, SchedulerOptions o, ThreadPool* pool, Metrics* metrics)
    : model_(model), opt_(o), pool_(pool), metrics_(metrics), ms_(model, {o.n_slots, o.n_ctx, o.kv_type}, pool) {
    if (opt_.max_queue < 0) fail("--max-queue must be >= 0, got {}", opt_.max_queue);
    if (opt_.batch < 1) fail("--batch-size must be >= 1, got {}", opt_.batch);
    opt_.batch = std::max(opt_.batch, opt_.n_slots + 1);  // every decode + at least one prompt token
    trie_ = std::make_unique<TokenTrie>(model_.tokenizer());
    for (int i = 0; i < ms_.n_slots(); ++i) {
        slots_.push_back(std::make_unique<Slot>());
        slots_.back()->id = i;
    }
    if (metrics_) metrics_->slots_total = ms_.n_slots();
    thread_ = std::thread([this] { loop(); });
}

Scheduler::~Scheduler() { stop(); }

const TokenTrie& Scheduler::trie() const { return *trie_; }

void Scheduler::stop() {
    {
        std::lock_guard<std::mutex> lk(mu_);
        stop_ = true;
    }
    cv_.notify_all();
    std::lock_guard<std::mutex> lk(join_mu_);  // stop() may come from a signal thread and main at once
    if (thread_.joinable()) thread_.join();
}

void Scheduler::submit(const std::shared_ptr<Job>& job, std::vector<SeqSpec> specs) {
    {
        std::lock_guard<std::mutex> lk(mu_);
        if (stop_) throw QueueFull("the server is shutting down");
        const int free_slots = ms_.n_slots() - active_.load();
        const int waiting = static_cast<int>(queue_.size() + specs.size()) - std::max(free_slots, 0);
        if (waiting > opt_.max_queue) {
            if (metrics_) metrics_->rejected_queue_full();
            throw QueueFull(fmt::format("the server is busy: {} requests are waiting for one of {} slots (--max-queue {})",
                                        queue_.size(), ms_.n_slots(), opt_.max_queue));
        }
        const auto now = Clock::now();
        for (auto& s : specs) queue_.push_back({job, std::move(s), now});
        if (metrics_) metrics_->queue_length = static_cast<int>(queue_.size());
    }
    cv_.notify_all();
}

void Scheduler::admit() {
    std::lock_guard<std::mutex> lk(mu_);
    std::erase_if(queue_, [](const Pending& p) { return p.job->cancelled(); });
    while (!queue_.empty()) {
        Pending& p = queue_.front();
        const bool fresh = !p.spec.cache_prompt || p.spec.prompt_logprobs || p.spec.embedding;
        Slot* best = nullptr;
        size_t best_len = 0;
        for (auto& sp : slots_) {
            Slot& s = *sp;
            if (s.state != Slot::State::Idle) continue;
            size_t len = 0;
            if (!fresh) {
                const size_t lim = std::min(s.cached.size(), p.spec.prompt.size());
                while (len < lim && s.cached[len] == p.spec.prompt[len]) ++len;
            }
            if (!best || len > best_len || (len == best_len && s.last_used < best->last_used)) {
                best = &s;
                best_len = len;
            }
        }
        if (!best) break;
        Pending taken = std::move(p);
        queue_.pop_front();
        activate(*best, std::move(taken));
    }
    if (metrics_) metrics_->queue_length = static_cast<int>(queue_.size());
}

void Scheduler::activate(Slot& s, Pending p) {
    const Tokenizer& tok = model_.tokenizer();
    s.job = std::move(p.job);
    s.spec = std::move(p.spec);
    s.t_queued = p.queued;
    s.t_start = Clock::now();
    s.finished = false;
    s.n_gen = 0;
    s.pending = -1;
    s.emb_sum.clear();
    s.prompt_lp.clear();
    const auto& prompt = s.spec.prompt;
    const bool fresh = !s.spec.cache_prompt || s.spec.prompt_logprobs || s.spec.embedding;
    size_t common = 0;
    if (!fresh) {
        const size_t lim = std::min({s.cached.size(), prompt.size(), static_cast<size_t>(ms_.n_past(s.id))});
        while (common < lim && s.cached[common] == prompt[common]) ++common;
        if (common == prompt.size() && common > 0) --common;  // the last prompt token gives the logits
    }
    ms_.truncate(s.id, static_cast<int64_t>(common));
    s.cached.resize(common);
    s.n_fed = s.n_reused = common;
    s.history = prompt;
    ++active_;
    if (metrics_) {
        metrics_->slots_busy = active_.load();
        metrics_->add_prompt_tokens(static_cast<int64_t>(prompt.size() - common), static_cast<int64_t>(common));
    }
    try {
        if (prompt.empty()) fail("empty prompt");
        if (static_cast<int64_t>(prompt.size()) > ms_.n_ctx())
            fail("the prompt has {} tokens, more than the context size {}", prompt.size(), ms_.n_ctx());
        s.sampler = std::make_unique<Sampler>(s.spec.sampling, tok.size());
        s.dec = std::make_unique<StreamDecoder>(tok, s.spec.strip_leading_space);
        s.stops = std::make_unique<StopMatcher>(s.spec.stop);
        s.grammar.reset();
        if (s.spec.grammar) s.grammar.emplace(s.spec.grammar);
        if (s.spec.embedding) s.emb_sum.assign(static_cast<size_t>(model_.config().n_embd), 0.0);
        s.state = Slot::State::Prefill;
    } catch (const std::exception& e) {
        SeqEvent ev;
        ev.kind = SeqEvent::Kind::Error;
        ev.index = s.spec.index;
        ev.error = e.what();
        s.job->push(std::move(ev));
        if (metrics_) metrics_->sequence_finished("error");
        release(s);
    }
}

void Scheduler::release(Slot& s) {
    s.state = Slot::State::Idle;
    s.job.reset();
    s.sampler.reset();
    s.dec.reset();
    s.stops.reset();
    s.grammar.reset();
    s.last_used = ++use_counter_;
    s.finished = false;
    --active_;
    if (metrics_) metrics_->slots_busy = active_.load();
}

void Scheduler::fail_all(const std::string& msg) {
    for (auto& sp : slots_) {
        Slot& s = *sp;
        if (s.state == Slot::State::Idle) continue;
        SeqEvent ev;
        ev.kind = SeqEvent::Kind::Error;
        ev.index = s.spec.index;
        ev.error = msg;
        s.job->push(std::move(ev));
        if (metrics_) metrics_->sequence_finished("error");
        ms_.truncate(s.id, 0);
        s.cached.clear();
        release(s);
    }
}

// Ends the sequence: releases held-back text, sends Done. Runs on the pool (slot-local only).
void Scheduler::finish(Slot& s, const std::string& reason) {
    SeqEvent ev;
    ev.kind = SeqEvent::Kind::Done;
    ev.index = s.spec.index;
    ev.finish_reason = reason;
    if (s.stops && !s.stops->stopped() && s.dec) {
        auto r = s.stops->push(s.dec->flush());
        ev.text = r.text;
        if (!r.stopped) ev.text += s.stops->flush();
    }
    if (s.stops && s.stops->stopped()) ev.stop_word = s.stops->stops()[static_cast<size_t>(s.stops->stop_index())];
    const auto now = Clock::now();
    ev.n_prompt = static_cast<int>(s.spec.prompt.size());
    ev.n_cached = static_cast<int>(s.n_reused);
    ev.n_generated = s.n_gen;
    ev.prompt_ms = ms_between(s.t_start, s.state == Slot::State::Prefill ? now : s.t_prompt_done);
    ev.gen_ms = s.state == Slot::State::Prefill ? 0.0 : ms_between(s.t_prompt_done, now);
    ev.prompt_logprobs = std::move(s.prompt_lp);
    s.job->push(std::move(ev));
    if (metrics_) metrics_->sequence_finished(reason);
    s.finished = true;
}

int32_t Scheduler::choose(Slot& s, const float* logits) {
    const size_t nv = static_cast<size_t>(model_.config().n_vocab);
    const int32_t eos = model_.tokenizer().eos();
    std::span<const float> lg(logits, nv);
    if (!s.grammar) return s.sampler->sample(lg, s.history, s.spec.prompt.size());
    GrammarState& g = *s.grammar;
    if (g.accepting() && !g.can_continue()) return eos;  // the value is complete: only EOS fits
    const int32_t id = s.sampler->sample(lg, s.history, s.spec.prompt.size());
    if (id == eos ? g.accepting() : trie_->accepts(g, id)) return id;
    trie_->allowed(g, s.allowed);
    if (g.accepting() && eos >= 0) s.allowed[static_cast<size_t>(eos)] = 1;
    s.masked.assign(logits, logits + nv);
    const float ninf = -std::numeric_limits<float>::infinity();
    bool any = false;
    for (size_t i = 0; i < nv; ++i) {
        if (!s.allowed[i]) s.masked[i] = ninf;
        any |= s.allowed[i] != 0;
    }
    if (!any) fail("response_format: no token of the vocabulary can continue the JSON output");
    return s.sampler->sample(s.masked, s.history, s.spec.prompt.size());
}

void Scheduler::sample_next(Slot& s, const float* logits) {
    const Tokenizer& tok = model_.tokenizer();
    if (s.n_gen >= s.spec.max_new) {  // max_tokens 0 (echo only)
        finish(s, "length");
        return;
    }
    const int32_t id = choose(s, logits);
    if (s.n_gen == 0 && metrics_)
        metrics_->observe_ttft(std::chrono::duration<double>(Clock::now() - s.job->created()).count());
    SeqEvent ev;
    ev.index = s.spec.index;
    if (s.spec.top_logprobs >= 0)
        ev.logprobs.push_back(logprob_of(logits, model_.config().n_vocab, id, s.spec.top_logprobs));
    if (id == tok.eos()) {
        if (!ev.logprobs.empty()) s.job->push(std::move(ev));
        finish(s, "stop");
        return;
    }
    if (s.grammar) s.grammar->feed(trie_->bytes(id));
    ++s.n_gen;
    ++s.sampled;
    s.history.push_back(id);
    ev.tokens.push_back(id);
    const auto r = s.stops->push(s.dec->push(id));
    ev.text = r.text;
    s.job->push(std::move(ev));
    if (r.stopped) {
        finish(s, "stop");
    } else if (s.grammar && !s.grammar->can_continue()) {
        finish(s, "stop");  // the JSON value is complete
    } else if (s.n_gen >= s.spec.max_new || ms_.n_past(s.id) >= ms_.n_ctx()) {
        finish(s, "length");
    } else {
        s.pending = id;
        s.state = Slot::State::Decode;
    }
}

void Scheduler::after_forward(Slot& s, size_t item, int64_t n) {
    const int64_t nv = model_.config().n_vocab;
    if (s.state == Slot::State::Decode) {
        s.cached.push_back(s.pending);
        sample_next(s, ms_.logits(item, 0));
        return;
    }
    // prompt chunk
    const auto& prompt = s.spec.prompt;
    const size_t first = s.n_fed;
    s.cached.insert(s.cached.end(), prompt.begin() + static_cast<std::ptrdiff_t>(first),
                    prompt.begin() + static_cast<std::ptrdiff_t>(first + n));
    s.n_fed += static_cast<size_t>(n);
    if (s.spec.embedding) {
        const int64_t E = model_.config().n_embd;
        for (int64_t r = 0; r < n; ++r) {
            const float* h = ms_.hidden(item, r);
            for (int64_t i = 0; i < E; ++i) s.emb_sum[i] += h[i];
        }
    }
    if (s.spec.prompt_logprobs) {
        const int k = std::max(0, s.spec.top_logprobs);
        for (int64_t r = 0; r < n; ++r) {
            const size_t target = first + static_cast<size_t>(r) + 1;
            if (target < prompt.size()) s.prompt_lp.push_back(logprob_of(ms_.logits(item, r), nv, prompt[target], k));
        }
    }
    if (s.n_fed < prompt.size()) return;
    s.t_prompt_done = Clock::now();
    if (s.spec.embedding) {
        // masked mean over the prompt's tokens, then L2 normalization
        SeqEvent ev;
        ev.kind = SeqEvent::Kind::Done;
        ev.index = s.spec.index;
        ev.finish_reason = "stop";
        ev.n_prompt = static_cast<int>(prompt.size());
        double norm = 0;
        std::vector<double> mean(s.emb_sum.size());
        for (size_t i = 0; i < mean.size(); ++i) {
            mean[i] = s.emb_sum[i] / static_cast<double>(prompt.size());
            norm += mean[i] * mean[i];
        }
        norm = std::sqrt(norm);
        ev.embedding.resize(mean.size());
        for (size_t i = 0; i < mean.size(); ++i) ev.embedding[i] = static_cast<float>(norm > 0 ? mean[i] / norm : 0.0);
        ev.prompt_ms = ms_between(s.t_start, s.t_prompt_done);
        s.job->push(std::move(ev));
        if (metrics_) metrics_->sequence_finished("stop");
        s.finished = true;
        return;
    }
    s.state = Slot::State::Decode;  // timings from here count as generation
    sample_next(s, ms_.logits(item, s.spec.prompt_logprobs ? n - 1 : 0));
}

void Scheduler::loop() {
    std::vector<MultiSession::Item> items;
    std::vector<Slot*> item_slot;
    for (;;) {
        {
            std::unique_lock<std::mutex> lk(mu_);
            cv_.wait(lk, [&] { return stop_ || !queue_.empty() || active_.load() > 0; });
            if (stop_) break;
        }
        for (auto& sp : slots_) {
            Slot& s = *sp;
            if (s.state != Slot::State::Idle && s.job->cancelled()) {
                if (metrics_) metrics_->sequence_finished("cancelled");
                release(s);
            }
        }
        admit();
        items.clear();
        item_slot.clear();
        int budget = opt_.batch;
        for (auto& sp : slots_) {
            Slot& s = *sp;
            if (s.state != Slot::State::Decode) continue;
            items.push_back({s.id, std::span<const int32_t>(&s.pending, 1), MultiSession::Output::Last});
            item_slot.push_back(&s);
            --budget;
        }
        // prompt chunks, oldest request first
        std::vector<Slot*> prefill;
        for (auto& sp : slots_)
            if (sp->state == Slot::State::Prefill) prefill.push_back(sp.get());
        std::sort(prefill.begin(), prefill.end(), [](Slot* a, Slot* b) { return a->t_queued < b->t_queued; });
        for (Slot* s : prefill) {
            if (budget <= 0) break;
            const size_t left = s->spec.prompt.size() - s->n_fed;
            const size_t n = std::min(left, static_cast<size_t>(budget));
            const bool last = n == left;
            MultiSession::Output out = MultiSession::Output::None;
            if (s->spec.prompt_logprobs)
                out = MultiSession::Output::All;
            else if (last && !s->spec.embedding)
                out = MultiSession::Output::Last;
            items.push_back({s->id, std::span<const int32_t>(s->spec.prompt.data() + s->n_fed, n), out, s->spec.embedding});
            item_slot.push_back(s);
            budget -= static_cast<int>(n);
        }
        if (items.empty()) continue;
        const auto t0 = Clock::now();
        try {
            ms_.forward(items);
        } catch (const std::exception& e) {
            fail_all(std::string("model evaluation failed: ") + e.what());
            continue;
        }
        for (Slot* s : item_slot) s->sampled = 0;
        auto work = [&](size_t b, size_t e) {
            for (size_t i = b; i < e; ++i) {
                Slot& s = *item_slot[i];
                try {
                    after_forward(s, i, static_cast<int64_t>(items[i].tokens.size()));
                } catch (const std::exception& ex) {
                    SeqEvent ev;
                    ev.kind = SeqEvent::Kind::Error;
                    ev.index = s.spec.index;
                    ev.error = ex.what();
                    s.job->push(std::move(ev));
                    if (metrics_) metrics_->sequence_finished("error");
                    s.finished = true;
                }
            }
        };
        if (pool_ && items.size() > 1)
            pool_->parallel_for(items.size(), work);
        else
            work(0, items.size());
        int produced = 0;
        for (Slot* s : item_slot) {
            produced += s->sampled;
            if (s->finished) release(*s);
        }
        if (metrics_ && produced > 0) {
            metrics_->add_generated_tokens(produced);
            metrics_->add_decode_time(std::chrono::duration<double>(Clock::now() - t0).count());
        }
    }
    // shutting down
    fail_all("the server is shutting down");
    std::lock_guard<std::mutex> lk(mu_);
    for (Pending& p : queue_) {
        SeqEvent ev;
        ev.kind = SeqEvent::Kind::Error;
        ev.index = p.spec.index;
        ev.error = "the server is shutting down";
        p.job->push(std::move(ev));
    }
    queue_.clear();
}

}  // namespace calpaca::serve
