// Forward and backward of the LLaMA ops for one sequence of T tokens (row-major [T][dim] buffers,
// f32). Forward functions save what their backward needs; backward functions ACCUMULATE into
// their input-gradient buffers (dx += ...), so several consumers of one tensor can add up.
//
// Layouts follow the GGUF model (model/session.cpp): q/k heads are rotated in adjacent pairs.
#pragma once
#include <cstdint>
#include <vector>

namespace calpaca {

class ThreadPool;

// ---- RMSNorm: y = x * r * w,  r = 1 / sqrt(mean(x^2) + eps). Saves r per token. The weight is
// frozen (the original trains only LoRA and embed/lm_head), so only dx is produced.
void rmsnorm_fwd(const float* x, const float* w, int64_t T, int64_t n, float eps, float* y, float* r);
// dx += r*w*dy - x * r^3 / n * sum_i(w_i dy_i x_i)
void rmsnorm_bwd(const float* x, const float* w, const float* r, const float* dy, int64_t T, int64_t n, float* dx);

// ---- RoPE on [T][n_heads*head_dim], positions 0..T-1 divided by `linear_factor`, adjacent pairs.
struct RopeTable {
    int64_t head_dim = 0;
    std::vector<float> cos, sin;  // [T][head_dim/2]
    void build(int64_t T, int64_t head_dim, float theta, float linear_factor);
};
void rope_fwd(float* x, int64_t T, int64_t n_heads, const RopeTable& rt);
// The rotation is orthogonal: the backward rotates the gradient by the opposite angle (in place).
void rope_bwd(float* dx, int64_t T, int64_t n_heads, const RopeTable& rt);

// ---- Causal attention with grouped KV heads. q [T][nh*hd], k/v [T][nkv*hd], out [T][nh*hd].
// probs [nh][T][T] (row t holds softmax over keys 0..t, zeros after) is saved for the backward.
void attention_fwd(const float* q, const float* k, const float* v, int64_t T, int64_t nh, int64_t nkv, int64_t hd,
                   float* probs, float* out, ThreadPool* pool);
// dq, dk, dv are accumulated.
void attention_bwd(const float* q, const float* k, const float* v, const float* probs, const float* dout, int64_t T,
                   int64_t nh, int64_t nkv, int64_t hd, float* dq, float* dk, float* dv, ThreadPool* pool);

// ---- SwiGLU: h = silu(g) * u.  dg += dh * u * silu'(g), du += dh * silu(g).
void swiglu_fwd(const float* g, const float* u, int64_t n, float* h);
void swiglu_bwd(const float* g, const float* u, const float* dh, int64_t n, float* dg, float* du);

// ---- Cross-entropy over a chunk of logits rows [n][V] with targets (-100 = ignored).
// Returns the sum of -log softmax(row)[target] over non-ignored rows, and replaces each row by
// its gradient times `scale` ((softmax - onehot) * scale; ignored rows become zeros).
double cross_entropy_fwd_bwd(float* logits, const int32_t* targets, int64_t n, int64_t V, float scale);
// The loss only (logits untouched), same sum.
double cross_entropy_fwd(const float* logits, const int32_t* targets, int64_t n, int64_t V);

constexpr int32_t kIgnoreIndex = -100;

}  // namespace calpaca
