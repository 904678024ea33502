#include "calpaca/train/optimizer.h"

#include <cmath>
#include <numbers>

#include "calpaca/base/error.h"

namespace calpaca {

AdamW::AdamW(const std::vector<std::unique_ptr<Param>>& params, AdamWConfig c) : c_(c) {
    for (const auto& p : params) {
        m_.emplace_back(p->w.size(), 0.0f);
        v_.emplace_back(p->w.size(), 0.0f);
    }
}

void AdamW::step(const std::vector<std::unique_ptr<Param>>& params, double lr) {
    if (params.size() != m_.size()) fail("AdamW: parameter list changed");
    ++t_;
    const double bc1 = 1.0 - std::pow(c_.beta1, static_cast<double>(t_));
    const double bc2 = 1.0 - std::pow(c_.beta2, static_cast<double>(t_));
    const float step_size = static_cast<float>(lr / bc1);
    const float bc2_sqrt = static_cast<float>(std::sqrt(bc2));
    const float decay = static_cast<float>(1.0 - lr * c_.weight_decay);
    const float b1 = static_cast<float>(c_.beta1), b2 = static_cast<float>(c_.beta2), eps = static_cast<float>(c_.eps);
    for (size_t k = 0; k < params.size(); ++k) {
        Param& p = *params[k];
        float* m = m_[k].data();
        float* v = v_[k].data();
        for (size_t i = 0; i < p.w.size(); ++i) {
            const float g = p.g[i];
            p.w[i] *= decay;
            m[i] = b1 * m[i] + (1.0f - b1) * g;
            v[i] = b2 * v[i] + (1.0f - b2) * g * g;
            const float denom = std::sqrt(v[i]) / bc2_sqrt + eps;
            p.w[i] -= step_size * m[i] / denom;
        }
    }
}

LrSchedule parse_lr_schedule(const std::string& name) {
    if (name == "constant") return LrSchedule::Constant;
    if (name == "linear") return LrSchedule::Linear;
    if (name == "cosine") return LrSchedule::Cosine;
    fail("unknown learning-rate schedule '{}' (expected constant, linear or cosine)", name);
}

double lr_at(int64_t step, int64_t total, int64_t warmup, LrSchedule s, double peak) {
    if (step < warmup) return peak * static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, warmup));
    const double rest = static_cast<double>(std::max<int64_t>(1, total - warmup));
    const double progress = static_cast<double>(step - warmup) / rest;
    switch (s) {
        case LrSchedule::Constant: return peak;
        case LrSchedule::Linear: return peak * std::max(0.0, static_cast<double>(total - step) / rest);
        case LrSchedule::Cosine: return peak * std::max(0.0, 0.5 * (1.0 + std::cos(std::numbers::pi * progress)));
    }
    return peak;
}

double clip_grad_norm(const std::vector<std::unique_ptr<Param>>& params, double max_norm) {
    double ss = 0;
    for (const auto& p : params)
        for (float g : p->g) ss += static_cast<double>(g) * g;
    const double norm = std::sqrt(ss);
    if (max_norm > 0) {
        const double coef = max_norm / (norm + 1e-6);
        if (coef < 1.0) {
            const float c = static_cast<float>(coef);
            for (auto& p : params)
                for (float& g : p->g) g *= c;
        }
    }
    return norm;
}

}  // namespace calpaca
