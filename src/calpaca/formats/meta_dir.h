// Meta (original LLaMA) checkpoint directories: params.json + consolidated.NN.pth, where
// each tensor is split across the shards (model parallelism) and must be concatenated:
//   tok_embeddings, attention.wo, feed_forward.w2      → along dim 1 (columns)
//   output, attention.wq/wk/wv, feed_forward.w1/w3     → along dim 0 (rows)
//   norm, attention_norm, ffn_norm (and rope.freqs)    → replicated (shard 0 is used)
// The returned source keeps Meta's names and layout (q/k rotate adjacent pairs).
#pragma once
#include <cstdint>
#include <string>

#include "calpaca/formats/tensor_source.h"

namespace calpaca {

struct MetaParams {
    int64_t dim = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0, vocab_size = -1, multiple_of = 256;
    double norm_eps = 1e-6, rope_theta = 10000.0, ffn_dim_multiplier = 0;  // 0 = absent
};

MetaParams read_meta_params(const std::string& params_json);
// Concatenation axis of a Meta tensor name: 0, 1, or -1 (replicated).
int meta_split_axis(const std::string& name);
// Opens every consolidated.*.pth of `dir` and concatenates per tensor (Error if a shard is
// missing: consolidated.00 … NN must all exist, or if shapes disagree).
TensorSource open_meta_weights(const std::string& dir);

}  // namespace calpaca
