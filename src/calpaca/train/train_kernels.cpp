#include "calpaca/train/train_kernels.h"

#include <algorithm>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

#include "calpaca/base/error.h"
#include "calpaca/base/threadpool.h"
#include "calpaca/tensor/quant.h"

namespace calpaca {

namespace {

void check_frozen_type(const MatrixView& w, const char* what) {
    if (!matmul_supports(w.type)) fail("{}: weight type {} is not supported", what, dtype_name(w.type));
    if (is_quantized(w.type) && w.cols % static_cast<int64_t>(dtype_info(w.type).block_size) != 0)
        fail("{}: a {} matrix needs a row length that is a multiple of {}, got {}", what, dtype_name(w.type),
             dtype_info(w.type).block_size, w.cols);
}

// f32 copy of elements [c0, c0 + n) of row r (c0 and n multiples of a quantized type's block size)
void row_segment_f32(const MatrixView& w, int64_t r, int64_t c0, int64_t n, float* dst) {
    to_f32(w.type, w.row(r) + row_bytes(w.type, static_cast<uint64_t>(c0)), dst, static_cast<size_t>(n));
}

// ------------------------------------------------------------------ register-tiled inner loops
// A tile keeps NT x (8*NV) accumulators in registers: every loaded vector feeds NT FMAs and the
// accumulators are read and written once per tile rather than once per reduction step.

#if defined(__AVX2__) && defined(__FMA__)
// acc[k*ldacc + j] += scale * sum_{i<n} a[k*lda_k + i*lda_i] * b[i*ldb + j] for k < NT, j < 8*NV
// (a broadcast, b loaded as vectors; the sum over i runs in order)
template <int NT, int NV>
inline void tile_fma(const float* a, int64_t lda_k, int64_t lda_i, const float* b, int64_t ldb, int64_t n, float* acc,
                     int64_t ldacc, float scale) {
    __m256 s[NT][NV];
    for (int k = 0; k < NT; ++k)
        for (int j = 0; j < NV; ++j) s[k][j] = _mm256_setzero_ps();
    for (int64_t i = 0; i < n; ++i) {
        __m256 v[NV];
        for (int j = 0; j < NV; ++j) v[j] = _mm256_loadu_ps(b + i * ldb + 8 * j);
        for (int k = 0; k < NT; ++k) {
            const __m256 g = _mm256_broadcast_ss(a + k * lda_k + i * lda_i);
            for (int j = 0; j < NV; ++j) s[k][j] = _mm256_fmadd_ps(g, v[j], s[k][j]);
        }
    }
    const __m256 sc = _mm256_set1_ps(scale);
    for (int k = 0; k < NT; ++k)
        for (int j = 0; j < NV; ++j) {
            float* o = acc + k * ldacc + 8 * j;
            _mm256_storeu_ps(o, _mm256_fmadd_ps(sc, s[k][j], _mm256_loadu_ps(o)));
        }
}
constexpr int64_t kVec = 8;
#else
template <int NT, int NV>
inline void tile_fma(const float* a, int64_t lda_k, int64_t lda_i, const float* b, int64_t ldb, int64_t n, float* acc,
                     int64_t ldacc, float scale) {
    float s[NT][8 * NV] = {};
    for (int64_t i = 0; i < n; ++i)
        for (int k = 0; k < NT; ++k) {
            const float g = a[k * lda_k + i * lda_i];
            for (int j = 0; j < 8 * NV; ++j) s[k][j] += g * b[i * ldb + j];
        }
    for (int k = 0; k < NT; ++k)
        for (int j = 0; j < 8 * NV; ++j) acc[k * ldacc + j] += scale * s[k][j];
}
constexpr int64_t kVec = 8;
#endif

// acc[k][c] += scale * sum_{i<n} a[k*lda_k + i*lda_i] * b[i*ldb + c] for k < nk (<= 4), c < nc:
// 16-wide tiles (4 x 2 accumulators + 2 loaded vectors + 1 broadcast fit AVX2's 16 registers),
// then 8-wide, then scalar columns.
template <int NT>
void tile_rows(const float* a, int64_t lda_k, int64_t lda_i, const float* b, int64_t ldb, int64_t n, int64_t nc,
               float* acc, int64_t ldacc, float scale) {
    int64_t c = 0;
    for (; c + 2 * kVec <= nc; c += 2 * kVec) tile_fma<NT, 2>(a, lda_k, lda_i, b + c, ldb, n, acc + c, ldacc, scale);
    for (; c + kVec <= nc; c += kVec) tile_fma<NT, 1>(a, lda_k, lda_i, b + c, ldb, n, acc + c, ldacc, scale);
    for (; c < nc; ++c)
        for (int k = 0; k < NT; ++k) {
            float s = 0;
            for (int64_t i = 0; i < n; ++i) s += a[k * lda_k + i * lda_i] * b[i * ldb + c];
            acc[k * ldacc + c] += scale * s;
        }
}

// dispatch nk in 1..4 to the template
void tile_any(int64_t nk, const float* a, int64_t lda_k, int64_t lda_i, const float* b, int64_t ldb, int64_t n,
              int64_t nc, float* acc, int64_t ldacc, float scale) {
    switch (nk) {
        case 4: return tile_rows<4>(a, lda_k, lda_i, b, ldb, n, nc, acc, ldacc, scale);
        case 3: return tile_rows<3>(a, lda_k, lda_i, b, ldb, n, nc, acc, ldacc, scale);
        case 2: return tile_rows<2>(a, lda_k, lda_i, b, ldb, n, nc, acc, ldacc, scale);
        default: return tile_rows<1>(a, lda_k, lda_i, b, ldb, n, nc, acc, ldacc, scale);
    }
}

}  // namespace

void matmul_frozen_ref(const MatrixView& w, const float* x, int64_t n_tok, float* y) {
    check_frozen_type(w, "matmul_frozen_ref");
    if (!is_quantized(w.type)) return matmul_ref(w, x, n_tok, y);
    std::vector<float> row(static_cast<size_t>(w.cols));
    for (int64_t r = 0; r < w.rows; ++r) {
        row_segment_f32(w, r, 0, w.cols, row.data());
        for (int64_t t = 0; t < n_tok; ++t) {
            double acc = 0;
            for (int64_t c = 0; c < w.cols; ++c) acc += static_cast<double>(row[c]) * x[t * w.cols + c];
            y[t * w.rows + r] = static_cast<float>(acc);
        }
    }
}

void matmul_frozen(const MatrixView& w, const float* x, int64_t n_tok, float* y, ThreadPool* pool) {
    if (!is_quantized(w.type)) return matmul(w, x, n_tok, y, pool);
    check_frozen_type(w, "matmul_frozen");
    // jobs = blocks of rows; each job dequantizes its rows once into an f32 scratch (<= ~64 KiB)
    // and runs the dense f32 kernel on them for all tokens. Each y element is one f32 dot
    // product, so the result does not depend on the thread count.
    const int64_t rb = std::clamp<int64_t>(16384 / std::max<int64_t>(1, w.cols), 4, 64);
    const int64_t n_rb = (w.rows + rb - 1) / rb;
    auto body = [&](size_t b, size_t e) {
        std::vector<float> wblk(static_cast<size_t>(rb * w.cols)), yblk(static_cast<size_t>(rb * n_tok));
        for (size_t job = b; job < e; ++job) {
            const int64_t r0 = static_cast<int64_t>(job) * rb, nr = std::min(rb, w.rows - r0);
            for (int64_t r = 0; r < nr; ++r) row_segment_f32(w, r0 + r, 0, w.cols, wblk.data() + r * w.cols);
            const MatrixView blk{wblk.data(), DType::F32, nr, w.cols};
            matmul(blk, x, n_tok, yblk.data(), nullptr);
            for (int64_t t = 0; t < n_tok; ++t)
                std::copy(yblk.data() + t * nr, yblk.data() + (t + 1) * nr, y + t * w.rows + r0);
        }
    };
    if (pool)
        pool->parallel_for(static_cast<size_t>(n_rb), body);
    else
        body(0, static_cast<size_t>(n_rb));
}

void matmul_tn_ref(const MatrixView& w, const float* dy, int64_t n_tok, float* dx) {
    check_frozen_type(w, "matmul_tn_ref");
    std::vector<float> row(static_cast<size_t>(w.cols));
    std::vector<double> acc(static_cast<size_t>(w.cols));
    for (int64_t t = 0; t < n_tok; ++t) {
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t r = 0; r < w.rows; ++r) {
            row_segment_f32(w, r, 0, w.cols, row.data());
            for (int64_t c = 0; c < w.cols; ++c) acc[c] += static_cast<double>(row[c]) * dy[t * w.rows + r];
        }
        for (int64_t c = 0; c < w.cols; ++c) dx[t * w.cols + c] += static_cast<float>(acc[c]);
    }
}

