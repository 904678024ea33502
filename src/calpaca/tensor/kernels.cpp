#include "calpaca/tensor/kernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define CALPACA_AVX2 1
#endif

#include "calpaca/base/error.h"
#include "calpaca/base/threadpool.h"
#include "calpaca/tensor/quant.h"
#include "calpaca/tensor/quant_dot.h"

namespace calpaca {

bool matmul_supports(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16 || is_weight_quant(t); }

void to_f32(DType t, const void* src, float* dst, size_t n) {
    const uint8_t* p = static_cast<const uint8_t*>(src);
    switch (t) {
        case DType::F32: std::memcpy(dst, src, n * 4); return;
        case DType::F16:
            for (size_t i = 0; i < n; ++i) {
                uint16_t h;
                std::memcpy(&h, p + 2 * i, 2);
                dst[i] = fp16_to_fp32(h);
            }
            return;
        case DType::BF16:
            for (size_t i = 0; i < n; ++i) {
                uint16_t h;
                std::memcpy(&h, p + 2 * i, 2);
                dst[i] = bf16_to_fp32(h);
            }
            return;
        default:
            if (!is_quantized(t)) fail("cannot convert {} data to f32", dtype_name(t));
            dequantize_row(t, src, dst, static_cast<int64_t>(n));
    }
}

// ------------------------------------------------------------------ quantized weights
namespace {

// Activations quantized to the weight type's dot format, one row per token.
struct QuantizedActs {
    DType type;
    size_t row_bytes;
    std::vector<uint8_t> data;
    const uint8_t* row(int64_t t) const { return data.data() + static_cast<size_t>(t) * row_bytes; }
};

void quantize_acts(DType wtype, const float* x, int64_t n_tok, int64_t cols, bool reference, ThreadPool* pool,
                   QuantizedActs& q) {
    q.type = vec_dot_type(wtype);
    q.row_bytes = row_bytes(q.type, static_cast<uint64_t>(cols));
    q.data.resize(q.row_bytes * static_cast<size_t>(n_tok));
    auto body = [&](size_t t0, size_t t1) {
        for (size_t t = t0; t < t1; ++t) {
            uint8_t* dst = q.data.data() + t * q.row_bytes;
            if (reference)
                quantize_act_ref(q.type, x + t * cols, dst, cols);
            else
                quantize_act(q.type, x + t * cols, dst, cols);
        }
    };
    if (pool && !reference && n_tok >= 8)
        pool->parallel_for(static_cast<size_t>(n_tok), body);
    else
        body(0, static_cast<size_t>(n_tok));
}

float dot_quant(DType t, const void* w, const float* x, int64_t n, bool reference) {
    QuantizedActs q;
    quantize_acts(t, x, 1, n, reference, nullptr, q);
    if (reference) return vec_dot_q_ref(t, w, q.row(0), n);
    const void* rows[1] = {q.row(0)};
    float out;
    vec_dot_q(t, w, rows, 1, n, &out);
    return out;
}

void matmul_quant_ref(const MatrixView& w, const float* x, int64_t n_tok, float* y) {
    QuantizedActs q;
    quantize_acts(w.type, x, n_tok, w.cols, true, nullptr, q);
    for (int64_t t = 0; t < n_tok; ++t)
        for (int64_t r = 0; r < w.rows; ++r) y[t * w.rows + r] = vec_dot_q_ref(w.type, w.row(r), q.row(t), w.cols);
}

// Rows split over the pool; tokens in blocks whose quantized activations stay in L2 while a
// thread's weight rows stream past them once per block; within a block each weight row is
// unpacked once per 4 tokens (vec_dot_q's multi-row form).
void matmul_quant(const MatrixView& w, const float* x, int64_t n_tok, float* y, ThreadPool* pool) {
    thread_local QuantizedActs q;  // reused across calls: no allocation per token in decode
    quantize_acts(w.type, x, n_tok, w.cols, false, pool, q);
    const int64_t rb = static_cast<int64_t>(row_bytes(w.type, static_cast<uint64_t>(w.cols)));
    const uint8_t* base = static_cast<const uint8_t*>(w.data);
    const int64_t tok_block = std::max<int64_t>(4, std::min<int64_t>(64, (256 * 1024 / static_cast<int64_t>(q.row_bytes)) / 4 * 4));
    const QuantizedActs& qa = q;
    auto body = [&](size_t r0, size_t r1) {
        for (int64_t t0 = 0; t0 < n_tok; t0 += tok_block) {
            const int64_t t1 = std::min(n_tok, t0 + tok_block);
            for (size_t r = r0; r < r1; ++r) {
                const uint8_t* wr = base + static_cast<int64_t>(r) * rb;
                for (int64_t t = t0; t < t1; t += 4) {
                    const int nt = static_cast<int>(std::min<int64_t>(4, t1 - t));
                    const void* rows[4];
                    for (int k = 0; k < nt; ++k) rows[k] = qa.row(t + k);
                    float o[4];
                    vec_dot_q(w.type, wr, rows, nt, w.cols, o);
                    for (int k = 0; k < nt; ++k) y[(t + k) * w.rows + static_cast<int64_t>(r)] = o[k];
                }
            }
        }
    };
    if (pool && w.rows >= 64)
        pool->parallel_for(static_cast<size_t>(w.rows), body);
    else
        body(0, static_cast<size_t>(w.rows));
}

}  // namespace

// ------------------------------------------------------------------ reference
float dot_ref(DType t, const void* w, const float* x, int64_t n) {
    if (is_quantized(t)) return dot_quant(t, w, x, n, true);
    const uint8_t* p = static_cast<const uint8_t*>(w);
    double acc = 0;  // the reference accumulates in double: it is the yardstick
    for (int64_t i = 0; i < n; ++i) {
        float wi;
        switch (t) {
            case DType::F32: std::memcpy(&wi, p + 4 * i, 4); break;
            case DType::F16: {
                uint16_t h;
                std::memcpy(&h, p + 2 * i, 2);
                wi = fp16_to_fp32(h);
                break;
            }
            case DType::BF16: {
                uint16_t h;
                std::memcpy(&h, p + 2 * i, 2);
                wi = bf16_to_fp32(h);
                break;
            }
            default: fail("dot: unsupported weight type {}", dtype_name(t));
        }
        acc += static_cast<double>(wi) * x[i];
    }
    return static_cast<float>(acc);
}

void axpy_ref(DType t, const void* v, float a, float* out, int64_t n) {
    const uint8_t* p = static_cast<const uint8_t*>(v);
    for (int64_t i = 0; i < n; ++i) {
        float vi;
        uint16_t h;
        switch (t) {
            case DType::F32: std::memcpy(&vi, p + 4 * i, 4); break;
            case DType::F16: std::memcpy(&h, p + 2 * i, 2); vi = fp16_to_fp32(h); break;
            case DType::BF16: std::memcpy(&h, p + 2 * i, 2); vi = bf16_to_fp32(h); break;
            default: fail("axpy: unsupported type {}", dtype_name(t));
        }
        out[i] += a * vi;
    }
}

void matmul_ref(const MatrixView& w, const float* x, int64_t n_tok, float* y) {
    if (is_quantized(w.type)) return matmul_quant_ref(w, x, n_tok, y);
    for (int64_t t = 0; t < n_tok; ++t)
        for (int64_t r = 0; r < w.rows; ++r) y[t * w.rows + r] = dot_ref(w.type, w.row(r), x + t * w.cols, w.cols);
}

// ------------------------------------------------------------------ fast
namespace {

#ifdef CALPACA_AVX2
inline float hsum(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}
inline __m256 load8(DType t, const uint8_t* p, int64_t i) {
    switch (t) {
        case DType::F16: return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2 * i)));
        case DType::BF16: {
            __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2 * i)));
            return _mm256_castsi256_ps(_mm256_slli_epi32(h, 16));
        }
        default: return _mm256_loadu_ps(reinterpret_cast<const float*>(p + 4 * i));
    }
}
#endif

