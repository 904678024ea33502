// What CPU this is, for benchmark reports: model name, thread/core counts and the SIMD
// extensions the kernels care about (from /proc/cpuinfo; empty fields where unknown).
#pragma once
#include <string>
#include <vector>

namespace calpaca {

struct CpuInfo {
    std::string model;                 // "AMD EPYC 7B13", "" when unknown
    int logical = 0;                   // hardware threads
    int physical = 0;                  // cores (default_thread_count())
    std::vector<std::string> simd;     // of: sse3 ssse3 sse4_1 sse4_2 avx avx2 fma f16c avx512f
                                       // avx512bw avx512vl avx512_vnni avx_vnni avx512_bf16 neon asimd
};

CpuInfo cpu_info();

}  // namespace calpaca
