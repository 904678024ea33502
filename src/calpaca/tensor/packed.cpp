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

uint32_t load32(const uint8_t* p) {
    uint32_t v;
    std::memcpy(&v, p, 4);
    return v;
}
void store32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }

// A Q6_K row block's 256 six-bit codes, in element order, from ggml's block_q6_K (element
// 128h + 32c + l: low 4 bits in nibble c / 2 of ql[64h + l + 32(c % 2)], high 2 bits in bits 2c
// of qh[32h + l]), and back.
void q6_codes(const BlockQ6_K& b, uint8_t code[QK_K]) {
    for (int h = 0; h < 2; ++h)
        for (int l = 0; l < 32; ++l) {
            const int a = b.ql[64 * h + l], c = b.ql[64 * h + l + 32], q = b.qh[32 * h + l];
            uint8_t* o = code + 128 * h + l;
            o[0] = static_cast<uint8_t>((a & 15) | (q & 3) << 4);
            o[32] = static_cast<uint8_t>((c & 15) | (q >> 2 & 3) << 4);
            o[64] = static_cast<uint8_t>((a >> 4) | (q >> 4 & 3) << 4);
            o[96] = static_cast<uint8_t>((c >> 4) | (q >> 6 & 3) << 4);
        }
}
void q6_encode(const uint8_t code[QK_K], BlockQ6_K& b) {
    for (int h = 0; h < 2; ++h)
        for (int l = 0; l < 32; ++l) {
            const uint8_t* o = code + 128 * h + l;
            b.ql[64 * h + l] = static_cast<uint8_t>((o[0] & 15) | (o[64] & 15) << 4);
            b.ql[64 * h + l + 32] = static_cast<uint8_t>((o[32] & 15) | (o[96] & 15) << 4);
            b.qh[32 * h + l] = static_cast<uint8_t>((o[0] >> 4) | (o[32] >> 4) << 2 | (o[64] >> 4) << 4 | (o[96] >> 4) << 6);
        }
}

// packed.h's Q6_Kx8: d, the scales at 16 + 8s + r, then chunk 4p + u (96 bytes at 144 + 96(4p + u))
// holding steps j = 2u + jj (jj < 2) of elements 64p + 4j + i (low nibbles) and 64p + 32 + 4j + i
// (high nibbles) at byte 32jj + 4r + i, their high 2 bits at byte 64 + 4r + i (bits 2(2·half + jj)).
constexpr size_t kQ6Sc = 16, kQ6Codes = 144;

void pack_q6_k(const BlockQ6_K* const src[kPackRows], uint8_t* out) {
    for (int r = 0; r < kPackRows; ++r) {
        const BlockQ6_K& b = *src[r];
        std::memcpy(out + 2 * r, &b.d, 2);
        for (int s = 0; s < 16; ++s) std::memcpy(out + kQ6Sc + 8 * s + r, &b.scales[s], 1);
        uint8_t code[QK_K];
        q6_codes(b, code);
        for (int p = 0; p < 4; ++p)
            for (int u = 0; u < 4; ++u) {
                uint8_t* chunk = out + kQ6Codes + 96 * (4 * p + u);
                const uint8_t* lo = code + 64 * p + 8 * u;  // the low half's 8 elements; + 32: the high half's
                // 4 elements i at a time (codes <= 63: the masks keep every byte's bits in their byte)
                for (int jj = 0; jj < 2; ++jj)
                    store32(chunk + 32 * jj + 4 * r, (load32(lo + 4 * jj) & 0x0F0F0F0Fu) | (load32(lo + 32 + 4 * jj) & 0x0F0F0F0Fu) << 4);
                store32(chunk + 64 + 4 * r, (load32(lo) >> 4 & 0x03030303u) | (load32(lo + 4) >> 4 & 0x03030303u) << 2 |
                                                (load32(lo + 32) >> 4 & 0x03030303u) << 4 | (load32(lo + 36) >> 4 & 0x03030303u) << 6);
            }
    }
}
void unpack_q6_k(const uint8_t* in, BlockQ6_K* const dst[kPackRows]) {
    for (int r = 0; r < kPackRows; ++r) {
        BlockQ6_K& b = *dst[r];
        std::memcpy(&b.d, in + 2 * r, 2);
        for (int s = 0; s < 16; ++s) std::memcpy(&b.scales[s], in + kQ6Sc + 8 * s + r, 1);
        uint8_t code[QK_K];
        for (int p = 0; p < 4; ++p)
            for (int u = 0; u < 4; ++u) {
                const uint8_t* chunk = in + kQ6Codes + 96 * (4 * p + u);
                uint8_t* lo = code + 64 * p + 8 * u;
                for (int i = 0; i < 4; ++i) {
                    const int hb = chunk[64 + 4 * r + i];
                    for (int jj = 0; jj < 2; ++jj) {
                        const int nb = chunk[32 * jj + 4 * r + i];
                        lo[4 * jj + i] = static_cast<uint8_t>((nb & 15) | (hb >> (2 * jj) & 3) << 4);
                        lo[32 + 4 * jj + i] = static_cast<uint8_t>((nb >> 4) | (hb >> (4 + 2 * jj) & 3) << 4);
                    }
                }
            }
        q6_encode(code, b);
    }
}

// The super-block types, group by group: fn(the 8 rows' blocks, packed block index) for each block.
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
    if (t == DType::F16) return packed_kernels_available() && rows >= kPackRows && cols > 0;
    return packed_kernels_available() && (t == DType::Q4_0 || t == DType::Q8_0 || super_block(t)) && rows >= kPackRows &&
           cols > 0 && cols % block_elems(t) == 0;
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
