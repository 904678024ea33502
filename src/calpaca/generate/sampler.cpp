#include "calpaca/generate/sampler.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>

#ifdef __AVX__
#include <immintrin.h>
#endif

#include "calpaca/base/error.h"

namespace calpaca {

namespace {

// "larger logit first, then lower id first": the one total order used for sorting and ties.
inline bool before(const Candidate& a, const Candidate& b) {
    if (a.logit != b.logit) return a.logit > b.logit;
    return a.id < b.id;
}

// Branch-free test over 16 floats: two AVX compares and one movemask where the build has AVX
// (inlined: the top-k scan over a 55296-word vocabulary spent ~1.3 cycles per logit in
// out-of-line calls of the plain loop), else the plain loop, kept out of line (inlined, GCC
// fully unrolls it into scalar compares instead of vectorizing).
#ifdef __AVX__
inline bool any_not_less16(const float* d, float k) {  // some d[j] >= k, or NaN
    const __m256 kk = _mm256_set1_ps(k);
    const __m256 a = _mm256_cmp_ps(_mm256_loadu_ps(d), kk, _CMP_NLT_UQ);
    const __m256 b = _mm256_cmp_ps(_mm256_loadu_ps(d + 8), kk, _CMP_NLT_UQ);
    return _mm256_movemask_ps(_mm256_or_ps(a, b)) != 0;
}
#else
[[gnu::noinline]] bool any_not_less16(const float* d, float k) {  // some d[j] >= k, or NaN
    int any = 0;
    for (size_t j = 0; j < 16; ++j) any |= !(d[j] < k);
    return any != 0;
}
#endif

// scratch of top_k_from_logits (block maxima, then candidate values), kept between calls
thread_local std::vector<float> topk_scratch;

void check_range(const char* name, float v, float lo, float hi) {
    if (!(v >= lo && v <= hi)) fail("{} must be in [{}, {}], got {}", name, lo, hi, v);
}

void check_id(int32_t id, size_t n, const char* what) {
    if (id < 0 || static_cast<size_t>(id) >= n)
        fail("{}: token id {} is out of range for a vocabulary of {}", what, id, n);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// SamplingParams

void SamplingParams::validate() const {
    if (!(temperature >= 0.0f) || !std::isfinite(temperature))
        fail("temperature must be >= 0, got {}", temperature);
    if (top_k < 0) fail("top_k must be >= 0 (0 disables it), got {}", top_k);
    check_range("top_p", top_p, 0.0f, 1.0f);
    check_range("min_p", min_p, 0.0f, 1.0f);
    if (!(repetition_penalty > 0.0f) || !std::isfinite(repetition_penalty))
        fail("repetition_penalty must be > 0 (1 disables it), got {}", repetition_penalty);
    if (repetition_window < 0)
        fail("repetition_window must be >= 0 (0 = all tokens), got {}", repetition_window);
    check_range("presence_penalty", presence_penalty, -2.0f, 2.0f);
    check_range("frequency_penalty", frequency_penalty, -2.0f, 2.0f);
    for (const auto& [id, b] : logit_bias) {
        if (id < 0) fail("logit_bias: token id must be >= 0, got {}", id);
        if (std::isnan(b) || b == std::numeric_limits<float>::infinity())
            fail("logit_bias for token {} must be a number or -inf, got {}", id, b);
    }
}

void SamplingParams::validate(size_t n_vocab) const {
    validate();
    for (const auto& [id, b] : logit_bias) check_id(id, n_vocab, "logit_bias");
}

std::string SamplingParams::describe() const {
    std::string s = fmt::format("temp={:g} top_k={} top_p={:g} min_p={:g} repeat_penalty={:g} "
                                "repeat_window={} presence={:g} frequency={:g}",
                                temperature, top_k, top_p, min_p, repetition_penalty,
                                repetition_window, presence_penalty, frequency_penalty);
    if (has_seed) s += fmt::format(" seed={}", seed);
    if (!logit_bias.empty()) s += fmt::format(" logit_bias={}", logit_bias.size());
    return s;
}

// ---------------------------------------------------------------------------------------------
// Candidates

Candidates Candidates::from_logits(std::span<const float> logits) {
    Candidates c;
    c.assign(logits);
    return c;
}

void Candidates::assign(std::span<const float> logits) {
    items.clear();
    items.reserve(logits.size());
    sorted = false;
    const float ninf = -std::numeric_limits<float>::infinity();
    for (size_t i = 0; i < logits.size(); ++i) {
        float l = logits[i];
        if (l == ninf) continue;
        if (!std::isfinite(l)) fail("logit for token {} is {}", i, l);
        items.push_back({static_cast<int32_t>(i), l, 0.0});
    }
}

void Candidates::sort() {
    if (sorted) return;
    std::sort(items.begin(), items.end(), before);
    sorted = true;
}

void Candidates::normalize() {
    if (items.empty()) fail("no token left to sample from (every logit is -inf)");
    float maxl = items[0].logit;
    for (const auto& c : items) maxl = std::max(maxl, c.logit);
    double sum = 0.0;
    for (auto& c : items) {
        c.prob = std::exp(static_cast<double>(c.logit) - static_cast<double>(maxl));
        sum += c.prob;
    }
    for (auto& c : items) c.prob /= sum;
}

// ---------------------------------------------------------------------------------------------
// steps

namespace sampling {

void apply_logit_bias(std::span<float> logits, const std::vector<std::pair<int32_t, float>>& bias) {
    for (const auto& [id, b] : bias) {
        check_id(id, logits.size(), "logit_bias");
        logits[static_cast<size_t>(id)] += b;
    }
}

void apply_repetition_penalty(std::span<float> logits, std::span<const int32_t> window, float penalty) {
    if (penalty == 1.0f || window.empty()) return;
    std::vector<int32_t> ids(window.begin(), window.end());
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    for (int32_t id : ids) {
        check_id(id, logits.size(), "repetition penalty");
        float& l = logits[static_cast<size_t>(id)];
        l = l < 0.0f ? l * penalty : l / penalty;
    }
}

void apply_presence_frequency(std::span<float> logits, std::span<const int32_t> generated,
                              float presence, float frequency) {
    if ((presence == 0.0f && frequency == 0.0f) || generated.empty()) return;
    std::vector<int32_t> ids(generated.begin(), generated.end());
    std::sort(ids.begin(), ids.end());
    for (size_t i = 0; i < ids.size();) {
        size_t j = i;
        while (j < ids.size() && ids[j] == ids[i]) ++j;
        check_id(ids[i], logits.size(), "presence/frequency penalty");
        float& l = logits[static_cast<size_t>(ids[i])];
        // vLLM order: frequency (times the count), then presence (once).
        l -= frequency * static_cast<float>(j - i);
        l -= presence;
        i = j;
    }
}

int32_t argmax(std::span<const float> logits) {
    int32_t best = -1;
    float bl = -std::numeric_limits<float>::infinity();
    for (size_t i = 0; i < logits.size(); ++i) {
        float l = logits[i];
        if (std::isnan(l)) fail("logit for token {} is nan", i);
        if (l > bl) {  // strict: the first (lowest) id wins ties
            bl = l;
            best = static_cast<int32_t>(i);
        }
    }
    if (best < 0) fail("no token left to choose from (every logit is -inf)");
    return best;
}

void apply_temperature(Candidates& c, float temperature) {
    if (temperature == 1.0f) return;
    if (!(temperature > 0.0f)) fail("temperature must be > 0 for sampling, got {}", temperature);
    for (auto& x : c.items) x.logit /= temperature;
}

void apply_top_k(Candidates& c, int k) {
    if (k <= 0 || static_cast<size_t>(k) >= c.items.size()) return;
    auto& v = c.items;
    float kth;
    if (c.sorted) {
        kth = v[static_cast<size_t>(k) - 1].logit;
    } else {
        std::nth_element(v.begin(), v.begin() + (k - 1), v.end(), before);
        kth = v[static_cast<size_t>(k) - 1].logit;
    }
    // Everything at or above the k-th value survives (HF keeps boundary ties).
    auto keep = [kth](const Candidate& x) { return x.logit >= kth; };
    if (c.sorted) {
        auto end = std::find_if_not(v.begin() + k, v.end(), keep);
        v.erase(end, v.end());
    } else {
        auto end = std::partition(v.begin() + k, v.end(), keep);
        v.erase(end, v.end());
        std::sort(v.begin(), v.end(), before);
        c.sorted = true;
    }
}

void top_k_from_logits(std::span<const float> logits, int k, Candidates& out) {
    if (k <= 0 || static_cast<size_t>(k) >= logits.size()) {
        out.assign(logits);
        return;
    }
    const size_t kk = static_cast<size_t>(k), n = logits.size();
    const float* d = logits.data();
    const float ninf = -std::numeric_limits<float>::infinity();
    // 1. A lower bound of the k-th largest value: the k-th largest of the maxima of blocks of 64.
    //    Each of the k blocks whose maximum reaches it holds a value that does, so at least k
    //    values are >= bound. (A NaN may or may not survive a block's max; the maxima are actual
    //    values either way, NaNs are replaced by -inf, which only lowers the bound, and step 2
    //    reports every NaN.) With fewer than k blocks the bound is -inf: everything is a candidate.
    constexpr size_t B = 64;
    float bound = ninf;
    if (n / B >= kk) {
        std::vector<float>& maxima = topk_scratch;
        maxima.resize(n / B);
        for (size_t b = 0; b < n / B; ++b) {
            const float* p = d + b * B;
            float m;
#ifdef __AVX__
            __m256 a0 = _mm256_loadu_ps(p), a1 = _mm256_loadu_ps(p + 8);
            for (size_t i = 16; i < B; i += 16) {
                a0 = _mm256_max_ps(a0, _mm256_loadu_ps(p + i));
                a1 = _mm256_max_ps(a1, _mm256_loadu_ps(p + i + 8));
            }
            a0 = _mm256_max_ps(a0, a1);
            __m128 h = _mm_max_ps(_mm256_castps256_ps128(a0), _mm256_extractf128_ps(a0, 1));
            h = _mm_max_ps(h, _mm_movehl_ps(h, h));
            h = _mm_max_ss(h, _mm_movehdup_ps(h));
            m = _mm_cvtss_f32(h);
#else
            m = p[0];
            for (size_t i = 1; i < B; ++i) m = p[i] > m ? p[i] : m;
#endif
            maxima[b] = std::isnan(m) ? ninf : m;
        }
        std::nth_element(maxima.begin(), maxima.begin() + static_cast<std::ptrdiff_t>(kk - 1), maxima.end(),
                         std::greater<float>());
        bound = maxima[kk - 1];
    }
    // 2. Candidates: every value >= bound (a superset of the top k), in id order; NaN and +inf
    //    are errors, -inf is never a candidate. Blocks of 16 are first tested at once.
    out.items.clear();
    out.sorted = false;
    constexpr size_t T = 16;
    for (size_t i = 0; i < n; i += T) {
        const size_t e = std::min(n, i + T);
        if (e - i == T && !any_not_less16(d + i, bound)) continue;
        for (size_t j = i; j < e; ++j) {
            const float l = d[j];
            if (l < bound || l == ninf) continue;
            if (!std::isfinite(l)) fail("logit for token {} is {}", j, l);
            out.items.push_back({static_cast<int32_t>(j), l, 0.0});
        }
    }
    // 3. The k-th largest candidate value is the k-th largest value overall (every value at or
    //    above it is a candidate); keep the candidates at or above it (ties at the boundary all
    //    stay, as apply_top_k) — with fewer than k candidates (fewer than k finite values), all.
    auto& v = out.items;
    if (v.size() > kk) {
        std::vector<float>& vals = topk_scratch;
        vals.resize(v.size());
        for (size_t i = 0; i < v.size(); ++i) vals[i] = v[i].logit;
        std::nth_element(vals.begin(), vals.begin() + static_cast<std::ptrdiff_t>(kk - 1), vals.end(),
                         std::greater<float>());
        const float kth = vals[kk - 1];
        v.erase(std::remove_if(v.begin(), v.end(), [kth](const Candidate& c) { return c.logit < kth; }), v.end());
    }
    std::sort(v.begin(), v.end(), before);
    out.sorted = true;
}

void apply_top_p(Candidates& c, float top_p) {
    if (top_p >= 1.0f || c.items.empty()) return;
    auto& v = c.items;
    const size_t n = v.size();
    float maxl = v[0].logit;
    for (const auto& x : v) maxl = std::max(maxl, x.logit);
    // Unnormalized weights, stashed in `prob` (normalize() overwrites them later).
    double sum = 0.0;
    for (auto& x : v) sum += (x.prob = std::exp(static_cast<double>(x.logit) - static_cast<double>(maxl)));
    const double target = static_cast<double>(top_p) * sum;

    // cut = the smallest count whose top-ranked mass reaches `target` (at least 1). In ranked
    // order a token is kept iff the mass strictly before it is < top_p, which is HF's "ascending
    // cumulative probability including it > 1 - top_p" (min_tokens_to_keep = 1).
    size_t cut;
    if (c.sorted) {
        double acc = 0.0;
        cut = n;
        for (size_t i = 0; i < n; ++i) {
            if (acc >= target) {
                cut = i;
                break;
            }
            acc += v[i].prob;
        }
    } else if (target <= 0.0) {
        std::iter_swap(v.begin(), std::min_element(v.begin(), v.end(), before));
        cut = 1;
    } else {
        // Mass-weighted quickselect: O(n) expected, then only the survivors are sorted.
        // Invariant: mass of v[0, lo) = acc < target <= mass of v[0, hi); v[0, lo) rank before
        // v[lo, hi), which rank before v[hi, n).
        size_t lo = 0, hi = n;
        double acc = 0.0;
        while (hi - lo > 1) {
            // median-of-three pivot, moved to hi - 1
            size_t m = lo + (hi - lo) / 2;
            if (before(v[m], v[lo])) std::swap(v[m], v[lo]);
            if (before(v[hi - 1], v[lo])) std::swap(v[hi - 1], v[lo]);
            if (before(v[m], v[hi - 1])) std::swap(v[m], v[hi - 1]);
            const Candidate pivot = v[hi - 1];
            auto it = std::partition(v.begin() + static_cast<std::ptrdiff_t>(lo),
                                     v.begin() + static_cast<std::ptrdiff_t>(hi - 1),
                                     [&](const Candidate& x) { return before(x, pivot); });
            size_t mid = static_cast<size_t>(it - v.begin());
            std::swap(v[mid], v[hi - 1]);
            double left = 0.0;
            for (size_t i = lo; i < mid; ++i) left += v[i].prob;
            if (acc + left >= target) {
                hi = mid;  // mid > lo here, since acc < target
            } else if (acc + left + v[mid].prob >= target) {
                lo = mid;
                hi = mid + 1;
                acc += left;
            } else {
                acc += left + v[mid].prob;
                lo = mid + 1;
            }
        }
        cut = hi;
    }
    cut = std::max<size_t>(cut, 1);
    v.erase(v.begin() + static_cast<std::ptrdiff_t>(cut), v.end());
    if (!c.sorted) std::sort(v.begin(), v.end(), before);
    c.sorted = true;
}

void apply_min_p(Candidates& c, float min_p) {
    if (min_p <= 0.0f || c.items.empty()) return;
    float maxl = c.items[0].logit;
    for (const auto& x : c.items) maxl = std::max(maxl, x.logit);
    const double mp = static_cast<double>(min_p);
    // prob_i / prob_max = exp(l_i - l_max); the max itself gives 1 >= min_p, so one always stays.
    std::erase_if(c.items, [&](const Candidate& x) {
        return std::exp(static_cast<double>(x.logit) - static_cast<double>(maxl)) < mp;
    });
}

double uniform01(std::mt19937_64& rng) {
    return static_cast<double>(rng() >> 11) * 0x1.0p-53;
}

int32_t draw(const Candidates& c, double u) {
    if (c.items.empty()) fail("no token left to sample from");
    double cum = 0.0;
    int32_t last = -1;
    for (const auto& x : c.items) {
        if (x.prob <= 0.0) continue;
        cum += x.prob;
        last = x.id;
        if (u < cum) return x.id;
    }
    if (last < 0) fail("no token left to sample from (all probabilities are zero)");
    return last;
}

}  // namespace sampling

// ---------------------------------------------------------------------------------------------
// Sampler

Sampler::Sampler(SamplingParams p, size_t n_vocab) : params_(std::move(p)), n_vocab_(n_vocab) {
    if (n_vocab_ == 0 || n_vocab_ > static_cast<size_t>(std::numeric_limits<int32_t>::max()))
        fail("sampler: invalid vocabulary size {}", n_vocab_);
    params_.validate(n_vocab_);
    if (params_.has_seed) {
        seed_ = params_.seed;
    } else {
        std::random_device rd;
        seed_ = (static_cast<uint64_t>(rd()) << 32) ^ static_cast<uint64_t>(rd());
    }
    rng_.seed(seed_);
}

void Sampler::reseed(uint64_t seed) {
    seed_ = seed;
    rng_.seed(seed_);
}

void Sampler::process(std::span<const float> logits, std::span<const int32_t> history, size_t n_prompt,
                      std::vector<float>& out) const {
    if (logits.size() != n_vocab_)
        fail("sampler: got {} logits for a vocabulary of {}", logits.size(), n_vocab_);
    if (n_prompt > history.size())
        fail("sampler: n_prompt {} exceeds the history length {}", n_prompt, history.size());
    out.assign(logits.begin(), logits.end());
    std::span<float> l(out);
    if (!params_.logit_bias.empty()) sampling::apply_logit_bias(l, params_.logit_bias);
    if (params_.repetition_penalty != 1.0f) {
        auto window = history;
        if (params_.repetition_window > 0 && window.size() > static_cast<size_t>(params_.repetition_window))
            window = window.last(static_cast<size_t>(params_.repetition_window));
        sampling::apply_repetition_penalty(l, window, params_.repetition_penalty);
    }
    sampling::apply_presence_frequency(l, history.subspan(n_prompt), params_.presence_penalty,
                                       params_.frequency_penalty);
}

void Sampler::warp(std::span<const float> logits, std::span<const int32_t> history, size_t n_prompt) {
    process(logits, history, n_prompt, scratch_);
    if (params_.temperature == 0.0f) {
        int32_t id = sampling::argmax(scratch_);
        work_.items.assign(1, Candidate{id, scratch_[static_cast<size_t>(id)], 1.0});
        work_.sorted = true;
        return;
    }
    // Temperature on the dense vector (the same float division as apply_temperature), then top-k
    // straight from it, so the default path never builds a vocabulary-sized candidate list.
    if (params_.temperature != 1.0f)
        for (float& l : scratch_) l /= params_.temperature;
    sampling::top_k_from_logits(scratch_, params_.top_k, work_);
    sampling::apply_top_p(work_, params_.top_p);
    sampling::apply_min_p(work_, params_.min_p);
    work_.normalize();
}

Candidates Sampler::distribution(std::span<const float> logits, std::span<const int32_t> history,
                                 size_t n_prompt) {
    warp(logits, history, n_prompt);
    return work_;
}

int32_t Sampler::sample(std::span<const float> logits, std::span<const int32_t> history, size_t n_prompt) {
    if (params_.temperature == 0.0f) {
        process(logits, history, n_prompt, scratch_);
        return sampling::argmax(scratch_);
    }
    warp(logits, history, n_prompt);
    return sampling::draw(work_, sampling::uniform01(rng_));
}

}  // namespace calpaca
