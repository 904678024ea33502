#include "calpaca/model/session.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "calpaca/base/error.h"
#include "calpaca/base/threadpool.h"

namespace calpaca {

Session::Session(const Model& m, SessionOptions o, ThreadPool* pool)
    : model_(m), cfg_(m.config()), opt_(o), pool_(o.reference ? nullptr : pool) {
    if (opt_.kv_type != DType::F16 && opt_.kv_type != DType::F32)
        fail("KV cache type must be f16 or f32, got {}", dtype_name(opt_.kv_type));
    n_ctx_ = opt_.n_ctx > 0 ? opt_.n_ctx : std::min<int64_t>(cfg_.n_ctx_train, 4096);
    if (n_ctx_ > (int64_t(1) << 22)) fail("context size {} is too large", n_ctx_);
    kv_elem_ = opt_.kv_type == DType::F16 ? 2 : 4;
    size_t bytes = static_cast<size_t>(cfg_.n_layer) * n_ctx_ * cfg_.n_embd_kv() * kv_elem_;
    k_cache_.resize(bytes);
    v_cache_.resize(bytes);
    // HF: inv_freq = 1 / base^(arange(0, d, 2) / d), computed in float32
    const int64_t hd = cfg_.head_dim();
    for (int64_t i = 0; i < hd / 2; ++i)
        inv_freq_.push_back(static_cast<float>(1.0 / std::pow(static_cast<double>(cfg_.rope_theta),
                                                               static_cast<double>(2 * i) / static_cast<double>(hd))));
}

uint8_t* Session::k_at(int64_t layer, int64_t pos) {
    return k_cache_.data() + (static_cast<size_t>(layer) * n_ctx_ + pos) * cfg_.n_embd_kv() * kv_elem_;
}
uint8_t* Session::v_at(int64_t layer, int64_t pos) {
    return v_cache_.data() + (static_cast<size_t>(layer) * n_ctx_ + pos) * cfg_.n_embd_kv() * kv_elem_;
}

void Session::truncate(int64_t n) {
    if (n < 0 || n > n_past_) fail("cannot truncate the session to {} tokens: it holds {}", n, n_past_);
    n_past_ = n;
}

void Session::mm(const MatrixView& w, const float* x, int64_t n, float* y) {
    if (opt_.reference)
        matmul_ref(w, x, n, y);
    else
        matmul(w, x, n, y, pool_);
}

// GGUF layout: each head's vector is rotated in adjacent pairs (x[2i], x[2i+1]) by
// angle pos/factor * inv_freq[i]. (HF rotates halves; the converter permuted q/k rows so
// the two agree.)
void Session::rope(float* x, int64_t n_tok, int64_t n_heads) const {
    const int64_t hd = cfg_.head_dim();
    for (int64_t t = 0; t < n_tok; ++t) {
        const float pos = static_cast<float>(n_past_ + t) / cfg_.rope_linear_factor;
        for (int64_t i = 0; i < hd / 2; ++i) {
            const float ang = pos * inv_freq_[i];  // float32 as HF computes it
            const float c = std::cos(ang), s = std::sin(ang);
            for (int64_t h = 0; h < n_heads; ++h) {
                float* p = x + (t * n_heads + h) * hd + 2 * i;
                const float x0 = p[0], x1 = p[1];
                p[0] = x0 * c - x1 * s;
                p[1] = x0 * s + x1 * c;
            }
        }
    }
}

void Session::attention(int64_t layer, const float* q, int64_t n_tok, float* out) {
    const int64_t hd = cfg_.head_dim(), nh = cfg_.n_head, kvd = cfg_.n_embd_kv();
    const int64_t group = cfg_.n_head / cfg_.n_head_kv;
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    const DType kt = opt_.kv_type;
    const uint8_t* kbase = k_at(layer, 0);
    const uint8_t* vbase = v_at(layer, 0);
    const size_t row = static_cast<size_t>(kvd) * kv_elem_;
    const bool ref = opt_.reference;
    auto body = [&](size_t b, size_t e) {
        std::vector<float> scores(static_cast<size_t>(n_past_ + n_tok));
        for (size_t job = b; job < e; ++job) {
            const int64_t t = static_cast<int64_t>(job) / nh, h = static_cast<int64_t>(job) % nh;
            const int64_t kvh = h / group;
            const int64_t n_keys = n_past_ + t + 1;  // causal: keys 0..pos
            const float* qh = q + (t * nh + h) * hd;
            for (int64_t j = 0; j < n_keys; ++j) {
                const uint8_t* kj = kbase + j * row + kvh * hd * kv_elem_;
                scores[j] = (ref ? dot_ref(kt, kj, qh, hd) : dot(kt, kj, qh, hd)) * scale;
            }
            softmax(scores.data(), n_keys);
            float* o = out + (t * nh + h) * hd;
            std::fill(o, o + hd, 0.0f);
            for (int64_t j = 0; j < n_keys; ++j) {
                const uint8_t* vj = vbase + j * row + kvh * hd * kv_elem_;
                if (ref)
                    axpy_ref(kt, vj, scores[j], o, hd);
                else
                    axpy(kt, vj, scores[j], o, hd);
            }
        }
    };
    const size_t jobs = static_cast<size_t>(n_tok * nh);
    if (pool_ && !ref)
        pool_->parallel_for(jobs, body);
    else
        body(0, jobs);
}

void Session::eval(std::span<const int32_t> tokens, bool all_logits) {
    const int64_t n = static_cast<int64_t>(tokens.size());
    if (n == 0) fail("eval: no tokens");
    if (n_past_ + n > n_ctx_)
        fail("context overflow: {} cached + {} new tokens exceed the context size {} (use a larger -c/--ctx-size)",
             n_past_, n, n_ctx_);
    const int64_t E = cfg_.n_embd, KV = cfg_.n_embd_kv(), F = cfg_.n_ff;
    for (int32_t id : tokens)
        if (id < 0 || id >= cfg_.n_vocab) fail("token id {} is outside the vocabulary [0, {})", id, cfg_.n_vocab);

    std::vector<float> x(n * E), xn(n * E), q(n * E), k(n * KV), v(n * KV), att(n * E), tmp(n * E);
    std::vector<float> g(n * F), u(n * F);
    for (int64_t t = 0; t < n; ++t) model_.embed(tokens[t], x.data() + t * E);

    for (int64_t l = 0; l < cfg_.n_layer; ++l) {
        const LayerWeights& L = model_.layers[l];
        for (int64_t t = 0; t < n; ++t) rmsnorm(x.data() + t * E, L.attn_norm.data(), xn.data() + t * E, E, cfg_.rms_eps);
        mm(L.wq, xn.data(), n, q.data());
        mm(L.wk, xn.data(), n, k.data());
        mm(L.wv, xn.data(), n, v.data());
        rope(q.data(), n, cfg_.n_head);
        rope(k.data(), n, cfg_.n_head_kv);
        for (int64_t t = 0; t < n; ++t) {
            uint8_t* kd = k_at(l, n_past_ + t);
            uint8_t* vd = v_at(l, n_past_ + t);
            if (opt_.kv_type == DType::F32) {
                std::memcpy(kd, k.data() + t * KV, KV * 4);
                std::memcpy(vd, v.data() + t * KV, KV * 4);
            } else {
                for (int64_t i = 0; i < KV; ++i) {
                    uint16_t hk = fp32_to_fp16(k[t * KV + i]), hv = fp32_to_fp16(v[t * KV + i]);
                    std::memcpy(kd + 2 * i, &hk, 2);
                    std::memcpy(vd + 2 * i, &hv, 2);
                }
            }
        }
        attention(l, q.data(), n, att.data());
        mm(L.wo, att.data(), n, tmp.data());
        for (int64_t i = 0; i < n * E; ++i) x[i] += tmp[i];

        for (int64_t t = 0; t < n; ++t) rmsnorm(x.data() + t * E, L.ffn_norm.data(), xn.data() + t * E, E, cfg_.rms_eps);
        mm(L.w_gate, xn.data(), n, g.data());
        mm(L.w_up, xn.data(), n, u.data());
        for (int64_t i = 0; i < n * F; ++i) g[i] = silu(g[i]) * u[i];
        mm(L.w_down, g.data(), n, tmp.data());
        for (int64_t i = 0; i < n * E; ++i) x[i] += tmp[i];
    }
    hidden_.resize(n * E);
    for (int64_t t = 0; t < n; ++t) rmsnorm(x.data() + t * E, model_.output_norm.data(), hidden_.data() + t * E, E, cfg_.rms_eps);
    const int64_t first = all_logits ? 0 : n - 1, n_out = n - first;
    logits_.resize(n_out * cfg_.n_vocab);
    mm(model_.output, hidden_.data() + first * E, n_out, logits_.data());
    n_past_ += n;
}

}  // namespace calpaca
