// Server counters and their Prometheus text exposition (GET /metrics).
//
// Everything is updated lock-free (atomics) from the HTTP threads and the scheduler thread,
// except the time-to-first-token histogram and the request counters keyed by endpoint and status,
// which take a small mutex.
#pragma once
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>

namespace calpaca::serve {

class Metrics {
public:
    Metrics();

    void request_done(const std::string& endpoint, int status);
    void add_prompt_tokens(int64_t evaluated, int64_t cached);
    void add_generated_tokens(int64_t n);
    void observe_ttft(double seconds);
    void add_decode_time(double seconds);   // wall time of scheduler steps that produced tokens
    void sequence_finished(const std::string& reason);  // "stop", "length", "cancelled", "error"
    void rejected_queue_full();

    std::atomic<int> queue_length{0};
    std::atomic<int> slots_busy{0};
    std::atomic<int> slots_total{0};
    std::atomic<int> requests_in_flight{0};

    int64_t generated_tokens() const { return generated_.load(); }
    int64_t sequences_finished(const std::string& reason) const;

    // The Prometheus text format (version 0.0.4).
    std::string prometheus() const;

private:
    static constexpr std::array<double, 12> kTtftBuckets = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                                             1.0,  2.5,   5.0,  10.0, 30.0, 60.0};
    std::chrono::steady_clock::time_point start_;
    std::atomic<int64_t> prompt_evaluated_{0}, prompt_cached_{0}, generated_{0}, rejected_{0};
    std::atomic<int64_t> decode_us_{0};
    mutable std::mutex mu_;
    std::map<std::pair<std::string, int>, int64_t> requests_;
    std::map<std::string, int64_t> finished_;
    std::array<int64_t, kTtftBuckets.size()> ttft_counts_{};
    int64_t ttft_n_ = 0;
    double ttft_sum_ = 0;
    // recent generation rate: tokens in the current and the previous 10-second window
    mutable int64_t window_start_s_ = 0, window_tokens_ = 0, prev_window_tokens_ = 0;
};

// Resident set size of this process in bytes (from /proc/self/statm; 0 if unavailable).
int64_t resident_bytes();

}  // namespace calpaca::serve
