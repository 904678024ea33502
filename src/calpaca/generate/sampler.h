// Token sampling: the logits → token id step of generation, mirroring Hugging Face
// `generate(do_sample=True)` (plus the vLLM/OpenAI presence and frequency penalties).
//
// Pipeline, in this exact order (seed-features §4.2):
//
//   processors (on the dense logit vector, also applied in greedy mode)
//     1. logit_bias             logit[id] += bias
//     2. repetition penalty     for every DISTINCT id in the window: l < 0 ? l * p : l / p   (HF)
//     3. presence / frequency   l -= presence * (count > 0) + frequency * count, counts over the
//                               generated tokens only (OpenAI / vLLM semantics)
//   greedy: temperature == 0 → argmax of the processed logits (ties → lowest id); nothing below runs.
//   warpers (on a candidate list; tokens whose logit is -inf are never candidates)
//     4. temperature            l /= T
//     5. top-k                  keep the k largest (0 = off). HF keeps every token whose logit is
//                               >= the k-th largest logit (`scores < topk(scores,k)[-1]` is removed),
//                               so ties at the boundary are ALL kept; we do the same.
//     6. top-p                  HF TopPLogitsWarper: sorted ascending, a token is removed when the
//                               cumulative softmax up to and including it is <= 1 - top_p; at least
//                               one token is always kept; top_p >= 1 disables it.
//     7. min-p                  drop tokens with prob < min_p * max prob (0 = off; the best token stays).
//     8. softmax + multinomial  one uniform double u in [0,1) from std::mt19937_64 (seeded by
//                               `seed`), walked against the cumulative distribution in candidate
//                               order: descending probability (ties → lower id) when top-k or top-p
//                               ran, token-id order otherwise. Same seed + same logits → same token.
//
// Cost on a 55296-token vocabulary with the defaults (top_k 40): about 50 µs per token on one
// core (a heap finds the 40th value; no vocabulary-sized sort or candidate list). Without top-k,
// top-p uses a mass-weighted quickselect and sorts only the nucleus.
//
// Tie-breaking everywhere: "larger logit first, then lower id first". This is the order of a sorted
// candidate list, the order top-p's ascending cumulative sum runs in reverse, and the argmax rule.
// All probability arithmetic is in double (HF uses float32; results agree except where a boundary
// falls within float32 rounding error).
#pragma once
#include <cstddef>
#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace calpaca {

struct SamplingParams {
    float temperature = 0.2f;        // 0 → greedy (argmax). Must be >= 0 and finite.
    int top_k = 40;                  // 0 → disabled. Must be >= 0.
    float top_p = 0.9f;              // >= 1 → disabled. Must be in [0, 1].
    float min_p = 0.0f;              // 0 → disabled. Must be in [0, 1].
    float repetition_penalty = 1.1f; // 1 → disabled. Must be > 0 (HF rule).
    int repetition_window = 0;       // last N tokens of prompt+generated; 0 = all of them. >= 0.
    float presence_penalty = 0.0f;   // OpenAI/vLLM range [-2, 2]; over generated tokens only.
    float frequency_penalty = 0.0f;  // OpenAI/vLLM range [-2, 2]; over generated tokens only.
    uint64_t seed = 0;
    bool has_seed = false;           // false → the Sampler seeds itself from std::random_device.
    // (token id, bias) added to the raw logits. A bias may be -inf (bans the token); NaN and +inf
    // are rejected. Ids are checked against the vocabulary by the Sampler constructor.
    std::vector<std::pair<int32_t, float>> logit_bias;

    // Throws Error naming the first bad parameter, e.g. "temperature must be >= 0, got -1".
    void validate() const;
    // validate() plus: every logit_bias id is in [0, n_vocab).
    void validate(size_t n_vocab) const;
    // One-line summary for logs: "temp=0.2 top_k=40 top_p=0.9 ...".
    std::string describe() const;
};

// One entry of a candidate list.
struct Candidate {
    int32_t id;
    float logit;
    double prob = 0.0;  // filled by Candidates::normalize()
};

// The working set of the warpers. Either in token-id order (as built from a logit vector) or,
// once `sorted` is set, in descending logit order with ties broken by lower id first.
struct Candidates {
    std::vector<Candidate> items;
    bool sorted = false;

    // Every token whose logit is not -inf, in id order. Throws Error on NaN or +inf logits.
    static Candidates from_logits(std::span<const float> logits);
    // The same, reusing this list's storage.
    void assign(std::span<const float> logits);
    // Sorts the whole list (descending logit, then ascending id) unless already sorted.
    void sort();
    // Fills `prob` with the softmax of the logits (computed in double). Throws Error if empty.
    void normalize();
    size_t size() const { return items.size(); }
};