inline float scalar_w(DType t, const uint8_t* p, int64_t i) {
    uint16_t h;
    switch (t) {
        case DType::F16: std::memcpy(&h, p + 2 * i, 2); return fp16_to_fp32(h);
        case DType::BF16: std::memcpy(&h, p + 2 * i, 2); return bf16_to_fp32(h);
        default: {
            float f;
            std::memcpy(&f, p + 4 * i, 4);
            return f;
        }
    }
}

// One weight row against up to 4 activation rows at once (the row is loaded once).
template <int NT>
void dot_multi(DType t, const uint8_t* w, const float* const* xs, int64_t n, float* out) {
    int64_t i = 0;
#ifdef CALPACA_AVX2
    __m256 acc[NT][2];
    for (int k = 0; k < NT; ++k) acc[k][0] = acc[k][1] = _mm256_setzero_ps();
    for (; i + 16 <= n; i += 16) {
        __m256 w0 = load8(t, w, i), w1 = load8(t, w, i + 8);
        for (int k = 0; k < NT; ++k) {
            acc[k][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xs[k] + i), acc[k][0]);
            acc[k][1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xs[k] + i + 8), acc[k][1]);
        }
    }
    for (int k = 0; k < NT; ++k) out[k] = hsum(_mm256_add_ps(acc[k][0], acc[k][1]));
