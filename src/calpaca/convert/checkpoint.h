// A LLaMA checkpoint in any input format, seen through canonical (Hugging Face) tensor
// names: a HF directory (safetensors or PyTorch .bin, sharded or single), a Meta directory
// (params.json + consolidated.NN.pth) or a GGUF file. Tensors stay lazy (TensorSource).
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "calpaca/formats/tensor_source.h"
#include "calpaca/tokenizer/tokenizer.h"

namespace calpaca {

// Q/K row layout: HF checkpoints rotate halves, Meta and GGUF rotate adjacent pairs.
enum class QKLayout { RotateHalf, Interleaved };

struct LlamaParams {
    int64_t n_vocab = 0, n_embd = 0, n_layer = 0, n_head = 0, n_head_kv = 0, n_ff = 0, n_ctx = 0;
    double rms_eps = 1e-6, rope_theta = 10000.0;
    std::string rope_scaling_type;  // "" or "linear"
    double rope_scaling_factor = 1.0;
    bool has_head = true;           // false: lm_head tied to the embedding
    int64_t head_dim() const { return n_embd / n_head; }
    int64_t n_embd_kv() const { return head_dim() * n_head_kv; }
    // Expected PyTorch-order shape of a canonical tensor (Error for unknown names).
    std::vector<uint64_t> shape_of(const std::string& hf_name) const;
};

struct LlamaCheckpoint {
    enum class Kind { HF, Meta, GGUF } kind = Kind::HF;
    std::string path;
    LlamaParams hp;
    QKLayout layout = QKLayout::RotateHalf;
    TensorSource tensors;            // canonical names
    nlohmann::json hf_config;        // config.json (synthesised for Meta / GGUF)
    std::string dir;                 // directory holding side files (tokenizer_config.json …)
    std::string tokenizer_model;     // path, "" if none
    std::unique_ptr<Vocab> vocab;    // GGUF: the embedded vocabulary
    std::string chat_template;       // GGUF: calpaca.chat_template
    std::string name;                // general.name or directory name
};

struct CheckpointOptions {
    int64_t n_ctx = 0;  // override the context length (Meta params.json has none)
};

// Detects the kind: a *.gguf file, a directory with params.json (Meta) or config.json (HF).
LlamaCheckpoint open_llama_checkpoint(const std::string& path, const CheckpointOptions& opt = {});

const char* qk_layout_name(QKLayout l);

}  // namespace calpaca
