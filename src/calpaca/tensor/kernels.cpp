#include "calpaca/tensor/kernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define CALPACA_AVX2 1
#endif

#include "calpaca/base/error.h"
#include "calpaca/base/threadpool.h"
#include "calpaca/tensor/gemm.h"
#include "calpaca/tensor/packed.h"
#include "calpaca/tensor/quant.h"
#include "calpaca/tensor/quant_blocks.h"
#include "calpaca/tensor/quant_dot.h"
#include "calpaca/tensor/simd_x86.h"

namespace calpaca {

bool matmul_supports(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16 || is_weight_quant(t); }

void to_f32(DType t, const void* src, float* dst, size_t n) {
    const uint8_t* p = static_cast<const uint8_t*>(src);
    switch (t) {
        case DType::F32: std::memcpy(dst, src, n * 4); return;
        case DType::F16: {
            size_t i = 0;
#ifdef CALPACA_AVX2
            // F16C: exact like fp16_to_fp32 for every finite value, infinity and NaN-ness
            for (; i + 8 <= n; i += 8)
                _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2 * i))));
#endif
            for (; i < n; ++i) {
                uint16_t h;
                std::memcpy(&h, p + 2 * i, 2);
                dst[i] = fp16_to_fp32(h);
            }
            return;
        }
        case DType::BF16: {
            size_t i = 0;
#ifdef CALPACA_AVX2
            for (; i + 8 <= n; i += 8) {
                const __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2 * i)));
                _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(h, 16)));
            }
#endif
            for (; i < n; ++i) {
                uint16_t h;
                std::memcpy(&h, p + 2 * i, 2);
                dst[i] = bf16_to_fp32(h);
            }
            return;
        }
        default:
            if (!is_quantized(t)) fail("cannot convert {} data to f32", dtype_name(t));
            dequantize_row(t, src, dst, static_cast<int64_t>(n));
    }
}

