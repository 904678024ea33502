// LoRA adapter state for training: the trainable parameters (LoRA A/B on the targeted linear
// modules of every layer, plus the full embed_tokens / lm_head of PEFT's `modules_to_save`),
// their initialisation, and reading/writing the PEFT adapter directory.
//
// PEFT semantics (peft 0.3.0 LoraLayer, Linear): y = W x + (B (A dropout(x))) * alpha / r,
// A [r][in] ~ kaiming_uniform(a = sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)), B [out][r] = 0.
//
// Layout: calpaca runs the GGUF layout, whose q/k rows are HF's permuted per head (adjacent-pair
// RoPE). In memory B of q_proj/k_proj is kept in the GGUF row order (so W_gguf + s B A is exactly
// the permuted HF update); the adapter file holds B in HF's order, as PEFT writes it, so the
// adapter applies to an HF base exactly as PEFT would.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "calpaca/model/config.h"

namespace calpaca {

struct BaseWeights;

enum class LoraTarget : int { Q = 0, K, V, O, Gate, Up, Down };
constexpr int kNumLoraTargets = 7;
const char* lora_target_name(LoraTarget t);  // "q_proj", "k_proj", ... (HF module names)
LoraTarget parse_lora_target(const std::string& name);  // throws Error listing the valid names

struct LoraSettings {
    int64_t r = 8;
    float alpha = 32.0f;
    float dropout = 0.05f;
    std::vector<LoraTarget> targets = {LoraTarget::Q, LoraTarget::K, LoraTarget::V, LoraTarget::O,
                                       LoraTarget::Gate, LoraTarget::Up, LoraTarget::Down};
    bool train_embed = true;  // modules_to_save: embed_tokens
    bool train_head = true;   // modules_to_save: lm_head
    float scaling() const { return alpha / static_cast<float>(r); }
    bool has(LoraTarget t) const;
};

struct Param {
    std::string name;              // PEFT state-dict key
    std::vector<int64_t> shape;    // PyTorch order ([out][in])
    std::vector<float> w, g;       // value and accumulated gradient
    int64_t numel() const { return static_cast<int64_t>(w.size()); }
};

struct LoraModule {
    Param* A = nullptr;  // [r][in]
    Param* B = nullptr;  // [out][r], GGUF row order for q/k (see above)
    int64_t in = 0, out = 0;
};

class TrainableParams {
public:
    // A fresh adapter: A kaiming-uniform from `seed`, B zeros, embed/head copied from the base.
    static std::unique_ptr<TrainableParams> create(const BaseWeights& base, const LoraSettings& s, uint64_t seed);

    const LoraSettings& settings() const { return settings_; }
    const LlamaConfig& config() const { return cfg_; }
    std::vector<std::unique_ptr<Param>>& params() { return params_; }
    const std::vector<std::unique_ptr<Param>>& params() const { return params_; }
    const LoraModule* lora(int64_t layer, LoraTarget t) const;
    Param* embed() const { return embed_; }  // nullptr when not trained
    Param* head() const { return head_; }
    Param* find(const std::string& name) const;
    int64_t n_trainable() const;
    void zero_grad();

    // Write adapter_config.json + adapter_model.safetensors into `dir` (created if needed; each
    // file written atomically). `base_name` goes to base_model_name_or_path.
    void save_peft(const std::string& dir, const std::string& base_name) const;
    // Load the values of a PEFT adapter directory written by PEFT or by save_peft into these
    // parameters; r, alpha, targets and modules_to_save must match (else an Error naming the field).
    void load_peft(const std::string& dir);

    // B rows of a q/k module: GGUF order <-> HF order (in place on a [out][r] matrix).
    static void b_gguf_to_hf(std::vector<float>& b, int64_t out, int64_t r, int64_t n_heads);
    static void b_hf_to_gguf(std::vector<float>& b, int64_t out, int64_t r, int64_t n_heads);

private:
    TrainableParams() = default;
    int64_t heads_of(LoraTarget t) const;
    LoraSettings settings_;
    LlamaConfig cfg_;
    std::vector<std::unique_ptr<Param>> params_;
    std::vector<std::array<LoraModule, kNumLoraTargets>> lora_;
    Param* embed_ = nullptr;
    Param* head_ = nullptr;
};

// r, lora_alpha, lora_dropout, target_modules and modules_to_save of a PEFT adapter directory.
LoraSettings read_peft_settings(const std::string& dir);

// Parses "q_proj,v_proj" or "all" / "q,k,v,o,gate,up,down" short names.
std::vector<LoraTarget> parse_lora_targets(const std::string& list);

// Uniform [0,1) float from a 64-bit counter-based hash: the same value on every platform and for
// every thread count (used for initialisation, dropout and shuffling).
uint64_t mix64(uint64_t x);
inline double hash_uniform(uint64_t key, uint64_t i) {
    return static_cast<double>(mix64(key ^ mix64(i + 0x9E3779B97F4A7C15ull)) >> 11) * 0x1.0p-53;
}

}  // namespace calpaca
