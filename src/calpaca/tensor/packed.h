// Row-interleaved ("packed") copies of quantized and F16 weights for the x86 kernels.
//
// Why: with one weight row per dot product, every 32-element block costs an unpack, two
// sign operations, a multiply-add chain and, at the end, a horizontal sum per row and token;
// decode ran at ~55 % of the memory bandwidth and prompt processing at ~1/3 of the integer
// peak. Interleaving 8 rows puts 4 codes of each of the 8 rows in one 256-bit register, so
// one broadcast of 4 activation bytes feeds 8 rows at once, the 8 int32 lanes of a register
// are the 8 rows' sums (no horizontal sums), the 8 rows' scales convert with one
// instruction, and an 8-row tile's output is one store. No library offers ggml's block types
// in this layout, so it is written here (the layout is our own; ggml's CPU backend repacks
// Q4_0 the same way in spirit).
//
// Layout (groups of kPackRows = 8 consecutive weight rows; per group, per 32-element block b,
// one packed block; groups are stored one after another, blocks of a group in order):
//   Q4_0x8 (144 B): uint16 d[8] (row r's scale); uint8 qs[128]: bytes 32j + 4r + i (j < 4,
//                   i < 4) = row r's original qs[4j + i] (low nibble: element 4j + i, high
//                   nibble: element 16 + 4j + i).
//   Q8_0x8 (272 B): uint16 d[8]; int8 qs[256]: byte 32j + 4r + i (j < 8) = row r's qs[4j + i].
//   Q4_Kx8 (1184 B, per 256-element super-block): uint16 d[8]; uint16 dmin[8]; uint8 sc[64]:
//                   byte 8s + r = row r's 6-bit scale of sub-block s (s < 8); uint8 mn[64]: byte
//                   16(s/2) + 2r + s%2 = its min (pairs of sub-blocks side by side per row, for
//                   _mm256_madd_epi16); uint8 qs[1024]: byte 256p + 32j + 4r + i (p < 4, j < 8) =
//                   row r's original qs[32p + 4j + i] (low nibble: sub-block 2p, element 4j + i;
//                   high nibble: sub-block 2p + 1). The scales are unpacked from ggml's 12-byte
//                   encoding, so the block is 32 bytes larger than 8 rows' (+2.8 %).
//   Q6_Kx8 (1680 B = 8 rows' 210, per 256-element super-block): uint16 d[8]; int8 sc[128]: byte
//                   8s + r = row r's scale of sub-block s (s < 16); then 16 chunks of 96 bytes,
//                   chunk 4p + u (p < 4: elements 64p..64p+63, u < 4: steps j = 2u, 2u + 1 of
//                   4 elements): bytes 32jj + 4r + i (jj = j - 2u) hold row r's 6-bit codes'
//                   low 4 bits, low nibble element 64p + 4j + i, high nibble element
//                   64p + 32 + 4j + i; bytes 64 + 4r + i hold their high 2 bits (bits 0-1 / 2-3:
//                   the low nibbles' elements of steps 2u / 2u + 1, bits 4-5 / 6-7: the high
//                   nibbles'). One chunk is one step pair's whole data, so a group's block is
//                   read front to back (ql and qh as separate regions were two interleaved
//                   streams per group: BM_QDecodeDram one thread 4.5 GB/s, against 13-17 GB/s with the chunks).
//   F16x8 (16 B per column k): the 8 rows' halves at column k, row r at byte 2r.
// pack_weights / unpack_weights convert between the GGUF row layout and this one, byte for byte.
//
// gemm_packed (quantized types) computes, per (row, token), the same integer block sums as vec_dot_q_ref and
// scales them in f32 once per block (d_w * d_a), summed in block order with FMA; a result does
// not depend on the tile shape or the thread split. gemm_packed_ref is its plain twin (unpacks
// the group's rows and calls vec_dot_q_ref).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "calpaca/tensor/dtype.h"
#include "calpaca/tensor/gemm.h"