void matmul_tn(const MatrixView& w, const float* dy, int64_t n_tok, float* dx, ThreadPool* pool) {
    check_frozen_type(w, "matmul_tn");
    // jobs = (column block, token block) pairs: narrow matrices with a wide vocabulary (the head's
    // backward) still spread over the threads. Within a job the rows are taken kRowChunk at a time:
    // their column segments are converted to f32 (dequantized: 256 is a multiple of every block
    // size, so a segment is whole blocks) into a small scratch, then register tiles of 4 tokens x 16
    // columns accumulate over the chunk. Each dx element is summed over r in a fixed order by one
    // job, so the result does not depend on the thread count.
    // Converted types take 64 tokens per job, so each weight block is converted a quarter as often.
    // F32 rows are copied too: the scratch's padded stride avoids the cache-set conflicts of
    // power-of-two row strides, and the copy streams a large matrix (the head) from memory.
    constexpr int64_t kColBlock = 256, kRowChunk = 64, kLdw = kColBlock + 16;
    const int64_t kTokBlock = w.type == DType::F32 ? 16 : 64;
    const int64_t n_cb = (w.cols + kColBlock - 1) / kColBlock, n_tb = (n_tok + kTokBlock - 1) / kTokBlock;
    auto body = [&](size_t b, size_t e) {
        std::vector<float> wblk(static_cast<size_t>(kRowChunk * kLdw));
        std::vector<float> acc(static_cast<size_t>(kTokBlock * kColBlock));
        for (size_t job = b; job < e; ++job) {
            const int64_t cb = static_cast<int64_t>(job) / n_tb, tb = static_cast<int64_t>(job) % n_tb;
            const int64_t c0 = cb * kColBlock, nc = std::min(kColBlock, w.cols - c0);
            const int64_t t0 = tb * kTokBlock, nt = std::min(kTokBlock, n_tok - t0);
            std::fill(acc.begin(), acc.end(), 0.0f);
            for (int64_t r0 = 0; r0 < w.rows; r0 += kRowChunk) {
                const int64_t nr = std::min(kRowChunk, w.rows - r0);
                bool any = false;
                for (int64_t t = 0; t < nt && !any; ++t) {
                    const float* g = dy + (t0 + t) * w.rows + r0;
                    for (int64_t r = 0; r < nr && !any; ++r) any = g[r] != 0.0f;
                }
                if (!any) continue;
                for (int64_t r = 0; r < nr; ++r) row_segment_f32(w, r0 + r, c0, nc, wblk.data() + r * kLdw);
                for (int64_t t = 0; t < nt; t += 4)
                    tile_any(std::min<int64_t>(4, nt - t), dy + (t0 + t) * w.rows + r0, w.rows, 1, wblk.data(), kLdw,
                             nr, nc, acc.data() + t * kColBlock, kColBlock, 1.0f);
            }
            for (int64_t t = 0; t < nt; ++t) {
                float* d = dx + (t0 + t) * w.cols + c0;
                const float* a = acc.data() + t * kColBlock;
                for (int64_t c = 0; c < nc; ++c) d[c] += a[c];
            }
        }
    };
    const size_t jobs = static_cast<size_t>(n_cb * n_tb);
    if (pool)
        pool->parallel_for(jobs, body);
    else
        body(0, jobs);
}

