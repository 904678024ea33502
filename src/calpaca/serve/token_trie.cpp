#include "calpaca/serve/token_trie.h"

#include <algorithm>
#include <numeric>

namespace calpaca::serve {

TokenTrie::TokenTrie(const Tokenizer& tok) {
    const int32_t n = static_cast<int32_t>(tok.size());
    bytes_.resize(static_cast<size_t>(n));
    for (int32_t i = 0; i < n; ++i) bytes_[i] = tok.token_bytes(i);
    // Sort the non-empty tokens by their bytes and build the trie from the sorted list: each
    // node's children then come out in byte order and every node's tokens are contiguous.
    std::vector<int32_t> order;
    for (int32_t i = 0; i < n; ++i)
        if (!bytes_[i].empty()) order.push_back(i);
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return bytes_[a] < bytes_[b]; });
    nodes_.push_back(Node{});  // root
    std::vector<int32_t> path{0};     // path[d] = node for the first d bytes of the previous token
    std::vector<int32_t> last_child;  // per node: its last child (to append siblings)
    last_child.push_back(-1);
    std::string prev;
    for (int32_t id : order) {
        const std::string& s = bytes_[id];
        size_t common = 0;
        while (common < s.size() && common < prev.size() && s[common] == prev[common]) ++common;
        path.resize(common + 1);
        for (size_t d = common; d < s.size(); ++d) {
            const int32_t parent = path[d];
            Node child;
            child.byte = static_cast<uint8_t>(s[d]);
            const int32_t idx = static_cast<int32_t>(nodes_.size());
            nodes_.push_back(child);
            last_child.push_back(-1);
            if (last_child[parent] < 0)
                nodes_[parent].first_child = idx;
            else
                nodes_[last_child[parent]].next_sibling = idx;
            last_child[parent] = idx;
            path.push_back(idx);
        }
        Node& end = nodes_[path[s.size()]];
        if (end.tokens_begin == end.tokens_end) end.tokens_begin = end.tokens_end = static_cast<int32_t>(tokens_.size());
        tokens_.push_back(id);
        end.tokens_end = static_cast<int32_t>(tokens_.size());
        prev = s;
    }
}

void TokenTrie::visit(int32_t node, const GrammarState& state, std::vector<uint8_t>& allowed) const {
    const std::bitset<256> next = state.next_bytes();
    for (int32_t c = nodes_[node].first_child; c >= 0; c = nodes_[c].next_sibling) {
        const Node& ch = nodes_[c];
        if (!next.test(ch.byte)) continue;
        GrammarState s = state;
        if (!s.feed(ch.byte)) continue;
        for (int32_t i = ch.tokens_begin; i < ch.tokens_end; ++i) allowed[static_cast<size_t>(tokens_[i])] = 1;
        if (ch.first_child >= 0) visit(c, s, allowed);
    }
}

void TokenTrie::allowed(const GrammarState& state, std::vector<uint8_t>& allowed) const {
    allowed.assign(bytes_.size(), 0);
    if (!state.can_continue()) return;
    visit(0, state, allowed);
}

bool TokenTrie::accepts(const GrammarState& state, int32_t id) const {
    if (id < 0 || static_cast<size_t>(id) >= bytes_.size() || bytes_[id].empty()) return false;
    GrammarState s = state;
    return s.feed(bytes_[id]);
}

}  // namespace calpaca::serve
