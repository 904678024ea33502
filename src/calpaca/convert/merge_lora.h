// The one conversion pipeline: base checkpoint (HF dir, Meta dir or GGUF) → optional PEFT
// LoRA adapters applied in order → a sink (GGUF, HF safetensors dir, Meta .pth dir).
// `calpaca convert` is this pipeline with no adapters.
//
// The merge follows the original scripts (merge_llama_with_chinese_lora_low_mem.py) and
// peft's merge exactly:
//   * modules_to_save tensors (embed_tokens, lm_head) replace the base tensor whole — this
//     is how the vocabulary grows (32000 → 49953/49954/55296); it must never shrink;
//   * LoRA pairs add delta = (B·A)·(lora_alpha/r) in f32 (transposed when fan_in_fan_out)
//     into the weight, rounding to the base tensor's storage type after each adapter (as
//     torch's in-place `W += delta` on an f16 tensor does); the output type is applied last;
//   * adapters apply in the order given (Alpaca-Plus: LLaMA-Plus LoRA, then Alpaca-Plus);
//   * the tokenizer comes from the last adapter that has one (else the base, or --vocab);
//   * a GGUF base keeps q/k in the interleaved layout: rows are permuted to the HF layout,
//     the (HF-layout) delta added, and permuted back — the same as permuting the delta.
// Tensors stream in row blocks of at most ~64 MB: memory stays flat whatever the model size.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "calpaca/convert/checkpoint.h"
#include "calpaca/convert/sink.h"

namespace calpaca {

class ThreadPool;

struct MergeOptions {
    std::vector<std::string> lora_dirs;  // applied in this order
    DType outtype = DType::F16;
    std::string vocab_path;       // tokenizer.model overriding the adapters' / base's
    std::string name;             // general.name (default: base name + adapter names)
    std::string chat_template;    // "" = by vocabulary size (49954 → alpaca, 55296 → alpaca-2), "none" = no key
    CheckpointOptions checkpoint;
    uint64_t block_floats = 16u << 20;  // row block size in floats (memory bound)
    bool progress = true;
    ThreadPool* pool = nullptr;
};

struct MergeResult {
    std::vector<std::string> files;  // written
    size_t n_tensors = 0;
    int64_t n_vocab = 0;
    uint64_t bytes_in = 0;   // tensor bytes read (base + adapters, as stored)
    uint64_t bytes_out = 0;  // total size of the written files
    double seconds = 0;
};

MergeResult run_merge(const std::string& base, TensorSink& sink, const MergeOptions& opt);

// The files a merge reads (weights, tokenizers, adapter weights), for --verify-sha256.
std::vector<std::string> merge_input_files(const std::string& base, const std::vector<std::string>& lora_dirs);

// Chat template name implied by a vocabulary size ("" when none).
std::string default_chat_template(int64_t n_vocab);

}  // namespace calpaca
