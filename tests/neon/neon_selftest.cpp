// Standalone check of the fast quantized kernels against their reference twins, meant for
// cross-built binaries run under an emulator (tests/e2e/neon.sh builds it for AArch64 with
// and without the dot-product extension and runs it under qemu-aarch64). No gtest: it links
// only the tensor sources it needs and prints one line per type.
//
// For every weight type: seeded normal f32 data (no zeros) quantized by the reference
// quantizer; four activation rows quantized by quantize_act_ref to vec_dot_type(w); then
// vec_dot_q with 1, 2, 3 and 4 rows must match vec_dot_q_ref on every row within
// 2e-6 · Σ|w·a| + 1e-6 (f32 summation order is the only allowed difference), for 1, 3, 7
// and 17 blocks and 4096 elements. The fast activation quantizers must be byte-identical to
// the reference ones (random rows, exact rounding ties, zero blocks, equal ± maxima).
//
// So that it cannot pass vacuously, each type also runs a sensitivity check: one weight code
// changed by ±1 (bit 0 of a code byte flipped) in a block whose change the reference sees
// must make vec_dot_q differ from the unchanged reference by more than the tolerance, while
// matching the reference on the changed weights. With --fault the kernels are handed such a
// changed weight row in every comparison (a stand-in for a kernel that reads one code
// wrong): the run must then report FAIL for every type and exit 1.
//
// Usage: neon_selftest [--expect-isa ISA] [--fault]     exit 0 = all passed, 1 = a mismatch
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "calpaca/base/error.h"
#include "calpaca/tensor/dtype.h"
#include "calpaca/tensor/quant.h"
#include "calpaca/tensor/quant_blocks.h"
#include "calpaca/tensor/quant_dot.h"

using namespace calpaca;

