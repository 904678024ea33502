// Kernels the backward pass needs beyond tensor/kernels.h. Each has a plain `_ref` twin with
// the same signature (tests/unit/test_train_ops.cpp compares them on random data with odd sizes).
//
// Every output element is produced by exactly one thread with a fixed summation order, so the
// results do not depend on the thread count.
#pragma once
#include <cstdint>

#include "calpaca/tensor/kernels.h"

namespace calpaca {

class ThreadPool;

// dx[t][c] += sum_r W[r][c] * dy[t][r]: the input gradient of y = W x for a frozen or trainable
// weight W [rows][cols] (F32/F16/BF16). dy is [n_tok][rows], dx is [n_tok][cols] (accumulated).
void matmul_tn_ref(const MatrixView& w, const float* dy, int64_t n_tok, float* dx);
void matmul_tn(const MatrixView& w, const float* dy, int64_t n_tok, float* dx, ThreadPool* pool);

// dw[r][c] += scale * sum_t dy[t][r] * x[t][c]: the weight gradient of y = W x.
// dy is [n_tok][rows], x is [n_tok][cols], dw is [rows][cols] f32 (accumulated).
void outer_acc_ref(const float* dy, int64_t rows, const float* x, int64_t cols, int64_t n_tok, float scale,
                   float* dw);
void outer_acc(const float* dy, int64_t rows, const float* x, int64_t cols, int64_t n_tok, float scale, float* dw,
               ThreadPool* pool);

}  // namespace calpaca
