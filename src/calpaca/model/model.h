// A LLaMA model: configuration, weights as views into the mmap'd GGUF, and its vocabulary.
#pragma once
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "calpaca/formats/gguf.h"
#include "calpaca/model/config.h"
#include "calpaca/tensor/kernels.h"
#include "calpaca/tokenizer/tokenizer.h"

namespace calpaca {

class ThreadPool;

struct LayerWeights {
    std::vector<float> attn_norm, ffn_norm;  // small: copied to f32 at load
    MatrixView wq, wk, wv, wo;               // attn_q/k/v/output
    MatrixView w_gate, w_down, w_up;         // ffn_gate (w1), ffn_down (w2), ffn_up (w3)
};

class Model {
public:
    // Loads a llama GGUF. If vocab_override is non-empty it is a tokenizer.model whose size must
    // equal the model's vocabulary (else an error naming both files and sizes).
    static std::unique_ptr<Model> load(const std::string& path, const std::string& vocab_override = "");

    const LlamaConfig& config() const { return cfg_; }
    const GGUFFile& file() const { return *file_; }
    const Tokenizer& tokenizer() const { return *tok_; }
    const std::string& path() const { return file_->path(); }

    MatrixView tok_embd;       // [n_vocab][n_embd]
    MatrixView output;         // [n_vocab][n_embd] (token_embd when the file has no output.weight)
    std::vector<float> output_norm;
    std::vector<LayerWeights> layers;

    // Makes packed copies (tensor/packed.h) of the layer and output matrices that have none and
    // are packable (F16 / Q4_0 / Q8_0 / Q4_K / Q6_K on x86 AVX2), and lets the kernel reclaim their
    // mapped pages, slice_bytes of a matrix at a time (the resident set grows by one slice, not by
    // a whole matrix). Call after any in-memory change of the weights (apply_lora_in_memory);
    // matmul then uses the copies. CALPACA_PACK=0 in the environment turns it off (for comparisons).
    void pack_weights(ThreadPool* pool, size_t slice_bytes = size_t{32} << 20);

    // Embedding row of token id as f32 (checks the id).
    void embed(int32_t id, float* out) const;

    // In-memory weights (LoRA adapters merged at load time, convert/lora_runtime.h): the model
    // keeps `bytes` alive for its lifetime and returns where they are.
    const uint8_t* adopt(std::vector<uint8_t> bytes);
    // Replaces the vocabulary after an adapter resized the embeddings; its size must equal
    // the rows of tok_embd and output (Error naming both otherwise).
    void replace_vocab(Vocab v);

private:
    std::unique_ptr<GGUFFile> file_;
    LlamaConfig cfg_;
    std::unique_ptr<Tokenizer> tok_;
    std::deque<std::vector<uint8_t>> owned_;  // adopt()
    std::deque<std::unique_ptr<AnonBuffer>> packed_;  // pack_weights()
};

}  // namespace calpaca
