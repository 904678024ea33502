#include "calpaca/base/threadpool.h"

#include <algorithm>
#include <atomic>
#include <fstream>
#include <set>
#include <string>

namespace calpaca {

ThreadPool::ThreadPool(int n_threads) : n_threads_(n_threads < 1 ? 1 : n_threads) {
    for (int i = 1; i < n_threads_; ++i) threads_.emplace_back([this, i] { worker(i); });
}

ThreadPool::~ThreadPool() {
    {
        std::lock_guard<std::mutex> lk(mu_);
        stop_ = true;
    }
    cv_start_.notify_all();
    for (auto& t : threads_) t.join();
}

// Polls done() for up to ~50 µs (a pause per poll) before the caller falls back to sleeping.
template <class F>
static void spin_until(F done) {
    for (int i = 0; i < 2048; ++i) {
        if (done()) return;
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#else
        std::this_thread::yield();
#endif
    }
}

static void chunk_of(size_t n, int parts, int idx, size_t& b, size_t& e) {
    size_t per = n / parts, rem = n % parts;
    b = idx * per + (static_cast<size_t>(idx) < rem ? idx : rem);
    e = b + per + (static_cast<size_t>(idx) < rem ? 1 : 0);
}

void ThreadPool::parallel_for(size_t n, const std::function<void(size_t, size_t)>& fn) {
    if (n == 0) return;
    if (n_threads_ == 1 || n == 1) {
        fn(0, n);
        return;
    }
    {
        std::lock_guard<std::mutex> lk(mu_);
        job_ = &fn;
        job_n_ = n;
        pending_.store(n_threads_ - 1);
        generation_.fetch_add(1);
    }
    cv_start_.notify_all();
    size_t b, e;
    chunk_of(n, n_threads_, 0, b, e);
    if (b < e) fn(b, e);
    spin_until([this] { return pending_.load(std::memory_order_acquire) == 0; });
    std::unique_lock<std::mutex> lk(mu_);
    cv_done_.wait(lk, [this] { return pending_.load() == 0; });
    job_ = nullptr;
}

void ThreadPool::parallel_dynamic(size_t n, size_t grain, const std::function<void(size_t, size_t)>& fn) {
    if (n == 0) return;
    if (grain == 0) grain = 1;
    if (n_threads_ == 1 || n <= grain) {
        fn(0, n);
        return;
    }
    std::atomic<size_t> next{0};
    parallel_for(static_cast<size_t>(n_threads_), [&](size_t, size_t) {
        for (;;) {
            const size_t b = next.fetch_add(grain, std::memory_order_relaxed);
            if (b >= n) return;
            fn(b, std::min(n, b + grain));
        }
    });
}

void ThreadPool::worker(int idx) {
    uint64_t seen = 0;
    for (;;) {
        const std::function<void(size_t, size_t)>* job;
        size_t n;
        spin_until([&] { return generation_.load(std::memory_order_acquire) != seen; });
        {
            std::unique_lock<std::mutex> lk(mu_);
            cv_start_.wait(lk, [&] { return stop_ || generation_.load() != seen; });
            if (stop_) return;
            seen = generation_.load();
            job = job_;
            n = job_n_;
        }
        size_t b, e;
        chunk_of(n, n_threads_, idx, b, e);
        if (b < e) (*job)(b, e);
        if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
            // taking the lock orders this against the caller's check-then-sleep: it either sees
            // pending_ == 0 or is already waiting when notified
            { std::lock_guard<std::mutex> lk(mu_); }
            cv_done_.notify_one();
        }
    }
}

int default_thread_count() {
    // Count distinct (physical id, core id) pairs; fall back to hardware_concurrency.
    std::ifstream in("/proc/cpuinfo");
    std::set<std::pair<std::string, std::string>> cores;
    std::string line, phys = "0";
    while (std::getline(in, line)) {
        auto colon = line.find(':');
        if (colon == std::string::npos) continue;
        std::string key = line.substr(0, line.find_last_not_of(" \t", colon - 1) + 1);
        std::string val = colon + 2 <= line.size() ? line.substr(colon + 2) : "";
        if (key == "physical id") phys = val;
        if (key == "core id") cores.insert({phys, val});
    }
    int n = static_cast<int>(cores.size());
    if (n <= 0) n = static_cast<int>(std::thread::hardware_concurrency());
    return n > 0 ? n : 1;
}

}  // namespace calpaca
