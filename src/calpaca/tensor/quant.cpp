#include "calpaca/tensor/quant.h"

#include "calpaca/base/error.h"
#include "calpaca/tensor/quant_blocks.h"

namespace calpaca {

using namespace quant;

bool is_quantized(DType t) {
    switch (t) {
        case DType::Q4_0: case DType::Q4_1: case DType::Q5_0: case DType::Q5_1: case DType::Q8_0: case DType::Q8_1:
        case DType::Q2_K: case DType::Q3_K: case DType::Q4_K: case DType::Q5_K: case DType::Q6_K: case DType::Q8_K:
            return true;
        default: return false;
    }
}

bool is_weight_quant(DType t) { return is_quantized(t) && t != DType::Q8_1 && t != DType::Q8_K; }

namespace {
void check_len(DType t, int64_t n, const char* what) {
    const auto& info = dtype_info(t);
    if (n < 0 || n % info.block_size)
        fail("{}: {} elements is not a multiple of the {} block size {}", what, n, info.name, info.block_size);
}
}  // namespace

void quantize_row_ref(DType t, const float* x, void* y, int64_t n) {
    check_len(t, n, "quantize");
    switch (t) {
        case DType::Q4_0: quantize_row_q4_0_ref(x, static_cast<BlockQ4_0*>(y), n); return;
        case DType::Q4_1: quantize_row_q4_1_ref(x, static_cast<BlockQ4_1*>(y), n); return;
        case DType::Q5_0: quantize_row_q5_0_ref(x, static_cast<BlockQ5_0*>(y), n); return;
        case DType::Q5_1: quantize_row_q5_1_ref(x, static_cast<BlockQ5_1*>(y), n); return;
        case DType::Q8_0: quantize_row_q8_0_ref(x, static_cast<BlockQ8_0*>(y), n); return;
        case DType::Q8_1: quantize_row_q8_1_ref(x, static_cast<BlockQ8_1*>(y), n); return;
        case DType::Q2_K: quantize_row_q2_K_ref(x, static_cast<BlockQ2_K*>(y), n); return;
        case DType::Q3_K: quantize_row_q3_K_ref(x, static_cast<BlockQ3_K*>(y), n); return;
        case DType::Q4_K: quantize_row_q4_K_ref(x, static_cast<BlockQ4_K*>(y), n); return;
        case DType::Q5_K: quantize_row_q5_K_ref(x, static_cast<BlockQ5_K*>(y), n); return;
        case DType::Q6_K: quantize_row_q6_K_ref(x, static_cast<BlockQ6_K*>(y), n); return;
        case DType::Q8_K: quantize_row_q8_K_ref(x, static_cast<BlockQ8_K*>(y), n); return;
        default: fail("quantize: {} is not a quantized type", dtype_name(t));
    }
}

void dequantize_row(DType t, const void* x, float* y, int64_t n) {
    check_len(t, n, "dequantize");
    switch (t) {
        case DType::Q4_0: dequantize_row_q4_0(static_cast<const BlockQ4_0*>(x), y, n); return;
        case DType::Q4_1: dequantize_row_q4_1(static_cast<const BlockQ4_1*>(x), y, n); return;
        case DType::Q5_0: dequantize_row_q5_0(static_cast<const BlockQ5_0*>(x), y, n); return;
        case DType::Q5_1: dequantize_row_q5_1(static_cast<const BlockQ5_1*>(x), y, n); return;
        case DType::Q8_0: dequantize_row_q8_0(static_cast<const BlockQ8_0*>(x), y, n); return;
        case DType::Q8_1: dequantize_row_q8_1(static_cast<const BlockQ8_1*>(x), y, n); return;
        case DType::Q2_K: dequantize_row_q2_K(static_cast<const BlockQ2_K*>(x), y, n); return;
        case DType::Q3_K: dequantize_row_q3_K(static_cast<const BlockQ3_K*>(x), y, n); return;
        case DType::Q4_K: dequantize_row_q4_K(static_cast<const BlockQ4_K*>(x), y, n); return;
        case DType::Q5_K: dequantize_row_q5_K(static_cast<const BlockQ5_K*>(x), y, n); return;
        case DType::Q6_K: dequantize_row_q6_K(static_cast<const BlockQ6_K*>(x), y, n); return;
        case DType::Q8_K: dequantize_row_q8_K(static_cast<const BlockQ8_K*>(x), y, n); return;
        default: fail("dequantize: {} is not a quantized type", dtype_name(t));
    }
}

}  // namespace calpaca
