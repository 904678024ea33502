// AVX2 kernels on packed (8-row interleaved) Q4_0 / Q8_0 / Q4_K / Q6_K / F16 weights (packed.h).
//
// A tile is the 8 rows of one group × NT tokens (NT <= 4), over all blocks of the row; a
// one-token call (decode) instead runs kStreams groups side by side (decode_streams: more
// memory reads in flight), each with the tile's arithmetic. Per block and token, 4-byte slices
// of the token's Q8_0 / Q8_K activations are broadcast to all 8 lanes
// and multiplied with the interleaved codes by _mm256_maddubs_epi16 (u8 × s8, pairs summed to
// int16), so lane r accumulates row r's block sum:
//   Q4_0: the raw nibbles c (0..15) are the unsigned operand; the 8 steps of a block are added
//         in int16 (each step <= 2·15·127, eight <= 30480: no overflow) and widened once; the
//         offset is applied as sum((c-8)·a) = sum(c·a) - 8·sum(a), sum(a) from ActPanel::s.
//   Q8_0: |w| is the unsigned operand and the sign moves onto the activations (_mm256_sign_epi8);
//         each step is widened to int32 (two steps could reach 2·32258 and overflow int16).
//   Q4_K: as Q4_0 per sub-block, widened by madd against the rows' 6-bit scales; mins via bsums.
//   Q6_K: 6-bit codes rebuilt from nibbles and high bits, per 16-element sub-block as Q4_K;
//         the codes' +32 offset via bsums (kernel_q6_k).
// F16 (tile_f16, at the end) is plain f32 FMA with one lane per row.
// The int32 block sums are exactly vec_dot_q_ref's; they are scaled by d_w·d_a (the 8 rows'
// d converted with one vcvtph2ps) and accumulated with FMA in block order, so every (row,
// token) gets the same arithmetic whatever tile or thread covers it.
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "calpaca/base/error.h"
#include "calpaca/tensor/packed.h"
#include "calpaca/tensor/quant_blocks.h"
#include "calpaca/tensor/simd_x86.h"

namespace calpaca {

using namespace quant;

namespace {

struct PackQ4_0 {
    uint16_t d[kPackRows];
    uint8_t qs[kPackRows * QK / 2];
};
struct PackQ8_0 {
    uint16_t d[kPackRows];
    int8_t qs[kPackRows * QK];
};
struct PackQ4_K {
    uint16_t d[kPackRows], dmin[kPackRows];
    uint8_t sc[64], mn[64];
    uint8_t qs[1024];
};
struct PackQ6_K {
    uint16_t d[kPackRows];
    int8_t sc[128];
    uint8_t q[16][96];  // per 64 elements p and step pair u: low nibbles of steps 2u, 2u + 1, then high bits
};
static_assert(sizeof(PackQ4_0) == 144 && sizeof(PackQ8_0) == 272 && sizeof(PackQ4_K) == 1184 && sizeof(PackQ6_K) == 1680);

inline __m256i bcast4(const int8_t* p) {
    int32_t v;
    std::memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}
inline __m256i load(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
// The tiles' running sums stay in registers (x86::keep_in_register; GCC 12 otherwise stored
// 12-16 ymm products per block of the Q4_0 / Q8_0 tiles on the stack). Tiles only (NT > 1):
// pp512 on the 1.3B shape rose 95 → 117 t/s (Q4_0), 72-82 → 93-97 (Q8_0), 83-95 → 105-116
// (Q4_K_M) in alternating runs; the one-token decode kernels were no faster with it.
template <int NT>
inline void keep(__m256i& v) {
    if constexpr (NT > 1) x86::keep_in_register(v);
}
// Tiles (batched decode, prompts): the first tile of a group is the one that brings its weights
// from memory (the group's later tiles find them in L1 / L2); it prefetches kTilePrefetch bytes
// ahead of the block it reads, through the group's end into the next group's first blocks, so
// that the loads of a compute-bound tile still overlap its arithmetic. A scratch driver (16
// packed 4096² matrices, two threads, without and with alternating in one process, medians in
// GMAC/s, two runs): 4 tokens Q4_0 84.6 / 84.6 → 97.7 / 98.8, Q6_K 56.3 / 56.8 → 64.8 / 65.5;
// 8 tokens Q4_0 97.1 / 99.2 → 104.9 / 107.2, Q6_K 73.2 / 74.4 → 75.0 / 75.5, and in one run Q8_0
// 76.3 → 85.3, Q4_K 122.0 → 132.1; 2 tokens Q8_0 29.3 → 32.5. With every tile prefetching,
// 128-token blocks lost ~3 % (Q4_0 134.2 → 129.9), hence the first tile only. One-token decode
// (decode_streams) measured no faster with prefetching (256-2048 bytes ahead, Q4_0).
constexpr int kTilePrefetch = 4096;
template <bool Pf, typename P>
inline void tile_prefetch(const P* blk) {
    if constexpr (Pf) {
        // the address may lie past the matrix: computed as an integer, and a prefetch never faults
        const uintptr_t c = reinterpret_cast<uintptr_t>(blk) + kTilePrefetch;
        for (size_t o = 0; o < sizeof(P); o += 64) _mm_prefetch(reinterpret_cast<const char*>(c + o), _MM_HINT_T0);
    }
}
inline __m256 scales8(const uint16_t* d) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(d))); }

