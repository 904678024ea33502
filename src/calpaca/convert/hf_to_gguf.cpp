#include "calpaca/convert/hf_to_gguf.h"

#include <algorithm>

#include "calpaca/base/error.h"
#include "calpaca/convert/merge_lora.h"
#include "calpaca/convert/sink.h"

namespace calpaca {

void permute_qk_rows_hf_to_gguf(const float* src, float* dst, int64_t rows, int64_t cols, int64_t n_heads) {
    if (rows % n_heads) fail("q/k permutation: {} rows are not divisible by {} heads", rows, n_heads);
    const int64_t d = rows / n_heads;
    if (d % 2) fail("q/k permutation: head dimension {} is odd", d);
    for (int64_t h = 0; h < n_heads; ++h)
        for (int64_t i = 0; i < d / 2; ++i)
            for (int64_t j = 0; j < 2; ++j) {
                const float* s = src + (h * d + j * (d / 2) + i) * cols;
                std::copy(s, s + cols, dst + (h * d + 2 * i + j) * cols);
            }
}

size_t convert_hf_to_gguf(const std::string& dir, const std::string& out, const ConvertOptions& opt) {
    MergeOptions m;
    m.outtype = opt.outtype;
    m.vocab_path = opt.vocab_path;
    m.name = opt.name;
    m.chat_template = opt.chat_template;
    m.checkpoint.n_ctx = opt.n_ctx;
    m.progress = opt.progress;
    m.pool = opt.pool;
    auto sink = make_gguf_sink(out, opt.pool);
    return run_merge(dir, *sink, m).n_tensors;
}

}  // namespace calpaca
