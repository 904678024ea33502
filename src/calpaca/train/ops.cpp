#include "calpaca/train/ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "calpaca/base/error.h"
#include "calpaca/base/threadpool.h"

namespace calpaca {

void rmsnorm_fwd(const float* x, const float* w, int64_t T, int64_t n, float eps, float* y, float* r) {
    for (int64_t t = 0; t < T; ++t) {
        const float* xt = x + t * n;
        double ss = 0;
        for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(xt[i]) * xt[i];
        const float rt = 1.0f / std::sqrt(static_cast<float>(ss / static_cast<double>(n)) + eps);
        r[t] = rt;
        float* yt = y + t * n;
        for (int64_t i = 0; i < n; ++i) yt[i] = xt[i] * rt * w[i];
    }
}

void rmsnorm_bwd(const float* x, const float* w, const float* r, const float* dy, int64_t T, int64_t n, float* dx) {
    for (int64_t t = 0; t < T; ++t) {
        const float *xt = x + t * n, *dyt = dy + t * n;
        double s = 0;
        for (int64_t i = 0; i < n; ++i) s += static_cast<double>(w[i]) * dyt[i] * xt[i];
        const float rt = r[t];
        const float c = static_cast<float>(s) * rt * rt * rt / static_cast<float>(n);
        float* dxt = dx + t * n;
        for (int64_t i = 0; i < n; ++i) dxt[i] += rt * w[i] * dyt[i] - xt[i] * c;
    }
}

void RopeTable::build(int64_t T, int64_t hd, float theta, float linear_factor) {
    head_dim = hd;
    const int64_t half = hd / 2;
    cos.resize(static_cast<size_t>(T * half));
    sin.resize(static_cast<size_t>(T * half));
    for (int64_t i = 0; i < half; ++i) {
        // as model/session.cpp and HF: inv_freq in float32, angle = pos * inv_freq in float32
        const float inv = static_cast<float>(
            1.0 / std::pow(static_cast<double>(theta), static_cast<double>(2 * i) / static_cast<double>(hd)));
        for (int64_t t = 0; t < T; ++t) {
            const float ang = (static_cast<float>(t) / linear_factor) * inv;
            cos[t * half + i] = std::cos(ang);
            sin[t * half + i] = std::sin(ang);
        }
    }
}

static void rope_apply(float* x, int64_t T, int64_t n_heads, const RopeTable& rt, float sign) {
    const int64_t hd = rt.head_dim, half = hd / 2;
    for (int64_t t = 0; t < T; ++t)
        for (int64_t i = 0; i < half; ++i) {
            const float c = rt.cos[t * half + i], s = sign * rt.sin[t * half + i];
            for (int64_t h = 0; h < n_heads; ++h) {
                float* p = x + (t * n_heads + h) * hd + 2 * i;
                const float x0 = p[0], x1 = p[1];
                p[0] = x0 * c - x1 * s;
                p[1] = x0 * s + x1 * c;
            }
        }
}

void rope_fwd(float* x, int64_t T, int64_t n_heads, const RopeTable& rt) { rope_apply(x, T, n_heads, rt, 1.0f); }
void rope_bwd(float* dx, int64_t T, int64_t n_heads, const RopeTable& rt) { rope_apply(dx, T, n_heads, rt, -1.0f); }

void attention_fwd(const float* q, const float* k, const float* v, int64_t T, int64_t nh, int64_t nkv, int64_t hd,
                   float* probs, float* out, ThreadPool* pool) {
    const int64_t group = nh / nkv, qd = nh * hd, kd = nkv * hd;
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    auto body = [&](size_t b, size_t e) {
        for (size_t job = b; job < e; ++job) {
            const int64_t h = static_cast<int64_t>(job) / T, t = static_cast<int64_t>(job) % T;
            const int64_t kvh = h / group;
            const float* qt = q + t * qd + h * hd;
            float* p = probs + (h * T + t) * T;
            float mx = -INFINITY;
            for (int64_t j = 0; j <= t; ++j) {
                const float* kj = k + j * kd + kvh * hd;
                float s = 0;
                for (int64_t i = 0; i < hd; ++i) s += qt[i] * kj[i];
                p[j] = s * scale;
                mx = std::max(mx, p[j]);
            }
            double sum = 0;
            for (int64_t j = 0; j <= t; ++j) {
                p[j] = std::exp(p[j] - mx);
                sum += p[j];
            }
            const float inv = static_cast<float>(1.0 / sum);
            for (int64_t j = 0; j <= t; ++j) p[j] *= inv;
            for (int64_t j = t + 1; j < T; ++j) p[j] = 0.0f;
            float* o = out + t * qd + h * hd;
            std::fill(o, o + hd, 0.0f);
            for (int64_t j = 0; j <= t; ++j) {
                const float* vj = v + j * kd + kvh * hd;
                const float pj = p[j];
                for (int64_t i = 0; i < hd; ++i) o[i] += pj * vj[i];
            }
        }
    };
    const size_t jobs = static_cast<size_t>(nh * T);
    if (pool)
        pool->parallel_for(jobs, body);
    else
        body(0, jobs);
}

void attention_bwd(const float* q, const float* k, const float* v, const float* probs, const float* dout, int64_t T,
                   int64_t nh, int64_t nkv, int64_t hd, float* dq, float* dk, float* dv, ThreadPool* pool) {
    const int64_t group = nh / nkv, qd = nh * hd, kd = nkv * hd;
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    // per query head: dK_h, dV_h [T][hd]; summed over each KV group afterwards in a fixed order
    std::vector<float> dkh(static_cast<size_t>(nh * T * hd), 0.0f), dvh(static_cast<size_t>(nh * T * hd), 0.0f);
    auto body = [&](size_t b, size_t e) {
        std::vector<float> ds(static_cast<size_t>(T));
        for (size_t hh = b; hh < e; ++hh) {
            const int64_t h = static_cast<int64_t>(hh), kvh = h / group;
            float* dK = dkh.data() + h * T * hd;
            float* dV = dvh.data() + h * T * hd;
            for (int64_t t = 0; t < T; ++t) {
                const float* p = probs + (h * T + t) * T;
                const float* dot = dout + t * qd + h * hd;
                const float* qt = q + t * qd + h * hd;
                // dV[j] += p[j] * dO[t];  dP[j] = dO[t] . V[j]
                double pdp = 0;
                for (int64_t j = 0; j <= t; ++j) {
                    const float* vj = v + j * kd + kvh * hd;
                    float* dvj = dV + j * hd;
                    float dp = 0;
                    for (int64_t i = 0; i < hd; ++i) {
                        dvj[i] += p[j] * dot[i];
                        dp += dot[i] * vj[i];
                    }
                    ds[j] = dp;
                    pdp += static_cast<double>(p[j]) * dp;
                }
                // dS = P * (dP - sum P dP); dQ[t] = scale sum_j dS[j] K[j]; dK[j] += scale dS[j] Q[t]
                float* dqt = dq + t * qd + h * hd;
                const float c = static_cast<float>(pdp);
                for (int64_t j = 0; j <= t; ++j) {
                    const float g = p[j] * (ds[j] - c) * scale;
                    if (g == 0.0f) continue;
                    const float* kj = k + j * kd + kvh * hd;
                    float* dkj = dK + j * hd;
                    for (int64_t i = 0; i < hd; ++i) {
                        dqt[i] += g * kj[i];
                        dkj[i] += g * qt[i];
                    }
                }
            }
        }
    };
    if (pool)
        pool->parallel_for(static_cast<size_t>(nh), body);
    else
        body(0, static_cast<size_t>(nh));
    for (int64_t h = 0; h < nh; ++h) {
        const int64_t kvh = h / group;
        for (int64_t t = 0; t < T; ++t)
            for (int64_t i = 0; i < hd; ++i) {
                dk[t * kd + kvh * hd + i] += dkh[(h * T + t) * hd + i];
                dv[t * kd + kvh * hd + i] += dvh[(h * T + t) * hd + i];
            }
    }
}

void swiglu_fwd(const float* g, const float* u, int64_t n, float* h) {
    for (int64_t i = 0; i < n; ++i) {
        const float sg = 1.0f / (1.0f + std::exp(-g[i]));
        h[i] = g[i] * sg * u[i];
    }
}

void swiglu_bwd(const float* g, const float* u, const float* dh, int64_t n, float* dg, float* du) {
    for (int64_t i = 0; i < n; ++i) {
        const float sg = 1.0f / (1.0f + std::exp(-g[i]));
        du[i] += dh[i] * g[i] * sg;
        dg[i] += dh[i] * u[i] * sg * (1.0f + g[i] * (1.0f - sg));
    }
}

static void check_target(int32_t y, int64_t V) {
    if (y != kIgnoreIndex && (y < 0 || y >= V)) fail("label {} is outside the vocabulary [0, {})", y, V);
}

double cross_entropy_fwd_bwd(float* logits, const int32_t* targets, int64_t n, int64_t V, float scale) {
    double loss = 0;
    for (int64_t t = 0; t < n; ++t) {
        float* row = logits + t * V;
        const int32_t y = targets[t];
        check_target(y, V);
        if (y == kIgnoreIndex) {
            std::fill(row, row + V, 0.0f);
            continue;
        }
        float mx = row[0];
        for (int64_t i = 1; i < V; ++i) mx = std::max(mx, row[i]);
        const float target_logit = row[y];
        double sum = 0;
        for (int64_t i = 0; i < V; ++i) {
            row[i] = std::exp(row[i] - mx);  // float exp of values <= 0
            sum += row[i];
        }
        loss += std::log(sum) + mx - target_logit;
        const float k = static_cast<float>(scale / sum);
        for (int64_t i = 0; i < V; ++i) row[i] *= k;
        row[y] -= scale;
    }
    return loss;
}

double cross_entropy_fwd(const float* logits, const int32_t* targets, int64_t n, int64_t V) {
    double loss = 0;
    for (int64_t t = 0; t < n; ++t) {
        const float* row = logits + t * V;
        const int32_t y = targets[t];
        check_target(y, V);
        if (y == kIgnoreIndex) continue;
        float mx = row[0];
        for (int64_t i = 1; i < V; ++i) mx = std::max(mx, row[i]);
        double sum = 0;
        for (int64_t i = 0; i < V; ++i) sum += std::exp(row[i] - mx);
        loss += std::log(sum) + mx - row[y];
    }
    return loss;
}

}  // namespace calpaca