// Every kernel below runs G groups (p[i]: group i's first block; its output rows at y[i]) ×
// NT tokens from t: G = 1 is a tile (NT tokens), NT = 1 with G = kStreams is decode
// (decode_streams). Each (group, token) gets the same arithmetic whatever G and NT are.
template <int G, int NT, bool Pf = false>
void kernel_q4_0(const PackQ4_0* const* p, int64_t nb, const ActPanel& a, int64_t t, float* const* y, int64_t ldy) {
    const BlockQ8_0* ar[NT];
    const float* ad[NT];
    const int32_t* as[NT];
    __m256 acc[G][NT];
#pragma GCC unroll 8  // unrolled: the zeroing of acc is not turned into a memset (rep stos) of a stack copy
    for (int k = 0; k < NT; ++k) {
        ar[k] = reinterpret_cast<const BlockQ8_0*>(a.q + static_cast<size_t>(t + k) * a.rb);
        ad[k] = a.d + (t + k) * a.ld;
        as[k] = a.s + (t + k) * a.ld;
        for (int i = 0; i < G; ++i) acc[i][k] = _mm256_setzero_ps();
    }
    const __m256i m4 = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
    for (int64_t b = 0; b < nb; ++b) {
        tile_prefetch<Pf>(p[0] + b);
        __m256i s16[G][NT];
        for (int i = 0; i < G; ++i)
            for (int k = 0; k < NT; ++k) s16[i][k] = _mm256_setzero_si256();
        for (int j = 0; j < 4; ++j)
            for (int i = 0; i < G; ++i) {
                const __m256i v = load(p[i][b].qs + 32 * j);
                const __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                for (int k = 0; k < NT; ++k) {
                    const int8_t* q = ar[k][b].qs;
                    s16[i][k] = _mm256_add_epi16(s16[i][k], _mm256_maddubs_epi16(lo, bcast4(q + 4 * j)));
                    s16[i][k] = _mm256_add_epi16(s16[i][k], _mm256_maddubs_epi16(hi, bcast4(q + 16 + 4 * j)));
                    keep<NT>(s16[i][k]);
                }
            }
        for (int i = 0; i < G; ++i) {
            const __m256 dw = scales8(p[i][b].d);
            for (int k = 0; k < NT; ++k) {
                // 8·sum(a) broadcast straight from memory and shifted (set1 of a scalar product
                // went through a general register: 4-8 % slower tiles in alternating calls)
                const __m256i off = _mm256_slli_epi32(_mm256_broadcastd_epi32(_mm_loadu_si32(as[k] + b)), 3);
                const __m256i s32 = _mm256_sub_epi32(_mm256_madd_epi16(s16[i][k], ones), off);
                acc[i][k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s32), _mm256_mul_ps(dw, _mm256_broadcast_ss(ad[k] + b)), acc[i][k]);
            }
        }
    }
    for (int i = 0; i < G; ++i)
        for (int k = 0; k < NT; ++k) _mm256_storeu_ps(y[i] + (t + k) * ldy, acc[i][k]);
}

template <int G, int NT, bool Pf = false>
void kernel_q8_0(const PackQ8_0* const* p, int64_t nb, const ActPanel& a, int64_t t, float* const* y, int64_t ldy) {
    const BlockQ8_0* ar[NT];
    const float* ad[NT];
    __m256 acc[G][NT];
#pragma GCC unroll 8  // unrolled: the zeroing of acc is not turned into a memset (rep stos) of a stack copy
    for (int k = 0; k < NT; ++k) {
        ar[k] = reinterpret_cast<const BlockQ8_0*>(a.q + static_cast<size_t>(t + k) * a.rb);
        ad[k] = a.d + (t + k) * a.ld;
        for (int i = 0; i < G; ++i) acc[i][k] = _mm256_setzero_ps();
    }
    const __m256i ones = _mm256_set1_epi16(1);
    for (int64_t b = 0; b < nb; ++b) {
        tile_prefetch<Pf>(p[0] + b);
        __m256i s32[G][NT];
        for (int i = 0; i < G; ++i)
            for (int k = 0; k < NT; ++k) s32[i][k] = _mm256_setzero_si256();
        for (int j = 0; j < 8; ++j)
            for (int i = 0; i < G; ++i) {
                const __m256i v = load(p[i][b].qs + 32 * j);
                const __m256i av = _mm256_sign_epi8(v, v);
                for (int k = 0; k < NT; ++k) {
                    const __m256i prod = _mm256_maddubs_epi16(av, _mm256_sign_epi8(bcast4(ar[k][b].qs + 4 * j), v));
                    s32[i][k] = _mm256_add_epi32(s32[i][k], _mm256_madd_epi16(prod, ones));
                    keep<NT>(s32[i][k]);
                }
            }
        for (int i = 0; i < G; ++i) {
            const __m256 dw = scales8(p[i][b].d);
            for (int k = 0; k < NT; ++k)
                acc[i][k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s32[i][k]), _mm256_mul_ps(dw, _mm256_broadcast_ss(ad[k] + b)),
                                            acc[i][k]);
        }
    }
    for (int i = 0; i < G; ++i)
        for (int k = 0; k < NT; ++k) _mm256_storeu_ps(y[i] + (t + k) * ldy, acc[i][k]);
}