namespace {

using Bytes = std::vector<uint8_t>;

const DType kWeightTypes[] = {DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q8_0,
                              DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K};

// Byte range of a block's low code bits: bit 0 of each byte is bit 0 of one element's code.
struct CodeBytes {
    size_t offset, count;
};
CodeBytes code_bytes(DType t) {
    using namespace quant;
    switch (t) {
        case DType::Q4_0: return {offsetof(BlockQ4_0, qs), sizeof(BlockQ4_0::qs)};
        case DType::Q4_1: return {offsetof(BlockQ4_1, qs), sizeof(BlockQ4_1::qs)};
        case DType::Q5_0: return {offsetof(BlockQ5_0, qs), sizeof(BlockQ5_0::qs)};
        case DType::Q5_1: return {offsetof(BlockQ5_1, qs), sizeof(BlockQ5_1::qs)};
        case DType::Q8_0: return {offsetof(BlockQ8_0, qs), sizeof(BlockQ8_0::qs)};
        case DType::Q2_K: return {offsetof(BlockQ2_K, qs), sizeof(BlockQ2_K::qs)};
        case DType::Q3_K: return {offsetof(BlockQ3_K, qs), sizeof(BlockQ3_K::qs)};
        case DType::Q4_K: return {offsetof(BlockQ4_K, qs), sizeof(BlockQ4_K::qs)};
        case DType::Q5_K: return {offsetof(BlockQ5_K, qs), sizeof(BlockQ5_K::qs)};
        case DType::Q6_K: return {offsetof(BlockQ6_K, ql), sizeof(BlockQ6_K::ql)};
        default: fail("selftest: no code layout for {}", dtype_name(t));
    }
}

std::vector<float> random_vec(int64_t n, std::mt19937& rng, float sigma) {
    std::normal_distribution<float> nd(0.0f, sigma);
    std::vector<float> v(static_cast<size_t>(n));
    for (auto& x : v) {
        x = nd(rng);
        if (x == 0.0f) x = 1e-3f;
    }
    return v;
}

Bytes quantized(DType t, const std::vector<float>& x) {
    Bytes q(row_bytes(t, x.size()));
    quantize_row_ref(t, x.data(), q.data(), static_cast<int64_t>(x.size()));
    return q;
}

// Σ |w_i a_i| over the dequantized operands: the scale of f32 rounding differences.
double magnitude(DType wt, const Bytes& w, DType at, const Bytes& a, int64_t n) {
    std::vector<float> wf(static_cast<size_t>(n)), af(static_cast<size_t>(n));
    dequantize_row(wt, w.data(), wf.data(), n);
    dequantize_row(at, a.data(), af.data(), n);
    double m = 0;
    for (size_t i = 0; i < wf.size(); ++i) m += std::fabs(static_cast<double>(wf[i]) * af[i]);
    return m;
}
double tolerance(double mag) { return 2e-6 * mag + 1e-6; }

// A copy of w with bit 0 of one code byte flipped in block n_blocks/2, chosen so that the
// reference result on activation row a moves by more than 4 tolerances; empty if none does.
Bytes visible_flip(DType wt, const Bytes& w, const Bytes& a, int64_t n, double tol) {
    const auto& info = dtype_info(wt);
    const int64_t nb = n / info.block_size;
    const CodeBytes cb = code_bytes(wt);
    const float ref = vec_dot_q_ref(wt, w.data(), a.data(), n);
    const size_t base = static_cast<size_t>(nb / 2) * info.type_size + cb.offset;
    for (size_t i = 0; i < cb.count; ++i) {
        Bytes p = w;
        p[base + i] ^= 1;
        if (std::fabs(static_cast<double>(vec_dot_q_ref(wt, p.data(), a.data(), n)) - ref) > 4 * tol) return p;
    }
    return {};
}

struct TypeResult {
    int compared = 0, failed = 0;
    double worst = 0;       // max |fast - ref| / Σ|w·a|
    double detect = -1;     // sensitivity check: |fast(changed) - ref| in tolerances (-1: failed)
    std::string first_failure;
};

void check_type(DType wt, bool fault, std::mt19937& rng, TypeResult& r) {
    const DType at = vec_dot_type(wt);
    const int64_t bs = dtype_info(wt).block_size;
    for (int64_t n : {bs, 3 * bs, 7 * bs, 17 * bs, int64_t{4096}}) {
        const Bytes w = quantized(wt, random_vec(n, rng, 0.7f));
        std::vector<Bytes> acts;
        for (int k = 0; k < 4; ++k) {
            const auto x = random_vec(n, rng, 1.5f);
            Bytes a(row_bytes(at, static_cast<uint64_t>(n)));
            quantize_act_ref(at, x.data(), a.data(), n);
            acts.push_back(std::move(a));
        }
        double mag[4], ref[4];
        for (int k = 0; k < 4; ++k) {
            mag[k] = magnitude(wt, w, at, acts[k], n);
            ref[k] = vec_dot_q_ref(wt, w.data(), acts[k].data(), n);
        }
        Bytes wfast = w;
        if (fault) {
            wfast = visible_flip(wt, w, acts[0], n, tolerance(mag[0]));
            if (wfast.empty()) wfast = w;  // nothing visible to change: the clean run will show it
        }
        for (int nt = 1; nt <= 4; ++nt) {
            const void* rows[4];
            for (int k = 0; k < nt; ++k) rows[k] = acts[static_cast<size_t>(k)].data();
            float out[4];
            vec_dot_q(wt, wfast.data(), rows, nt, n, out);
            for (int k = 0; k < nt; ++k) {
                const double err = std::fabs(out[k] - ref[k]);
                ++r.compared;
                r.worst = std::max(r.worst, err / mag[k]);
                if (err > tolerance(mag[k])) {
                    if (r.failed++ == 0)
                        r.first_failure = fmt::format("n={} nt={} row {}: fast {:.9g} ref {:.9g} (|diff| {:.3g} > tol {:.3g})", n, nt,
                                                      k, out[k], ref[k], err, tolerance(mag[k]));
                }
            }
        }
        // sensitivity on the 4096-element row: a one-code change must be caught
        if (n == 4096) {
            const double tol = tolerance(mag[0]);
            const Bytes changed = visible_flip(wt, w, acts[0], n, tol);
            if (!changed.empty()) {
                const void* rows[1] = {acts[0].data()};
                float out;
                vec_dot_q(wt, changed.data(), rows, 1, n, &out);
                const double ref_changed = vec_dot_q_ref(wt, changed.data(), acts[0].data(), n);
                const double off = std::fabs(out - ref[0]);
                if (off > tol && std::fabs(out - ref_changed) <= tol) r.detect = off / tol;
            }
        }
    }
}

// Byte-identical activation quantizers: returns the number of rows compared, or -1 after
// printing the first difference.
int check_act(DType act, std::mt19937& rng) {
    const int64_t bs = dtype_info(act).block_size;
    int rows = 0;
    for (int64_t nb : {1, 2, 3, 7, 16}) {
        for (int variant = 0; variant < 3; ++variant) {
            auto x = random_vec(bs * nb, rng, 2.0f);
            if (variant == 2) {
                // every block's scale exactly 1 (Q8_0/Q8_1: absmax 127; Q8_K: -127 first): x * 1
                // lands on the halves, so ties away from zero and ties to even must both be right
                for (size_t i = 0; i < x.size(); ++i)
                    x[i] = i % static_cast<size_t>(bs) == 0 ? -127.0f : static_cast<float>(static_cast<int>(i * 7 % 61) - 30) - 0.5f;
            } else if (variant == 1) {
                // exact ties for roundf / nearest-even, a zero block, equal +/- maxima
                for (int64_t i = 0; i < bs; i += 5) x[static_cast<size_t>(i)] = static_cast<float>(i % 9) * 0.5f - 2.0f;
                if (nb > 1) std::fill(x.begin() + bs, x.begin() + 2 * bs, 0.0f);
                if (nb > 2) {
                    x[static_cast<size_t>(2 * bs + 3)] = 9.0f;
                    x[static_cast<size_t>(2 * bs + 1)] = -9.0f;
                }
            }
            Bytes a(row_bytes(act, x.size())), b(a.size());
            quantize_act_ref(act, x.data(), a.data(), bs * nb);
            quantize_act(act, x.data(), b.data(), bs * nb);
            ++rows;
            if (a != b) {
                size_t i = 0;
                while (a[i] == b[i]) ++i;
                std::printf("act %-5s FAIL: %lld blocks (variant %d): byte %zu is %u, reference %u\n", dtype_name(act),
                            static_cast<long long>(nb), variant, i, b[i], a[i]);
                return -1;
            }
        }
    }
    return rows;
}

}  // namespace

