// ggml's quantized block layouts, byte for byte (GGUF tensor types 2..15).
//
// Every struct below is the exact on-disk layout of one block (little-endian, no padding;
// the static_asserts pin the sizes that GGUF readers compute from the type table). Halves
// are IEEE binary16 bit patterns. Element i of a block is reconstructed as follows:
//
//   Q4_0  (32 el., 18 B)  d; qs[16]: el. j = qs[j] & 15, el. j+16 = qs[j] >> 4; x = d*(q-8)
//   Q4_1  (32 el., 20 B)  d, m; qs[16] as Q4_0;                                   x = d*q + m
//   Q5_0  (32 el., 22 B)  d; qh (u32 LE): bit j = 5th bit of el. j; qs as Q4_0;   x = d*(q-16)
//   Q5_1  (32 el., 24 B)  d, m; qh; qs;                                           x = d*q + m
//   Q8_0  (32 el., 34 B)  d; int8 qs[32];                                         x = d*q
//   Q8_1  (32 el., 36 B)  d, s = d*sum(qs) (half); int8 qs[32]                    x = d*q
//   K-quants: super-blocks of 256 elements.
//   Q2_K  (84 B)   scales[16] (low nibble: scale, high nibble: min, per 16 el.), qs[64], d, dmin
//                  el. 128*h + 32*j + l (h<2, j<4, l<32): q = (qs[32*h + l] >> 2j) & 3, sub-block
//                  8*h + 2*j + l/16;  x = d*scale*q - dmin*min
//   Q3_K  (110 B)  hmask[32], qs[64], scales[12] (16 six-bit scales, see below), d
//                  el. 128*h + 32*j + l: low 2 bits as Q2_K, high bit = hmask[l] bit (4h + j);
//                  x = d*(scale-32)*(q - 4)   (q = low | high<<2)
//                  scale s (s<16): low 4 bits in scales[s%8] (nibble s/8), high 2 bits in
//                  scales[8 + s%4] at bit 2*(s/4)
//   Q4_K  (144 B)  d, dmin, scales[12] (8 six-bit scales + 8 six-bit mins, per 32 el.), qs[128]
//                  el. 64*p + l (p<4, l<32): qs[32p + l] & 15 (sub-block 2p), el. 64*p + 32 + l:
//                  qs[32p + l] >> 4 (sub-block 2p+1);  x = d*scale*q - dmin*min
//                  scale/min of sub-block s<4: scales[s] & 63, scales[s+4] & 63; s>=4:
//                  (scales[s+4] & 15) | (scales[s-4] >> 6) << 4, (scales[s+4] >> 4) | (scales[s] >> 6) << 4
//   Q5_K  (176 B)  d, dmin, scales[12] as Q4_K, qh[32], qs[128] as Q4_K; 5th bit of el. 64p + l is
//                  qh[l] bit 2p, of el. 64p + 32 + l is qh[l] bit 2p+1
//   Q6_K  (210 B)  ql[128], qh[64], int8 scales[16] (per 16 el.), d
//                  el. 128*h + 32*c + l (c<4): low 4 bits from ql[64h + l + 32*(c&1)] (nibble c/2),
//                  high 2 bits = (qh[32h + l] >> 2c) & 3;  x = d*scale*(q - 32)
//   Q8_K  (292 B)  float d, int8 qs[256], int16 bsums[16] (sums of 16 quants); x = d*q
//                  (activations only: the K-quant dot products take it)
#pragma once
#include <cstdint>
#include <cstring>

namespace calpaca::quant {

constexpr int QK = 32;     // legacy block size
constexpr int QK_K = 256;  // K-quant super-block size
constexpr int K_SCALE_SIZE = 12;

struct BlockQ4_0 {
    uint16_t d;
    uint8_t qs[QK / 2];
};
struct BlockQ4_1 {
    uint16_t d, m;
    uint8_t qs[QK / 2];
};
struct BlockQ5_0 {
    uint16_t d;
    uint8_t qh[4];
    uint8_t qs[QK / 2];
};
struct BlockQ5_1 {
    uint16_t d, m;
    uint8_t qh[4];
    uint8_t qs[QK / 2];
};
struct BlockQ8_0 {
    uint16_t d;
    int8_t qs[QK];
};
struct BlockQ8_1 {
    uint16_t d, s;
    int8_t qs[QK];
};
struct BlockQ2_K {
    uint8_t scales[QK_K / 16];
    uint8_t qs[QK_K / 4];
    uint16_t d, dmin;
};
struct BlockQ3_K {
    uint8_t hmask[QK_K / 8];
    uint8_t qs[QK_K / 4];
    uint8_t scales[12];
    uint16_t d;
};
struct BlockQ4_K {
    uint16_t d, dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qs[QK_K / 2];
};
struct BlockQ5_K {
    uint16_t d, dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qh[QK_K / 8];
    uint8_t qs[QK_K / 2];
};
struct BlockQ6_K {
    uint8_t ql[QK_K / 2];
    uint8_t qh[QK_K / 4];
    int8_t scales[QK_K / 16];
    uint16_t d;
};
struct BlockQ8_K {
    float d;
    int8_t qs[QK_K];
    int16_t bsums[QK_K / 16];
};

static_assert(sizeof(BlockQ4_0) == 18 && sizeof(BlockQ4_1) == 20 && sizeof(BlockQ5_0) == 22 &&
              sizeof(BlockQ5_1) == 24 && sizeof(BlockQ8_0) == 34 && sizeof(BlockQ8_1) == 36);
static_assert(sizeof(BlockQ2_K) == 84 && sizeof(BlockQ3_K) == 110 && sizeof(BlockQ4_K) == 144 &&
              sizeof(BlockQ5_K) == 176 && sizeof(BlockQ6_K) == 210 && sizeof(BlockQ8_K) == 292);

// Round to nearest, ties to even (ggml's nearest_int: the 1.5*2^23 trick), |x| < 2^22.
inline int nearest_int(float x) {
    float v = x + 12582912.0f;
    int32_t i;
    std::memcpy(&i, &v, 4);
    return (i & 0x007fffff) - 0x00400000;
}

// Q4_K / Q5_K: 6-bit scale and min of sub-block j (0..7) from the 12 packed bytes.
inline void scale_min_k4(int j, const uint8_t* q, uint8_t& sc, uint8_t& m) {
    if (j < 4) {
        sc = q[j] & 63;
        m = q[j + 4] & 63;
    } else {
        sc = static_cast<uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        m = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

// Q3_K: the 16 signed scales (already minus 32) from the 12 packed bytes.
inline void unpack_q3k_scales(const uint8_t* s, int8_t out[16]) {
    for (int j = 0; j < 16; ++j) {
        int lo = j < 8 ? s[j] & 0xF : s[j - 8] >> 4;
        int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        out[j] = static_cast<int8_t>((lo | (hi << 4)) - 32);
    }
}

}  // namespace calpaca::quant
