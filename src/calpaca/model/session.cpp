#include "calpaca/model/session.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>

#include "calpaca/base/error.h"
#include "calpaca/base/threadpool.h"
#include "calpaca/model/attention.h"

namespace calpaca {

namespace {
// Below this much work (elements touched) a pool hand-off costs more than it saves.
constexpr int64_t kMinParallelWork = 1 << 15;

template <typename T>
void grow(std::vector<T>& v, size_t n) {
    if (v.size() < n) v.resize(n);
}
}  // namespace

Session::Session(const Model& m, SessionOptions o, ThreadPool* pool)
    : model_(m), cfg_(m.config()), opt_(o), pool_(o.reference ? nullptr : pool) {
    if (opt_.kv_type != DType::F16 && opt_.kv_type != DType::F32)
        fail("KV cache type must be f16 or f32, got {}", dtype_name(opt_.kv_type));
    n_ctx_ = opt_.n_ctx > 0 ? opt_.n_ctx : std::min<int64_t>(cfg_.n_ctx_train, 4096);
    if (n_ctx_ > (int64_t(1) << 22)) fail("context size {} is too large", n_ctx_);
    kv_elem_ = opt_.kv_type == DType::F16 ? 2 : 4;
    size_t bytes = static_cast<size_t>(cfg_.n_layer) * n_ctx_ * cfg_.n_embd_kv() * kv_elem_;
    try {
        k_cache_.resize(bytes);
        v_cache_.resize(bytes);
    } catch (const std::bad_alloc&) {
        fail("KV cache of {} positions needs {:.2f} GiB (K and V, {}): out of memory; use a smaller context size",
             n_ctx_, 2.0 * static_cast<double>(bytes) / (1u << 30), dtype_name(opt_.kv_type));
    }
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

template <typename F>
void Session::split(int64_t n, int64_t cost_per_item, F&& fn) {
    if (n <= 0) return;
    if (pool_ && pool_->size() > 1 && n > 1 && n * cost_per_item >= kMinParallelWork)
        pool_->parallel_for(static_cast<size_t>(n), [&](size_t b, size_t e) { fn(static_cast<int64_t>(b), static_cast<int64_t>(e)); });
    else
        fn(int64_t(0), n);
}

void Session::mm(const MatrixView& w, const float* x, int64_t n, float* y) {
    if (opt_.reference)
        matmul_ref(w, x, n, y);
    else
        matmul(w, x, n, y, pool_);
}

void Session::norm_rows(const float* x, const std::vector<float>& w, float* out, int64_t n_tok) {
    const int64_t E = cfg_.n_embd;
    split(n_tok, E, [&](int64_t b, int64_t e) {
        for (int64_t t = b; t < e; ++t) rmsnorm(x + t * E, w.data(), out + t * E, E, cfg_.rms_eps);
    });
}

// The angles pos/factor * inv_freq[i] (float32, as HF) of the positions of this eval, shared
// by every layer's q and k.
void Session::prepare_rope(int64_t n_tok) {
    const int64_t half = cfg_.head_dim() / 2;
    grow(rope_cos_, static_cast<size_t>(n_tok * half));
    grow(rope_sin_, static_cast<size_t>(n_tok * half));
    split(n_tok, half * 8, [&](int64_t b, int64_t e) {
        for (int64_t t = b; t < e; ++t) {
            const float pos = static_cast<float>(n_past_ + t) / cfg_.rope_linear_factor;
            for (int64_t i = 0; i < half; ++i) {
                const float ang = pos * inv_freq_[i];
                rope_cos_[t * half + i] = std::cos(ang);
                rope_sin_[t * half + i] = std::sin(ang);
            }
        }
    });
}

// GGUF layout: each head's vector is rotated in adjacent pairs (x[2i], x[2i+1]) by
// angle pos/factor * inv_freq[i]. (HF rotates halves; the converter permuted q/k rows so
// the two agree.)
void Session::rope(float* x, int64_t t0, int64_t n_tok, int64_t n_heads) {
    const int64_t hd = cfg_.head_dim(), half = hd / 2;
    split(n_tok - t0, n_heads * hd, [&](int64_t b, int64_t e) {
        for (int64_t t = t0 + b; t < t0 + e; ++t) {
            const float* cs = rope_cos_.data() + t * half;
            const float* sn = rope_sin_.data() + t * half;
            for (int64_t h = 0; h < n_heads; ++h) {
                float* p = x + (t * n_heads + h) * hd;
                for (int64_t i = 0; i < half; ++i) {
                    const float x0 = p[2 * i], x1 = p[2 * i + 1];
                    p[2 * i] = x0 * cs[i] - x1 * sn[i];
                    p[2 * i + 1] = x0 * sn[i] + x1 * cs[i];
                }
            }
        }
    });
}

void Session::store_kv(int64_t layer, const float* k, const float* v, int64_t n_tok) {
    const int64_t KV = cfg_.n_embd_kv();
    split(n_tok, 2 * KV, [&](int64_t b, int64_t e) {
        for (int64_t t = b; t < e; ++t) {
            store_row(opt_.kv_type, k + t * KV, k_at(layer, n_past_ + t), KV);
            store_row(opt_.kv_type, v + t * KV, v_at(layer, n_past_ + t), KV);
        }
    });
}

void Session::attention(int64_t layer, const float* q, int64_t t0, int64_t n_tok, float* out) {
    const int64_t hd = cfg_.head_dim(), nh = cfg_.n_head, kvd = cfg_.n_embd_kv();
    const int64_t group = cfg_.n_head / cfg_.n_head_kv;
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    const bool ref = opt_.reference;
    const size_t stride = static_cast<size_t>(kvd) * kv_elem_;
    const uint8_t* kbase = k_at(layer, 0);
    const uint8_t* vbase = v_at(layer, 0);
    // A job is one head's queries of four consecutive rows (attend4 converts each K and V row
    // once for the four; a shorter last block goes row by row). Jobs are head-major (job = h *
    // blocks + block): a thread's contiguous share then holds early and late tokens alike, so
    // causal attention's growing key counts stay balanced.
    const int64_t m = n_tok - t0, blocks = (m + 3) / 4, E = nh * hd;
    auto body = [&](int64_t b, int64_t e) {
        thread_local std::vector<float> scratch;
        grow(scratch, static_cast<size_t>(4 * (n_past_ + n_tok + 3)));
        for (int64_t job = b; job < e; ++job) {
            const int64_t h = job / blocks, tb = t0 + 4 * (job % blocks), te = std::min(n_tok, tb + 4);
            const int64_t kvh = h / group;
            KVHead kv{kbase + kvh * hd * kv_elem_, vbase + kvh * hd * kv_elem_, opt_.kv_type, stride};
            if (!ref && te - tb == 4) {
                attend4(kv, q + tb * E + h * hd, E, hd, n_past_ + tb + 1, scale, out + tb * E + h * hd, E, scratch.data());
                continue;
            }
            for (int64_t t = tb; t < te; ++t) {
                const int64_t n_keys = n_past_ + t + 1;  // causal: keys 0..pos
                const float* qh = q + t * E + h * hd;
                float* o = out + t * E + h * hd;
                if (ref)
                    attend_ref(kv, qh, hd, n_keys, scale, o, scratch.data());
                else
                    attend(kv, qh, hd, n_keys, scale, o, scratch.data());
            }
        }
    };
    split(blocks * nh, 4 * (n_past_ + n_tok) * hd, body);
}

void Session::check_batch(std::span<const int32_t> tokens) const {
    const int64_t n = static_cast<int64_t>(tokens.size());
    if (n == 0) fail("eval: no tokens");
    if (n_past_ + n > n_ctx_)
        fail("context overflow: {} cached + {} new tokens exceed the context size {} (use a larger -c/--ctx-size)",
             n_past_, n, n_ctx_);
    for (int32_t id : tokens)
        if (id < 0 || id >= cfg_.n_vocab) fail("token id {} is outside the vocabulary [0, {})", id, cfg_.n_vocab);
}

void Session::eval(std::span<const int32_t> tokens, bool all_logits) {
    const int64_t n = static_cast<int64_t>(tokens.size());
    const int64_t ub = opt_.ubatch;
    if (all_logits || ub <= 0 || n <= ub) {
        eval_tail(tokens, all_logits ? 0 : std::max<int64_t>(n - 1, 0));
        return;
    }
    check_batch(tokens);  // the whole batch first: an error leaves the cache as it was
    for (int64_t b = 0; b < n; b += ub) {
        const int64_t m = std::min(ub, n - b);
        // chunks before the last only fill the cache: no logits, so their last layer stops after K and V
        forward(tokens.subspan(static_cast<size_t>(b), static_cast<size_t>(m)), b + m < n ? m : m - 1);
    }
}

void Session::eval_tail(std::span<const int32_t> tokens, int64_t first) {
    const int64_t n = static_cast<int64_t>(tokens.size());
    if (first < 0 || first >= n) fail("eval: first logit row {} is outside the batch of {} tokens", first, n);
    forward(tokens, first);  // (checks the tokens)
}

void Session::forward(std::span<const int32_t> tokens, int64_t first) {
    const int64_t n = static_cast<int64_t>(tokens.size());
    check_batch(tokens);
    const int64_t E = cfg_.n_embd, KV = cfg_.n_embd_kv(), F = cfg_.n_ff;

    const size_t nE = static_cast<size_t>(n * E), nKV = static_cast<size_t>(n * KV), nF = static_cast<size_t>(n * F);
    for (auto* b : {&x_, &xn_, &q_, &att_, &tmp_}) grow(*b, nE);
    grow(k_, nKV);
    grow(v_, nKV);
    grow(g_, nF);
    grow(u_, nF);
    float *x = x_.data(), *xn = xn_.data(), *q = q_.data(), *k = k_.data(), *v = v_.data();
    float *att = att_.data(), *tmp = tmp_.data(), *g = g_.data(), *u = u_.data();

    split(n, E, [&](int64_t b, int64_t e) {
        for (int64_t t = b; t < e; ++t) model_.embed(tokens[t], x + t * E);
    });
    prepare_rope(n);
    auto add_into = [&](float* dst, const float* src, int64_t count) {
        split(count, 1, [&](int64_t b, int64_t e) {
            for (int64_t i = b; i < e; ++i) dst[i] += src[i];
        });
    };

    for (int64_t l = 0; l < cfg_.n_layer; ++l) {
        const LayerWeights& L = model_.layers[l];
        // The last layer's outputs feed only the final norm and the head, so past the keys and
        // values that every row leaves in the cache it runs for the rows that get logits alone
        // (rows [r0, n)): a prompt's last layer is then its K and V projections plus one token's
        // work. Rows are independent there and the kernels give a row the same bits in any batch
        // (kernels.h), so the logits are those of the whole batch (as llama.cpp, which skips the
        // unused rows after the attention block).
        const int64_t r0 = l + 1 == cfg_.n_layer ? first : 0, m = n - r0;
        norm_rows(x, L.attn_norm, xn, n);
        mm(L.wk, xn, n, k);
        mm(L.wv, xn, n, v);
        rope(k, 0, n, cfg_.n_head_kv);
        store_kv(l, k, v, n);
        if (m == 0) continue;  // (the last layer of a chunk that only fills the cache)
        mm(L.wq, xn + r0 * E, m, q + r0 * E);
        rope(q, r0, n, cfg_.n_head);
        attention(l, q, r0, n, att);
        float *xr = x + r0 * E, *xnr = xn + r0 * E, *tr = tmp + r0 * E, *gr = g + r0 * F, *ur = u + r0 * F;
        mm(L.wo, att + r0 * E, m, tr);
        add_into(xr, tr, m * E);

        norm_rows(xr, L.ffn_norm, xnr, m);
        mm(L.w_gate, xnr, m, gr);
        mm(L.w_up, xnr, m, ur);
        split(m * F, 8, [&](int64_t b, int64_t e) {
            for (int64_t i = b; i < e; ++i) gr[i] = silu(gr[i]) * ur[i];
        });
        mm(L.w_down, gr, m, tr);
        add_into(xr, tr, m * E);
    }
    const int64_t n_out = n - first;
    hidden_.resize(static_cast<size_t>(n_out * E));
    logits_.resize(static_cast<size_t>(n_out * cfg_.n_vocab));
    if (n_out > 0) {
        norm_rows(x + first * E, model_.output_norm, hidden_.data(), n_out);
        mm(model_.output, hidden_.data(), n_out, logits_.data());
    }
    n_past_ += n;
}

}  // namespace calpaca
