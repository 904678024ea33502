#include "calpaca/model/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define CALPACA_ATT_AVX2 1
#endif

#include "calpaca/base/error.h"
#include "calpaca/tensor/simd_x86.h"
#include "calpaca/tensor/kernels.h"

namespace calpaca {

namespace {

void check_kv(DType t) {
    if (t != DType::F16 && t != DType::F32) fail("attention: KV cache type must be F16 or F32, got {}", dtype_name(t));
}

inline float load1(DType t, const uint8_t* p, int64_t i) {
    if (t == DType::F32) {
        float f;
        std::memcpy(&f, p + 4 * i, 4);
        return f;
    }
    uint16_t h;
    std::memcpy(&h, p + 2 * i, 2);
    return fp16_to_fp32(h);
}

#ifdef CALPACA_ATT_AVX2
using x86::hsum;

template <bool F16>
inline __m256 load8(const uint8_t* p, int64_t i) {
    if constexpr (F16)
        return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2 * i)));
    else
        return _mm256_loadu_ps(reinterpret_cast<const float*>(p + 4 * i));
}

// scores[j] = scale * q . K[j]: four keys per step share each load of q. Each key's sum
// runs in two 8-lane accumulators over 16-element steps (then a scalar tail), the order of
// kernels' dot(), so that the result does not depend on which of the two computed it.
template <bool F16>
inline float finish_dot(__m256 a, __m256 b, const float* q, const uint8_t* k, int64_t from, int64_t hd) {
    const DType t = F16 ? DType::F16 : DType::F32;
    float r = hsum(_mm256_add_ps(a, b));
    for (int64_t i = from; i < hd; ++i) r += load1(t, k, i) * q[i];
    return r;
}

// One key's dot product alone, in the same two accumulators and order as the four-key steps.
template <bool F16>
inline float key_dot(const uint8_t* kj, const float* q, int64_t hd16, int64_t hd) {
    __m256 a = _mm256_setzero_ps(), b = a;
    for (int64_t i = 0; i < hd16; i += 16) {
        a = _mm256_fmadd_ps(load8<F16>(kj, i), _mm256_loadu_ps(q + i), a);
        b = _mm256_fmadd_ps(load8<F16>(kj, i + 8), _mm256_loadu_ps(q + i + 8), b);
    }
    return finish_dot<F16>(a, b, q, kj, hd16, hd);
}

template <bool F16>
void scores_avx2(const KVHead& kv, const float* q, int64_t hd, int64_t n_keys, float scale, float* s) {
    const int64_t hd16 = hd / 16 * 16;
    int64_t j = 0;
    for (; j + 4 <= n_keys; j += 4) {
        const uint8_t* k0 = kv.k + j * kv.stride;
        const uint8_t* k1 = k0 + kv.stride;
        const uint8_t* k2 = k1 + kv.stride;
        const uint8_t* k3 = k2 + kv.stride;
        __m256 a0 = _mm256_setzero_ps(), b0 = a0, a1 = a0, b1 = a0, a2 = a0, b2 = a0, a3 = a0, b3 = a0;
        for (int64_t i = 0; i < hd16; i += 16) {
            const __m256 qa = _mm256_loadu_ps(q + i), qb = _mm256_loadu_ps(q + i + 8);
            a0 = _mm256_fmadd_ps(load8<F16>(k0, i), qa, a0);
            b0 = _mm256_fmadd_ps(load8<F16>(k0, i + 8), qb, b0);
            a1 = _mm256_fmadd_ps(load8<F16>(k1, i), qa, a1);
            b1 = _mm256_fmadd_ps(load8<F16>(k1, i + 8), qb, b1);
            a2 = _mm256_fmadd_ps(load8<F16>(k2, i), qa, a2);
            b2 = _mm256_fmadd_ps(load8<F16>(k2, i + 8), qb, b2);
            a3 = _mm256_fmadd_ps(load8<F16>(k3, i), qa, a3);
            b3 = _mm256_fmadd_ps(load8<F16>(k3, i + 8), qb, b3);
        }
        s[j] = finish_dot<F16>(a0, b0, q, k0, hd16, hd) * scale;
        s[j + 1] = finish_dot<F16>(a1, b1, q, k1, hd16, hd) * scale;
        s[j + 2] = finish_dot<F16>(a2, b2, q, k2, hd16, hd) * scale;
        s[j + 3] = finish_dot<F16>(a3, b3, q, k3, hd16, hd) * scale;
    }
    for (; j < n_keys; ++j) s[j] = key_dot<F16>(kv.k + j * kv.stride, q, hd16, hd) * scale;
}

