#include "calpaca/model/multi_session.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>

#include "calpaca/base/error.h"
#include "calpaca/base/threadpool.h"
#include "calpaca/model/attention.h"

namespace calpaca {

MultiSession::MultiSession(const Model& m, MultiSessionOptions o, ThreadPool* pool)
    : model_(m), cfg_(m.config()), pool_(pool), kv_type_(o.kv_type) {
    if (kv_type_ != DType::F16 && kv_type_ != DType::F32)
        fail("KV cache type must be f16 or f32, got {}", dtype_name(kv_type_));
    if (o.n_slots < 1 || o.n_slots > 1024) fail("number of slots must be in [1, 1024], got {}", o.n_slots);
    n_ctx_ = o.n_ctx > 0 ? o.n_ctx : std::min<int64_t>(cfg_.n_ctx_train, 2048);
    if (n_ctx_ > (int64_t(1) << 22)) fail("context size {} is too large", n_ctx_);
    kv_elem_ = kv_type_ == DType::F16 ? 2 : 4;
    const size_t bytes = static_cast<size_t>(o.n_slots) * cfg_.n_layer * n_ctx_ * cfg_.n_embd_kv() * kv_elem_;
    try {
        k_cache_.resize(bytes);
        v_cache_.resize(bytes);
    } catch (const std::bad_alloc&) {
        fail("KV caches of {} slots x {} positions need {:.2f} GiB (K and V, {}): out of memory; use fewer slots "
             "(--parallel) or a smaller context size (--ctx-size)",
             o.n_slots, n_ctx_, 2.0 * static_cast<double>(bytes) / (1u << 30), dtype_name(kv_type_));
    }
    n_past_.assign(static_cast<size_t>(o.n_slots), 0);
    // the same float32 inv_freq as Session (HF: 1 / base^(arange(0, d, 2) / d))
    const int64_t hd = cfg_.head_dim();
    for (int64_t i = 0; i < hd / 2; ++i)
        inv_freq_.push_back(static_cast<float>(1.0 / std::pow(static_cast<double>(cfg_.rope_theta),
                                                               static_cast<double>(2 * i) / static_cast<double>(hd))));
}

uint8_t* MultiSession::k_at(int slot, int64_t layer, int64_t pos) {
    const size_t row = static_cast<size_t>(cfg_.n_embd_kv()) * kv_elem_;
    return k_cache_.data() + ((static_cast<size_t>(slot) * cfg_.n_layer + layer) * n_ctx_ + pos) * row;
}
uint8_t* MultiSession::v_at(int slot, int64_t layer, int64_t pos) {
    const size_t row = static_cast<size_t>(cfg_.n_embd_kv()) * kv_elem_;
    return v_cache_.data() + ((static_cast<size_t>(slot) * cfg_.n_layer + layer) * n_ctx_ + pos) * row;
}

int64_t MultiSession::n_past(int slot) const {
    if (slot < 0 || slot >= n_slots()) fail("slot {} does not exist (there are {})", slot, n_slots());
    return n_past_[static_cast<size_t>(slot)];
}

void MultiSession::truncate(int slot, int64_t n) {
    const int64_t have = n_past(slot);
    if (n < 0 || n > have) fail("cannot truncate slot {} to {} tokens: it holds {}", slot, n, have);
    n_past_[static_cast<size_t>(slot)] = n;
}

// Adjacent-pair rotation (GGUF layout), each row at its own slot position.
void MultiSession::rope(float* x, int64_t n_heads) const {
    const int64_t hd = cfg_.head_dim();
    for (int64_t t = 0; t < n_rows_; ++t) {
        const float pos = static_cast<float>(row_pos_[t]) / cfg_.rope_linear_factor;
        for (int64_t i = 0; i < hd / 2; ++i) {
            const float ang = pos * inv_freq_[i];
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

void MultiSession::attention(int64_t layer, const float* q, float* out) {
    const int64_t hd = cfg_.head_dim(), nh = cfg_.n_head, kvd = cfg_.n_embd_kv();
    const int64_t group = cfg_.n_head / cfg_.n_head_kv;
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    const size_t row = static_cast<size_t>(kvd) * kv_elem_;
    int64_t max_keys = 0;
    for (int64_t t = 0; t < n_rows_; ++t) max_keys = std::max(max_keys, row_pos_[t] + 1);
    auto body = [&](size_t b, size_t e) {
        std::vector<float> scores(static_cast<size_t>(max_keys));
        for (size_t job = b; job < e; ++job) {
            const int64_t t = static_cast<int64_t>(job) / nh, h = static_cast<int64_t>(job) % nh;
            const int64_t kvh = h / group;
            const int64_t n_keys = row_pos_[t] + 1;  // causal within the row's own slot
            const size_t head = static_cast<size_t>(kvh * hd) * kv_elem_;
            const KVHead kv{k_at(row_slot_[t], layer, 0) + head, v_at(row_slot_[t], layer, 0) + head, kv_type_, row};
            // attend sums in dot() / softmax() / axpy() order: the bits of Session's attention
            attend(kv, q + (t * nh + h) * hd, hd, n_keys, scale, out + (t * nh + h) * hd, scores.data());
        }
    };
    const size_t jobs = static_cast<size_t>(n_rows_ * nh);
    if (pool_)
        pool_->parallel_for(jobs, body);
    else
        body(0, jobs);
}

void MultiSession::forward(std::span<const Item> items) {
    if (items.empty()) fail("forward: no items");
    std::vector<uint8_t> seen(n_past_.size(), 0);
    n_rows_ = 0;
    for (const Item& it : items) {
        const int64_t have = n_past(it.slot);
        if (seen[static_cast<size_t>(it.slot)]++) fail("forward: slot {} appears twice in one batch", it.slot);
        const int64_t n = static_cast<int64_t>(it.tokens.size());
        if (n == 0) fail("forward: slot {} has no tokens", it.slot);
        if (have + n > n_ctx_)
            fail("context overflow in slot {}: {} cached + {} new tokens exceed the context size {}", it.slot, have, n,
                 n_ctx_);
        for (int32_t id : it.tokens)
            if (id < 0 || id >= cfg_.n_vocab) fail("token id {} is outside the vocabulary [0, {})", id, cfg_.n_vocab);
        n_rows_ += n;
    }
    const int64_t N = n_rows_, E = cfg_.n_embd, KV = cfg_.n_embd_kv(), F = cfg_.n_ff;
    row_slot_.resize(N);
    row_pos_.resize(N);
    item_first_row_.resize(items.size());
    item_logit_row_.resize(items.size());
    item_kept_row_.resize(items.size());
    item_rows_.resize(items.size());
    item_kept_all_.resize(items.size());
    kept_.clear();
    int64_t r = 0, n_out = 0;
    for (size_t i = 0; i < items.size(); ++i) {
        const Item& it = items[i];
        const auto n = static_cast<int64_t>(it.tokens.size());
        item_first_row_[i] = r;
        item_logit_row_[i] = n_out;
        item_kept_row_[i] = static_cast<int64_t>(kept_.size());
        item_rows_[i] = n;
        item_kept_all_[i] = it.hidden || it.logits == Output::All;
        if (item_kept_all_[i])
            for (int64_t t = 0; t < n; ++t) kept_.push_back(r + t);
        else if (it.logits == Output::Last)
            kept_.push_back(r + n - 1);
        const int64_t base = n_past_[static_cast<size_t>(it.slot)];
        for (size_t t = 0; t < it.tokens.size(); ++t, ++r) {
            row_slot_[r] = it.slot;
            row_pos_[r] = base + static_cast<int64_t>(t);
        }
        n_out += it.logits == Output::All ? static_cast<int64_t>(it.tokens.size()) : it.logits == Output::Last ? 1 : 0;
    }
    auto grow = [](std::vector<float>& v, int64_t n) {
        if (v.size() < static_cast<size_t>(n)) v.resize(static_cast<size_t>(n));
    };
    grow(x_, N * E), grow(xn_, N * E), grow(q_, N * E), grow(att_, N * E), grow(tmp_, N * E);
    grow(k_, N * KV), grow(v_, N * KV), grow(g_, N * F), grow(u_, N * F);
    r = 0;
    for (const Item& it : items)
        for (int32_t id : it.tokens) model_.embed(id, x_.data() + (r++) * E);

    float *x = x_.data(), *xn = xn_.data(), *q = q_.data(), *k = k_.data(), *v = v_.data();
    float *att = att_.data(), *tmp = tmp_.data(), *g = g_.data(), *u = u_.data();
    for (int64_t l = 0; l < cfg_.n_layer; ++l) {
        const LayerWeights& L = model_.layers[l];
        for (int64_t t = 0; t < N; ++t) rmsnorm(x + t * E, L.attn_norm.data(), xn + t * E, E, cfg_.rms_eps);
        matmul(L.wq, xn, N, q, pool_);
        matmul(L.wk, xn, N, k, pool_);
        matmul(L.wv, xn, N, v, pool_);
        rope(q, cfg_.n_head);
        rope(k, cfg_.n_head_kv);
        for (int64_t t = 0; t < N; ++t) {
            uint8_t* kd = k_at(row_slot_[t], l, row_pos_[t]);
            uint8_t* vd = v_at(row_slot_[t], l, row_pos_[t]);
            if (kv_type_ == DType::F32) {
                std::memcpy(kd, k + t * KV, KV * 4);
                std::memcpy(vd, v + t * KV, KV * 4);
            } else {
                for (int64_t i = 0; i < KV; ++i) {
                    const uint16_t hk = fp32_to_fp16(k[t * KV + i]), hv = fp32_to_fp16(v[t * KV + i]);
                    std::memcpy(kd + 2 * i, &hk, 2);
                    std::memcpy(vd + 2 * i, &hv, 2);
                }
            }
        }
        int64_t M = N;  // rows past K and V
        if (l + 1 == cfg_.n_layer && static_cast<int64_t>(kept_.size()) < N) {
            // The last layer's outputs feed only the final norm, the head and embeddings, so past the
            // keys and values every row leaves in its cache it runs for the kept rows alone (a
            // prompt chunk's K and V plus, at most, its last row), moved to the front in order: the
            // kernels give a row the same bits in any batch, so kept rows keep Session's bits.
            M = static_cast<int64_t>(kept_.size());
            for (int64_t j = 0; j < M; ++j) {
                const int64_t src = kept_[static_cast<size_t>(j)];
                if (src == j) continue;
                std::memcpy(x + j * E, x + src * E, E * sizeof(float));
                std::memcpy(q + j * E, q + src * E, E * sizeof(float));
                row_slot_[j] = row_slot_[src];
                row_pos_[j] = row_pos_[src];
            }
            n_rows_ = M;
            if (M == 0) break;
        }
        attention(l, q, att);
        matmul(L.wo, att, M, tmp, pool_);
        for (int64_t i = 0; i < M * E; ++i) x[i] += tmp[i];

        for (int64_t t = 0; t < M; ++t) rmsnorm(x + t * E, L.ffn_norm.data(), xn + t * E, E, cfg_.rms_eps);
        matmul(L.w_gate, xn, M, g, pool_);
        matmul(L.w_up, xn, M, u, pool_);
        for (int64_t i = 0; i < M * F; ++i) g[i] = silu(g[i]) * u[i];
        matmul(L.w_down, g, M, tmp, pool_);
        for (int64_t i = 0; i < M * E; ++i) x[i] += tmp[i];
    }
    // every row ran the last layer, or the kept ones are at the front (above)
    const auto K = static_cast<int64_t>(kept_.size());
    if (K == N)
        for (size_t i = 0; i < items.size(); ++i) item_kept_row_[i] = item_first_row_[i], item_kept_all_[i] = 1;
    grow(hidden_, K * E);
    for (int64_t t = 0; t < K; ++t) rmsnorm(x + t * E, model_.output_norm.data(), hidden_.data() + t * E, E, cfg_.rms_eps);
    // the output matrix runs once over the rows that need logits, gathered contiguously
    grow(gathered_, n_out * E);
    grow(logits_, n_out * cfg_.n_vocab);
    int64_t o = 0;
    for (size_t i = 0; i < items.size(); ++i) {
        const Item& it = items[i];
        const int64_t n = static_cast<int64_t>(it.tokens.size());
        if (it.logits == Output::None) continue;
        const int64_t first = it.logits == Output::All ? 0 : n - 1;
        for (int64_t t = first; t < n; ++t, ++o)
            std::memcpy(gathered_.data() + o * E, hidden(i, t), E * sizeof(float));
    }
    if (n_out > 0) matmul(model_.output, gathered_.data(), n_out, logits_.data(), pool_);
    for (const Item& it : items) n_past_[static_cast<size_t>(it.slot)] += static_cast<int64_t>(it.tokens.size());
}

const float* MultiSession::logits(size_t item, int64_t row) const {
    if (item >= item_logit_row_.size()) fail("logits: item {} is not in the last batch", item);
    return logits_.data() + (item_logit_row_[item] + row) * cfg_.n_vocab;
}

const float* MultiSession::hidden(size_t item, int64_t row) const {
    if (item >= item_first_row_.size()) fail("hidden: item {} is not in the last batch", item);
    const int64_t n = item_rows_[item];
    if (row < 0 || row >= n) fail("hidden: row {} is outside item {}'s {} tokens", row, item, n);
    if (item_kept_all_[item]) return hidden_.data() + (item_kept_row_[item] + row) * cfg_.n_embd;
    if (row != n - 1 || item_kept_row_[item] >= static_cast<int64_t>(kept_.size()) ||
        kept_[static_cast<size_t>(item_kept_row_[item])] != item_first_row_[item] + n - 1)
        fail("hidden: row {} of item {} was not computed (only rows with logits, or every row with Item::hidden)",
             row, item);
    return hidden_.data() + item_kept_row_[item] * cfg_.n_embd;
}

}  // namespace calpaca
