// The machine's memory read bandwidth, measured: the yardstick of decode speed (`calpaca
// bench`). Every thread of the pool streams its share of a buffer much larger than the last
// level cache; the figure is the median over several passes (the first, warming pass is
// not counted).
#pragma once
#include <cstdint>
#include <vector>

namespace calpaca {

class ThreadPool;

struct BandwidthResult {
    double median_gbps = 0, min_gbps = 0, max_gbps = 0;  // 1 GB = 1e9 bytes
    std::vector<double> passes_gbps;                     // every counted pass, in order
    uint64_t buffer_bytes = 0;
    int threads = 0;
};

// Size of the largest CPU cache (sysfs), 0 when unknown.
uint64_t largest_cache_bytes();
// 16 x the largest cache, at least 256 MiB and at most 1 GiB.
uint64_t default_bandwidth_buffer_bytes();

// Streams a buffer of buffer_bytes (0 = default_bandwidth_buffer_bytes(); rounded down to
// 4 KiB per thread, at least 1 MiB) `passes` times (>= 1) with every thread of pool
// (nullptr = this thread only). Throws Error for bad arguments or when the buffer cannot be
// allocated.
BandwidthResult measure_read_bandwidth(ThreadPool* pool, uint64_t buffer_bytes = 0, int passes = 9);

}  // namespace calpaca