// The K-quant kernels' start: the NT tokens' Q8_K rows, and zeroed accumulators.
template <int G, int NT>
inline void start_k(const ActPanel& a, int64_t t, const BlockQ8_K* (&ar)[NT], __m256 (&acc)[G][NT]) {
#pragma GCC unroll 8  // unrolled: the zeroing of acc is not turned into a memset (rep stos) of a stack copy
    for (int k = 0; k < NT; ++k) {
        ar[k] = reinterpret_cast<const BlockQ8_K*>(a.q + static_cast<size_t>(t + k) * a.rb);
        for (int i = 0; i < G; ++i) acc[i][k] = _mm256_setzero_ps();
    }
}
// 8 rows' 8-bit sub-block scales (Q4_K: unsigned, Q6_K: signed) → int16 pairs (s_r, s_r), lane r
// for row r, for _mm256_madd_epi16 against a lane's two int16 sums.
template <bool Signed>
inline __m256i scales16(const void* sc8) {
    const __m128i v = _mm_loadl_epi64(static_cast<const __m128i*>(sc8));
    const __m128i d = _mm_unpacklo_epi8(v, v);
    return Signed ? _mm256_cvtepi8_epi16(d) : _mm256_cvtepu8_epi16(d);
}

// Q4_K: per sub-block pair p the 8 steps of each sub-block are added in int16 (as Q4_0) and
// widened by _mm256_madd_epi16 against the 8 rows' scales (each doubled into its lane's two
// int16); the mins enter as dmin·d_a·Σ_s min_s·(sum of the sub-block's activations), from the
// Q8_K bsums, also through madd (two sub-blocks per instruction).
template <int G, int NT, bool Pf = false>
void kernel_q4_k(const PackQ4_K* const* p, int64_t nb, const ActPanel& a, int64_t t, float* const* y, int64_t ldy) {
    const BlockQ8_K* ar[NT];
    __m256 acc[G][NT];
    start_k(a, t, ar, acc);
    const __m256i m4 = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
    for (int64_t b = 0; b < nb; ++b) {
        tile_prefetch<Pf>(p[0] + b);
        __m256i s32[G][NT];
        for (int i = 0; i < G; ++i)
            for (int k = 0; k < NT; ++k) s32[i][k] = _mm256_setzero_si256();
        for (int q = 0; q < 4; ++q) {
            __m256i lo16[G][NT], hi16[G][NT];
            for (int i = 0; i < G; ++i)
                for (int k = 0; k < NT; ++k) lo16[i][k] = hi16[i][k] = _mm256_setzero_si256();
            for (int j = 0; j < 8; ++j)
                for (int i = 0; i < G; ++i) {
                    const __m256i v = load(p[i][b].qs + 256 * q + 32 * j);
                    const __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                    for (int k = 0; k < NT; ++k) {
                        const int8_t* qa = ar[k][b].qs + 64 * q + 4 * j;
                        lo16[i][k] = _mm256_add_epi16(lo16[i][k], _mm256_maddubs_epi16(lo, bcast4(qa)));
                        hi16[i][k] = _mm256_add_epi16(hi16[i][k], _mm256_maddubs_epi16(hi, bcast4(qa + 32)));
                        keep<NT>(lo16[i][k]);
                        keep<NT>(hi16[i][k]);
                    }
                }
            for (int i = 0; i < G; ++i) {
                const __m256i slo = scales16<false>(p[i][b].sc + 8 * (2 * q)), shi = scales16<false>(p[i][b].sc + 8 * (2 * q + 1));
                for (int k = 0; k < NT; ++k)
                    s32[i][k] = _mm256_add_epi32(
                        s32[i][k], _mm256_add_epi32(_mm256_madd_epi16(lo16[i][k], slo), _mm256_madd_epi16(hi16[i][k], shi)));
            }
        }
        for (int k = 0; k < NT; ++k) {
            // sub-block sums S_0..S_7 of 32 activations, as int16 pairs (S_2q, S_2q+1) in dword q' = {0,1,4,5}[q]
            const __m256i sums = _mm256_madd_epi16(load(ar[k][b].bsums), ones);
            const __m256i pairs = _mm256_packs_epi32(sums, sums);
            const __m256 dy = _mm256_set1_ps(ar[k][b].d);
            for (int i = 0; i < G; ++i) {
                __m256i m32 = _mm256_setzero_si256();
                for (int q = 0; q < 4; ++q) {
                    const __m256i mn16 = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p[i][b].mn + 16 * q)));
                    const __m256i sq = _mm256_permutevar8x32_epi32(pairs, _mm256_set1_epi32(q < 2 ? q : q + 2));
                    m32 = _mm256_add_epi32(m32, _mm256_madd_epi16(mn16, sq));
                }
                acc[i][k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s32[i][k]), _mm256_mul_ps(scales8(p[i][b].d), dy), acc[i][k]);
                acc[i][k] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(m32), _mm256_mul_ps(scales8(p[i][b].dmin), dy), acc[i][k]);
            }
        }
    }
    for (int i = 0; i < G; ++i)
        for (int k = 0; k < NT; ++k) _mm256_storeu_ps(y[i] + (t + k) * ldy, acc[i][k]);
}

