// Small AVX2 helpers shared by the x86 kernels (quant_dot_x86.cpp, gemm_x86.cpp, kernels.cpp,
// model/attention.cpp). One definition each: the horizontal sum's order in particular must be
// the same everywhere, because Session's attention kernel and MultiSession's dot() have to give
// the same bits. Include only from code built with AVX2 + FMA + F16C.
#pragma once
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace calpaca::x86 {

inline float h2f(uint16_t h) { return _cvtsh_ss(h); }
inline __m256i loadu(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// lanes summed as ((0+4)+(2+6)) + ((1+5)+(3+7))
inline float hsum(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}

// An empty asm that takes v and gives it back in a register: a running integer sum stays one
// add chain. Without it GCC 12 reassociates the adds of a fully unrolled block, keeps every
// product until a final tree of adds and spills them to the stack.
inline void keep_in_register(__m256i& v) { __asm__("" : "+x"(v)); }

// Sums of 4 adjacent u8×s8 products → 8 int32 (VPDPBUSD where the build targets VNNI).
inline __m256i dot_u8s8(__m256i a, __m256i b) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), a, b);
#elif defined(__AVXVNNI__)
    return _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), a, b);
#else
    return _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), _mm256_set1_epi16(1));
#endif
}

// 16 bytes of packed nibbles → 32 bytes: element j (j<16) = low nibble of qs[j], element
// j+16 = high nibble (the legacy layout).
inline __m256i nibbles32(const uint8_t* qs) {
    __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), _mm256_set1_epi8(0x0F));
}

// 32 bits (little-endian) → 32 bytes, 0x10 where bit j is set.
inline __m256i high_bits32(const uint8_t* qh) {
    uint32_t x;
    std::memcpy(&x, qh, 4);
    const __m256i spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(static_cast<int>(x)),
        _mm256_setr_epi64x(0, 0x0101010101010101LL, 0x0202020202020202LL, 0x0303030303030303LL));
    const __m256i bit = _mm256_set1_epi64x(static_cast<long long>(0x8040201008040201ULL));
    return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit), _mm256_set1_epi8(0x10));
}

}  // namespace calpaca::x86

#endif
