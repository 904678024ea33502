#include "calpaca/base/membw.h"

#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <string>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "calpaca/base/error.h"
#include "calpaca/base/threadpool.h"

namespace calpaca {

namespace {

// "32768K" / "1M" / "512" (sysfs cache size) → bytes; 0 when unreadable.
uint64_t parse_size(const std::string& s) {
    if (s.empty()) return 0;
    size_t pos = 0;
    uint64_t v = 0;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') v = v * 10 + static_cast<uint64_t>(s[pos++] - '0');
    if (pos < s.size() && (s[pos] == 'K' || s[pos] == 'k')) v <<= 10;
    if (pos < s.size() && (s[pos] == 'M' || s[pos] == 'm')) v <<= 20;
    return v;
}

// Sums a range of 64-byte lines so that the compiler cannot drop the loads. The range is read
// as 4 quarters side by side, one line of each per step: several independent streams per
// thread keep more reads in flight than one (one stream measured ~20 % below what the decode
// kernels, which also walk 4 streams, then achieved), so the figure is the machine's, not the
// probe's.
uint64_t read_range(const uint64_t* p, size_t n_words) {
#if defined(__AVX2__)
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    const size_t q = n_words / 4 / 8 * 8;  // words per quarter, whole 64-byte lines
    const uint64_t *p0 = p, *p1 = p + q, *p2 = p + 2 * q, *p3 = p + 3 * q;
    auto line = [](const uint64_t* x) {
        return _mm256_add_epi64(_mm256_load_si256(reinterpret_cast<const __m256i*>(x)),
                                _mm256_load_si256(reinterpret_cast<const __m256i*>(x + 4)));
    };
    for (size_t i = 0; i < q; i += 8) {
        a0 = _mm256_add_epi64(a0, line(p0 + i));
        a1 = _mm256_add_epi64(a1, line(p1 + i));
        a2 = _mm256_add_epi64(a2, line(p2 + i));
        a3 = _mm256_add_epi64(a3, line(p3 + i));
    }
    __m256i s = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
    alignas(32) uint64_t lanes[4];
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), s);
    uint64_t sum = lanes[0] + lanes[1] + lanes[2] + lanes[3];
    for (size_t i = 4 * q; i < n_words; ++i) sum += p[i];
    return sum;
#else
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 4 <= n_words; i += 4) {
        s0 += p[i];
        s1 += p[i + 1];
        s2 += p[i + 2];
        s3 += p[i + 3];
    }
    for (; i < n_words; ++i) s0 += p[i];
    return s0 + s1 + s2 + s3;
#endif
}

struct Mapping {
    void* p = MAP_FAILED;
    size_t n = 0;
    ~Mapping() {
        if (p != MAP_FAILED) ::munmap(p, n);
    }
};

}  // namespace

uint64_t largest_cache_bytes() {
    uint64_t best = 0;
    for (int i = 0; i < 8; ++i) {
        std::ifstream in("/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/size");
        if (!in) continue;
        std::string s;
        in >> s;
        best = std::max(best, parse_size(s));
    }
    return best;
}

uint64_t default_bandwidth_buffer_bytes() {
    const uint64_t lo = uint64_t(256) << 20, hi = uint64_t(1) << 30;
    return std::clamp<uint64_t>(16 * largest_cache_bytes(), lo, hi);
}

BandwidthResult measure_read_bandwidth(ThreadPool* pool, uint64_t buffer_bytes, int passes) {
    if (passes < 1) fail("memory bandwidth: passes must be >= 1, got {}", passes);
    const int threads = pool ? pool->size() : 1;
    if (buffer_bytes == 0) buffer_bytes = default_bandwidth_buffer_bytes();
    if (buffer_bytes < (uint64_t(1) << 20)) fail("memory bandwidth: buffer of {} bytes is too small (at least 1 MiB)", buffer_bytes);
    // Equal, page-aligned shares per thread.
    const uint64_t share = buffer_bytes / threads / 4096 * 4096;
    buffer_bytes = share * threads;

    Mapping m;
    m.n = buffer_bytes;
    m.p = ::mmap(nullptr, m.n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m.p == MAP_FAILED) fail("memory bandwidth: cannot allocate a {} MiB buffer", buffer_bytes >> 20);
#ifdef MADV_HUGEPAGE
    ::madvise(m.p, m.n, MADV_HUGEPAGE);  // fewer TLB misses while streaming; a hint only
#endif
    uint64_t* words = static_cast<uint64_t*>(m.p);
    const size_t words_per_share = share / 8;

    auto run = [&](const std::function<void(size_t, size_t)>& fn) {
        if (pool)
            pool->parallel_for(static_cast<size_t>(threads), fn);
        else
            fn(0, 1);
    };
    // Each thread writes its own share first (pages land near the thread that reads them).
    run([&](size_t b, size_t e) {
        for (size_t t = b; t < e; ++t) {
            uint64_t* p = words + t * words_per_share;
            for (size_t i = 0; i < words_per_share; ++i) p[i] = i ^ t;
        }
    });

    std::vector<uint64_t> sums(threads);
    BandwidthResult r;
    r.buffer_bytes = buffer_bytes;
    r.threads = threads;
    for (int pass = 0; pass <= passes; ++pass) {
        auto t0 = std::chrono::steady_clock::now();
        run([&](size_t b, size_t e) {
            for (size_t t = b; t < e; ++t) sums[t] += read_range(words + t * words_per_share, words_per_share);
        });
        double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (pass > 0) r.passes_gbps.push_back(static_cast<double>(buffer_bytes) / std::max(s, 1e-9) / 1e9);
    }
    // The sums feed an observable side effect so that no pass can be optimised away.
    volatile uint64_t sink = 0;
    for (uint64_t s : sums) sink = sink + s;
    (void)sink;

    std::vector<double> sorted = r.passes_gbps;
    std::sort(sorted.begin(), sorted.end());
    const size_t n = sorted.size();
    r.median_gbps = n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
    r.min_gbps = sorted.front();
    r.max_gbps = sorted.back();
    return r;
}

}  // namespace calpaca
