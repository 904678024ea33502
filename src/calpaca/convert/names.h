// LLaMA tensor names in the three spellings we meet — Hugging Face (the canonical one used
// inside convert/), GGUF (llama.cpp) and Meta (.pth) — and the canonical tensor order.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace calpaca {

// Canonical (HF) names in writing order: embed, per layer (input_layernorm, q, k, v, o,
// post_attention_layernorm, gate, up, down), norm, lm_head (when with_head).
std::vector<std::string> llama_hf_names(int64_t n_layer, bool with_head);

// "" when the name is not a LLaMA tensor.
std::string hf_to_gguf_name(const std::string& hf);
std::string gguf_to_hf_name(const std::string& gguf);
std::string hf_to_meta_name(const std::string& hf);
std::string meta_to_hf_name(const std::string& meta);

// Whether an HF name is a q_proj / k_proj weight (0 none, 1 q, 2 k).
int qk_kind(const std::string& hf);
// Layer index of "model.layers.N.…" (-1 otherwise).
int64_t hf_layer_index(const std::string& hf);

}  // namespace calpaca