namespace calpaca {

class ThreadPool;
constexpr int kPackRows = 8;

// Whether this build has packed kernels for weight type t with this shape (F16, Q4_0 / Q8_0 / Q4_K / Q6_K,
// at least 8 rows, AVX2 builds); matmul uses a packed copy only then. The copy holds the
// ⌊rows / 8⌋ whole groups; matmul runs the rows past them (fewer than 8: the 49953-row heads of
// the v1 vocabularies) through the row layout's kernels, whose per-row arithmetic does not depend
// on the batch either.
bool packable(DType t, int64_t rows, int64_t cols);
// Whether this build has the fast packed kernels at all (x86 AVX2).
bool packed_kernels_available();
// Bytes of the packed copy of the whole groups (F16 / Q4_0 / Q8_0: the same as their row layout's, the bytes are
// only reordered, as for Q6_K; Q4_K: 2.8 % more).
size_t packed_bytes(DType t, int64_t rows, int64_t cols);

// Rows [8*g0, 8*g1) of a row-major quantized matrix (src: its first row) into the packed
// layout (dst: the packed matrix's start; group g is written at its own offset).
void pack_weights(DType t, const void* src, int64_t cols, int64_t g0, int64_t g1, uint8_t* dst);
// The inverse for the whole matrix (tests).
void unpack_weights(DType t, const uint8_t* packed, int64_t rows, int64_t cols, void* dst);

// For rows r in [8*g0, 8*g1) and tokens t in [t0, t1):  y[t * ldy + r] = row r · activation t
// (a: rows of vec_dot_type(t), Q8_0 or Q8_K; for Q4_0 / Q8_0 the fast kernel also needs a.d
// and, for Q4_0, a.s).
void gemm_packed(DType t, const uint8_t* packed, int64_t cols, int64_t g0, int64_t g1, const ActPanel& a, int64_t t0,
                 int64_t t1, float* y, int64_t ldy);
void gemm_packed_ref(DType t, const uint8_t* packed, int64_t cols, int64_t g0, int64_t g1, const ActPanel& a,
                     int64_t t0, int64_t t1, float* y, int64_t ldy);

// F16 weights against f32 activations (token t's row at x + t * ldx): for rows r in
// [8*g0, 8*g1) and tokens t in [t0, t1), y[t * ldy + r] (k0 = 0: =, else +=) Σ_{k0 <= k < k1}
// W[r][k]·x[t][k], summed by f32 FMA in k order (one lane per row, continuing from y when
// k0 > 0): every (row, token) gets the same arithmetic whatever tile, token count, column
// chunking or thread covers it, so batched decode equals decoding alone, bit for bit.
// The _ref twin sums in double.
void gemm_packed_f16(const uint8_t* packed, int64_t cols, int64_t g0, int64_t g1, int64_t k0, int64_t k1,
                     const float* x, int64_t ldx, int64_t t0, int64_t t1, float* y, int64_t ldy);
void gemm_packed_f16_ref(const uint8_t* packed, int64_t cols, int64_t g0, int64_t g1, int64_t k0, int64_t k1,
                         const float* x, int64_t ldx, int64_t t0, int64_t t1, float* y, int64_t ldy);

// Activations [t0, t1) × columns [k0, k1) transposed for the packed F16 kernel, prepared once and
// shared by every thread of a matmul: tiles of kF16TileTokens tokens (a remainder of 1 or 2
// joins the last full tile and the two split 4 + 3 / 4 + 4), tile i's value for its token j at
// column k at xt[i·K·kF16TileTokens + (k - k0)·kF16TileTokens + j] (K = k1 - k0).
constexpr int kF16TileTokens = 6;
struct F16Panel {
    std::vector<float> xt;
    std::vector<int64_t> tile_n, tile_t;  // tokens per tile, first token of each tile
    int64_t k0 = 0, k1 = 0;
};
// (pool: tiles split over its threads; nullptr: the calling thread alone)
void prepare_f16_panel(const float* x, int64_t ldx, int64_t t0, int64_t t1, int64_t k0, int64_t k1, F16Panel& p,
                       ThreadPool* pool = nullptr);
// gemm_packed_f16 for the panel's tokens over columns [c0, c1) within the panel's [k0, k1)
// (c0 > 0: continuing from y, as gemm_packed_f16 with k0 > 0), the same bits as gemm_packed_f16.
void gemm_packed_f16_panel(const uint8_t* packed, int64_t cols, int64_t g0, int64_t g1, const F16Panel& p, int64_t c0,
                           int64_t c1, float* y, int64_t ldy);

}  // namespace calpaca
