// Byte-level context-free grammars and an incremental matcher: the engine behind
// `response_format` json_object / json_schema (grammar-constrained sampling).
//
// A Grammar is a set of rules; each rule is a list of alternatives; each alternative is a
// sequence of elements, either a byte set (matches one byte) or a reference to a rule. Grammars
// here are built by code (GrammarBuilder, json_grammar.h), never parsed from text, and never
// left-recursive; repetition is right recursion, which the matcher runs in constant stack depth
// (a reference in the last position of an alternative replaces its caller's frame).
//
// GrammarState is the set of parse stacks consistent with the bytes fed so far (the grammar may
// be ambiguous, e.g. anyOf alternatives that share a prefix). feed() advances every stack by one
// byte and drops those that cannot; an empty set means the bytes are not a prefix of any
// sentence. accepting() says the bytes so far are a complete sentence.
#pragma once
#include <bitset>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace calpaca::serve {

struct Grammar {
    enum Kind : uint8_t { kEnd, kBytes, kRef };
    struct Elem {
        Kind kind = kEnd;
        int32_t arg = 0;  // kBytes: index into sets; kRef: rule index
    };
    std::vector<Elem> code;                        // alternatives, each ended by kEnd
    std::vector<std::bitset<256>> sets;
    std::vector<std::vector<int32_t>> rule_alts;   // per rule: start offsets into code
    int32_t root = 0;
};

class GrammarBuilder {
public:
    using Elem = Grammar::Elem;
    using Seq = std::vector<Elem>;

    int new_rule();                                    // declares a rule (define it later)
    void define(int rule, std::vector<Seq> alts);
    int rule(std::vector<Seq> alts);                   // new_rule + define

    Elem bytes(const std::bitset<256>& set);
    Elem byte_range(uint8_t lo, uint8_t hi);
    Elem ref(int rule) const { return Elem{Grammar::kRef, rule}; }
    static Seq lit(std::string_view s, GrammarBuilder& b);
    Seq lit(std::string_view s) { return lit(s, *this); }

    Elem opt(Seq s);                  // s | ε
    Elem star(Seq s);                 // s*
    Elem rep(const Seq& s, int min, int max);  // s{min,max}; max < 0 = unbounded
    Elem alt(std::vector<Seq> alts);  // a rule with these alternatives

    // Flattens the rules; throws Error if a declared rule was never defined.
    std::shared_ptr<const Grammar> finish(int root);

private:
    std::vector<std::vector<Seq>> rules_;
    std::vector<bool> defined_;
    std::vector<std::bitset<256>> sets_;
};

class GrammarState {
public:
    explicit GrammarState(std::shared_ptr<const Grammar> g);

    // Advances by one byte / several bytes. Returns false (and leaves the state dead) when the
    // input cannot continue any sentence.
    bool feed(uint8_t b);
    bool feed(std::string_view s);

    bool dead() const { return stacks_.empty(); }
    bool accepting() const;       // the input so far is a complete sentence
    bool can_continue() const;    // some sentence extends the input by at least one byte
    // Bytes that may come next (the union over all stacks).
    std::bitset<256> next_bytes() const;

    const std::shared_ptr<const Grammar>& grammar() const { return g_; }

private:
    using Stack = std::vector<int32_t>;
    void expand(Stack st, std::vector<Stack>& out, int depth) const;
    void normalize(std::vector<Stack>& v) const;

    std::shared_ptr<const Grammar> g_;
    std::vector<Stack> stacks_;
};

}  // namespace calpaca::serve
