#include "calpaca/serve/metrics.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>

namespace calpaca::serve {

namespace {
constexpr int64_t kWindowS = 10;
}

Metrics::Metrics() : start_(std::chrono::steady_clock::now()) {}

void Metrics::request_done(const std::string& endpoint, int status) {
    std::lock_guard<std::mutex> lk(mu_);
    ++requests_[{endpoint, status}];
}

void Metrics::add_prompt_tokens(int64_t evaluated, int64_t cached) {
    prompt_evaluated_ += evaluated;
    prompt_cached_ += cached;
}

void Metrics::add_generated_tokens(int64_t n) {
    generated_ += n;
    std::lock_guard<std::mutex> lk(mu_);
    const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - start_).count();
    const int64_t w = now / kWindowS;
    if (w != window_start_s_) {
        prev_window_tokens_ = w == window_start_s_ + 1 ? window_tokens_ : 0;
        window_tokens_ = 0;
        window_start_s_ = w;
    }
    window_tokens_ += n;
}

void Metrics::observe_ttft(double seconds) {
    std::lock_guard<std::mutex> lk(mu_);
    for (size_t i = 0; i < kTtftBuckets.size(); ++i)
        if (seconds <= kTtftBuckets[i]) ++ttft_counts_[i];
    ++ttft_n_;
    ttft_sum_ += seconds;
}

void Metrics::add_decode_time(double seconds) { decode_us_ += static_cast<int64_t>(seconds * 1e6); }

void Metrics::sequence_finished(const std::string& reason) {
    std::lock_guard<std::mutex> lk(mu_);
    ++finished_[reason];
}

void Metrics::rejected_queue_full() { ++rejected_; }

int64_t Metrics::sequences_finished(const std::string& reason) const {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = finished_.find(reason);
    return it == finished_.end() ? 0 : it->second;
}

std::string Metrics::prometheus() const {
    std::string s;
    auto head = [&](const char* name, const char* type, const char* help) {
        s += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
    };
    std::lock_guard<std::mutex> lk(mu_);
    head("calpaca_requests_total", "counter", "HTTP requests answered, by endpoint and status code.");
    for (const auto& [key, n] : requests_)
        s += fmt::format("calpaca_requests_total{{endpoint=\"{}\",status=\"{}\"}} {}\n", key.first, key.second, n);
    head("calpaca_requests_in_flight", "gauge", "HTTP requests being answered now.");
    s += fmt::format("calpaca_requests_in_flight {}\n", requests_in_flight.load());
    head("calpaca_sequences_finished_total", "counter", "Generated sequences by finish reason (stop, length, cancelled, error).");
    for (const auto& [reason, n] : finished_)
        s += fmt::format("calpaca_sequences_finished_total{{reason=\"{}\"}} {}\n", reason, n);
    head("calpaca_requests_rejected_total", "counter", "Requests answered 503 because the queue was full.");
    s += fmt::format("calpaca_requests_rejected_total {}\n", rejected_.load());
    head("calpaca_prompt_tokens_total", "counter", "Prompt tokens evaluated (not served from a slot's cache).");
    s += fmt::format("calpaca_prompt_tokens_total {}\n", prompt_evaluated_.load());
    head("calpaca_prompt_tokens_cached_total", "counter", "Prompt tokens served from a slot's KV cache (prefix reuse).");
    s += fmt::format("calpaca_prompt_tokens_cached_total {}\n", prompt_cached_.load());
    head("calpaca_generated_tokens_total", "counter", "Tokens generated.");
    s += fmt::format("calpaca_generated_tokens_total {}\n", generated_.load());
    head("calpaca_decode_seconds_total", "counter", "Wall time of scheduler steps that generated tokens.");
    s += fmt::format("calpaca_decode_seconds_total {:.6f}\n", static_cast<double>(decode_us_.load()) * 1e-6);
    const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - start_).count();
    const int64_t w = now / kWindowS;
    const int64_t recent = w == window_start_s_ ? prev_window_tokens_ : w == window_start_s_ + 1 ? window_tokens_ : 0;
    head("calpaca_generated_tokens_per_second", "gauge", "Tokens generated per second over the last complete 10 s window.");
    s += fmt::format("calpaca_generated_tokens_per_second {:.3f}\n", static_cast<double>(recent) / kWindowS);
    head("calpaca_queue_length", "gauge", "Sequences waiting for a slot.");
    s += fmt::format("calpaca_queue_length {}\n", queue_length.load());
    head("calpaca_slots_busy", "gauge", "Slots generating or processing a prompt.");
    s += fmt::format("calpaca_slots_busy {}\n", slots_busy.load());
    head("calpaca_slots_total", "gauge", "Slots (--parallel).");
    s += fmt::format("calpaca_slots_total {}\n", slots_total.load());
    head("calpaca_time_to_first_token_seconds", "histogram", "From request arrival to the first generated token.");
    for (size_t i = 0; i < kTtftBuckets.size(); ++i)
        s += fmt::format("calpaca_time_to_first_token_seconds_bucket{{le=\"{}\"}} {}\n", kTtftBuckets[i], ttft_counts_[i]);
    s += fmt::format("calpaca_time_to_first_token_seconds_bucket{{le=\"+Inf\"}} {}\n", ttft_n_);
    s += fmt::format("calpaca_time_to_first_token_seconds_sum {:.6f}\n", ttft_sum_);
    s += fmt::format("calpaca_time_to_first_token_seconds_count {}\n", ttft_n_);
    head("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
    s += fmt::format("process_resident_memory_bytes {}\n", resident_bytes());
    return s;
}

int64_t resident_bytes() {
    std::FILE* f = std::fopen("/proc/self/statm", "r");
    if (!f) return 0;
    long long size = 0, rss = 0;
    const int n = std::fscanf(f, "%lld %lld", &size, &rss);
    std::fclose(f);
    if (n != 2) return 0;
    return static_cast<int64_t>(rss) * static_cast<int64_t>(::sysconf(_SC_PAGESIZE));
}

}  // namespace calpaca::serve
