// Element / block types, numbered as ggml numbers them (the GGUF tensor type field).
// Block formats themselves (bit layouts) live in tensor/quant*.h.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace calpaca {

enum class DType : uint32_t {
    F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
    Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
    I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, BF16 = 30,
};

struct DTypeInfo {
    const char* name;
    uint32_t block_size;   // elements per block
    uint32_t type_size;    // bytes per block
};

// nullptr if the numeric value is not a type we know.
const DTypeInfo* dtype_info(uint32_t raw);
const DTypeInfo& dtype_info(DType t);
inline const char* dtype_name(DType t) { return dtype_info(t).name; }
bool dtype_from_name(std::string_view name, DType& out);  // case-insensitive ("f16", "Q4_K")

// Bytes needed for a row of n elements (n must be a multiple of the block size).
uint64_t row_bytes(DType t, uint64_t n);

// ---- scalar conversions (IEEE half, bfloat16) ----
inline float fp32_from_bits(uint32_t w) { float f; std::memcpy(&f, &w, 4); return f; }
inline uint32_t fp32_to_bits(float f) { uint32_t w; std::memcpy(&w, &f, 4); return w; }

float fp16_to_fp32(uint16_t h);
uint16_t fp32_to_fp16(float f);  // round to nearest even, overflow to inf, NaN kept

inline float bf16_to_fp32(uint16_t h) { return fp32_from_bits(static_cast<uint32_t>(h) << 16); }
inline uint16_t fp32_to_bf16(float f) {
    uint32_t u = fp32_to_bits(f);
    if ((u & 0x7fffffff) > 0x7f800000) return static_cast<uint16_t>((u >> 16) | 64);  // quiet NaN
    return static_cast<uint16_t>((u + (0x7fff + ((u >> 16) & 1))) >> 16);          // nearest even
}

}  // namespace calpaca
