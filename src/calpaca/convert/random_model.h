// Random-weight llama GGUF files of any shape: the bundled placeholder model, test models
// and benchmark models of real sizes (7B, 1.3B) without downloading anything. Streamed one
// tensor at a time, so a 13 GB file needs only one tensor's worth of memory.
#pragma once
#include <cstdint>
#include <string>

#include "calpaca/tensor/dtype.h"

namespace calpaca {

struct RandomModelSpec {
    std::string vocab_path;   // tokenizer.model; its piece count is the vocabulary size
    int64_t n_embd = 64, n_layer = 2, n_head = 4, n_head_kv = 4, n_ff = 172, n_ctx = 2048;
    float rms_eps = 1e-5f, rope_theta = 10000.0f;
    float std = 0.02f;        // weight init: normal(0, std) for matrices, 1 for norms
    DType type = DType::F16;  // matrices
    uint64_t seed = 1;
    std::string name = "calpaca-random";
    std::string chat_template;  // stored as calpaca.chat_template when non-empty
    std::string description;    // stored as general.description when non-empty
    bool tie_embeddings = false;  // no output.weight: the head reuses token_embd (smaller files)
    bool progress = true;
};

void write_random_model(const RandomModelSpec& spec, const std::string& out);

}  // namespace calpaca
