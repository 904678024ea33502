// PEFT LoRA adapter directories (adapter_config.json + adapter_model.bin or
// adapter_model.safetensors; the Chinese-LLaMA/Alpaca packages also carry tokenizer.model
// and, for long-context models, config.json).
//
// Stored keys (peft 0.3.0): base_model.model.<module>.lora_A.weight [r, in],
// …lora_B.weight [out, r], and whole replacement tensors for modules_to_save, e.g.
// base_model.model.model.embed_tokens.weight. Newer peft spellings (".default" adapter
// names, ".modules_to_save.default") are normalised to the same base-model keys.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "calpaca/formats/tensor_source.h"

namespace calpaca {

struct PeftAdapter {
    std::string dir;
    int64_t r = 0;
    double lora_alpha = 0;
    double scaling = 0;           // lora_alpha / r  (lora_alpha / sqrt(r) with use_rslora)
    bool fan_in_fan_out = false;
    std::vector<std::string> target_modules, modules_to_save;
    TensorSource tensors;         // as stored in the adapter file
    // base-model tensor name (e.g. "model.layers.0.self_attn.q_proj.weight") → stored key
    std::map<std::string, std::string> lora_a, lora_b, replace;
    std::string tokenizer_model;  // <dir>/tokenizer.model when present
    std::string weights_file;
};

PeftAdapter open_peft_adapter(const std::string& dir);

}  // namespace calpaca