// ------------------------------------------------------------------ quantized weights
namespace {

// Rows (or groups of rows) [0, n) over the pool: pieces of `grain` handed to whichever thread is
// free when there are at least two (ThreadPool::parallel_dynamic: on a shared host one thread
// often runs slower, and fixed halves left the other waiting ~20 % of a prefill matmul); else one
// fixed share per thread from `min_split` on; else the calling thread alone.
void split_rows(ThreadPool* pool, size_t n, size_t grain, size_t min_split, const std::function<void(size_t, size_t)>& fn) {
    if (pool && n >= 2 * grain)
        pool->parallel_dynamic(n, grain, fn);
    else if (pool && n >= min_split)
        pool->parallel_for(n, fn);
    else
        fn(0, n);
}

// Activations quantized to the weight type's dot format, one row per token, and (fast
// path, Q8_0 activations) their block scales as f32 for the tiled kernels (gemm.h).
struct QuantizedActs {
    DType type;
    size_t row_bytes;
    std::vector<uint8_t> data;
    std::vector<float> d;    // [n_tok][cols / 32] when type == Q8_0 and !reference
    std::vector<int32_t> s;  // the same blocks' sums of codes
    int64_t ld = 0;
    const uint8_t* row(int64_t t) const { return data.data() + static_cast<size_t>(t) * row_bytes; }
    ActPanel panel() const {
        return ActPanel{data.data(), row_bytes, d.empty() ? nullptr : d.data(), ld, s.empty() ? nullptr : s.data()};
    }
};

void quantize_acts(DType wtype, const float* x, int64_t n_tok, int64_t cols, bool reference, ThreadPool* pool,
                   QuantizedActs& q) {
    q.type = vec_dot_type(wtype);
    q.row_bytes = row_bytes(q.type, static_cast<uint64_t>(cols));
    q.data.resize(q.row_bytes * static_cast<size_t>(n_tok));
    const bool scales = !reference && q.type == DType::Q8_0;
    q.ld = scales ? cols / quant::QK : 0;
    if (scales) {
        q.d.resize(static_cast<size_t>(q.ld * n_tok));
        q.s.resize(static_cast<size_t>(q.ld * n_tok));
    } else {
        q.d.clear();
        q.s.clear();
    }
    auto body = [&](size_t t0, size_t t1) {
        for (size_t t = t0; t < t1; ++t) {
            uint8_t* dst = q.data.data() + t * q.row_bytes;
            if (reference)
                quantize_act_ref(q.type, x + t * cols, dst, cols);
            else
                quantize_act(q.type, x + t * cols, dst, cols);
            if (scales) {
                const auto* blocks = reinterpret_cast<const quant::BlockQ8_0*>(dst);
                float* d = q.d.data() + t * static_cast<size_t>(q.ld);
                int32_t* sum = q.s.data() + t * static_cast<size_t>(q.ld);
                for (int64_t b = 0; b < q.ld; ++b) {
                    d[b] = fp16_to_fp32(blocks[b].d);
                    int32_t acc = 0;
                    for (int i = 0; i < quant::QK; ++i) acc += blocks[b].qs[i];
                    sum[b] = acc;
                }
            }
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

// Row-layout quantized types without a register-blocked tile (gemm_q_tiled), and every
// row-layout type up to 16 tokens (matmul_quant): tokens in blocks whose quantized activations
// fit in L2 (<= 256 KiB, at most 64 tokens); within a block each weight row is unpacked once per
// 4 tokens (vec_dot_q's multi-row form), with the per-token arithmetic of one token alone.
// Rows [first_row, w.rows) (first_row > 0: the rows past a packed copy's last whole group).
void matmul_rows(const MatrixView& w, const QuantizedActs& qa, int64_t n_tok, float* y, ThreadPool* pool,
                 int64_t first_row = 0) {
    const int64_t rb = static_cast<int64_t>(row_bytes(w.type, static_cast<uint64_t>(w.cols)));
    const uint8_t* base = static_cast<const uint8_t*>(w.data);
    const int64_t tok_block = std::max<int64_t>(4, std::min<int64_t>(64, (256 * 1024 / static_cast<int64_t>(qa.row_bytes)) / 4 * 4));
    auto body = [&](size_t r0, size_t r1) {
        if (n_tok == 1) {  // decode: the rows as 4 runs read side by side (vec_dot_q_rows: 4 memory streams)
            const size_t len = (r1 - r0) / 4;
            const void* arow = qa.row(0);
            for (size_t i = 0; i < len; ++i) {
                const void* rows[4];
                for (size_t c = 0; c < 4; ++c) rows[c] = base + static_cast<int64_t>(r0 + c * len + i) * rb;
                float o[4];
                vec_dot_q_rows(w.type, rows, 4, arow, w.cols, o);
                for (size_t c = 0; c < 4; ++c) y[r0 + c * len + i] = o[c];
            }
            for (size_t r = r0 + 4 * len; r < r1; ++r) vec_dot_q(w.type, base + static_cast<int64_t>(r) * rb, &arow, 1, w.cols, y + r);
            return;
        }
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
    const auto r0 = static_cast<size_t>(first_row);
    split_rows(pool, static_cast<size_t>(w.rows) - r0, 256, 64, [&](size_t b, size_t e) { body(r0 + b, r0 + e); });
}

// Packed weights (tensor/packed.h): groups of 8 rows handed out over the pool; tokens in blocks
// whose quantized activations fit in L2 (<= 256 KiB), so each weight byte is read from memory
// once per token block and a group's weights stay in L1/L2 while the block's tiles pass them.
void matmul_packed(const MatrixView& w, const QuantizedActs& qa, int64_t n_tok, float* y, ThreadPool* pool) {
    const ActPanel ap = qa.panel();
    const int64_t groups = w.rows / kPackRows;
    const int64_t tok_block = std::max<int64_t>(4, std::min<int64_t>(256, static_cast<int64_t>(256 * 1024 / qa.row_bytes) / 4 * 4));
    auto body = [&](size_t g0, size_t g1) {
        for (int64_t t0 = 0; t0 < n_tok; t0 += tok_block)
            gemm_packed(w.type, w.packed, w.cols, static_cast<int64_t>(g0), static_cast<int64_t>(g1), ap, t0,
                        std::min(n_tok, t0 + tok_block), y, w.rows);
    };
    // pieces of 64 groups in decode (4 streams of 16 groups each, long enough for the
    // prefetchers), 16 with more tokens
    split_rows(pool, static_cast<size_t>(groups), n_tok == 1 ? 64 : 16, 8, body);
    // rows past the last whole group (a vocabulary of 49953) in the row layout, on this thread
    if (groups * kPackRows < w.rows) matmul_rows(w, qa, n_tok, y, nullptr, groups * kPackRows);
}

// Tiled types: activations quantized once; rows split over the pool. Prefill (more than 16
// tokens) is cache-blocked: the inner dimension in chunks of 4096 elements (a 4096-wide
// matrix in one chunk; 1024-element chunks measured 1.5x slower: more tile set-up and
// horizontal sums per weight byte) and tokens in blocks whose activation chunks fill
// ~256 KiB (L2), so a thread's weight tile (gemm.h: 2 rows × chunk) stays in L1 while the
// block's tokens pass it, and each weight byte is read from memory once per token block.
void matmul_quant(const MatrixView& w, const float* x, int64_t n_tok, float* y, ThreadPool* pool) {
    thread_local QuantizedActs q;  // reused across calls: no allocation per token in decode
    quantize_acts(w.type, x, n_tok, w.cols, false, pool, q);
    const size_t rb = static_cast<size_t>(row_bytes(w.type, static_cast<uint64_t>(w.cols)));
    if (w.packed && packable(w.type, w.rows, w.cols)) return matmul_packed(w, q, n_tok, y, pool);
    // Up to 16 tokens (decode, the server's batched decode) every type takes the row kernels, so a
    // token's outputs are the same bits alone or in a batch (the tiles sum a row's blocks in one
    // chain, the row kernels in two, by block parity).
    if (!gemm_q_tiled(w.type) || n_tok <= 16) return matmul_rows(w, q, n_tok, y, pool);
    const ActPanel ap = q.panel();
    const uint8_t* base = static_cast<const uint8_t*>(w.data);
    const int64_t nbk = w.cols / dtype_info(w.type).block_size;
    const int64_t kc = std::max<int64_t>(1, 4096 / dtype_info(w.type).block_size);
    const size_t chunk_bytes = std::max<size_t>(1, q.row_bytes * static_cast<size_t>(std::min(kc, nbk)) / static_cast<size_t>(nbk));
    const int64_t tok_block = std::max<int64_t>(4, std::min<int64_t>(256, static_cast<int64_t>(256 * 1024 / chunk_bytes) / 4 * 4));
    auto body = [&](size_t r0, size_t r1) {
        for (int64_t t0 = 0; t0 < n_tok; t0 += tok_block) {
            const int64_t t1 = std::min(n_tok, t0 + tok_block);
            for (int64_t k0 = 0; k0 < nbk; k0 += kc)
                gemm_q_tile(w.type, base, rb, static_cast<int64_t>(r0), static_cast<int64_t>(r1), ap, t0, t1, k0,
                            std::min(nbk, k0 + kc), y, w.rows, k0 > 0);
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
using x86::hsum;
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

// Register-blocked dense tile: RM weight rows × RN tokens over elements [k0, k1). Per
// 8 elements: RM weight loads (converted to f32 once), RN activation loads, RM*RN FMAs into
// RM*RN accumulators. Every (row, token) gets the same arithmetic whatever tile covers it.
template <DType T, int RM, int RN>
void tile_dense(const uint8_t* w, size_t wrb, int64_t r, const float* x, int64_t ldx, int64_t t, int64_t k0, int64_t k1,
                float* y, int64_t ldy, bool accumulate) {
    const uint8_t* wr[RM];
    const float* xr[RN];
    for (int i = 0; i < RM; ++i) wr[i] = w + static_cast<size_t>(r + i) * wrb;
    for (int j = 0; j < RN; ++j) xr[j] = x + (t + j) * ldx;
    float o[RM][RN];
    int64_t k = k0;
#ifdef CALPACA_AVX2
    __m256 acc[RM][RN];
    for (int i = 0; i < RM; ++i)
        for (int j = 0; j < RN; ++j) acc[i][j] = _mm256_setzero_ps();
    for (; k + 8 <= k1; k += 8) {
        __m256 wv[RM];
        for (int i = 0; i < RM; ++i) wv[i] = load8(T, wr[i], k);
        for (int j = 0; j < RN; ++j) {
            const __m256 xv = _mm256_loadu_ps(xr[j] + k);
            for (int i = 0; i < RM; ++i) acc[i][j] = _mm256_fmadd_ps(wv[i], xv, acc[i][j]);
        }
    }
    for (int i = 0; i < RM; ++i)
        for (int j = 0; j < RN; ++j) o[i][j] = hsum(acc[i][j]);
#else
    for (int i = 0; i < RM; ++i)
        for (int j = 0; j < RN; ++j) o[i][j] = 0;
#endif
    for (; k < k1; ++k)
        for (int i = 0; i < RM; ++i) {
            const float wi = scalar_w(T, wr[i], k);
            for (int j = 0; j < RN; ++j) o[i][j] = std::fma(wi, xr[j][k], o[i][j]);  // same rounding in every tile shape
        }
    for (int i = 0; i < RM; ++i)
        for (int j = 0; j < RN; ++j) {
            float& dst = y[(t + j) * ldy + r + i];
            dst = accumulate ? dst + o[i][j] : o[i][j];
        }
}

constexpr int kDenseRM = 3, kDenseRN = 4;

template <DType T, int RM>
void dense_tokens(const uint8_t* w, size_t wrb, int64_t r, const float* x, int64_t ldx, int64_t t0, int64_t t1,
                  int64_t k0, int64_t k1, float* y, int64_t ldy, bool acc) {
    int64_t t = t0;
    for (; t + kDenseRN <= t1; t += kDenseRN) tile_dense<T, RM, kDenseRN>(w, wrb, r, x, ldx, t, k0, k1, y, ldy, acc);
    switch (t1 - t) {
        case 3: tile_dense<T, RM, 3>(w, wrb, r, x, ldx, t, k0, k1, y, ldy, acc); break;
        case 2: tile_dense<T, RM, 2>(w, wrb, r, x, ldx, t, k0, k1, y, ldy, acc); break;
        case 1: tile_dense<T, RM, 1>(w, wrb, r, x, ldx, t, k0, k1, y, ldy, acc); break;
        default: break;
    }
}

// Rows [r0, r1) × tokens [t0, t1) over elements [k0, k1) in RM × RN tiles.
template <DType T>
void dense_block(const uint8_t* w, size_t wrb, int64_t r0, int64_t r1, const float* x, int64_t ldx, int64_t t0,
                 int64_t t1, int64_t k0, int64_t k1, float* y, int64_t ldy, bool acc) {
    int64_t r = r0;
    for (; r + kDenseRM <= r1; r += kDenseRM) dense_tokens<T, kDenseRM>(w, wrb, r, x, ldx, t0, t1, k0, k1, y, ldy, acc);
    switch (r1 - r) {
        case 2: dense_tokens<T, 2>(w, wrb, r, x, ldx, t0, t1, k0, k1, y, ldy, acc); break;
        case 1: dense_tokens<T, 1>(w, wrb, r, x, ldx, t0, t1, k0, k1, y, ldy, acc); break;
        default: break;
    }
}

void dense_block_any(DType t, const uint8_t* w, size_t wrb, int64_t r0, int64_t r1, const float* x, int64_t ldx,
                     int64_t t0, int64_t t1, int64_t k0, int64_t k1, float* y, int64_t ldy, bool acc) {
    switch (t) {
        case DType::F16: return dense_block<DType::F16>(w, wrb, r0, r1, x, ldx, t0, t1, k0, k1, y, ldy, acc);
        case DType::BF16: return dense_block<DType::BF16>(w, wrb, r0, r1, x, ldx, t0, t1, k0, k1, y, ldy, acc);
        default: return dense_block<DType::F32>(w, wrb, r0, r1, x, ldx, t0, t1, k0, k1, y, ldy, acc);
    }
}

// Two 8-lane accumulators over 16-element steps, then a scalar tail into a local sum, the
// type a compile-time constant: the shape of model/attention.cpp's scores kernel, which must
// give the same bits (MultiSession scores keys with dot(), Session with that kernel).
template <DType T>
float dot_dense(const uint8_t* p, const float* x, int64_t n) {
    int64_t i = 0;
    float r = 0;
#ifdef CALPACA_AVX2
    __m256 a = _mm256_setzero_ps(), b = _mm256_setzero_ps();
    for (; i + 16 <= n; i += 16) {
        a = _mm256_fmadd_ps(load8(T, p, i), _mm256_loadu_ps(x + i), a);
        b = _mm256_fmadd_ps(load8(T, p, i + 8), _mm256_loadu_ps(x + i + 8), b);
    }
    r = hsum(_mm256_add_ps(a, b));
#endif
    for (; i < n; ++i) r += scalar_w(T, p, i) * x[i];
    return r;
}

void check_dense(DType t) {
    if (t != DType::F32 && t != DType::F16 && t != DType::BF16)
        fail("matmul: weight type {} is not supported by the dense kernels", dtype_name(t));
}

}  // namespace

float dot(DType t, const void* w, const float* x, int64_t n) {
    if (is_quantized(t)) return dot_quant(t, w, x, n, false);
    check_dense(t);
    const uint8_t* p = static_cast<const uint8_t*>(w);
    switch (t) {
        case DType::F16: return dot_dense<DType::F16>(p, x, n);
        case DType::BF16: return dot_dense<DType::BF16>(p, x, n);
        default: return dot_dense<DType::F32>(p, x, n);
    }
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

// Rows split over the pool. The inner dimension is summed in chunks of 512 elements (partial
// sums added to y in chunk order) whatever the token count, so a token's outputs are
// bit-identical however many tokens share the call (batched decode = decoding alone). With
// more than 16 tokens the loops are cache-blocked: tokens in blocks of 128, chunk by chunk
// (128 × 2 KiB of activations stay in L2 while a thread's 3-row weight tiles pass them, the
// tile in L1), so each weight byte is read from memory once per 128 tokens. With 1–16 tokens
// (decode, batched decode) each 3-row group runs all its chunks before the next: three
// sequential weight streams, which the prefetchers follow (chunk-by-chunk order over all rows
// halved the 8-token speed).
void matmul(const MatrixView& w, const float* x, int64_t n_tok, float* y, ThreadPool* pool) {
    if (is_quantized(w.type)) return matmul_quant(w, x, n_tok, y, pool);
    check_dense(w.type);
    const size_t rb = static_cast<size_t>(row_bytes(w.type, static_cast<uint64_t>(w.cols)));
    const uint8_t* base = static_cast<const uint8_t*>(w.data);
    constexpr int64_t kChunk = 512, kTokBlock = 128, kRowOrderTokens = 16;
    auto chunks = [&](int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
        int64_t k0 = 0;
        do {
            const int64_t k1 = std::min(w.cols, k0 + kChunk);
            dense_block_any(w.type, base, rb, r0, r1, x, w.cols, t0, t1, k0, k1, y, w.rows, k0 > 0);
            k0 = k1;
        } while (k0 < w.cols);
    };
    auto body = [&](size_t rs, size_t re) {
        const int64_t r0 = static_cast<int64_t>(rs), r1 = static_cast<int64_t>(re);
        if (n_tok <= kRowOrderTokens) {
            for (int64_t r = r0; r < r1; r += kDenseRM) chunks(r, std::min(r1, r + kDenseRM), 0, n_tok);
            return;
        }
        for (int64_t t0 = 0; t0 < n_tok; t0 += kTokBlock) chunks(r0, r1, t0, std::min(n_tok, t0 + kTokBlock));
    };
    // rows [r0, w.rows) of a packed matrix that are not in its copy (fewer than 8), on this thread
    auto tail_rows = [&](int64_t r0) {
        if (r0 < w.rows) body(static_cast<size_t>(r0), static_cast<size_t>(w.rows));
    };
    if (w.packed && packable(w.type, w.rows, w.cols)) {
        // packed F16 (tensor/packed.h): groups of 8 rows handed out 16 at a time (split_rows). Up to 3
        // tokens (decode): whole rows, several groups per tile. 4-16 (batched decode): the
        // activations transposed once (F16Panel, shared by the threads), whole rows. More
        // (prefill): tokens in equal blocks of at most 128, each transposed once, columns in
        // chunks of 512, so a chunk of the block's panel (<= 256 KiB) stays in L2 while a piece's
        // groups pass it and each weight byte is read from memory once per block. The results
        // are the same bits in every order (gemm_packed_f16). Rows past the last whole group (a
        // vocabulary of 49953) take the row layout's path below, on this thread.
        const int64_t groups = w.rows / kPackRows;
        constexpr int64_t kGrain = 16;  // (kTokBlock = 128 and kChunk = 512 as for the row layout)
        auto run = [&](const std::function<void(size_t, size_t)>& fn) {
            split_rows(pool, static_cast<size_t>(groups), kGrain, 8, fn);
        };
        if (n_tok <= 3) {
            run([&](size_t g0, size_t g1) {
                gemm_packed_f16(w.packed, w.cols, static_cast<int64_t>(g0), static_cast<int64_t>(g1), 0, w.cols, x,
                                w.cols, 0, n_tok, y, w.rows);
            });
            tail_rows(groups * kPackRows);
            return;
        }
        // equal blocks of at most kTokBlock (128 tokens: one block, not 120 + 8, whose second
        // pass would stream every weight again for 8 tokens)
        const int64_t n_blocks = (n_tok + kTokBlock - 1) / kTokBlock;
        const int64_t block = n_tok <= 16 ? n_tok : (n_tok + n_blocks - 1) / n_blocks;
        const int64_t chunk = n_tok <= 16 ? w.cols : kChunk;
        thread_local F16Panel tl_panel;
        F16Panel& panel = tl_panel;  // the calling thread's, named so the workers' lambdas see this one
        for (int64_t t0 = 0; t0 < n_tok; t0 += block) {
            prepare_f16_panel(x, w.cols, t0, std::min(n_tok, t0 + block), 0, w.cols, panel, pool);
            run([&](size_t g0, size_t g1) {
                for (int64_t k0 = 0; k0 < w.cols; k0 += chunk)
                    gemm_packed_f16_panel(w.packed, w.cols, static_cast<int64_t>(g0), static_cast<int64_t>(g1), panel,
                                          k0, std::min(w.cols, k0 + chunk), y, w.rows);
            });
        }
        tail_rows(groups * kPackRows);
        return;
    }
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
