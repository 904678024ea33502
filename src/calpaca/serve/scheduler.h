// Continuous batching: one thread owns the model's MultiSession and runs it step by step over
// every active sequence.
//
// Each step it (1) drops sequences whose client went away, (2) moves queued sequences into free
// slots, choosing for each the free slot whose cached tokens share the longest prefix with its
// prompt (multi-turn chats do not recompute their history), (3) builds one batch: one token for
// every decoding slot, then prompt chunks for slots still reading their prompt, up to `batch`
// tokens in all (so a long prompt is read over several steps while the other streams keep
// going), (4) runs one forward over the batch (weights read once per step), and (5) samples,
// detokenizes and stop-matches each slot's next token and hands the text to its Job.
//
// Sampling uses generate/'s Sampler, StreamDecoder and StopMatcher with the same semantics as
// `calpaca generate`; response_format grammars are enforced by masking tokens the grammar does
// not allow (the sampled token is checked first; only if it is refused is the whole vocabulary
// filtered and the token sampled again from the allowed ones).
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "calpaca/generate/sampler.h"
#include "calpaca/model/multi_session.h"
#include "calpaca/serve/grammar.h"

namespace calpaca {
class ThreadPool;
}

namespace calpaca::serve {

class Metrics;
class TokenTrie;

// One sequence to generate (one choice of a request).
struct SeqSpec {
    std::vector<int32_t> prompt;
    SamplingParams sampling;
    int max_new = 16;                 // generated tokens at most; the caller caps it by the context
    std::vector<std::string> stop;
    bool strip_leading_space = false; // chat replies: drop the dummy-prefix space (HF decode)
    std::shared_ptr<const Grammar> grammar;
    int top_logprobs = -1;            // -1: no logprobs; k >= 0: each token's logprob + k alternatives
    bool prompt_logprobs = false;     // also the logprobs of the prompt tokens (echo)
    bool embedding = false;           // only the masked mean of the final hidden states, L2-normalized
    bool cache_prompt = true;         // reuse a slot's cached prefix
    int index = 0;                    // choice index in the response
};

struct TokenLogprob {
    int32_t id = 0;
    float logprob = 0;
    std::vector<std::pair<int32_t, float>> top;  // most likely tokens at that position
};

struct SeqEvent {
    enum class Kind { Delta, Done, Error };
    Kind kind = Kind::Delta;
    int index = 0;
    // Delta
    std::string text;                     // new text (whole UTF-8 characters; may be empty)
    std::vector<int32_t> tokens;          // tokens generated since the last event
    std::vector<TokenLogprob> logprobs;   // their logprobs (when asked)
    // Done
    std::string finish_reason;            // "stop" (EOS, stop string, grammar complete) or "length"
    std::string stop_word;                // the stop string that ended it, if any
    bool eos = false;                     // ended by the end-of-sequence token
    int n_prompt = 0, n_cached = 0, n_generated = 0;
    double prompt_ms = 0, gen_ms = 0;
    std::vector<float> embedding;
    std::vector<TokenLogprob> prompt_logprobs;  // entry i: prompt token i+1
    // Error
    std::string error;
};

// The events of one request (all its choices), shared by the HTTP thread and the scheduler.
class Job {
public:
    Job();
    void push(SeqEvent e);
    // Waits up to `wait` for events and appends them to `out`; false if there were none.
    bool take(std::vector<SeqEvent>& out, std::chrono::milliseconds wait);
    void cancel() { cancelled_.store(true); }
    bool cancelled() const { return cancelled_.load(); }
    std::chrono::steady_clock::time_point created() const { return created_; }

private:
    std::mutex mu_, join_mu_;
    std::condition_variable cv_;
    std::deque<SeqEvent> events_;
    std::atomic<bool> cancelled_{false};
    std::chrono::steady_clock::time_point created_;
};

class QueueFull : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

struct SchedulerOptions {
    int n_slots = 4;
    int64_t n_ctx = 0;        // per slot; 0 = min(model context, 2048)
    DType kv_type = DType::F16;
    int max_queue = 64;       // sequences that may wait for a slot
    int batch = 256;          // tokens per forward step (decodes first, then prompt chunks)
};

class Scheduler {
public:
    Scheduler(const Model& model, SchedulerOptions o, ThreadPool* pool, Metrics* metrics);
    ~Scheduler();
    Scheduler(const Scheduler&) = delete;
    Scheduler& operator=(const Scheduler&) = delete;

    // Queues all sequences of one request, or none: throws QueueFull when they would not fit.
    // Every spec ends with exactly one Done or Error event (unless the job is cancelled).
    void submit(const std::shared_ptr<Job>& job, std::vector<SeqSpec> specs);
    // Finishes the thread; queued and running sequences get an Error event.
    void stop();

    int64_t n_ctx() const { return ms_.n_ctx(); }
    int n_slots() const { return ms_.n_slots(); }
    size_t kv_bytes() const { return ms_.kv_bytes(); }
    const TokenTrie& trie() const;

private:
    struct Slot;
    struct Pending {
        std::shared_ptr<Job> job;
        SeqSpec spec;
        std::chrono::steady_clock::time_point queued;
    };

    void loop();
    void admit();
    void activate(Slot& s, Pending p);
    void finish(Slot& s, const std::string& reason);
    void release(Slot& s);
    void fail_all(const std::string& msg);
    // Post-forward work of one slot (runs on the pool; touches only that slot and its job).
    void after_forward(Slot& s, size_t item, int64_t n_tokens);
    void sample_next(Slot& s, const float* logits);
    int32_t choose(Slot& s, const float* logits);

    const Model& model_;
    SchedulerOptions opt_;
    ThreadPool* pool_;
    Metrics* metrics_;
    MultiSession ms_;
    std::unique_ptr<TokenTrie> trie_;
    std::vector<std::unique_ptr<Slot>> slots_;
    uint64_t use_counter_ = 0;

    std::mutex mu_, join_mu_;
    std::condition_variable cv_;
    std::deque<Pending> queue_;
    std::atomic<int> active_{0};
    bool stop_ = false;
    std::thread thread_;
};

}  // namespace calpaca::serve