// Q6_K: per 64 elements p and pair of 4-element steps u, one qh vector holds the 2 high bits of
// the 16 codes per row those steps need (packed.h), moved to bits 4-5 by a shift and a mask and
// or-ed onto the low nibbles: unsigned codes 0..63, multiplied with the activations by maddubs
// (pairs <= 2·63·128 = 16128, two steps added in int16 <= 32256: no overflow) and widened by madd
// against the rows' int8 scales of the 16-element sub-block (each doubled into its lane's two
// int16). The codes' +32 offset is taken off once per block: 32·Σ_s scale_s·bsum_s, by madd of
// the rows' scale pairs against the Q8_K bsum pairs.
template <int G, int NT, bool Pf = false>
void kernel_q6_k(const PackQ6_K* const* p, int64_t nb, const ActPanel& a, int64_t t, float* const* y, int64_t ldy) {
    const BlockQ8_K* ar[NT];
    __m256 acc[G][NT];
    start_k(a, t, ar, acc);
    const __m256i m4 = _mm256_set1_epi8(0x0F), m30 = _mm256_set1_epi8(0x30);
    for (int64_t b = 0; b < nb; ++b) {
        tile_prefetch<Pf>(p[0] + b);
        __m256i s32[G][NT];
        for (int i = 0; i < G; ++i)
            for (int k = 0; k < NT; ++k) s32[i][k] = _mm256_setzero_si256();
        for (int q = 0; q < 4; ++q)
            for (int i = 0; i < G; ++i) {
                // steps j = 2u, 2u + 1 of both halves: elements 64q + 8u + {0..7} (sub-block 4q + u/2)
                // and 64q + 32 + 8u + {0..7} (sub-block 4q + 2 + u/2); each pair of u shares its scales
                __m256i sc[2][2];
                for (int h2 = 0; h2 < 2; ++h2)
                    for (int s2 = 0; s2 < 2; ++s2) sc[h2][s2] = scales16<true>(p[i][b].sc + 8 * (4 * q + 2 * h2 + s2));
                for (int u = 0; u < 4; ++u) {
                    const int e = 64 * q + 8 * u;
                    const uint8_t* c = p[i][b].q[4 * q + u];
                    const __m256i v0 = load(c), v1 = load(c + 32), h = load(c + 64);
                    // the low half's steps, then the high half's (fewer registers live at once)
#pragma GCC unroll 2
                    for (int half = 0; half < 2; ++half) {
                        const __m256i c0 = half == 0 ? _mm256_or_si256(_mm256_and_si256(v0, m4), _mm256_and_si256(_mm256_slli_epi16(h, 4), m30))
                                                     : _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v0, 4), m4), _mm256_and_si256(h, m30));
                        const __m256i c1 = half == 0 ? _mm256_or_si256(_mm256_and_si256(v1, m4), _mm256_and_si256(_mm256_slli_epi16(h, 2), m30))
                                                     : _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v1, 4), m4),
                                                                       _mm256_and_si256(_mm256_srli_epi16(h, 2), m30));
                        for (int k = 0; k < NT; ++k) {
                            const int8_t* qa = ar[k][b].qs + e + 32 * half;
                            const __m256i t16 = _mm256_add_epi16(_mm256_maddubs_epi16(c0, bcast4(qa)), _mm256_maddubs_epi16(c1, bcast4(qa + 4)));
                            s32[i][k] = _mm256_add_epi32(s32[i][k], _mm256_madd_epi16(t16, sc[half][u / 2]));
                            keep<NT>(s32[i][k]);
                        }
                    }
                }
            }
        for (int i = 0; i < G; ++i) {
            __m256i bias[NT];
            for (int k = 0; k < NT; ++k) bias[k] = _mm256_setzero_si256();
            for (int w = 0; w < 8; ++w) {  // lane r: (s_{r,2w}, s_{r,2w+1}) · (bsum_2w, bsum_2w+1)
                const __m128i lo = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p[i][b].sc + 16 * w));
                const __m128i hi = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p[i][b].sc + 16 * w + 8));
                const __m256i pairs = _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(lo, hi));
                for (int k = 0; k < NT; ++k)
                    bias[k] = _mm256_add_epi32(
                        bias[k], _mm256_madd_epi16(pairs, bcast4(reinterpret_cast<const int8_t*>(ar[k][b].bsums + 2 * w))));
            }
            const __m256 dw = scales8(p[i][b].d);
            for (int k = 0; k < NT; ++k) {
                const __m256i tot = _mm256_sub_epi32(s32[i][k], _mm256_slli_epi32(bias[k], 5));
                acc[i][k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(tot), _mm256_mul_ps(dw, _mm256_set1_ps(ar[k][b].d)), acc[i][k]);
            }
        }
    }
    for (int i = 0; i < G; ++i)
        for (int k = 0; k < NT; ++k) _mm256_storeu_ps(y[i] + (t + k) * ldy, acc[i][k]);
}

