// LLaMA hyper-parameters, read from GGUF metadata (llama.cpp's `llama.*` keys).
#pragma once
#include <cstdint>
#include <string>

namespace calpaca {

class GGUFFile;

struct LlamaConfig {
    int64_t n_vocab = 0;
    int64_t n_embd = 0;
    int64_t n_layer = 0;
    int64_t n_head = 0;
    int64_t n_head_kv = 0;
    int64_t n_ff = 0;
    int64_t n_ctx_train = 0;
    int64_t n_rot = 0;            // rotary dimensions (= head_dim for llama)
    float rms_eps = 1e-5f;
    float rope_theta = 10000.0f;
    float rope_linear_factor = 1.0f;  // positions are divided by this (PI / "linear" scaling)
    std::string name;
    std::string chat_template;    // calpaca.chat_template, if present

    int64_t head_dim() const { return n_embd / n_head; }
    int64_t n_embd_kv() const { return head_dim() * n_head_kv; }

    // Reads and validates; errors name the file and key.
    static LlamaConfig from_gguf(const GGUFFile& f);
    void validate(const std::string& source) const;
};

}  // namespace calpaca
