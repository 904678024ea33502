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

// y[t][r] = sum_c W[r][c] * x[t][c] for a frozen base weight (F32/F16/BF16 or a quantized block
// type such as Q8_0 / Q4_0) with f32 activations. Dense types go to matmul(); a quantized W is
// dequantized on the fly, a block of rows at a time into a small per-thread f32 scratch, and
// multiplied in f32 — the activations are NOT quantized (QLoRA semantics), so the result is the
// f32 product with the dequantized weights, of which matmul_tn below is the exact transpose.
void matmul_frozen_ref(const MatrixView& w, const float* x, int64_t n_tok, float* y);
void matmul_frozen(const MatrixView& w, const float* x, int64_t n_tok, float* y, ThreadPool* pool);

// dx[t][c] += sum_r W[r][c] * dy[t][r]: the input gradient of y = W x for a frozen or trainable
// weight W [rows][cols] (F32/F16/BF16, or a quantized block type whose blocks are dequantized on
// the fly per thread and column block). dy is [n_tok][rows], dx is [n_tok][cols] (accumulated).
void matmul_tn_ref(const MatrixView& w, const float* dy, int64_t n_tok, float* dx);
void matmul_tn(const MatrixView& w, const float* dy, int64_t n_tok, float* dx, ThreadPool* pool);

// dw[r][c] += scale * sum_t dy[t][r] * x[t][c]: the weight gradient of y = W x.
// dy is [n_tok][rows], x is [n_tok][cols], dw is [rows][cols] f32 (accumulated).
void outer_acc_ref(const float* dy, int64_t rows, const float* x, int64_t cols, int64_t n_tok, float scale,
                   float* dw);
void outer_acc(const float* dy, int64_t rows, const float* x, int64_t cols, int64_t n_tok, float scale, float* dw,
               ThreadPool* pool);

}  // namespace calpaca