// Tokens per tile: 4 (8 measured no faster for Q4_0 / Q8_0 within this machine's noise, 2 and 3
// slower for Q4_K: BM_QMatmul mode 3).
constexpr int kNT = 4;

// Tokens [t, t + n) for 0 < n < NT through Tile<n> (prefetching when it is the group's first tile).
template <template <int> class Tile, int NT, typename P>
void run_rest(const P* p, int64_t nb, const ActPanel& a, int64_t t, int64_t n, float* y, int64_t ldy, bool first) {
    if constexpr (NT > 1) {
        if (n == NT - 1) {
            if (first) return Tile<NT - 1>::template run<true>(p, nb, a, t, y, ldy);
            return Tile<NT - 1>::run(p, nb, a, t, y, ldy);
        }
        run_rest<Tile, NT - 1>(p, nb, a, t, n, y, ldy, first);
    }
}

// Each group of 8 rows against tokens [t0, t1) in tiles of NT tokens (the rest in one smaller tile).
template <typename P, template <int> class Tile, int NT, int BS = QK>
void run(const uint8_t* packed, int64_t cols, int64_t g0, int64_t g1, const ActPanel& a, int64_t t0, int64_t t1,
         float* y, int64_t ldy) {
    const int64_t nb = cols / BS;
    for (int64_t g = g0; g < g1; ++g) {
        const P* p = reinterpret_cast<const P*>(packed) + g * nb;
        float* yg = y + g * kPackRows;
        int64_t t = t0;
        if (t + NT <= t1) {
            Tile<NT>::template run<true>(p, nb, a, t, yg, ldy);  // the group's first tile prefetches
            t += NT;
        }
        for (; t + NT <= t1; t += NT) Tile<NT>::run(p, nb, a, t, yg, ldy);
        if (t < t1) run_rest<Tile, NT>(p, nb, a, t, t1 - t, yg, ldy, t == t0);
    }
}

// Decode: kStreams weight streams per thread (BM_QDecodeDram, Q4_0 on one thread: 7.9 GB/s
// with one, 10.5 with two, 13.2 with four; two threads 13.0 → 17.8 GB/s).
constexpr int kStreams = 4;

// One token, groups [g0, g1) as kStreams contiguous runs walked side by side (Decode<kStreams>),
// the groups left over one by one (Tile<1>): the same per-group arithmetic either way.
template <typename P, int BS, void (*Decode)(const P* const*, int64_t, const ActPanel&, int64_t, float* const*, int64_t),
          template <int> class Tile>
void decode_streams(const uint8_t* packed, int64_t cols, int64_t g0, int64_t g1, const ActPanel& a, int64_t t, float* y,
                    int64_t ldy) {
    const int64_t nb = cols / BS, len = (g1 - g0) / kStreams;
    const auto* base = reinterpret_cast<const P*>(packed);
    for (int64_t i = 0; i < len; ++i) {
        const P* p[kStreams];
        float* out[kStreams];
        for (int c = 0; c < kStreams; ++c) {
            const int64_t g = g0 + c * len + i;
            p[c] = base + g * nb;
            out[c] = y + g * kPackRows;
        }
        Decode(p, nb, a, t, out, ldy);
    }
    for (int64_t g = g0 + kStreams * len; g < g1; ++g) Tile<1>::run(base + g * nb, nb, a, t, y + g * kPackRows, ldy);
}