// out = sum_j w[j] * V[j], 32 output lanes per pass held in registers.
template <bool F16>
void weighted_sum_avx2(const KVHead& kv, const float* w, int64_t hd, int64_t n_keys, float* out) {
    const DType t = F16 ? DType::F16 : DType::F32;
    int64_t c = 0;
    for (; c + 32 <= hd; c += 32) {
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int64_t j = 0; j < n_keys; ++j) {
            const uint8_t* vj = kv.v + j * kv.stride;
            const __m256 wj = _mm256_set1_ps(w[j]);
            a0 = _mm256_fmadd_ps(wj, load8<F16>(vj, c), a0);
            a1 = _mm256_fmadd_ps(wj, load8<F16>(vj, c + 8), a1);
            a2 = _mm256_fmadd_ps(wj, load8<F16>(vj, c + 16), a2);
            a3 = _mm256_fmadd_ps(wj, load8<F16>(vj, c + 24), a3);
        }
        _mm256_storeu_ps(out + c, a0);
        _mm256_storeu_ps(out + c + 8, a1);
        _mm256_storeu_ps(out + c + 16, a2);
        _mm256_storeu_ps(out + c + 24, a3);
    }
    for (; c + 8 <= hd; c += 8) {
        __m256 a = _mm256_setzero_ps();
        for (int64_t j = 0; j < n_keys; ++j) a = _mm256_fmadd_ps(_mm256_set1_ps(w[j]), load8<F16>(kv.v + j * kv.stride, c), a);
        _mm256_storeu_ps(out + c, a);
    }
    for (; c < hd; ++c) {
        float a = 0;
        for (int64_t j = 0; j < n_keys; ++j) a += w[j] * load1(t, kv.v + j * kv.stride, c);
        out[c] = a;
    }
}

// attend() for four queries at consecutive positions (query u sees n0 + u keys), head_dim a
// multiple of 16: per key, one conversion of its K row feeds the four queries' dot products
// (each in scores_avx2's two accumulators, the same order), and per V row one conversion feeds
// the four weighted sums (each lane a chain over the keys in order, as weighted_sum_avx2's).
template <bool F16>
void attend4_avx2(const KVHead& kv, const float* q, int64_t q_stride, int64_t hd, int64_t n0, float scale, float* out,
                  int64_t out_stride, float* scratch) {
    constexpr int Q = 4;
    const int64_t ns = n0 + Q - 1;
    float* s[Q];
    const float* qs[Q];
    for (int u = 0; u < Q; ++u) s[u] = scratch + u * ns, qs[u] = q + u * q_stride;
    for (int64_t j = 0; j < n0; ++j) {  // keys every query sees
        const uint8_t* kj = kv.k + j * kv.stride;
        __m256 a[Q], b[Q];
        for (int u = 0; u < Q; ++u) a[u] = b[u] = _mm256_setzero_ps();
        for (int64_t i = 0; i < hd; i += 16) {
            const __m256 k0 = load8<F16>(kj, i), k1 = load8<F16>(kj, i + 8);
            for (int u = 0; u < Q; ++u) {
                a[u] = _mm256_fmadd_ps(k0, _mm256_loadu_ps(qs[u] + i), a[u]);
                b[u] = _mm256_fmadd_ps(k1, _mm256_loadu_ps(qs[u] + i + 8), b[u]);
            }
        }
        for (int u = 0; u < Q; ++u) s[u][j] = finish_dot<F16>(a[u], b[u], qs[u], kj, hd, hd) * scale;
    }
    for (int u = 1; u < Q; ++u)  // the keys only the later queries see
        for (int64_t j = n0; j < n0 + u; ++j) s[u][j] = key_dot<F16>(kv.k + j * kv.stride, qs[u], hd, hd) * scale;
    for (int u = 0; u < Q; ++u) softmax(s[u], n0 + u);
    for (int64_t c = 0; c < hd; c += 16) {
        __m256 o0[Q], o1[Q];
        for (int u = 0; u < Q; ++u) o0[u] = o1[u] = _mm256_setzero_ps();
        for (int64_t j = 0; j < n0; ++j) {
            const uint8_t* vj = kv.v + j * kv.stride;
            const __m256 v0 = load8<F16>(vj, c), v1 = load8<F16>(vj, c + 8);
            for (int u = 0; u < Q; ++u) {
                const __m256 w = _mm256_set1_ps(s[u][j]);
                o0[u] = _mm256_fmadd_ps(w, v0, o0[u]);
                o1[u] = _mm256_fmadd_ps(w, v1, o1[u]);
            }
        }
        for (int u = 1; u < Q; ++u)
            for (int64_t j = n0; j < n0 + u; ++j) {
                const uint8_t* vj = kv.v + j * kv.stride;
                const __m256 w = _mm256_set1_ps(s[u][j]);
                o0[u] = _mm256_fmadd_ps(w, load8<F16>(vj, c), o0[u]);
                o1[u] = _mm256_fmadd_ps(w, load8<F16>(vj, c + 8), o1[u]);
            }
        for (int u = 0; u < Q; ++u) {
            _mm256_storeu_ps(out + u * out_stride + c, o0[u]);
            _mm256_storeu_ps(out + u * out_stride + c + 8, o1[u]);
        }
    }
}
#endif

}  // namespace

