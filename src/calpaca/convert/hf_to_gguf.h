// Checkpoint → llama GGUF (`calpaca convert`): a HF directory (safetensors or PyTorch .bin,
// single or sharded), a Meta directory (params.json + consolidated.NN.pth) or a GGUF file
// (re-typed). Streamed one row block at a time through the merge pipeline (merge_lora.h)
// with no adapters: Q/K rows are permuted to GGUF's interleaved layout, the vocabulary
// (pieces, scores, types, special ids) comes from tokenizer.model, rope theta / linear
// rope scaling and the context length from config.json (or params.json).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "calpaca/tensor/dtype.h"

namespace calpaca {

class ThreadPool;

struct ConvertOptions {
    DType outtype = DType::F16;   // matrices; 1-D tensors (norms) are always F32
    std::string vocab_path;       // tokenizer.model; default <dir>/tokenizer.model
    std::string name;             // general.name; default: directory name
    std::string chat_template;    // "" = by vocabulary size, "none" = none
    int64_t n_ctx = 0;            // context length override (Meta checkpoints have none)
    bool progress = true;
    ThreadPool* pool = nullptr;
};

// Writes `out` atomically. Returns the number of tensors written.
size_t convert_hf_to_gguf(const std::string& dir, const std::string& out, const ConvertOptions& opt);

// Row permutation HF (rotate-half) → GGUF (adjacent pairs) for a q/k weight with `rows`
// rows and `n_heads` heads: GGUF row h*d + 2i + j  =  HF row h*d + j*(d/2) + i.
void permute_qk_rows_hf_to_gguf(const float* src, float* dst, int64_t rows, int64_t cols, int64_t n_heads);

}  // namespace calpaca