template <int NT>
struct TileQ4_0 {
    template <bool Pf = false>
    static void run(const PackQ4_0* p, int64_t nb, const ActPanel& a, int64_t t, float* y, int64_t ldy) {
        kernel_q4_0<1, NT, Pf>(&p, nb, a, t, &y, ldy);
    }
};
template <int NT>
struct TileQ8_0 {
    template <bool Pf = false>
    static void run(const PackQ8_0* p, int64_t nb, const ActPanel& a, int64_t t, float* y, int64_t ldy) {
        kernel_q8_0<1, NT, Pf>(&p, nb, a, t, &y, ldy);
    }
};

template <int NT>
struct TileQ4_K {
    template <bool Pf = false>
    static void run(const PackQ4_K* p, int64_t nb, const ActPanel& a, int64_t t, float* y, int64_t ldy) {
        kernel_q4_k<1, NT, Pf>(&p, nb, a, t, &y, ldy);
    }
};
template <int NT>
struct TileQ6_K {
    template <bool Pf = false>
    static void run(const PackQ6_K* p, int64_t nb, const ActPanel& a, int64_t t, float* y, int64_t ldy) {
        kernel_q6_k<1, NT, Pf>(&p, nb, a, t, &y, ldy);
    }
};

// F16: G groups × NT tokens over columns [k0, k1), one FMA chain per (group, token), k in
// order, continuing from y when k0 > 0 (a stored and reloaded f32 is the same value, so chunking
// the columns leaves the arithmetic unchanged). At least 4 independent chains per tile (G·NT >=
// 4) cover the FMA latency.
template <int G, int NT>
void tile_f16(const uint8_t* p, size_t gstride, int64_t k0, int64_t k1, const float* x, int64_t ldx, int64_t t,
              float* y, int64_t ldy) {
    __m256 acc[G][NT];
    const float* xr[NT];
    for (int j = 0; j < NT; ++j) xr[j] = x + (t + j) * ldx;
    for (int i = 0; i < G; ++i)
        for (int j = 0; j < NT; ++j)
            acc[i][j] = k0 > 0 ? _mm256_loadu_ps(y + (t + j) * ldy + i * kPackRows) : _mm256_setzero_ps();
    for (int64_t k = k0; k < k1; ++k) {
        __m256 w[G];
        for (int i = 0; i < G; ++i) w[i] = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i * gstride + 16 * k)));
        for (int j = 0; j < NT; ++j) {
            const __m256 xb = _mm256_broadcast_ss(xr[j] + k);
            for (int i = 0; i < G; ++i) acc[i][j] = _mm256_fmadd_ps(w[i], xb, acc[i][j]);
        }
    }
    for (int i = 0; i < G; ++i)
        for (int j = 0; j < NT; ++j) _mm256_storeu_ps(y + (t + j) * ldy + i * kPackRows, acc[i][j]);
}

// The same arithmetic on a transposed activation chunk: token j's value at column k is
// xt[(k - kb) * kTokT + j] (a column's tokens share one cache line; token rows cols·4 bytes apart
// alias to the same L1 sets and evict each other). G = 2 groups × NT = 6 tokens is 12 chains:
// per column 2 weight loads and 6 broadcasts feed 12 FMAs, so the FMA ports, not the load ports,
// set the pace (8 rows × 8 tokens needed 9 loads per 8 FMAs and ran at half the FMA peak).
constexpr int kTokT = kF16TileTokens;

// pf (when not null): G streams at pf + i·gstride whose lines are prefetched in step with this
// tile's own weight reads (one line per group every 4 columns), so the next chunk arrives while
// this one is multiplied (used where a chunk has too few tiles to spread the prefetches over).
template <int G, int NT>
void tile_f16_t(const uint8_t* p, size_t gstride, int64_t k0, int64_t k1, const float* xt, int64_t kb, int64_t t,
                float* y, int64_t ldy, const uint8_t* pf = nullptr) {
    __m256 acc[G][NT];
    for (int i = 0; i < G; ++i)
        for (int j = 0; j < NT; ++j)
            acc[i][j] = k0 > 0 ? _mm256_loadu_ps(y + (t + j) * ldy + i * kPackRows) : _mm256_setzero_ps();
    const float* xk = xt + (k0 - kb) * kTokT;
    for (int64_t k = k0; k < k1; ++k, xk += kTokT) {
        if (pf && ((k - k0) & 3) == 0)
            for (int i = 0; i < G; ++i) _mm_prefetch(reinterpret_cast<const char*>(pf + i * gstride + 16 * (k - k0)), _MM_HINT_T0);
        __m256 w[G];
        for (int i = 0; i < G; ++i)
            w[i] = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i * gstride + 16 * k)));
        for (int j = 0; j < NT; ++j) {
            const __m256 xb = _mm256_broadcast_ss(xk + j);
            for (int i = 0; i < G; ++i) acc[i][j] = _mm256_fmadd_ps(w[i], xb, acc[i][j]);
        }
    }
    for (int i = 0; i < G; ++i)
        for (int j = 0; j < NT; ++j) _mm256_storeu_ps(y + (t + j) * ldy + i * kPackRows, acc[i][j]);
}