void attend_ref(const KVHead& kv, const float* q, int64_t hd, int64_t n_keys, float scale, float* out, float* scratch) {
    check_kv(kv.type);
    for (int64_t j = 0; j < n_keys; ++j) scratch[j] = dot_ref(kv.type, kv.k + j * kv.stride, q, hd) * scale;
    softmax(scratch, n_keys);
    std::fill(out, out + hd, 0.0f);
    for (int64_t j = 0; j < n_keys; ++j) axpy_ref(kv.type, kv.v + j * kv.stride, scratch[j], out, hd);
}

void attend(const KVHead& kv, const float* q, int64_t hd, int64_t n_keys, float scale, float* out, float* scratch) {
    check_kv(kv.type);
#ifdef CALPACA_ATT_AVX2
    if (kv.type == DType::F16)
        scores_avx2<true>(kv, q, hd, n_keys, scale, scratch);
    else
        scores_avx2<false>(kv, q, hd, n_keys, scale, scratch);
    softmax(scratch, n_keys);
    if (kv.type == DType::F16)
        weighted_sum_avx2<true>(kv, scratch, hd, n_keys, out);
    else
        weighted_sum_avx2<false>(kv, scratch, hd, n_keys, out);
#else
    for (int64_t j = 0; j < n_keys; ++j) {
        const uint8_t* kj = kv.k + j * kv.stride;
        float a = 0;
        for (int64_t i = 0; i < hd; ++i) a += q[i] * load1(kv.type, kj, i);
        scratch[j] = a * scale;
    }
    softmax(scratch, n_keys);
    std::fill(out, out + hd, 0.0f);
    for (int64_t j = 0; j < n_keys; ++j) {
        const uint8_t* vj = kv.v + j * kv.stride;
        for (int64_t i = 0; i < hd; ++i) out[i] += scratch[j] * load1(kv.type, vj, i);
    }
#endif
}

void attend4(const KVHead& kv, const float* q, int64_t q_stride, int64_t hd, int64_t n_keys0, float scale, float* out,
             int64_t out_stride, float* scratch) {
    check_kv(kv.type);
    if (n_keys0 < 1) fail("attend4: n_keys0 must be >= 1, got {}", n_keys0);
#ifdef CALPACA_ATT_AVX2
    if (hd % 16 == 0) {
        if (kv.type == DType::F16)
            attend4_avx2<true>(kv, q, q_stride, hd, n_keys0, scale, out, out_stride, scratch);
        else
            attend4_avx2<false>(kv, q, q_stride, hd, n_keys0, scale, out, out_stride, scratch);
        return;
    }
#endif
    for (int u = 0; u < 4; ++u) attend(kv, q + u * q_stride, hd, n_keys0 + u, scale, out + u * out_stride, scratch);
}

void store_row(DType t, const float* x, uint8_t* dst, int64_t n) {
    check_kv(t);
    if (t == DType::F32) {
        std::memcpy(dst, x, static_cast<size_t>(n) * 4);
        return;
    }
    int64_t i = 0;
#ifdef CALPACA_ATT_AVX2
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 2 * i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#endif
    for (; i < n; ++i) {
        const uint16_t h = fp32_to_fp16(x[i]);
        std::memcpy(dst + 2 * i, &h, 2);
    }
}

}  // namespace calpaca