int main(int argc, char** argv) {
    bool fault = false;
    std::string expect_isa;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "--fault") {
            fault = true;
        } else if (arg == "--expect-isa" && i + 1 < argc) {
            expect_isa = argv[++i];
        } else {
            std::fprintf(stderr, "usage: %s [--expect-isa ISA] [--fault]\n", argv[0]);
            return 2;
        }
    }
    int failures = 0;
    try {
        const std::string isa = quant_kernel_isa();
        std::printf("kernels: %s%s\n", isa.c_str(), fault ? " (--fault: one weight code changed for the fast kernels)" : "");
        if (!expect_isa.empty() && isa != expect_isa) {
            std::printf("FAIL: kernels are %s, expected %s\n", isa.c_str(), expect_isa.c_str());
            ++failures;
        }
        std::mt19937 rng(20240611);
        for (DType act : {DType::Q8_0, DType::Q8_1, DType::Q8_K}) {
            const int rows = check_act(act, rng);
            if (rows < 0) {
                ++failures;
                continue;
            }
            std::printf("act %-5s ok: quantize_act byte-identical to quantize_act_ref on %d rows\n", dtype_name(act), rows);
        }
        for (DType wt : kWeightTypes) {
            TypeResult r;
            check_type(wt, fault, rng, r);
            if (r.failed) {
                ++failures;
                std::printf("%-5s FAIL: %d of %d comparisons out of tolerance; first: %s\n", dtype_name(wt), r.failed, r.compared,
                            r.first_failure.c_str());
            } else if (r.detect < 0) {
                ++failures;
                std::printf("%-5s FAIL: sensitivity check: a one-code weight change was not detected\n", dtype_name(wt));
            } else {
                std::printf("%-5s ok: %d comparisons (1-4 rows, 1/3/7/17 blocks and 4096 el.), max |err|/sum|w*a| %.2g; "
                            "one-code change detected at %.0fx tolerance\n",
                            dtype_name(wt), r.compared, r.worst, r.detect);
            }
        }
    } catch (const Error& e) {
        std::printf("FAIL: error: %s\n", e.what());
        return 1;
    }
    std::printf("neon selftest: %s\n", failures ? "FAILED" : "all passed");
    return failures ? 1 : 0;
}