template <int G, int NT>
void f16_rest_t(int64_t n, const uint8_t* p, size_t gstride, int64_t k0, int64_t k1, const float* xt, int64_t kb,
                int64_t t, float* y, int64_t ldy, const uint8_t* pf) {
    if constexpr (NT > 0) {
        if (n == NT) return tile_f16_t<G, NT>(p, gstride, k0, k1, xt, kb, t, y, ldy, pf);
        f16_rest_t<G, NT - 1>(n, p, gstride, k0, k1, xt, kb, t, y, ldy, pf);
    }
}

// Groups [g0, g1) against NT tokens at t: G = 4 / NT groups at a time (at least 1), the rest alone.
template <int NT>
void f16_tokens(const uint8_t* packed, int64_t cols, int64_t g0, int64_t g1, int64_t k0, int64_t k1, const float* x,
                int64_t ldx, int64_t t, float* y, int64_t ldy) {
    constexpr int G = NT >= 4 ? 1 : 4 / NT;
    const size_t gstride = static_cast<size_t>(cols) * 16;
    int64_t g = g0;
    for (; g + G <= g1; g += G) tile_f16<G, NT>(packed + g * gstride, gstride, k0, k1, x, ldx, t, y + g * kPackRows, ldy);
    for (; g < g1; ++g) tile_f16<1, NT>(packed + g * gstride, gstride, k0, k1, x, ldx, t, y + g * kPackRows, ldy);
}

}  // namespace

void gemm_packed_f16(const uint8_t* packed, int64_t cols, int64_t g0, int64_t g1, int64_t k0, int64_t k1,
                     const float* x, int64_t ldx, int64_t t0, int64_t t1, float* y, int64_t ldy) {
    const int64_t n = t1 - t0;
    if (n <= 0 || g0 >= g1) return;
    if (n < 4) {  // decode / small batches: several groups per tile for independent FMA chains
        switch (n) {
            case 3: return f16_tokens<3>(packed, cols, g0, g1, k0, k1, x, ldx, t0, y, ldy);
            case 2: return f16_tokens<2>(packed, cols, g0, g1, k0, k1, x, ldx, t0, y, ldy);
            default: return f16_tokens<1>(packed, cols, g0, g1, k0, k1, x, ldx, t0, y, ldy);
        }
    }
    // 4+ tokens: the activations transposed once per call (prepare_f16_panel)
    thread_local F16Panel panel;
    prepare_f16_panel(x, ldx, t0, t1, k0, k1, panel);
    gemm_packed_f16_panel(packed, cols, g0, g1, panel, k0, k1, y, ldy);
}

