#include "calpaca/base/cpuinfo.h"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <thread>

#include "calpaca/base/threadpool.h"

namespace calpaca {

CpuInfo cpu_info() {
    static const char* const kSimd[] = {"sse3",     "ssse3",    "sse4_1",      "sse4_2",   "avx",
                                        "avx2",     "fma",      "f16c",        "avx512f",  "avx512bw",
                                        "avx512vl", "avx512_vnni", "avx_vnni", "avx512_bf16", "neon", "asimd"};
    CpuInfo c;
    c.logical = static_cast<int>(std::thread::hardware_concurrency());
    c.physical = default_thread_count();
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    bool have_flags = false;
    while (std::getline(in, line)) {
        auto colon = line.find(':');
        if (colon == std::string::npos) continue;
        std::string key = line.substr(0, colon);
        key.erase(key.find_last_not_of(" \t") + 1);
        std::string val = colon + 1 < line.size() ? line.substr(colon + 1) : "";
        val.erase(0, val.find_first_not_of(" \t"));
        if (c.model.empty() && key == "model name") c.model = val;
        if (!have_flags && (key == "flags" || key == "Features")) {
            have_flags = true;
            std::istringstream ss(" " + val + " ");
            std::vector<std::string> flags;
            std::string f;
            while (ss >> f) flags.push_back(f == "pni" ? "sse3" : f);  // x86 lists SSE3 as "pni"
            for (const char* s : kSimd)
                if (std::find(flags.begin(), flags.end(), s) != flags.end()) c.simd.push_back(s);
        }
    }
    return c;
}

}  // namespace calpaca
