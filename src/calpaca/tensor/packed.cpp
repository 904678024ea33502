// Packed (8-row interleaved) weight layout: conversion both ways and the reference kernel
// (packed.h). The fast kernel is in packed_x86.cpp; builds without AVX2 never pack.
#include "calpaca/tensor/packed.h"

#include <cstring>
#include <vector>

#include "calpaca/base/error.h"
#include "calpaca/base/threadpool.h"
#include "calpaca/tensor/quant_blocks.h"
#include "calpaca/tensor/quant_dot.h"

namespace calpaca {

using namespace quant;

namespace {

// Code bytes per 32-element block and row (Q4_0: 16 packed nibble pairs, Q8_0: 32 int8).
int code_bytes(DType t) { return t == DType::Q4_0 ? QK / 2 : QK; }

void check_type(DType t, const char* what) {
    if (t != DType::Q4_0 && t != DType::Q8_0 && t != DType::Q4_K && t != DType::Q6_K && t != DType::F16)
        fail("{}: no packed layout for weight type {} (F16, Q4_0, Q8_0, Q4_K, Q6_K)", what, dtype_name(t));
}

// One packed block (packed.h): 8 scales then the interleaved codes; Q4_K: 1184 bytes, Q6_K:
// 1680 (8 rows' 210).
size_t packed_block_bytes(DType t) {
    if (t == DType::Q4_K) return 32 + 64 + 64 + 1024;
    if (t == DType::Q6_K) return 16 + 128 + 1024 + 512;
    return kPackRows * (2 + static_cast<size_t>(code_bytes(t)));
}
bool super_block(DType t) { return t == DType::Q4_K || t == DType::Q6_K; }
int64_t block_elems(DType t) { return super_block(t) ? QK_K : QK; }

// Q4_K's 12 scale bytes from the 8 six-bit scales and mins (the inverse of scale_min_k4; all
// 96 bits are used, so unpack(pack(x)) == x byte for byte).
void encode_scales_k4(const uint8_t sc[8], const uint8_t mn[8], uint8_t q[12]) {
    for (int j = 0; j < 4; ++j) {
        q[j] = static_cast<uint8_t>(sc[j] | ((sc[j + 4] >> 4) << 6));
        q[j + 4] = static_cast<uint8_t>(mn[j] | ((mn[j + 4] >> 4) << 6));
        q[j + 8] = static_cast<uint8_t>((sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4));
    }
}

// One Q4_K super-block of 8 rows (src[r]: row r's BlockQ4_K) into the packed block, and back.
void pack_q4_k(const BlockQ4_K* const src[kPackRows], uint8_t* out) {
    for (int r = 0; r < kPackRows; ++r) {
        const BlockQ4_K& b = *src[r];
        std::memcpy(out + 2 * r, &b.d, 2);
        std::memcpy(out + 16 + 2 * r, &b.dmin, 2);
        for (int s = 0; s < 8; ++s) {
            uint8_t sc, m;
            scale_min_k4(s, b.scales, sc, m);
            out[32 + 8 * s + r] = sc;
            out[96 + 16 * (s / 2) + 2 * r + (s % 2)] = m;
        }
        for (int p = 0; p < 4; ++p)
            for (int j = 0; j < 8; ++j) std::memcpy(out + 160 + 256 * p + 32 * j + 4 * r, b.qs + 32 * p + 4 * j, 4);
    }
}
void unpack_q4_k(const uint8_t* in, BlockQ4_K* const dst[kPackRows]) {
    for (int r = 0; r < kPackRows; ++r) {
        BlockQ4_K& b = *dst[r];
        std::memcpy(&b.d, in + 2 * r, 2);
        std::memcpy(&b.dmin, in + 16 + 2 * r, 2);
        uint8_t sc[8], mn[8];
        for (int s = 0; s < 8; ++s) {
            sc[s] = in[32 + 8 * s + r];
            mn[s] = in[96 + 16 * (s / 2) + 2 * r + (s % 2)];
        }
        encode_scales_k4(sc, mn, b.scales);
        for (int p = 0; p < 4; ++p)
            for (int j = 0; j < 8; ++j) std::memcpy(b.qs + 32 * p + 4 * j, in + 160 + 256 * p + 32 * j + 4 * r, 4);
    }
}

// Q6_K element e of a row: low 4 bits in ql[64h + l + 32(c & 1)] (nibble c / 2), high 2 bits
// in qh[32h + l] (bits 2c), h = e / 128, c = e / 32 % 4, l = e % 32 (ggml's block_q6_K).
int q6_get(const BlockQ6_K& b, int e) {
    const int h = e / 128, c = e / 32 % 4, l = e % 32;
    const uint8_t lb = b.ql[64 * h + l + 32 * (c & 1)];
    return ((c >> 1) ? lb >> 4 : lb & 15) | (((b.qh[32 * h + l] >> (2 * c)) & 3) << 4);
}
void q6_set(BlockQ6_K& b, int e, int q) {
    const int h = e / 128, c = e / 32 % 4, l = e % 32;
    uint8_t& lb = b.ql[64 * h + l + 32 * (c & 1)];
    lb = static_cast<uint8_t>((c >> 1) ? (lb & 0x0F) | ((q & 15) << 4) : (lb & 0xF0) | (q & 15));
    uint8_t& hb = b.qh[32 * h + l];
    hb = static_cast<uint8_t>((hb & ~(3 << (2 * c))) | (((q >> 4) & 3) << (2 * c)));
}
// Where packed.h's Q6_Kx8 keeps row r's element e (p = e / 64, x = e % 64, half = x / 32,
// j = x % 32 / 4, u = j / 2, i = e % 4): in the 96-byte chunk 4p + u of the codes, its low
// nibble in nibble `half` of byte 32(j % 2) + 4r + i, its high 2 bits in bits 2(2·half + j % 2)
// of byte 64 + 4r + i.
constexpr size_t kQ6Sc = 16, kQ6Codes = 144;
size_t q6_chunk(int e) { return kQ6Codes + 96 * (4 * (e / 64) + e % 32 / 8); }
size_t q6_ql_byte(int r, int e) { return q6_chunk(e) + 32 * (e % 8 / 4) + 4 * r + e % 4; }
size_t q6_qh_byte(int r, int e) { return q6_chunk(e) + 64 + 4 * r + e % 4; }
int q6_ql_shift(int e) { return 4 * (e % 64 / 32); }
int q6_qh_shift(int e) { return 2 * (2 * (e % 64 / 32) + e % 8 / 4); }

void pack_q6_k(const BlockQ6_K* const src[kPackRows], uint8_t* out) {
    std::memset(out, 0, packed_block_bytes(DType::Q6_K));
    for (int r = 0; r < kPackRows; ++r) {
        const BlockQ6_K& b = *src[r];
        std::memcpy(out + 2 * r, &b.d, 2);
        for (int s = 0; s < 16; ++s) std::memcpy(out + kQ6Sc + 8 * s + r, &b.scales[s], 1);
        for (int e = 0; e < QK_K; ++e) {
            const int q = q6_get(b, e);
            out[q6_ql_byte(r, e)] |= static_cast<uint8_t>((q & 15) << q6_ql_shift(e));
            out[q6_qh_byte(r, e)] |= static_cast<uint8_t>((q >> 4) << q6_qh_shift(e));
        }
    }
}
void unpack_q6_k(const uint8_t* in, BlockQ6_K* const dst[kPackRows]) {
    for (int r = 0; r < kPackRows; ++r) {
        BlockQ6_K& b = *dst[r];
        std::memcpy(&b.d, in + 2 * r, 2);
        for (int s = 0; s < 16; ++s) std::memcpy(&b.scales[s], in + kQ6Sc + 8 * s + r, 1);
        for (int e = 0; e < QK_K; ++e)
            q6_set(b, e, ((in[q6_ql_byte(r, e)] >> q6_ql_shift(e)) & 15) | (((in[q6_qh_byte(r, e)] >> q6_qh_shift(e)) & 3) << 4));
    }
}

// The super-block types, group by group: pack (to_packed) or unpack each block of 8 rows.
template <typename Block, typename Fn>
void each_super_block(int64_t cols, int64_t g0, int64_t g1, Block* rows, Fn&& fn) {
    const int64_t nb = cols / QK_K;
    for (int64_t g = g0; g < g1; ++g)
        for (int64_t b = 0; b < nb; ++b) {
            Block* blk[kPackRows];
            for (int r = 0; r < kPackRows; ++r) blk[r] = rows + (g * kPackRows + r) * nb + b;
            fn(blk, static_cast<size_t>(g * nb + b));
        }
}

}  // namespace

bool packed_kernels_available() {
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
    return true;
#else
    return false;
#endif
}

bool packable(DType t, int64_t rows, int64_t cols) {
    if (t == DType::F16) return packed_kernels_available() && rows > 0 && rows % kPackRows == 0 && cols > 0;
    return packed_kernels_available() && (t == DType::Q4_0 || t == DType::Q8_0 || super_block(t)) && rows > 0 &&
           rows % kPackRows == 0 && cols > 0 && cols % block_elems(t) == 0;
}

size_t packed_bytes(DType t, int64_t rows, int64_t cols) {
    check_type(t, "packed_bytes");
    if (t == DType::F16) return static_cast<size_t>(rows) * static_cast<size_t>(cols) * 2;
    return static_cast<size_t>(rows / kPackRows) * static_cast<size_t>(cols / block_elems(t)) * packed_block_bytes(t);
}

// Source block (row r, block b) = 2-byte d then code_bytes codes (BlockQ4_0 / BlockQ8_0).
void pack_weights(DType t, const void* src, int64_t cols, int64_t g0, int64_t g1, uint8_t* dst) {
    check_type(t, "pack_weights");
    if (t == DType::F16) {
        const auto* s = static_cast<const uint8_t*>(src);
        const size_t rb = static_cast<size_t>(cols) * 2;
        for (int64_t g = g0; g < g1; ++g)
            for (int r = 0; r < kPackRows; ++r) {
                const uint8_t* row = s + static_cast<size_t>(g * kPackRows + r) * rb;
                uint8_t* out = dst + static_cast<size_t>(g) * kPackRows * rb + 2 * r;
                for (int64_t k = 0; k < cols; ++k) std::memcpy(out + 16 * k, row + 2 * k, 2);
            }
        return;
    }
    const size_t pbb = packed_block_bytes(t);
    if (t == DType::Q4_K)
        return each_super_block(cols, g0, g1, static_cast<const BlockQ4_K*>(src),
                                [&](const BlockQ4_K* const* blk, size_t i) { pack_q4_k(blk, dst + i * pbb); });
    if (t == DType::Q6_K)
        return each_super_block(cols, g0, g1, static_cast<const BlockQ6_K*>(src),
                                [&](const BlockQ6_K* const* blk, size_t i) { pack_q6_k(blk, dst + i * pbb); });
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
    if (t == DType::F16) {
        auto* d = static_cast<uint8_t*>(dst);
        const size_t rb = static_cast<size_t>(cols) * 2;
        for (int64_t g = 0; g < rows / kPackRows; ++g)
            for (int r = 0; r < kPackRows; ++r) {
                uint8_t* row = d + static_cast<size_t>(g * kPackRows + r) * rb;
                const uint8_t* in = packed + static_cast<size_t>(g) * kPackRows * rb + 2 * r;
                for (int64_t k = 0; k < cols; ++k) std::memcpy(row + 2 * k, in + 16 * k, 2);
            }
        return;
    }
    const size_t pbb = packed_block_bytes(t);
    if (t == DType::Q4_K)
        return each_super_block(cols, 0, rows / kPackRows, static_cast<BlockQ4_K*>(dst),
                                [&](BlockQ4_K* const* blk, size_t i) { unpack_q4_k(packed + i * pbb, blk); });
    if (t == DType::Q6_K)
        return each_super_block(cols, 0, rows / kPackRows, static_cast<BlockQ6_K*>(dst),
                                [&](BlockQ6_K* const* blk, size_t i) { unpack_q6_k(packed + i * pbb, blk); });
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
    if (t == DType::F16) fail("gemm_packed_ref: F16 weights take f32 activations (gemm_packed_f16_ref)");
    const int64_t nb = cols / block_elems(t);
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

void gemm_packed_f16_ref(const uint8_t* packed, int64_t cols, int64_t g0, int64_t g1, int64_t k0, int64_t k1,
                         const float* x, int64_t ldx, int64_t t0, int64_t t1, float* y, int64_t ldy) {
    const size_t gb = static_cast<size_t>(cols) * 2 * kPackRows;
    std::vector<uint8_t> rows(gb);
    for (int64_t g = g0; g < g1; ++g) {
        unpack_weights(DType::F16, packed + static_cast<size_t>(g) * gb, kPackRows, cols, rows.data());
        for (int64_t t = t0; t < t1; ++t)
            for (int r = 0; r < kPackRows; ++r) {
                double acc = k0 > 0 ? y[t * ldy + g * kPackRows + r] : 0.0;
                for (int64_t k = k0; k < k1; ++k) {
                    uint16_t h;
                    std::memcpy(&h, rows.data() + static_cast<size_t>(r * cols + k) * 2, 2);
                    acc += static_cast<double>(fp16_to_fp32(h)) * x[t * ldx + k];
                }
                y[t * ldy + g * kPackRows + r] = static_cast<float>(acc);
            }
    }
}

void prepare_f16_panel(const float* x, int64_t ldx, int64_t t0, int64_t t1, int64_t k0, int64_t k1, F16Panel& p,
                       ThreadPool* pool) {
    constexpr int64_t T = kF16TileTokens;
    const int64_t n = t1 - t0, K = k1 - k0, full = n / T, rem = n % T;
    if (n <= 0 || K <= 0) fail("prepare_f16_panel: empty token range [{}, {}) or column range [{}, {})", t0, t1, k0, k1);
    p.k0 = k0;
    p.k1 = k1;
    p.tile_n.assign(static_cast<size_t>(full), T);
    if (rem > 0 && rem < 3 && full > 0) {
        p.tile_n.back() = 4;
        p.tile_n.push_back(T + rem - 4);
    } else if (rem > 0) {
        p.tile_n.push_back(rem);
    }
    const auto tiles = static_cast<int64_t>(p.tile_n.size());
    p.tile_t.resize(p.tile_n.size());
    p.xt.resize(static_cast<size_t>(tiles * K * T));  // a short tile's unused slots are never read
    for (int64_t i = 0, tok = t0; i < tiles; tok += p.tile_n[static_cast<size_t>(i)], ++i)
        p.tile_t[static_cast<size_t>(i)] = tok;
    auto body = [&](size_t b, size_t e) {
        for (size_t i = b; i < e; ++i)
            for (int64_t j = 0; j < p.tile_n[i]; ++j) {
                const float* src = x + (p.tile_t[i] + j) * ldx + k0;
                float* dst = p.xt.data() + static_cast<int64_t>(i) * K * T + j;
                for (int64_t k = 0; k < K; ++k) dst[k * T] = src[k];
            }
    };
    if (pool && tiles > 1)
        pool->parallel_for(static_cast<size_t>(tiles), body);
    else
        body(0, static_cast<size_t>(tiles));
}

#if !(defined(__AVX2__) && defined(__FMA__) && defined(__F16C__))
void gemm_packed_f16_panel(const uint8_t* packed, int64_t cols, int64_t g0, int64_t g1, const F16Panel& p, int64_t c0,
                           int64_t c1, float* y, int64_t ldy) {
    const int64_t K = p.k1 - p.k0;
    std::vector<float> x(static_cast<size_t>(c1));  // token t's columns [c0, c1) at their own index
    for (size_t i = 0; i < p.tile_n.size(); ++i)
        for (int64_t j = 0; j < p.tile_n[i]; ++j) {
            for (int64_t k = c0; k < c1; ++k)
                x[static_cast<size_t>(k)] = p.xt[(static_cast<int64_t>(i) * K + (k - p.k0)) * kF16TileTokens + j];
            const int64_t t = p.tile_t[i] + j;
            gemm_packed_f16_ref(packed, cols, g0, g1, c0, c1, x.data(), 0, 0, 1, y + t * ldy, 0);
        }
}
void gemm_packed_f16(const uint8_t* packed, int64_t cols, int64_t g0, int64_t g1, int64_t k0, int64_t k1,
                     const float* x, int64_t ldx, int64_t t0, int64_t t1, float* y, int64_t ldy) {
    gemm_packed_f16_ref(packed, cols, g0, g1, k0, k1, x, ldx, t0, t1, y, ldy);
}
// Builds without the x86 kernels never pack (packable() is false); direct callers get the
// reference arithmetic.
void gemm_packed(DType t, const uint8_t* packed, int64_t cols, int64_t g0, int64_t g1, const ActPanel& a, int64_t t0,
                 int64_t t1, float* y, int64_t ldy) {
    gemm_packed_ref(t, packed, cols, g0, g1, a, t0, t1, y, ldy);
}
#endif

}  // namespace calpaca
