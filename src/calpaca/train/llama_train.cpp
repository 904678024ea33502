#include "calpaca/train/llama_train.h"

#include <algorithm>
#include <array>
#include <cstring>

#include "calpaca/base/error.h"
#include "calpaca/base/threadpool.h"
#include "calpaca/tensor/quant.h"
#include "calpaca/train/train_kernels.h"

namespace calpaca {

BaseWeights BaseWeights::from_model(const Model& m) {
    BaseWeights b;
    b.cfg = m.config();
    b.tok_embd = m.tok_embd;
    b.output = m.output;
    b.output_norm = m.output_norm;
    b.layers = m.layers;
    auto check = [](const MatrixView& w, const std::string& name) {
        const bool dense = w.type == DType::F32 || w.type == DType::F16 || w.type == DType::BF16;
        if (!dense && !is_weight_quant(w.type))
            fail("{}: base weights of type {} cannot be trained on (expected F32, F16, BF16 or a quantized "
                 "block type such as Q8_0 / Q4_0)", name, dtype_name(w.type));
        if (!dense && w.cols % static_cast<int64_t>(dtype_info(w.type).block_size) != 0)
            fail("{}: a {} matrix needs a row length that is a multiple of {}, got {}", name, dtype_name(w.type),
                 dtype_info(w.type).block_size, w.cols);
    };
    check(b.tok_embd, "token_embd.weight");
    check(b.output, "output.weight");
    for (size_t l = 0; l < b.layers.size(); ++l)
        for (int t = 0; t < kNumLoraTargets; ++t)
            check(b.matrix(static_cast<int64_t>(l), static_cast<LoraTarget>(t)),
                  fmt::format("layer {} {}", l, lora_target_name(static_cast<LoraTarget>(t))));
    return b;
}

const MatrixView& BaseWeights::matrix(int64_t l, LoraTarget t) const {
    const LayerWeights& L = layers[static_cast<size_t>(l)];
    switch (t) {
        case LoraTarget::Q: return L.wq;
        case LoraTarget::K: return L.wk;
        case LoraTarget::V: return L.wv;
        case LoraTarget::O: return L.wo;
        case LoraTarget::Gate: return L.w_gate;
        case LoraTarget::Up: return L.w_up;
        case LoraTarget::Down: return L.w_down;
    }
    fail("unknown LoRA target");
}

int64_t Example::n_valid_targets() const {
    int64_t n = 0;
    for (size_t i = 1; i < labels.size(); ++i) n += labels[i] != kIgnoreIndex;
    return n;
}

struct LlamaTrainModel::LayerCache {
    std::vector<float> x_in, xn1, r1, q, k, v, probs, att, x_mid, xn2, r2, g, u, h;
    std::array<std::vector<float>, kNumLoraTargets> a, xd;
};

LlamaTrainModel::LlamaTrainModel(const BaseWeights& base, TrainableParams& params, ThreadPool* pool, bool recompute)
    : base_(base), params_(params), pool_(pool), recompute_(recompute) {}
LlamaTrainModel::~LlamaTrainModel() = default;

namespace {

MatrixView f32_view(const Param& p, int64_t rows, int64_t cols) {
    MatrixView m;
    m.data = p.w.data();
    m.type = DType::F32;
    m.rows = rows;
    m.cols = cols;
    return m;
}

uint64_t dropout_stream(const DropoutKey& k, int64_t layer, LoraTarget t) {
    uint64_t h = mix64(k.seed ^ 0x6C6F7261ull);
    h = mix64(h ^ k.step);
    h = mix64(h ^ (k.sequence + 0x1000));
    h = mix64(h ^ static_cast<uint64_t>(layer * 16 + static_cast<int>(t)));
    return h;
}

}  // namespace

void LlamaTrainModel::linear_fwd(int64_t l, LoraTarget t, const float* x, int64_t T, float* y, std::vector<float>& a,
                                 std::vector<float>& xd, const DropoutKey* key) {
    const MatrixView& W = base_.matrix(l, t);
    matmul_frozen(W, x, T, y, pool_);
    const LoraModule* m = params_.lora(l, t);
    if (!m) return;
    const int64_t r = params_.settings().r;
    const float p = params_.settings().dropout;
    const float* xin = x;
    if (key && p > 0.0f) {
        xd.assign(x, x + T * m->in);
        const uint64_t stream = dropout_stream(*key, l, t);
        const float keep_scale = 1.0f / (1.0f - p);
        for (int64_t i = 0; i < T * m->in; ++i)
            xd[i] = hash_uniform(stream, static_cast<uint64_t>(i)) < p ? 0.0f : xd[i] * keep_scale;
        xin = xd.data();
    } else {
        xd.clear();
    }
    a.assign(static_cast<size_t>(T * r), 0.0f);
    matmul(f32_view(*m->A, r, m->in), xin, T, a.data(), pool_);
    std::vector<float> ba(static_cast<size_t>(T * m->out));
    matmul(f32_view(*m->B, m->out, r), a.data(), T, ba.data(), pool_);
    const float s = params_.settings().scaling();
    for (int64_t i = 0; i < T * m->out; ++i) y[i] += s * ba[i];
}

void LlamaTrainModel::linear_bwd(int64_t l, LoraTarget t, const float* x, const std::vector<float>& a,
                                 const std::vector<float>& xd, const float* dy, int64_t T, float* dx,
                                 const DropoutKey* key) {
    const MatrixView& W = base_.matrix(l, t);
    matmul_tn(W, dy, T, dx, pool_);
    const LoraModule* m = params_.lora(l, t);
    if (!m) return;
    const int64_t r = params_.settings().r;
    const float s = params_.settings().scaling(), p = params_.settings().dropout;
    // dB += s dy^T a;  da = s B^T dy;  dA += da^T xd;  dx += dropout'(A^T da)
    outer_acc(dy, m->out, a.data(), r, T, s, m->B->g.data(), pool_);
    std::vector<float> da(static_cast<size_t>(T * r), 0.0f);
    matmul_tn(f32_view(*m->B, m->out, r), dy, T, da.data(), pool_);
    for (float& v : da) v *= s;
    const bool dropped = key && p > 0.0f;
    outer_acc(da.data(), r, dropped ? xd.data() : x, m->in, T, 1.0f, m->A->g.data(), pool_);
    if (!dropped) {
        matmul_tn(f32_view(*m->A, r, m->in), da.data(), T, dx, pool_);
        return;
    }
    std::vector<float> dxd(static_cast<size_t>(T * m->in), 0.0f);
    matmul_tn(f32_view(*m->A, r, m->in), da.data(), T, dxd.data(), pool_);
    const uint64_t stream = dropout_stream(*key, l, t);
    const float keep_scale = 1.0f / (1.0f - p);
    for (int64_t i = 0; i < T * m->in; ++i)
        if (hash_uniform(stream, static_cast<uint64_t>(i)) >= p) dx[i] += dxd[i] * keep_scale;
}

void LlamaTrainModel::layer_forward(int64_t l, const float* x_in, int64_t T, LayerCache& c, float* x_out,
                                    const DropoutKey* key) {
    const LlamaConfig& cfg = base_.cfg;
    const LayerWeights& L = base_.layers[static_cast<size_t>(l)];
    const int64_t E = cfg.n_embd, KV = cfg.n_embd_kv(), F = cfg.n_ff, nh = cfg.n_head, nkv = cfg.n_head_kv;
    const int64_t hd = cfg.head_dim();
    auto sz = [](int64_t n) { return static_cast<size_t>(n); };
    c.x_in.assign(x_in, x_in + T * E);
    c.xn1.resize(sz(T * E));
    c.r1.resize(sz(T));
    c.q.resize(sz(T * E));
    c.k.resize(sz(T * KV));
    c.v.resize(sz(T * KV));
    c.probs.resize(sz(nh * T * T));
    c.att.resize(sz(T * E));
    c.x_mid.resize(sz(T * E));
    c.xn2.resize(sz(T * E));
    c.r2.resize(sz(T));
    c.g.resize(sz(T * F));
    c.u.resize(sz(T * F));
    c.h.resize(sz(T * F));
    auto idx = [](LoraTarget t) { return static_cast<size_t>(t); };

    rmsnorm_fwd(x_in, L.attn_norm.data(), T, E, cfg.rms_eps, c.xn1.data(), c.r1.data());
    linear_fwd(l, LoraTarget::Q, c.xn1.data(), T, c.q.data(), c.a[idx(LoraTarget::Q)], c.xd[idx(LoraTarget::Q)], key);
    linear_fwd(l, LoraTarget::K, c.xn1.data(), T, c.k.data(), c.a[idx(LoraTarget::K)], c.xd[idx(LoraTarget::K)], key);
    linear_fwd(l, LoraTarget::V, c.xn1.data(), T, c.v.data(), c.a[idx(LoraTarget::V)], c.xd[idx(LoraTarget::V)], key);
    rope_fwd(c.q.data(), T, nh, rope_);
    rope_fwd(c.k.data(), T, nkv, rope_);
    attention_fwd(c.q.data(), c.k.data(), c.v.data(), T, nh, nkv, hd, c.probs.data(), c.att.data(), pool_);
    std::vector<float> tmp(sz(T * E));
    linear_fwd(l, LoraTarget::O, c.att.data(), T, tmp.data(), c.a[idx(LoraTarget::O)], c.xd[idx(LoraTarget::O)], key);
    for (int64_t i = 0; i < T * E; ++i) c.x_mid[i] = x_in[i] + tmp[i];
    rmsnorm_fwd(c.x_mid.data(), L.ffn_norm.data(), T, E, cfg.rms_eps, c.xn2.data(), c.r2.data());
    linear_fwd(l, LoraTarget::Gate, c.xn2.data(), T, c.g.data(), c.a[idx(LoraTarget::Gate)],
               c.xd[idx(LoraTarget::Gate)], key);
    linear_fwd(l, LoraTarget::Up, c.xn2.data(), T, c.u.data(), c.a[idx(LoraTarget::Up)], c.xd[idx(LoraTarget::Up)],
               key);
    swiglu_fwd(c.g.data(), c.u.data(), T * F, c.h.data());
    linear_fwd(l, LoraTarget::Down, c.h.data(), T, tmp.data(), c.a[idx(LoraTarget::Down)],
               c.xd[idx(LoraTarget::Down)], key);
    for (int64_t i = 0; i < T * E; ++i) x_out[i] = c.x_mid[i] + tmp[i];
}

void LlamaTrainModel::layer_backward(int64_t l, int64_t T, LayerCache& c, float* dx, const DropoutKey* key) {
    const LlamaConfig& cfg = base_.cfg;
    const LayerWeights& L = base_.layers[static_cast<size_t>(l)];
    const int64_t E = cfg.n_embd, KV = cfg.n_embd_kv(), F = cfg.n_ff, nh = cfg.n_head, nkv = cfg.n_head_kv;
    auto sz = [](int64_t n) { return static_cast<size_t>(n); };
    auto idx = [](LoraTarget t) { return static_cast<size_t>(t); };
    std::vector<float> dmid(dx, dx + T * E);
    // FFN
    std::vector<float> dh(sz(T * F), 0.0f), dg(sz(T * F), 0.0f), du(sz(T * F), 0.0f), dxn(sz(T * E), 0.0f);
    linear_bwd(l, LoraTarget::Down, c.h.data(), c.a[idx(LoraTarget::Down)], c.xd[idx(LoraTarget::Down)], dx, T,
               dh.data(), key);
    swiglu_bwd(c.g.data(), c.u.data(), dh.data(), T * F, dg.data(), du.data());
    linear_bwd(l, LoraTarget::Gate, c.xn2.data(), c.a[idx(LoraTarget::Gate)], c.xd[idx(LoraTarget::Gate)], dg.data(),
               T, dxn.data(), key);
    linear_bwd(l, LoraTarget::Up, c.xn2.data(), c.a[idx(LoraTarget::Up)], c.xd[idx(LoraTarget::Up)], du.data(), T,
               dxn.data(), key);
    rmsnorm_bwd(c.x_mid.data(), L.ffn_norm.data(), c.r2.data(), dxn.data(), T, E, dmid.data());
    // attention
    std::vector<float> datt(sz(T * E), 0.0f), dq(sz(T * E), 0.0f), dk(sz(T * KV), 0.0f), dv(sz(T * KV), 0.0f);
    linear_bwd(l, LoraTarget::O, c.att.data(), c.a[idx(LoraTarget::O)], c.xd[idx(LoraTarget::O)], dmid.data(), T,
               datt.data(), key);
    attention_bwd(c.q.data(), c.k.data(), c.v.data(), c.probs.data(), datt.data(), T, nh, nkv, cfg.head_dim(),
                  dq.data(), dk.data(), dv.data(), pool_);
    rope_bwd(dq.data(), T, nh, rope_);
    rope_bwd(dk.data(), T, nkv, rope_);
    std::fill(dxn.begin(), dxn.end(), 0.0f);
    linear_bwd(l, LoraTarget::Q, c.xn1.data(), c.a[idx(LoraTarget::Q)], c.xd[idx(LoraTarget::Q)], dq.data(), T,
               dxn.data(), key);
    linear_bwd(l, LoraTarget::K, c.xn1.data(), c.a[idx(LoraTarget::K)], c.xd[idx(LoraTarget::K)], dk.data(), T,
               dxn.data(), key);
    linear_bwd(l, LoraTarget::V, c.xn1.data(), c.a[idx(LoraTarget::V)], c.xd[idx(LoraTarget::V)], dv.data(), T,
               dxn.data(), key);
    std::copy(dmid.begin(), dmid.end(), dx);
    rmsnorm_bwd(c.x_in.data(), L.attn_norm.data(), c.r1.data(), dxn.data(), T, E, dx);
}

double LlamaTrainModel::head_and_loss(const float* x_last, const Example& ex, int64_t T, float grad_scale, float* dx,
                                      bool backward) {
    const LlamaConfig& cfg = base_.cfg;
    const int64_t E = cfg.n_embd, V = cfg.n_vocab;
    std::vector<float> xf(static_cast<size_t>(T * E)), rf(static_cast<size_t>(T));
    rmsnorm_fwd(x_last, base_.output_norm.data(), T, E, cfg.rms_eps, xf.data(), rf.data());
    Param* head = params_.head();
    const MatrixView hv = head ? f32_view(*head, V, E) : base_.output;
    std::vector<int32_t> tgt(static_cast<size_t>(T), kIgnoreIndex);
    for (int64_t t = 0; t + 1 < T; ++t) tgt[t] = ex.labels[t + 1];
    std::vector<float> dxf(backward ? static_cast<size_t>(T * E) : 0, 0.0f);
    // The input gradient dxf = dlogits · W needs W [V][E] by columns. For an f32 head (the trained
    // one) W^T [E][V] is built once per call and the product runs as an ordinary matmul (rows = E,
    // reduction over the vocabulary): matmul_tn would stream and convert the whole 55k-row head once
    // per token block, which measured ~30 % of a pre-training step on the demo model's shape.
    // The copy is a second head in memory, so it is only made up to 256 MiB (a 55k × 1024 head);
    // larger heads (7B: 0.9 GB) keep matmul_tn, whose cost is small next to their layers'.
    constexpr int64_t kMaxTransposeBytes = int64_t{256} << 20;
    std::vector<float> wt;
    MatrixView wtv;
    if (backward && hv.type == DType::F32 && V * E * 4 <= kMaxTransposeBytes) {
        wt.resize(static_cast<size_t>(V * E));
        const float* w = static_cast<const float*>(hv.data);
        auto body = [&](size_t c0, size_t c1) {
            for (int64_t v0 = 0; v0 < V; v0 += 64)
                for (size_t c = c0; c < c1; ++c)
                    for (int64_t v = v0; v < std::min(V, v0 + 64); ++v)
                        wt[c * static_cast<size_t>(V) + static_cast<size_t>(v)] = w[v * E + static_cast<int64_t>(c)];
        };
        if (pool_)
            pool_->parallel_for(static_cast<size_t>(E), body);
        else
            body(0, static_cast<size_t>(E));
        wtv.data = wt.data();
        wtv.type = DType::F32;
        wtv.rows = E;
        wtv.cols = V;
    }
    constexpr int64_t kChunk = 256;  // bounds the [tokens][vocab] logits buffer
    std::vector<float> logits(static_cast<size_t>(std::min(kChunk, T) * V));
    double loss = 0;
    for (int64_t t0 = 0; t0 < T; t0 += kChunk) {
        const int64_t n = std::min(kChunk, T - t0);
        // skip chunks without targets (SFT prompts) entirely: their gradient is zero
        bool any = false;
        for (int64_t t = t0; t < t0 + n; ++t) any |= tgt[t] != kIgnoreIndex;
        if (!any) continue;
        matmul_frozen(hv, xf.data() + t0 * E, n, logits.data(), pool_);
        if (!backward) {
            loss += cross_entropy_fwd(logits.data(), tgt.data() + t0, n, V);
            continue;
        }
        loss += cross_entropy_fwd_bwd(logits.data(), tgt.data() + t0, n, V, grad_scale);
        if (head) outer_acc(logits.data(), V, xf.data() + t0 * E, E, n, 1.0f, head->g.data(), pool_);
        if (!wt.empty())
            matmul(wtv, logits.data(), n, dxf.data() + t0 * E, pool_);
        else
            matmul_tn(hv, logits.data(), n, dxf.data() + t0 * E, pool_);
    }
    if (backward) {
        std::fill(dx, dx + T * E, 0.0f);
        rmsnorm_bwd(x_last, base_.output_norm.data(), rf.data(), dxf.data(), T, E, dx);
    }
    return loss;
}

void LlamaTrainModel::check_example(const Example& ex) const {
    if (ex.ids.empty()) fail("training example has no tokens");
    if (ex.labels.size() != ex.ids.size())
        fail("training example: {} labels for {} tokens", ex.labels.size(), ex.ids.size());
    for (int32_t id : ex.ids)
        if (id < 0 || id >= base_.cfg.n_vocab)
            fail("token id {} is outside the model's vocabulary [0, {})", id, base_.cfg.n_vocab);
    for (int32_t y : ex.labels)
        if (y != kIgnoreIndex && (y < 0 || y >= base_.cfg.n_vocab))
            fail("label {} is outside the model's vocabulary [0, {}) (and is not -100)", y, base_.cfg.n_vocab);
}

double LlamaTrainModel::forward_backward(const Example& ex, float grad_scale, const DropoutKey& key, bool train) {
    check_example(ex);
    const LlamaConfig& cfg = base_.cfg;
    const int64_t T = static_cast<int64_t>(ex.ids.size()), E = cfg.n_embd, NL = cfg.n_layer;
    if (T > rope_T_) {
        rope_.build(T, cfg.head_dim(), cfg.rope_theta, cfg.rope_linear_factor);
        rope_T_ = T;
    }
    const DropoutKey* k = train ? &key : nullptr;
    // layer inputs xs[0..NL]; xs[NL] is the last hidden state before the final norm
    std::vector<std::vector<float>> xs(static_cast<size_t>(NL + 1), std::vector<float>(static_cast<size_t>(T * E)));
    Param* emb = params_.embed();
    for (int64_t t = 0; t < T; ++t) {
        float* dst = xs[0].data() + t * E;
        if (emb)
            std::memcpy(dst, emb->w.data() + static_cast<int64_t>(ex.ids[t]) * E, static_cast<size_t>(E) * 4);
        else
            to_f32(base_.tok_embd.type, base_.tok_embd.row(ex.ids[t]), dst, static_cast<size_t>(E));
    }
    std::vector<LayerCache> caches(recompute_ ? 1 : static_cast<size_t>(NL));
    for (int64_t l = 0; l < NL; ++l)
        layer_forward(l, xs[l].data(), T, caches[recompute_ ? 0 : static_cast<size_t>(l)], xs[l + 1].data(), k);
    std::vector<float> dx(static_cast<size_t>(T * E));
    const double loss = head_and_loss(xs[NL].data(), ex, T, grad_scale, dx.data(), true);
    std::vector<float> scratch(recompute_ ? static_cast<size_t>(T * E) : 0);
    for (int64_t l = NL - 1; l >= 0; --l) {
        LayerCache& c = caches[recompute_ ? 0 : static_cast<size_t>(l)];
        if (recompute_) layer_forward(l, xs[l].data(), T, c, scratch.data(), k);
        layer_backward(l, T, c, dx.data(), k);
    }
    if (emb)
        for (int64_t t = 0; t < T; ++t) {
            float* g = emb->g.data() + static_cast<int64_t>(ex.ids[t]) * E;
            const float* d = dx.data() + t * E;
            for (int64_t i = 0; i < E; ++i) g[i] += d[i];
        }
    return loss;
}

double LlamaTrainModel::loss(const Example& ex) {
    check_example(ex);
    const LlamaConfig& cfg = base_.cfg;
    const int64_t T = static_cast<int64_t>(ex.ids.size()), E = cfg.n_embd;
    if (T > rope_T_) {
        rope_.build(T, cfg.head_dim(), cfg.rope_theta, cfg.rope_linear_factor);
        rope_T_ = T;
    }
    std::vector<float> x(static_cast<size_t>(T * E)), y(static_cast<size_t>(T * E));
    Param* emb = params_.embed();
    for (int64_t t = 0; t < T; ++t) {
        if (emb)
            std::memcpy(x.data() + t * E, emb->w.data() + static_cast<int64_t>(ex.ids[t]) * E, static_cast<size_t>(E) * 4);
        else
            to_f32(base_.tok_embd.type, base_.tok_embd.row(ex.ids[t]), x.data() + t * E, static_cast<size_t>(E));
    }
    LayerCache c;
    for (int64_t l = 0; l < cfg.n_layer; ++l) {
        layer_forward(l, x.data(), T, c, y.data(), nullptr);
        x.swap(y);
    }
    return head_and_loss(x.data(), ex, T, 0.0f, nullptr, false);
}

}  // namespace calpaca