// Two groups at a time, columns in chunks of 512 (the pair's chunk, 16 KiB, and a tile's, 12 KiB,
// stay in L1 while the tiles pass; 512 measured 5-12 % faster than 256 in alternating runs).
void gemm_packed_f16_panel(const uint8_t* packed, int64_t cols, int64_t g0, int64_t g1, const F16Panel& p, int64_t c0,
                           int64_t c1, float* y, int64_t ldy) {
    constexpr int64_t kChunk = 512;
    const int64_t K = p.k1 - p.k0, tiles = static_cast<int64_t>(p.tile_n.size());
    if (c0 < p.k0 || c1 > p.k1 || c0 >= c1)
        fail("gemm_packed_f16_panel: columns [{}, {}) outside the panel's [{}, {})", c0, c1, p.k0, p.k1);
    const size_t gs = static_cast<size_t>(cols) * 16;
    // While the tiles pass one chunk, the next chunk's weights (this pair's next columns, else the
    // next pair's first) are prefetched a few lines per tile: each new stream would otherwise
    // start with a run of memory misses in its first tile.
    auto prefetch_next = [&](int64_t g, int64_t e, int64_t i) {
        int64_t ng = g, nc = e;
        if (nc >= c1) ng = g + 2, nc = c0;
        if (ng >= g1) return;
        const int64_t lines = (std::min(c1, nc + kChunk) - nc) * 16 / 64;
        const int64_t per = (lines + tiles - 1) / tiles, l0 = i * per, l1 = std::min(lines, l0 + per);
        for (int64_t h = 0; h < 2 && ng + h < g1; ++h) {
            const uint8_t* base = packed + (ng + h) * gs + nc * 16;
            for (int64_t l = l0; l < l1; ++l) _mm_prefetch(reinterpret_cast<const char*>(base + l * 64), _MM_HINT_T0);
        }
    };
    // From the second chunk on a tile starts by loading its 12 partial sums, stored one chunk
    // earlier and by then evicted (the tokens' rows of y are ldy floats apart, which for ldy =
    // 4096 all fall into the same few cache sets): the next tile's (the next pair's first tile
    // after the last) are prefetched while this one runs. One thread, 128 tokens, alternating in
    // one process (GFLOPS): 4096 x 4096 54.4 -> 58.3, 55.5 -> 61.2; 11008 x 4096 55.9 -> 64.4,
    // 57.4 -> 65.2; 4096 x 11008 61.3 -> 66.4, 60.0 -> 65.4. Two threads, 512 tokens: within noise.
    auto prefetch_partials = [&](int64_t g, int64_t i) {
        const bool last = i + 1 == tiles;
        const int64_t ng = last ? g + 2 : g;
        if (ng >= g1) return;
        const auto u = static_cast<size_t>(last ? 0 : i + 1);
        for (int64_t j = 0; j < p.tile_n[u]; ++j) {
            const float* yn = y + (p.tile_t[u] + j) * ldy + ng * kPackRows;
            _mm_prefetch(reinterpret_cast<const char*>(yn), _MM_HINT_T0);
            _mm_prefetch(reinterpret_cast<const char*>(yn + std::min<int64_t>(2, g1 - ng) * kPackRows - 1), _MM_HINT_T0);
        }
    };
    // Few tiles (batched decode: 8 tokens are 2 tiles) would issue a chunk's prefetches in a few
    // bursts; there the first tile prefetches the next chunk line by line as it reads its own
    // (BM_Matmul F16 4096², 8 tokens, 2 threads: see docs/benchmarks.md).
    const bool inline_pf = tiles <= 4;
    auto pass = [&]<int G>(int64_t g) {
        for (int64_t b = c0; b < c1; b += kChunk) {
            const int64_t e = std::min(c1, b + kChunk);
            const uint8_t* pf = nullptr;
            if (inline_pf) {
                const int64_t ng = e < c1 ? g : g + 2, nc = e < c1 ? e : c0;
                // only if the next chunk is at least as wide as this one: the prefetches stay inside it
                if (ng + G <= g1 && std::min(c1, nc + kChunk) - nc >= e - b) pf = packed + ng * gs + nc * 16;
            }
            for (int64_t i = 0; i < tiles; ++i) {
                if (!inline_pf) prefetch_next(g, e, i);
                if (b > p.k0) prefetch_partials(g, i);
                const auto u = static_cast<size_t>(i);
                f16_rest_t<G, kTokT>(p.tile_n[u], packed + g * gs, gs, b, e, p.xt.data() + i * K * kTokT, p.k0,
                                     p.tile_t[u], y + g * kPackRows, ldy, i == 0 ? pf : nullptr);
            }
        }
    };
    int64_t g = g0;
    for (; g + 2 <= g1; g += 2) pass.template operator()<2>(g);
    if (g < g1) pass.template operator()<1>(g);
}

void gemm_packed(DType t, const uint8_t* packed, int64_t cols, int64_t g0, int64_t g1, const ActPanel& a, int64_t t0,
                 int64_t t1, float* y, int64_t ldy) {
    if (g0 >= g1 || t0 >= t1) return;
    if ((t == DType::Q4_0 || t == DType::Q8_0) && (!a.d || (t == DType::Q4_0 && !a.s)))
        fail("gemm_packed: the activation panel lacks its f32 scales or block sums");
    switch (t) {
        case DType::Q4_K:
            if (t1 - t0 == 1) return decode_streams<PackQ4_K, QK_K, kernel_q4_k<kStreams, 1>, TileQ4_K>(packed, cols, g0, g1, a, t0, y, ldy);
            return run<PackQ4_K, TileQ4_K, kNT, QK_K>(packed, cols, g0, g1, a, t0, t1, y, ldy);
        case DType::Q6_K:
            if (t1 - t0 == 1) return decode_streams<PackQ6_K, QK_K, kernel_q6_k<kStreams, 1>, TileQ6_K>(packed, cols, g0, g1, a, t0, y, ldy);
            return run<PackQ6_K, TileQ6_K, kNT, QK_K>(packed, cols, g0, g1, a, t0, t1, y, ldy);
        case DType::Q4_0:
            if (t1 - t0 == 1) return decode_streams<PackQ4_0, QK, kernel_q4_0<kStreams, 1>, TileQ4_0>(packed, cols, g0, g1, a, t0, y, ldy);
            return run<PackQ4_0, TileQ4_0, kNT>(packed, cols, g0, g1, a, t0, t1, y, ldy);
        case DType::Q8_0:
            if (t1 - t0 == 1) return decode_streams<PackQ8_0, QK, kernel_q8_0<kStreams, 1>, TileQ8_0>(packed, cols, g0, g1, a, t0, y, ldy);
            return run<PackQ8_0, TileQ8_0, kNT>(packed, cols, g0, g1, a, t0, t1, y, ldy);
        default: fail("gemm_packed: no packed kernel for weight type {}", dtype_name(t));
    }
}

}  // namespace calpaca

#endif  // AVX2
