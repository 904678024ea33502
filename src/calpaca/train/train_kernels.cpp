#include "calpaca/train/train_kernels.h"

#include <algorithm>
#include <vector>

#include "calpaca/base/threadpool.h"

namespace calpaca {

void matmul_tn_ref(const MatrixView& w, const float* dy, int64_t n_tok, float* dx) {
    std::vector<float> row(static_cast<size_t>(w.cols));
    for (int64_t t = 0; t < n_tok; ++t)
        for (int64_t c = 0; c < w.cols; ++c) {
            double acc = 0;
            for (int64_t r = 0; r < w.rows; ++r) {
                float v;
                to_f32(w.type, w.row(r) + c * (w.type == DType::F32 ? 4 : 2), &v, 1);
                acc += static_cast<double>(v) * dy[t * w.rows + r];
            }
            dx[t * w.cols + c] += static_cast<float>(acc);
        }
}

void matmul_tn(const MatrixView& w, const float* dy, int64_t n_tok, float* dx, ThreadPool* pool) {
    const size_t esize = w.type == DType::F32 ? 4 : 2;
    constexpr int64_t kColBlock = 256, kTokBlock = 16;
    // jobs = (column block, token block) pairs: narrow matrices with a wide vocabulary (the head's
    // backward) still spread over the threads. Each dx element is summed over r in a fixed order
    // by one job, so the result does not depend on the thread count.
    const int64_t n_cb = (w.cols + kColBlock - 1) / kColBlock, n_tb = (n_tok + kTokBlock - 1) / kTokBlock;
    auto body = [&](size_t b, size_t e) {
        std::vector<float> wrow(kColBlock);
        std::vector<float> acc(static_cast<size_t>(kTokBlock * kColBlock));
        for (size_t job = b; job < e; ++job) {
            const int64_t cb = static_cast<int64_t>(job) / n_tb, tb = static_cast<int64_t>(job) % n_tb;
            const int64_t c0 = cb * kColBlock, nc = std::min(kColBlock, w.cols - c0);
            const int64_t t0 = tb * kTokBlock, nt = std::min(kTokBlock, n_tok - t0);
            std::fill(acc.begin(), acc.begin() + nt * nc, 0.0f);
            for (int64_t r = 0; r < w.rows; ++r) {
                bool any = false;
                for (int64_t t = 0; t < nt && !any; ++t) any = dy[(t0 + t) * w.rows + r] != 0.0f;
                if (!any) continue;
                to_f32(w.type, w.row(r) + c0 * esize, wrow.data(), static_cast<size_t>(nc));
                const float* wr = wrow.data();
                for (int64_t t = 0; t < nt; ++t) {
                    const float g = dy[(t0 + t) * w.rows + r];
                    float* a = acc.data() + t * nc;
                    for (int64_t c = 0; c < nc; ++c) a[c] += g * wr[c];
                }
            }
            for (int64_t t = 0; t < nt; ++t) {
                float* d = dx + (t0 + t) * w.cols + c0;
                const float* a = acc.data() + t * nc;
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
    auto body = [&](size_t b, size_t e) {
        std::vector<float> acc(static_cast<size_t>(cols));
        for (size_t r = b; r < e; ++r) {
            std::fill(acc.begin(), acc.end(), 0.0f);
            bool any = false;
            for (int64_t t = 0; t < n_tok; ++t) {
                const float g = dy[t * rows + static_cast<int64_t>(r)];
                if (g == 0.0f) continue;
                any = true;
                const float* xt = x + t * cols;
                for (int64_t c = 0; c < cols; ++c) acc[c] += g * xt[c];
            }
            if (!any) continue;
            float* d = dw + static_cast<int64_t>(r) * cols;
            for (int64_t c = 0; c < cols; ++c) d[c] += scale * acc[c];
        }
    };
    if (pool)
        pool->parallel_for(static_cast<size_t>(rows), body);
    else
        body(0, static_cast<size_t>(rows));
}

}  // namespace calpaca