#else
    for (int k = 0; k < NT; ++k) out[k] = 0;
#endif
    for (; i < n; ++i) {
        float wi = scalar_w(t, w, i);
        for (int k = 0; k < NT; ++k) out[k] += wi * xs[k][i];
    }
}

void check_dense(DType t) {
    if (t != DType::F32 && t != DType::F16 && t != DType::BF16)
        fail("matmul: weight type {} is not supported by the dense kernels", dtype_name(t));
}

}  // namespace

float dot(DType t, const void* w, const float* x, int64_t n) {
    if (is_quantized(t)) return dot_quant(t, w, x, n, false);
    check_dense(t);
    float out;
    const float* xs[1] = {x};
    dot_multi<1>(t, static_cast<const uint8_t*>(w), xs, n, &out);
    return out;
}

void axpy(DType t, const void* v, float a, float* out, int64_t n) {
    check_dense(t);
    const uint8_t* p = static_cast<const uint8_t*>(v);
    int64_t i = 0;
#ifdef CALPACA_AVX2
    __m256 va = _mm256_set1_ps(a);
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, _mm256_fmadd_ps(va, load8(t, p, i), _mm256_loadu_ps(out + i)));
#endif
    for (; i < n; ++i) out[i] += a * scalar_w(t, p, i);
}

void matmul(const MatrixView& w, const float* x, int64_t n_tok, float* y, ThreadPool* pool) {
    if (is_quantized(w.type)) return matmul_quant(w, x, n_tok, y, pool);
    check_dense(w.type);
    const int64_t rb = row_bytes(w.type, w.cols);
    const uint8_t* base = static_cast<const uint8_t*>(w.data);
    // Token blocks of 64 keep the activations of a block in L2 while the weight rows stream.
    constexpr int64_t kTokBlock = 64;
    auto body = [&](size_t r0, size_t r1) {
        for (int64_t t0 = 0; t0 < n_tok; t0 += kTokBlock) {
            int64_t t1 = std::min(n_tok, t0 + kTokBlock);
            for (size_t r = r0; r < r1; ++r) {
                const uint8_t* wr = base + r * rb;
                int64_t t = t0;
                for (; t + 4 <= t1; t += 4) {
                    const float* xs[4] = {x + t * w.cols, x + (t + 1) * w.cols, x + (t + 2) * w.cols, x + (t + 3) * w.cols};
                    float o[4];
                    dot_multi<4>(w.type, wr, xs, w.cols, o);
                    for (int k = 0; k < 4; ++k) y[(t + k) * w.rows + r] = o[k];
                }
                for (; t < t1; ++t) {
                    const float* xs[1] = {x + t * w.cols};
                    dot_multi<1>(w.type, wr, xs, w.cols, &y[t * w.rows + r]);
                }
            }
        }
    };
    if (pool && w.rows >= 64)
        pool->parallel_for(static_cast<size_t>(w.rows), body);
    else
        body(0, static_cast<size_t>(w.rows));
}

void rmsnorm(const float* x, const float* weight, float* out, int64_t n, float eps) {
    double ss = 0;
    for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
    float scale = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(n) + eps));
    for (int64_t i = 0; i < n; ++i) out[i] = x[i] * scale * weight[i];
}

void softmax(float* x, int64_t n) {
    float mx = -INFINITY;
    for (int64_t i = 0; i < n; ++i) mx = std::max(mx, x[i]);
    double sum = 0;
    for (int64_t i = 0; i < n; ++i) {
        x[i] = std::exp(x[i] - mx);
        sum += x[i];
    }
    float inv = static_cast<float>(1.0 / sum);
    for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

}  // namespace calpaca
