// Quantized tensor types: reference quantize / dequantize for every ggml block format we
// support, dispatched on DType. Layouts: quant_blocks.h. Per-family code: quant_legacy.cpp
// (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1) and quant_kquants.cpp (Q2_K .. Q6_K, Q8_K).
//
// The reference quantizers reproduce ggml's `quantize_row_*_ref` bit for bit (the
// functions llama.cpp's quantizer uses when no importance matrix is given): a tensor we
// quantize carries the same bytes as one quantized by llama.cpp from the same f32 data.
// tests/unit/test_quant_formats.cpp checks that against fixtures made by
// tools/reference/make_quant_fixtures.py.
#pragma once
#include <cstdint>

#include "calpaca/tensor/dtype.h"

namespace calpaca {

// Q4_0 .. Q8_K (block types).
bool is_quantized(DType t);
// Block types that may hold weights (everything but the activation formats Q8_1 / Q8_K).
bool is_weight_quant(DType t);

// n must be a multiple of the type's block size (Error otherwise).
void quantize_row_ref(DType t, const float* x, void* y, int64_t n);
void dequantize_row(DType t, const void* x, float* y, int64_t n);

namespace quant {
struct BlockQ4_0; struct BlockQ4_1; struct BlockQ5_0; struct BlockQ5_1; struct BlockQ8_0; struct BlockQ8_1;
struct BlockQ2_K; struct BlockQ3_K; struct BlockQ4_K; struct BlockQ5_K; struct BlockQ6_K; struct BlockQ8_K;

// Per-type reference functions; k = number of elements (a multiple of the block size).
void quantize_row_q4_0_ref(const float* x, BlockQ4_0* y, int64_t k);
void quantize_row_q4_1_ref(const float* x, BlockQ4_1* y, int64_t k);
void quantize_row_q5_0_ref(const float* x, BlockQ5_0* y, int64_t k);
void quantize_row_q5_1_ref(const float* x, BlockQ5_1* y, int64_t k);
void quantize_row_q8_0_ref(const float* x, BlockQ8_0* y, int64_t k);
void quantize_row_q8_1_ref(const float* x, BlockQ8_1* y, int64_t k);
void quantize_row_q2_K_ref(const float* x, BlockQ2_K* y, int64_t k);
void quantize_row_q3_K_ref(const float* x, BlockQ3_K* y, int64_t k);
void quantize_row_q4_K_ref(const float* x, BlockQ4_K* y, int64_t k);
void quantize_row_q5_K_ref(const float* x, BlockQ5_K* y, int64_t k);
void quantize_row_q6_K_ref(const float* x, BlockQ6_K* y, int64_t k);
void quantize_row_q8_K_ref(const float* x, BlockQ8_K* y, int64_t k);

void dequantize_row_q4_0(const BlockQ4_0* x, float* y, int64_t k);
void dequantize_row_q4_1(const BlockQ4_1* x, float* y, int64_t k);
void dequantize_row_q5_0(const BlockQ5_0* x, float* y, int64_t k);
void dequantize_row_q5_1(const BlockQ5_1* x, float* y, int64_t k);
void dequantize_row_q8_0(const BlockQ8_0* x, float* y, int64_t k);
void dequantize_row_q8_1(const BlockQ8_1* x, float* y, int64_t k);
void dequantize_row_q2_K(const BlockQ2_K* x, float* y, int64_t k);
void dequantize_row_q3_K(const BlockQ3_K* x, float* y, int64_t k);
void dequantize_row_q4_K(const BlockQ4_K* x, float* y, int64_t k);
void dequantize_row_q5_K(const BlockQ5_K* x, float* y, int64_t k);
void dequantize_row_q6_K(const BlockQ6_K* x, float* y, int64_t k);
void dequantize_row_q8_K(const BlockQ8_K* x, float* y, int64_t k);
}  // namespace quant

}  // namespace calpaca
