// SentencePiece BPE encoder/decoder. See tokenizer.h for the algorithm; the notes here are
// about how it is made fast without changing a single output id.
//
// Symbol ids. Every symbol sentencepiece can ever hold is either a mergeable piece (NORMAL,
// USER_DEFINED or UNUSED: its vocab id) or a single character. Characters that are not
// mergeable pieces but occur inside some piece get a "pseudo" id >= vocab size; any other
// character can never take part in a merge (id -1). The pair table maps (left id, right id)
// to the merged piece for every way of splitting every piece into two symbols, so a merge
// candidate is one integer hash probe instead of a substring hash.
//
// Agenda. Candidates live in a binary heap keyed by (score, -left position) packed into one
// u64, exactly sentencepiece's order (higher score first, then leftmost). Entries are
// invalidated lazily, with sentencepiece's own test: both symbols alive and their lengths
// still summing to the merged piece's length.
#include <algorithm>
#include <bit>
#include <cstring>
#include <unordered_map>

#include "calpaca/base/error.h"
#include "calpaca/base/utf8.h"
#include "calpaca/tokenizer/tokenizer.h"

namespace calpaca {

namespace {

constexpr std::string_view kSpaceSymbol = "\xE2\x96\x81";  // U+2581 "▁"
constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// Open-addressing hash map from a u64 key (never ~0) to an int32 value. Keys and values are
// kept apart so that probing touches 8 bytes per slot.
class U64Map {
public:
    void init(size_t n_expected) {
        size_t cap = 16;
        bits_ = 4;
        while (cap < n_expected * 2) {
            cap <<= 1;
            ++bits_;
        }
        keys_.assign(cap, kEmpty);
        vals_.assign(cap, -1);
        mask_ = cap - 1;
        size_ = 0;
    }
    int32_t find(uint64_t key) const {
        size_t i = index(key);
        for (;;) {
            const uint64_t k = keys_[i];
            if (k == key) return vals_[i];
            if (k == kEmpty) return -1;
            i = (i + 1) & mask_;
        }
    }
    // Inserts unless present; returns the value now stored.
    int32_t insert(uint64_t key, int32_t val) {
        if ((size_ + 1) * 2 > keys_.size()) grow();
        size_t i = index(key);
        for (;;) {
            const uint64_t k = keys_[i];
            if (k == key) return vals_[i];
            if (k == kEmpty) {
                keys_[i] = key;
                vals_[i] = val;
                ++size_;
                return val;
            }
            i = (i + 1) & mask_;
        }
    }
    size_t size() const { return size_; }

private:
    static constexpr uint64_t kEmpty = ~uint64_t{0};
    size_t index(uint64_t key) const { return static_cast<size_t>((key * 0x9E3779B97F4A7C15ULL) >> (64 - bits_)); }
    void grow() {
        std::vector<uint64_t> ok = std::move(keys_);
        std::vector<int32_t> ov = std::move(vals_);
        init(ok.size());
        for (size_t i = 0; i < ok.size(); ++i)
            if (ok[i] != kEmpty) insert(ok[i], ov[i]);
    }
    std::vector<uint64_t> keys_;
    std::vector<int32_t> vals_;
    size_t mask_ = 0;
    unsigned bits_ = 4;
    size_t size_ = 0;
};

inline uint64_t pair_key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

// The bytes of one UTF-8 character (1..4 bytes) packed into an integer key.
inline uint64_t char_key(const char* p, size_t len) {
    uint32_t k = 0;
    std::memcpy(&k, p, len);
    return k;
}

// Float score → unsigned key with the same order (−0 and +0 compare equal, as floats do).
inline uint32_t score_order(float s) {
    if (s == 0.0f) s = 0.0f;
    uint32_t b = std::bit_cast<uint32_t>(s);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

int parse_byte_piece(std::string_view p) {
    // "<0xXX>" with upper-case hex, as sentencepiece writes them.
    if (p.size() != 6 || p[0] != '<' || p[1] != '0' || p[2] != 'x' || p[5] != '>') return -1;
    auto hex = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        return -1;
    };
    int hi = hex(p[3]), lo = hex(p[4]);
    if (hi < 0 || lo < 0) return -1;
    return hi * 16 + lo;
}

inline size_t lead_len(unsigned char c) {
    // Input is validated before segmentation, so the lead byte tells the length.
    return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}

void append_replacing_space(std::string& out, std::string_view piece) {
    size_t i = 0;
    while (i < piece.size()) {
        size_t j = piece.find(kSpaceSymbol, i);
        if (j == std::string_view::npos) {
            out.append(piece.substr(i));
            break;
        }
        out.append(piece.substr(i, j - i));
        out.push_back(' ');
        i = j + kSpaceSymbol.size();
    }
}

}  // namespace

std::string sanitize_utf8(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    size_t i = 0;
    while (i < s.size()) {
        size_t bad = utf8::find_invalid(s.substr(i));
        if (bad == std::string::npos) {
            out.append(s.substr(i));
            break;
        }
        out.append(s.substr(i, bad));
        out.append(kReplacement);
        i += bad + 1;
    }
    return out;
}

// ---------------------------------------------------------------------------------------

struct Tokenizer::Impl {
    Vocab v;
    int32_t n = 0;
    std::unordered_map<std::string_view, int32_t> mergeable;  // NORMAL / USER_DEFINED / UNUSED
    std::unordered_map<std::string_view, int32_t> reserved;   // CONTROL / UNKNOWN / BYTE
    std::vector<int32_t> final_id;       // id sentencepiece reports for a mergeable piece (reserved wins)
    std::vector<uint32_t> sym_len;       // byte length of each symbol id (pieces, then pseudo chars)
    std::vector<uint32_t> sym_order;     // score_order of each piece id (0 for others)
    std::vector<std::string> pseudo;     // strings of pseudo symbols (id n + k)
    std::vector<int32_t> pseudo_final;   // piece_to_id of each pseudo symbol's string
    int32_t ascii_sym[128];
    U64Map char_sym;                     // non-ASCII character → symbol id
    U64Map pairs;                        // (left symbol, right symbol) → merged piece id
    std::vector<uint8_t> merge_side;     // per symbol: 1 = is the left of some pair, 2 = the right
    int32_t byte_id[256];
    std::vector<int16_t> byte_of;        // piece id → byte value or -1
    std::vector<uint8_t> special;        // HF all_special_ids: bos, eos, unk, pad
    bool has_unused = false;
    std::vector<std::string_view> user_defined;  // longest first
    std::vector<std::pair<std::string_view, int32_t>> specials;  // for parse_special
    bool special_first[256] = {};        // first bytes of the special strings