// The exposed pipeline steps. Each one works alone, so tests (and speculative sampling, which
// needs the full processed distribution) can call them directly.
namespace sampling {

// 1. logit[id] += bias for every (id, bias). Ids must be in range (Error otherwise).
void apply_logit_bias(std::span<float> logits, const std::vector<std::pair<int32_t, float>>& bias);

// 2. HF RepetitionPenaltyLogitsProcessor: for each distinct id in `window`,
//    logit = logit < 0 ? logit * penalty : logit / penalty. penalty == 1 is a no-op.
void apply_repetition_penalty(std::span<float> logits, std::span<const int32_t> window, float penalty);

// 3. vLLM/OpenAI: logit -= presence * (count > 0) + frequency * count, counts over `generated`.
void apply_presence_frequency(std::span<float> logits, std::span<const int32_t> generated,
                              float presence, float frequency);

// Greedy: index of the largest logit, ties → lowest id. Throws Error if every logit is -inf or
// any logit is NaN.
int32_t argmax(std::span<const float> logits);

// 4. logit /= temperature (temperature > 0; order is unchanged).
void apply_temperature(Candidates& c, float temperature);

// 5. Keep the tokens whose logit is >= the k-th largest logit (so boundary ties are all kept);
//    leaves the list sorted. k <= 0 or k >= size is a no-op (the list keeps its order).
//    Cost: O(n + m log m) with m the number kept (nth_element, then sorting only the survivors).
void apply_top_k(Candidates& c, int k);

// 5'. Candidates::assign(logits) followed by apply_top_k(k), computed without building the full
//    candidate list (the k-th largest of the maxima of blocks of 64 bounds the k-th value from
//    below; one scan collects the values at or above that bound, and the k-th value is found
//    among them). Same survivors; they always come out sorted (also when fewer than k tokens are
//    finite).
void top_k_from_logits(std::span<const float> logits, int k, Candidates& out);

// 6. HF top-p on the softmax of the current logits. Equivalent formulation used here: in sorted
//    (descending) order, keep a token iff the probability mass strictly before it is < top_p.
//    top_p >= 1 is a no-op. On an unsorted list it finds the cut with a mass-weighted quickselect
//    (O(n) expected) and sorts only the survivors, so it never sorts the whole vocabulary unless
//    the whole vocabulary survives. Leaves the list sorted.
void apply_top_p(Candidates& c, float top_p);

// 7. Drop tokens with prob < min_p * max prob, i.e. logit < max_logit + log(min_p). min_p <= 0 is
//    a no-op. Preserves the list's order; the largest token always stays.
void apply_min_p(Candidates& c, float min_p);

// The uniform double in [0, 1) used for a draw: the top 53 bits of one mt19937_64 output,
// (rng() >> 11) * 2^-53. Written out so results do not depend on the standard library's
// uniform_real_distribution.
double uniform01(std::mt19937_64& rng);

// 8. Multinomial draw over c (which must be normalize()d): walks the list in its current order
//    and returns the first candidate whose cumulative probability exceeds u. If rounding leaves u
//    beyond the total, the last candidate with nonzero probability is returned.
int32_t draw(const Candidates& c, double u);

}  // namespace sampling

class Sampler {
public:
    // Validates the parameters against n_vocab (throws Error) and seeds the generator.
    Sampler(SamplingParams p, size_t n_vocab);

    // Samples the next token. `logits` has n_vocab entries; `history` = prompt + generated ids so
    // far, of which the first `n_prompt` are the prompt (the repetition penalty looks at the last
    // `repetition_window` of all of them; presence/frequency only at history[n_prompt:]).
    // Consumes exactly one uniform01() draw from the generator when sampling, none when greedy, so
    // same seed + same logit sequence → same tokens.
    int32_t sample(std::span<const float> logits, std::span<const int32_t> history, size_t n_prompt);

    // Steps 1–7 (with normalize()): the distribution `sample` draws from. In greedy mode it is the
    // argmax alone with probability 1.
    Candidates distribution(std::span<const float> logits, std::span<const int32_t> history,
                            size_t n_prompt);

    // Steps 1–3 only, into `out` (resized to n_vocab): the processed logits.
    void process(std::span<const float> logits, std::span<const int32_t> history, size_t n_prompt,
                 std::vector<float>& out) const;

    const SamplingParams& params() const { return params_; }
    size_t n_vocab() const { return n_vocab_; }
    // The seed actually in use (the given one, or the one drawn from std::random_device).
    uint64_t seed() const { return seed_; }
    // Restarts the generator from `seed`.
    void reseed(uint64_t seed);
    std::mt19937_64& rng() { return rng_; }

private:
    SamplingParams params_;
    size_t n_vocab_;
    uint64_t seed_ = 0;
    std::mt19937_64 rng_;
    std::vector<float> scratch_;
    Candidates work_;

    void warp(std::span<const float> logits, std::span<const int32_t> history, size_t n_prompt);
};

}  // namespace calpaca