void outer_acc_ref(const float* dy, int64_t rows, const float* x, int64_t cols, int64_t n_tok, float scale,
                   float* dw) {
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) {
            double acc = 0;
            for (int64_t t = 0; t < n_tok; ++t) acc += static_cast<double>(dy[t * rows + r]) * x[t * cols + c];
            dw[r * cols + c] += scale * static_cast<float>(acc);
        }
}

void outer_acc(const float* dy, int64_t rows, const float* x, int64_t cols, int64_t n_tok, float scale, float* dw,
               ThreadPool* pool) {
    // rows split over the pool, taken 4 at a time: register tiles of 4 rows x 16 columns accumulate
    // over all tokens. x is copied once with a padded row stride (no cache-set conflicts between
    // tokens), and each group's 4 dy columns are packed contiguously. Each dw element's sum runs
    // over t in order whatever the grouping of rows, so the result does not depend on the thread count.
    const int64_t ldx = cols + 16;
    std::vector<float> xp(static_cast<size_t>(n_tok * ldx));
    for (int64_t t = 0; t < n_tok; ++t) std::copy(x + t * cols, x + (t + 1) * cols, xp.data() + t * ldx);
    auto body = [&](size_t b, size_t e) {
        std::vector<float> g(static_cast<size_t>(n_tok * 4));
        for (int64_t r = static_cast<int64_t>(b); r < static_cast<int64_t>(e); r += 4) {
            const int64_t nk = std::min<int64_t>(4, static_cast<int64_t>(e) - r);
            bool any = false;
            for (int64_t t = 0; t < n_tok; ++t)
                for (int64_t k = 0; k < nk; ++k) {
                    g[static_cast<size_t>(t * 4 + k)] = dy[t * rows + r + k];
                    any |= dy[t * rows + r + k] != 0.0f;
                }
            if (any) tile_any(nk, g.data(), 1, 4, xp.data(), ldx, n_tok, cols, dw + r * cols, cols, scale);
        }
    };
    if (pool)
        pool->parallel_for(static_cast<size_t>(rows), body);
    else
        body(0, static_cast<size_t>(rows));
}

}  // namespace calpaca
