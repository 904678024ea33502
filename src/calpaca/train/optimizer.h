// AdamW (torch.optim.AdamW's update, step by step), learning-rate schedules (transformers'
// get_{constant,linear,cosine}_schedule_with_warmup) and global gradient-norm clipping
// (torch.nn.utils.clip_grad_norm_). All deterministic: parameters are visited in a fixed order.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "calpaca/train/lora.h"

namespace calpaca {

struct AdamWConfig {
    double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
};

class AdamW {
public:
    AdamW(const std::vector<std::unique_ptr<Param>>& params, AdamWConfig c);
    // One update with learning rate lr from each Param::g (gradients are not cleared).
    void step(const std::vector<std::unique_ptr<Param>>& params, double lr);
    int64_t steps() const { return t_; }
    const AdamWConfig& config() const { return c_; }
    // State for checkpoints: m and v per parameter, in parameter order.
    std::vector<std::vector<float>>& m() { return m_; }
    std::vector<std::vector<float>>& v() { return v_; }
    const std::vector<std::vector<float>>& m() const { return m_; }
    const std::vector<std::vector<float>>& v() const { return v_; }
    void set_steps(int64_t t) { t_ = t; }

private:
    AdamWConfig c_;
    int64_t t_ = 0;
    std::vector<std::vector<float>> m_, v_;
};

enum class LrSchedule { Constant, Linear, Cosine };
LrSchedule parse_lr_schedule(const std::string& name);  // "constant" | "linear" | "cosine"

// Learning rate of optimizer step `step` (0-based) of `total`, after `warmup` linear warm-up steps
// starting at 0 (HF: the first step of a warm-up uses lr 0).
double lr_at(int64_t step, int64_t total, int64_t warmup, LrSchedule s, double peak);

// Scales all gradients so that their global L2 norm is at most max_norm (if max_norm > 0).
// Returns the norm before clipping.
double clip_grad_norm(const std::vector<std::unique_ptr<Param>>& params, double max_norm);

}  // namespace calpaca
