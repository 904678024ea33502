// Several independent sequences ("slots") over one Model, evaluated together.
//
// Each slot has its own KV cache of n_ctx positions. One forward() takes any mix of slots and
// token runs (a prompt chunk for one slot, a single decode token for others...), stacks all their
// tokens into one activation matrix and runs every weight matrix once over all of them: the
// weights are read from memory once per step however many sequences are active, which is what
// makes continuous batching pay off on a memory-bound CPU. Attention stays per slot (each token
// attends only to its own slot's cache, causally).
//
// Per slot the arithmetic is the same as Session's fast path (same kernels, same order), so each
// slot's logits equal a single-sequence Session fed the same tokens (tests/unit/test_serve_multi_session.cpp).
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "calpaca/model/model.h"

namespace calpaca {

class ThreadPool;

struct MultiSessionOptions {
    int n_slots = 1;
    int64_t n_ctx = 0;           // per slot; 0 = min(model context, 2048)
    DType kv_type = DType::F16;  // F16 or F32
};

class MultiSession {
public:
    enum class Output { None, Last, All };  // which rows of an item get logits
    struct Item {
        int slot = 0;
        std::span<const int32_t> tokens;   // appended at the slot's n_past
        Output logits = Output::Last;
        bool hidden = false;               // every row's final hidden state (embeddings)
    };

    MultiSession(const Model& m, MultiSessionOptions o, ThreadPool* pool);

    // Evaluates all items in one pass. A slot may appear at most once; every item needs tokens;
    // the slot's context must have room. Throws Error (naming the slot) before touching any cache.
    void forward(std::span<const Item> items);

    // Results of the last forward(): logits row `row` of item i (Last: row 0; All: 0..n-1), and
    // the final-norm hidden state of token `row` of item i, for the rows the last layer ran for
    // (every row of an item with hidden or Output::All, the last row with Output::Last: past its
    // K and V the last layer runs for those rows only, as Session's).
    const float* logits(size_t item, int64_t row = 0) const;
    const float* hidden(size_t item, int64_t row) const;

    int64_t n_past(int slot) const;
    // Forget positions >= n of a slot (n <= n_past): reuse of a cached prefix.
    void truncate(int slot, int64_t n);
    int64_t n_ctx() const { return n_ctx_; }
    int n_slots() const { return static_cast<int>(n_past_.size()); }
    const Model& model() const { return model_; }
    // Bytes held by the KV caches of all slots.
    size_t kv_bytes() const { return k_cache_.size() + v_cache_.size(); }

private:
    uint8_t* k_at(int slot, int64_t layer, int64_t pos);
    uint8_t* v_at(int slot, int64_t layer, int64_t pos);
    void rope(float* x, int64_t n_heads) const;
    void attention(int64_t layer, const float* q, float* out);

    const Model& model_;
    const LlamaConfig& cfg_;
    ThreadPool* pool_;
    DType kv_type_;
    size_t kv_elem_;
    int64_t n_ctx_;
    std::vector<int64_t> n_past_;
    std::vector<uint8_t> k_cache_, v_cache_;  // [slot][layer][pos][n_embd_kv]
    std::vector<float> inv_freq_;

    // per-forward state
    int64_t n_rows_ = 0;
    std::vector<int32_t> row_slot_;
    std::vector<int64_t> row_pos_;
    std::vector<int64_t> item_first_row_, item_logit_row_;  // first token row; first logits row
    // per item: its first row among the rows the last layer ran for (kept rows, in row order),
    // and whether all its rows are kept (else only its last, or none)
    std::vector<int64_t> item_kept_row_, item_rows_;
    std::vector<uint8_t> item_kept_all_;
    std::vector<int64_t> kept_;  // kept rows
    std::vector<float> x_, xn_, q_, k_, v_, att_, tmp_, g_, u_, hidden_, gathered_, logits_;
};

}  // namespace calpaca
