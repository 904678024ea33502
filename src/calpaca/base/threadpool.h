// A fixed pool of worker threads. Kernels are pure functions; the pool splits row ranges.
// parallel_for(n, fn) calls fn(begin, end) on disjoint chunks covering [0, n) and returns
// when all are done. The calling thread takes part in the work. Between jobs the workers (and
// the caller, waiting for them) spin briefly (~50 µs) before sleeping, so back-to-back calls
// do not pay a sleep and a wake-up each.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace calpaca {

class ThreadPool {
public:
    explicit ThreadPool(int n_threads);
    ~ThreadPool();
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;

    int size() const { return n_threads_; }
    // fn(begin, end); chunks are contiguous, one per thread (at most n_threads chunks).
    void parallel_for(size_t n, const std::function<void(size_t, size_t)>& fn);
    // fn(begin, end) on pieces of `grain` (the last may be shorter) handed out in order to
    // whichever thread is free: a thread the host slows down takes fewer pieces instead of
    // holding the others up at the end. Use where the pieces' results do not depend on which
    // thread runs them.
    void parallel_dynamic(size_t n, size_t grain, const std::function<void(size_t, size_t)>& fn);

private:
    void worker(int idx);
    int n_threads_;
    std::vector<std::thread> threads_;
    std::mutex mu_;
    std::condition_variable cv_start_, cv_done_;
    const std::function<void(size_t, size_t)>* job_ = nullptr;
    size_t job_n_ = 0;
    // Written under mu_ (so a thread that checks them under mu_ and then sleeps cannot miss the
    // change), read without it while spinning: a decode step is hundreds of short parallel_for
    // calls, and sleeping on the condition variables between them cost ~16 µs per call here.
    std::atomic<uint64_t> generation_{0};
    std::atomic<int> pending_{0};
    bool stop_ = false;
};

// Default thread count: physical cores (hardware threads / SMT siblings), at least 1.
int default_thread_count();

}  // namespace calpaca
