// Hugging Face LLaMA checkpoint directory → llama GGUF, streamed one tensor at a time.
// (This first version reads safetensors checkpoints; PyTorch .bin and Meta .pth sources
// come with the convert/merge work.)
#pragma once
#include <string>

#include "calpaca/tensor/dtype.h"

namespace calpaca {

struct ConvertOptions {
    DType outtype = DType::F16;   // matrices; 1-D tensors (norms) are always F32
    std::string vocab_path;       // tokenizer.model; default <dir>/tokenizer.model
    std::string name;             // general.name; default: directory name
    bool progress = true;
};

// Writes `out` atomically. Returns the number of tensors written.
size_t convert_hf_to_gguf(const std::string& dir, const std::string& out, const ConvertOptions& opt);

// Row permutation HF (rotate-half) → GGUF (adjacent pairs) for a q/k weight with `rows`
// rows and `n_heads` heads: GGUF row h*d + 2i + j  =  HF row h*d + j*(d/2) + i.
void permute_qk_rows_hf_to_gguf(const float* src, float* dst, int64_t rows, int64_t cols, int64_t n_heads);

}  // namespace calpaca
