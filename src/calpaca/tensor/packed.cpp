// Packed (8-row interleaved) weight layout: conversion both ways and the reference kernel
// (packed.h). The fast kernel is in packed_x86.cpp; builds without AVX2 never pack.
#include "calpaca/tensor/packed.h"

#include <cstring>
#include <vector>

#include "calpaca/base/error.h"
#include "calpaca/tensor/quant_blocks.h"
#include "calpaca/tensor/quant_dot.h"

namespace calpaca {

using namespace quant;

namespace {

// Code bytes per 32-element block and row (Q4_0: 16 packed nibble pairs, Q8_0: 32 int8).
int code_bytes(DType t) { return t == DType::Q4_0 ? QK / 2 : QK; }

void check_type(DType t, const char* what) {
    if (t != DType::Q4_0 && t != DType::Q8_0) fail("{}: no packed layout for weight type {} (Q4_0, Q8_0)", what, dtype_name(t));
}

// One packed block = 8 scales then the interleaved codes (packed.h).
size_t packed_block_bytes(DType t) { return kPackRows * (2 + static_cast<size_t>(code_bytes(t))); }

}  // namespace

bool packed_kernels_available() {
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
    return true;
#else
    return false;
#endif
}

bool packable(DType t, int64_t rows, int64_t cols) {
    return packed_kernels_available() && (t == DType::Q4_0 || t == DType::Q8_0) && rows > 0 && rows % kPackRows == 0 &&
           cols > 0 && cols % QK == 0;
}

size_t packed_bytes(DType t, int64_t rows, int64_t cols) {
    check_type(t, "packed_bytes");
    return static_cast<size_t>(rows / kPackRows) * static_cast<size_t>(cols / QK) * packed_block_bytes(t);
}

// Source block (row r, block b) = 2-byte d then code_bytes codes (BlockQ4_0 / BlockQ8_0).
void pack_weights(DType t, const void* src, int64_t cols, int64_t g0, int64_t g1, uint8_t* dst) {
    check_type(t, "pack_weights");
    const int64_t nb = cols / QK;
    const size_t cb = static_cast<size_t>(code_bytes(t)), sb = 2 + cb, pb = packed_block_bytes(t);
    const size_t rb = static_cast<size_t>(nb) * sb;
    const auto* s = static_cast<const uint8_t*>(src);
    for (int64_t g = g0; g < g1; ++g) {
        uint8_t* out = dst + static_cast<size_t>(g * nb) * pb;
        for (int64_t b = 0; b < nb; ++b, out += pb) {
            for (int r = 0; r < kPackRows; ++r) {
                const uint8_t* blk = s + static_cast<size_t>(g * kPackRows + r) * rb + static_cast<size_t>(b) * sb;
                std::memcpy(out + 2 * r, blk, 2);
                for (size_t j = 0; j < cb / 4; ++j) std::memcpy(out + 2 * kPackRows + 32 * j + 4 * r, blk + 2 + 4 * j, 4);
            }
        }
    }
}

void unpack_weights(DType t, const uint8_t* packed, int64_t rows, int64_t cols, void* dst) {
    check_type(t, "unpack_weights");
    if (rows % kPackRows != 0) fail("unpack_weights: {} rows is not a multiple of {}", rows, kPackRows);
    const int64_t nb = cols / QK;
    const size_t cb = static_cast<size_t>(code_bytes(t)), sb = 2 + cb, pb = packed_block_bytes(t);
    const size_t rb = static_cast<size_t>(nb) * sb;
    auto* d = static_cast<uint8_t*>(dst);
    for (int64_t g = 0; g < rows / kPackRows; ++g) {
        const uint8_t* in = packed + static_cast<size_t>(g * nb) * pb;
        for (int64_t b = 0; b < nb; ++b, in += pb)
            for (int r = 0; r < kPackRows; ++r) {
                uint8_t* blk = d + static_cast<size_t>(g * kPackRows + r) * rb + static_cast<size_t>(b) * sb;
                std::memcpy(blk, in + 2 * r, 2);
                for (size_t j = 0; j < cb / 4; ++j) std::memcpy(blk + 2 + 4 * j, in + 2 * kPackRows + 32 * j + 4 * r, 4);
            }
    }
}

void gemm_packed_ref(DType t, const uint8_t* packed, int64_t cols, int64_t g0, int64_t g1, const ActPanel& a,
                     int64_t t0, int64_t t1, float* y, int64_t ldy) {
    check_type(t, "gemm_packed_ref");
    const int64_t nb = cols / QK;
    const size_t pb = packed_block_bytes(t), rb = row_bytes(t, static_cast<uint64_t>(cols));
    std::vector<uint8_t> rows(rb * kPackRows);
    for (int64_t g = g0; g < g1; ++g) {
        unpack_weights(t, packed + static_cast<size_t>(g * nb) * pb, kPackRows, cols, rows.data());
        for (int64_t tok = t0; tok < t1; ++tok)
            for (int r = 0; r < kPackRows; ++r)
                y[tok * ldy + g * kPackRows + r] =
                    vec_dot_q_ref(t, rows.data() + r * rb, a.q + static_cast<size_t>(tok) * a.rb, cols);
    }
}

#if !(defined(__AVX2__) && defined(__FMA__) && defined(__F16C__))
// Builds without the x86 kernels never pack (packable() is false); direct callers get the
// reference arithmetic.
void gemm_packed(DType t, const uint8_t* packed, int64_t cols, int64_t g0, int64_t g1, const ActPanel& a, int64_t t0,
                 int64_t t1, float* y, int64_t ldy) {
    gemm_packed_ref(t, packed, cols, g0, g1, a, t0, t1, y, ldy);
}
#endif

}  // namespace calpaca