    explicit Impl(Vocab vocab);
    int32_t piece_to_id(std::string_view w) const {  // sentencepiece's PieceToId (unk when absent)
        if (auto it = reserved.find(w); it != reserved.end()) return it->second;
        if (auto it = mergeable.find(w); it != mergeable.end()) return it->second;
        return v.unk_id;
    }
    bool is_unknown(int32_t id) const { return id == v.unk_id || v.types[id] == TokenType::Unknown; }
    using DecodeState = TokenizerDecodeState;
    void decode_piece(DecodeState& st, std::string_view w, int32_t id, std::string& out) const;
    void encode(std::string_view text, std::vector<int32_t>& out) const;
};

Tokenizer::Impl::Impl(Vocab vocab) : v(std::move(vocab)) {
    const std::string& src = v.source.empty() ? std::string("tokenizer") : v.source;
    if (v.pieces.empty()) fail("{}: empty vocabulary", src);
    if (v.pieces.size() >= (1u << 30)) fail("{}: vocabulary too large ({} pieces)", src, v.pieces.size());
    if (v.scores.size() != v.pieces.size() || v.types.size() != v.pieces.size())
        fail("{}: vocab has {} pieces but {} scores and {} types", src, v.pieces.size(), v.scores.size(),
             v.types.size());
    n = static_cast<int32_t>(v.pieces.size());
    auto check_id = [&](const char* what, int32_t id, bool required) {
        if (id == -1 && !required) return;
        if (id < 0 || id >= n) fail("{}: {} id {} is out of range for a vocabulary of {} pieces", src, what, id, n);
    };
    check_id("unk", v.unk_id, true);
    check_id("bos", v.bos_id, false);
    check_id("eos", v.eos_id, false);
    check_id("pad", v.pad_id, false);

    mergeable.reserve(n * 2);
    std::fill(std::begin(byte_id), std::end(byte_id), -1);
    byte_of.assign(n, -1);
    for (int32_t i = 0; i < n; ++i) {
        const std::string& p = v.pieces[i];
        if (p.empty()) fail("{}: piece {} is empty", src, i);
        const TokenType t = v.types[i];
        if (static_cast<int32_t>(t) < 1 || static_cast<int32_t>(t) > 6)
            fail("{}: piece {} ('{}') has invalid type {}", src, i, p, static_cast<int32_t>(t));
        const bool is_normal = t == TokenType::Normal || t == TokenType::UserDefined || t == TokenType::Unused;
        auto& map = is_normal ? mergeable : reserved;
        auto [it, fresh] = map.emplace(std::string_view(p), i);
        if (!fresh) fail("{}: piece '{}' is defined twice (ids {} and {})", src, p, it->second, i);
        if (t == TokenType::Unused) has_unused = true;
        if (t == TokenType::UserDefined) user_defined.push_back(p);
        if (t == TokenType::Byte) {
            int b = parse_byte_piece(p);
            if (b < 0) fail("{}: byte piece {} is '{}', expected <0xXX>", src, i, p);
            if (byte_id[b] < 0) byte_id[b] = i;
            byte_of[i] = static_cast<int16_t>(b);
        }
    }
    if (v.byte_fallback) {
        for (int b = 0; b < 256; ++b)
            if (byte_id[b] < 0)
                fail("{}: byte_fallback is on but the byte piece <0x{:02X}> is missing (all 256 are required)", src, b);
    }
    std::sort(user_defined.begin(), user_defined.end(),
              [](std::string_view a, std::string_view b) { return a.size() > b.size(); });

    final_id.resize(n);
    sym_len.resize(n);
    sym_order.assign(n, 0);
    for (int32_t i = 0; i < n; ++i) {
        final_id[i] = piece_to_id(v.pieces[i]);
        sym_len[i] = static_cast<uint32_t>(v.pieces[i].size());
        sym_order[i] = score_order(v.scores[i]);
    }

    // Character symbols: mergeable single-character pieces keep their id; characters that only
    // occur inside pieces get pseudo ids as the pair table is built.
    std::fill(std::begin(ascii_sym), std::end(ascii_sym), -1);
    char_sym.init(4096);
    auto one_char = [](std::string_view s) {
        if (s.empty()) return false;
        size_t l = utf8::sequence_length(static_cast<unsigned char>(s[0]));
        return l == s.size() && utf8::is_valid(s);
    };
    for (const auto& [p, id] : mergeable)
        if (one_char(p)) {
            if (p.size() == 1) ascii_sym[static_cast<unsigned char>(p[0])] = id;
            else char_sym.insert(char_key(p.data(), p.size()), id);
        }
    auto char_symbol = [&](std::string_view c) -> int32_t {  // allocates a pseudo id when needed
        if (c.size() == 1) {
            int32_t& s = ascii_sym[static_cast<unsigned char>(c[0])];
            if (s < 0) {
                s = n + static_cast<int32_t>(pseudo.size());
                pseudo.emplace_back(c);
                sym_len.push_back(1);
            }
            return s;
        }
        int32_t want = n + static_cast<int32_t>(pseudo.size());
        int32_t got = char_sym.insert(char_key(c.data(), c.size()), want);
        if (got == want) {
            pseudo.emplace_back(c);
            sym_len.push_back(static_cast<uint32_t>(c.size()));
        }
        return got;
    };

    std::vector<std::pair<uint64_t, int32_t>> pair_list;
    std::vector<std::string_view> chars;
    for (int32_t id = 0; id < n; ++id) {
        const TokenType t = v.types[id];
        if (!(t == TokenType::Normal || t == TokenType::UserDefined || t == TokenType::Unused)) continue;
        const std::string& p = v.pieces[id];
        if (!utf8::is_valid(p)) continue;  // can never be produced from (validated) text
        chars.clear();
        utf8::split_chars(p, chars);
        if (chars.size() < 2) continue;
        size_t k = 0;
        for (size_t c = 0; c + 1 < chars.size(); ++c) {
            k += chars[c].size();
            std::string_view a(p.data(), k), b(p.data() + k, p.size() - k);
            int32_t sa, sb;
            if (auto it = mergeable.find(a); it != mergeable.end()) sa = it->second;
            else if (c == 0) sa = char_symbol(a);
            else continue;
            if (auto it = mergeable.find(b); it != mergeable.end()) sb = it->second;
            else if (c + 2 == chars.size()) sb = char_symbol(b);
            else continue;
            pair_list.emplace_back(pair_key(sa, sb), id);
        }
    }
    // Single-character reserved pieces (none in LLaMA vocabs) also get a symbol id, so that a
    // character with no symbol id is known to be unknown without a string lookup.
    for (const auto& [p, id] : reserved)
        if (one_char(p) && !mergeable.count(p)) char_symbol(p);
    pseudo_final.resize(pseudo.size());
    for (size_t k = 0; k < pseudo.size(); ++k) pseudo_final[k] = piece_to_id(pseudo[k]);
    pairs.init(pair_list.size());
    merge_side.assign(sym_len.size(), 0);
    for (const auto& [key, id] : pair_list) {
        pairs.insert(key, id);
        merge_side[key >> 32] |= 1;
        merge_side[key & 0xFFFFFFFFu] |= 2;
    }

    special.assign(n, 0);
    for (int32_t id : {v.bos_id, v.eos_id, v.unk_id, v.pad_id})
        if (id >= 0) special[id] = 1;
    for (int32_t id : {v.bos_id, v.eos_id, v.unk_id, v.pad_id}) {
        if (id < 0) continue;
        std::string_view s = v.pieces[id];
        bool dup = false;
        for (auto& [t, _] : specials) dup |= t == s;
        if (!dup) {
            specials.emplace_back(s, id);
            special_first[static_cast<unsigned char>(s[0])] = true;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Encoding

namespace {

struct Symbol {
    int32_t sym;    // symbol id (piece id or pseudo id), -1: never merges, <= -2: frozen piece -2-sym
    int32_t prev;
    int32_t next;
    uint32_t pos;   // byte offset in the normalized text
    uint32_t len;   // byte length; 0 once merged into its left neighbour
};

struct Candidate {
    uint64_t key;   // score_order << 32 | (~left)
    int32_t right;
    int32_t merged;
};

struct Scratch {
    std::string norm;
    std::vector<Symbol> syms;
    std::vector<Candidate> heap;
    std::unordered_map<int32_t, std::pair<int32_t, int32_t>> rev_merge;
};

thread_local Scratch tls_scratch;

inline bool heap_less(const Candidate& a, const Candidate& b) { return a.key < b.key; }

}  // namespace

void Tokenizer::Impl::encode(std::string_view text, std::vector<int32_t>& out) const {
    if (text.empty()) return;
    if (text.size() >= (1u << 30)) fail("encode: text too long ({} bytes; split it)", text.size());
    if (size_t bad = utf8::find_invalid(text); bad != std::string::npos)
        fail("encode: invalid UTF-8 at byte offset {} (byte 0x{:02X})", bad, static_cast<unsigned char>(text[bad]));

    Scratch& S = tls_scratch;
    // --- normalize: dummy prefix, ' ' → "▁" (identity normalizer otherwise)
    std::string& norm = S.norm;
    norm.clear();
    if (v.remove_extra_whitespaces) {
        size_t b = text.find_first_not_of(' ');
        if (b == std::string_view::npos) return;
        size_t e = text.find_last_not_of(' ');
        text = text.substr(b, e - b + 1);
    }
    norm.reserve(text.size() * 3 + 3);
    if (v.add_dummy_prefix) norm.append(kSpaceSymbol);
    {
        bool prev_space = false;
        for (char c : text) {
            if (c == ' ') {
                if (v.remove_extra_whitespaces && prev_space) continue;
                norm.append(kSpaceSymbol);
                prev_space = true;
            } else {
                norm.push_back(c);
                prev_space = false;
            }
        }
    }

    if (v.remove_extra_whitespaces) {
        // sentencepiece trims trailing "▁" after escaping, literal U+2581 characters included
        while (norm.size() >= kSpaceSymbol.size() && std::string_view(norm).ends_with(kSpaceSymbol))
            norm.resize(norm.size() - kSpaceSymbol.size());
        if (norm.empty()) return;
    }

    // --- split into characters (user-defined pieces first, frozen)
    std::vector<Symbol>& syms = S.syms;
    syms.clear();
    const char* base = norm.data();
    const size_t nb = norm.size();
    size_t i = 0;
    while (i < nb) {
        Symbol s;
        s.pos = static_cast<uint32_t>(i);
        size_t len = 0;
        if (!user_defined.empty()) {
            for (std::string_view u : user_defined)
                if (u.size() <= nb - i && std::memcmp(base + i, u.data(), u.size()) == 0) {
                    len = u.size();
                    s.sym = -2 - mergeable.at(u);
                    break;
                }
        }
        if (len == 0) {
            const unsigned char c = static_cast<unsigned char>(base[i]);
            if (c < 0x80) {
                len = 1;
                s.sym = ascii_sym[c];
            } else {
                len = lead_len(c);
                s.sym = char_sym.find(char_key(base + i, len));
            }
        }
        s.len = static_cast<uint32_t>(len);
        const int32_t idx = static_cast<int32_t>(syms.size());
        s.prev = idx - 1;
        i += len;
        s.next = i < nb ? idx + 1 : -1;
        syms.push_back(s);
    }

    // --- merge
    std::vector<Candidate>& heap = S.heap;
    heap.clear();
    if (has_unused) S.rev_merge.clear();
    Symbol* sy = syms.data();
    auto try_add = [&](int32_t left, int32_t right) {
        if (left < 0 || right < 0) return;
        const int32_t a = sy[left].sym, b = sy[right].sym;
        if (a < 0 || b < 0 || !(merge_side[a] & 1) || !(merge_side[b] & 2)) return;
        const int32_t m = pairs.find(pair_key(a, b));
        if (m < 0) return;
        heap.push_back(Candidate{(static_cast<uint64_t>(sym_order[m]) << 32) | (0xFFFFFFFFu - static_cast<uint32_t>(left)),
                                 right, m});
        std::push_heap(heap.begin(), heap.end(), heap_less);
        if (has_unused && v.types[m] == TokenType::Unused) S.rev_merge[m] = {a, b};
    };
    const int32_t n_sym = static_cast<int32_t>(syms.size());
    for (int32_t k = 1; k < n_sym; ++k) try_add(k - 1, k);
    while (!heap.empty()) {
        std::pop_heap(heap.begin(), heap.end(), heap_less);
        const Candidate top = heap.back();
        heap.pop_back();
        const int32_t left = static_cast<int32_t>(0xFFFFFFFFu - static_cast<uint32_t>(top.key));
        Symbol& L = sy[left];
        Symbol& R = sy[top.right];
        if (L.len == 0 || R.len == 0 || L.len + R.len != sym_len[top.merged]) continue;
        L.len += R.len;
        L.sym = top.merged;
        L.next = R.next;
        if (R.next >= 0) sy[R.next].prev = left;
        R.len = 0;
        try_add(L.prev, left);
        try_add(left, L.next);
    }

    // --- output
    bool prev_unk = false;
    auto emit = [&](std::string_view w, int32_t id) {
        const bool unk = is_unknown(id);
        if (unk && v.byte_fallback) {
            for (unsigned char b : w) out.push_back(byte_id[b]);
        } else if (!(unk && prev_unk)) {
            out.push_back(id);  // a run of unknown symbols becomes one <unk>
        }
        prev_unk = unk;
    };
    // UNUSED pieces are split back into the symbols they were merged from.
    auto sym_string = [&](int32_t s) -> std::string_view {
        return s < n ? std::string_view(v.pieces[s]) : std::string_view(pseudo[s - n]);
    };
    auto resegment = [&](auto&& self, int32_t s) -> void {
        std::string_view w = sym_string(s);
        const int32_t id = s < n ? final_id[s] : piece_to_id(w);
        if (v.types[id] == TokenType::Unused) {
            auto it = S.rev_merge.find(s);
            if (it != S.rev_merge.end()) {
                self(self, it->second.first);
                self(self, it->second.second);
                return;
            }
        }
        emit(w, id);
    };
    for (int32_t k = 0; k >= 0 && k < n_sym; k = sy[k].next) {
        const Symbol& s = sy[k];
        std::string_view w(base + s.pos, s.len);
        int32_t id;
        if (s.sym >= 0 && s.sym < n) {
            id = final_id[s.sym];
            if (has_unused && v.types[id] == TokenType::Unused) {
                resegment(resegment, s.sym);
                continue;
            }
        } else if (s.sym >= n) {
            id = pseudo_final[s.sym - n];
        } else if (s.sym <= -2) {
            id = final_id[-2 - s.sym];
        } else {
            id = v.unk_id;  // a character that is no piece at all
        }
        emit(w, id);
    }
    if (norm.capacity() > (64u << 20)) {  // do not keep a huge buffer alive per thread
        std::string().swap(S.norm);
        std::vector<Symbol>().swap(S.syms);
        std::vector<Candidate>().swap(S.heap);
    }
}

// ---------------------------------------------------------------------------------------

Tokenizer::Tokenizer(Vocab v) : impl_(std::make_shared<const Impl>(std::move(v))) {}

const Vocab& Tokenizer::vocab() const { return impl_->v; }

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
    std::vector<int32_t> out;
    out.reserve(text.size() / 2 + 4);
    impl_->encode(text, out);
    return out;
}

void Tokenizer::encode_into(std::string_view text, std::vector<int32_t>& out) const { impl_->encode(text, out); }

std::vector<int32_t> Tokenizer::encode(std::string_view text, const Options& o) const {
    const Impl& I = *impl_;
    std::vector<int32_t> out;
    out.reserve(text.size() / 2 + 4);
    if (o.add_bos && I.v.bos_id >= 0) out.push_back(I.v.bos_id);
    if (!o.parse_special) {
        I.encode(text, out);
    } else {
        // HF's added-token trie: the earliest match wins, the longest among those starting there.
        size_t start = 0, pos = 0;
        while (pos < text.size()) {
            if (!I.special_first[static_cast<unsigned char>(text[pos])]) {
                ++pos;
                continue;
            }
            size_t best_len = 0;
            int32_t best_id = -1;
            for (const auto& [s, id] : I.specials)
                if (s.size() > best_len && text.compare(pos, s.size(), s) == 0) {
                    best_len = s.size();
                    best_id = id;
                }
            if (best_len == 0) {
                ++pos;
                continue;
            }
            if (pos > start) I.encode(text.substr(start, pos - start), out);
            out.push_back(best_id);
            pos += best_len;
            start = pos;
        }
        if (start < text.size()) I.encode(text.substr(start), out);
    }
    if (o.add_eos && I.v.eos_id >= 0) out.push_back(I.v.eos_id);
    return out;
}

// ---------------------------------------------------------------------------------------
// Decoding

const std::string& Tokenizer::piece(int32_t id) const {
    if (id < 0 || id >= impl_->n)
        fail("token id {} is out of range for a vocabulary of {} tokens", id, impl_->n);
    return impl_->v.pieces[id];
}

TokenType Tokenizer::type(int32_t id) const {
    piece(id);
    return impl_->v.types[id];
}

float Tokenizer::score(int32_t id) const {
    piece(id);
    return impl_->v.scores[id];
}

bool Tokenizer::is_special(int32_t id) const {
    piece(id);
    return impl_->special[id] != 0;
}

int32_t Tokenizer::byte_value(int32_t id) const {
    piece(id);
    return impl_->byte_of[id];
}

int32_t Tokenizer::piece_to_id(std::string_view p) const {
    const Impl& I = *impl_;
    if (auto it = I.reserved.find(p); it != I.reserved.end()) return it->second;
    if (auto it = I.mergeable.find(p); it != I.mergeable.end()) return it->second;
    return -1;
}

std::string Tokenizer::token_bytes(int32_t id) const {
    const std::string& p = piece(id);
    const Impl& I = *impl_;
    switch (I.v.types[id]) {
        case TokenType::Control: return {};
        case TokenType::Unknown: return I.v.unk_surface;
        case TokenType::Byte: return std::string(1, static_cast<char>(I.byte_of[id]));
        default: break;
    }
    std::string out;
    append_replacing_space(out, p);
    return out;
}

// sentencepiece's Decode(pieces), one piece at a time. Byte pieces are appended raw and the
// caller sanitizes the finished text: every other piece's text is valid UTF-8 starting at a
// character boundary, so sanitizing the whole equals sentencepiece's per-run treatment.
void Tokenizer::Impl::decode_piece(DecodeState& st, std::string_view w, int32_t id, std::string& out) const {
    const TokenType t = v.types[id];
    if (t == TokenType::Byte) {
        out.push_back(static_cast<char>(byte_of[id]));
        st.emitted = true;
        return;
    }
    if (st.bos_ws_seen || st.emitted) st.is_bos_ws = false;
    st.bos_ws_seen = false;
    if (t == TokenType::Control) return;
    const size_t before = out.size();
    if (t == TokenType::Unknown) {
        // <unk> prints as unk_surface; any other string that is not a piece, verbatim.
        out.append(w == std::string_view(v.pieces[id]) ? std::string_view(v.unk_surface) : w);
    } else {
        if (st.is_bos_ws && (v.add_dummy_prefix || v.remove_extra_whitespaces) && w.starts_with(kSpaceSymbol)) {
            w.remove_prefix(kSpaceSymbol.size());
            st.bos_ws_seen = !v.remove_extra_whitespaces;
        }
        append_replacing_space(out, w);
    }
    if (out.size() > before) st.emitted = true;
}

std::string Tokenizer::decode_spm(const std::vector<int32_t>& ids) const {
    const Impl& I = *impl_;
    std::string text;
    Impl::DecodeState st;
    for (int32_t id : ids) I.decode_piece(st, piece(id), id, text);
    return sanitize_utf8(text);
}

// HF's slow LlamaTokenizer (transformers 4.35, legacy=True), _decode + convert_tokens_to_string:
//   tokens = pieces of ids (without bos/eos/unk/pad when skip_special);
//   if tokens[0] starts with "▁": drop that "▁" (on top of sentencepiece's own dummy-prefix strip);
//   runs of ordinary tokens go through sp_model.decode(pieces) one run at a time; a special token
//   is written as its string, preceded by " " unless it is first or follows another special.
std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
    const Impl& I = *impl_;
    std::vector<std::string_view> tokens;
    tokens.reserve(ids.size());
    for (int32_t id : ids) {
        const std::string& p = piece(id);
        if (skip_special && I.special[id]) continue;
        tokens.emplace_back(p);
    }
    if (tokens.empty()) return {};
    if (tokens[0].starts_with(kSpaceSymbol)) tokens[0].remove_prefix(kSpaceSymbol.size());
    auto is_special_str = [&](std::string_view t) {
        for (const auto& [s, _] : I.specials)
            if (s == t) return true;
        return false;
    };
    std::string out, run;
    Impl::DecodeState st;
    bool prev_special = false;
    for (size_t i = 0; i < tokens.size(); ++i) {
        if (!skip_special && is_special_str(tokens[i])) {
            if (!prev_special && i != 0) out.push_back(' ');
            out += sanitize_utf8(run);
            out.append(tokens[i]);
            run.clear();
            st = Impl::DecodeState{};
            prev_special = true;
        } else {
            I.decode_piece(st, tokens[i], I.piece_to_id(tokens[i]), run);
            prev_special = false;
        }
    }
    out += sanitize_utf8(run);
    return out;
}

// ---------------------------------------------------------------------------------------

StreamDecoder::StreamDecoder(const Tokenizer& t, bool strip_leading_space)
    : impl_(t.impl_), strip_(strip_leading_space) {}

std::string StreamDecoder::push(int32_t id) {
    const Tokenizer::Impl& I = *impl_;
    if (id < 0 || id >= I.n) fail("token id {} is out of range for a vocabulary of {} tokens", id, I.n);
    if (I.special[id]) return {};
    std::string_view w = I.v.pieces[id];
    if (!strip_) {
        st_.is_bos_ws = false;  // keep every space
    } else if (!started_ && w.starts_with(kSpaceSymbol)) {
        w.remove_prefix(kSpaceSymbol.size());  // HF drops the first token's "▁" (see decode())
        id = I.piece_to_id(w);
    }
    I.decode_piece(st_, w, id, pending_);
    started_ = true;
    const size_t k = utf8::complete_prefix(pending_);
    if (k == 0) return {};
    std::string out = sanitize_utf8(std::string_view(pending_).substr(0, k));
    pending_.erase(0, k);
    return out;
}

std::string StreamDecoder::flush() {
    std::string out = sanitize_utf8(pending_);
    pending_.clear();
    started_ = false;
    st_ = {};
    return out;
}

}  // namespace calpaca
