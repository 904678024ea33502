// The vocabulary as a byte trie, for grammar-constrained sampling: which tokens may come next.
//
// A token's bytes are what it adds to the output text (Tokenizer::token_bytes: "▁" → ' ', byte
// pieces → that byte). Tokens that add nothing (control tokens such as BOS/EOS) are not in the
// trie: EOS is handled by the caller (allowed when the grammar accepts).
//
// allowed() walks the trie depth-first, carrying the grammar state down each edge, so a prefix
// shared by many tokens is matched once and a byte the grammar refuses prunes its whole subtree.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "calpaca/serve/grammar.h"
#include "calpaca/tokenizer/tokenizer.h"

namespace calpaca::serve {

class TokenTrie {
public:
    explicit TokenTrie(const Tokenizer& tok);

    const std::string& bytes(int32_t id) const { return bytes_[static_cast<size_t>(id)]; }
    size_t n_vocab() const { return bytes_.size(); }

    // allowed[id] = 1 for every token whose bytes can follow `state` (resized to n_vocab; others 0).
    void allowed(const GrammarState& state, std::vector<uint8_t>& allowed) const;
    // One token (the fast path: checking the token the sampler picked).
    bool accepts(const GrammarState& state, int32_t id) const;

private:
    struct Node {
        uint8_t byte = 0;
        int32_t first_child = -1, next_sibling = -1;
        int32_t tokens_begin = 0, tokens_end = 0;  // range in tokens_ of the tokens ending here
    };
    void visit(int32_t node, const GrammarState& state, std::vector<uint8_t>& allowed) const;

    std::vector<std::string> bytes_;
    std::vector<Node> nodes_;
    std::vector<int32_t> tokens_;
};

}  // namespace calpaca::serve
