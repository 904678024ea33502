// Resizing a model's vocabulary to an extended tokenizer (LLaMA 32000 → Chinese-LLaMA 49953 →
// Chinese-Alpaca 49954), the step between merging tokenizers and pre-training: the original
// called HF's model.resize_token_embeddings(len(tokenizer)).
//
// The new tokenizer must extend the model's: its first n_old pieces equal the model's pieces
// (string and type), else an Error names the first difference. token_embd.weight and
// output.weight (when the file has one) keep their n_old rows byte for byte; the new rows are
// initialised with the mean of the existing rows of that matrix (default), zeros, or
// normal(0, std) draws (HF's initializer_range, 0.02). All other tensors are copied unchanged;
// the tokenizer.ggml.* metadata is replaced by the new tokenizer's and llama.vocab_size updated.
// Streamed one tensor at a time; written atomically.
#pragma once
#include <cstdint>
#include <string>

namespace calpaca {

enum class EmbeddingInit { Mean, Zero, Random };
// "mean" | "zero" | "random" → value; anything else → Error naming --init.
EmbeddingInit embedding_init_from_name(const std::string& name);

struct ResizeVocabOptions {
    std::string vocab_path;   // the new tokenizer.model
    EmbeddingInit init = EmbeddingInit::Mean;
    float std = 0.02f;        // Random only
    uint64_t seed = 1;        // Random only
    bool progress = true;
};

struct ResizeVocabResult {
    size_t old_vocab = 0, new_vocab = 0;
    size_t matrices_resized = 0;  // 1 (tied embeddings) or 2
};

ResizeVocabResult resize_vocab(const std::string& model_path, const std::string& out_path,
                               const ResizeVocabOptions& opt);

}  // namespace calpaca
