#include "calpaca/serve/grammar.h"

#include <algorithm>

#include "calpaca/base/error.h"

namespace calpaca::serve {

namespace {
// Limits that keep a pathological grammar from exhausting memory: an expansion deeper than this
// or a state with more stacks than this is treated as a dead end.
constexpr int kMaxDepth = 256;
constexpr size_t kMaxStacks = 4096;
}  // namespace

int GrammarBuilder::new_rule() {
    rules_.emplace_back();
    defined_.push_back(false);
    return static_cast<int>(rules_.size()) - 1;
}

void GrammarBuilder::define(int rule, std::vector<Seq> alts) {
    if (rule < 0 || static_cast<size_t>(rule) >= rules_.size()) fail("grammar: rule {} was never declared", rule);
    if (alts.empty()) fail("grammar: rule {} has no alternatives", rule);
    rules_[rule] = std::move(alts);
    defined_[rule] = true;
}

int GrammarBuilder::rule(std::vector<Seq> alts) {
    int r = new_rule();
    define(r, std::move(alts));
    return r;
}

GrammarBuilder::Elem GrammarBuilder::bytes(const std::bitset<256>& set) {
    for (size_t i = 0; i < sets_.size(); ++i)
        if (sets_[i] == set) return Elem{Grammar::kBytes, static_cast<int32_t>(i)};
    sets_.push_back(set);
    return Elem{Grammar::kBytes, static_cast<int32_t>(sets_.size()) - 1};
}

GrammarBuilder::Elem GrammarBuilder::byte_range(uint8_t lo, uint8_t hi) {
    std::bitset<256> s;
    for (int c = lo; c <= hi; ++c) s.set(static_cast<size_t>(c));
    return bytes(s);
}

GrammarBuilder::Seq GrammarBuilder::lit(std::string_view s, GrammarBuilder& b) {
    Seq q;
    for (char c : s) {
        const auto u = static_cast<uint8_t>(c);
        q.push_back(b.byte_range(u, u));
    }
    return q;
}

GrammarBuilder::Elem GrammarBuilder::opt(Seq s) { return ref(rule({std::move(s), {}})); }

GrammarBuilder::Elem GrammarBuilder::star(Seq s) {
    int r = new_rule();
    s.push_back(ref(r));
    define(r, {std::move(s), {}});
    return ref(r);
}

GrammarBuilder::Elem GrammarBuilder::alt(std::vector<Seq> alts) { return ref(rule(std::move(alts))); }

GrammarBuilder::Elem GrammarBuilder::rep(const Seq& s, int min, int max) {
    if (min < 0 || (max >= 0 && max < min)) fail("grammar: bad repetition bounds {{{},{}}}", min, max);
    // tail: up to (max - min) more, as nested optionals (s (s (...)?)?)?, or s* when unbounded
    Seq tail;
    if (max < 0) {
        tail.push_back(star(s));
    } else if (max > min) {
        int inner = -1;
        for (int i = 0; i < max - min; ++i) {
            Seq body = s;
            if (inner >= 0) body.push_back(ref(inner));
            inner = rule({std::move(body), {}});
        }
        tail.push_back(ref(inner));
    }
    Seq all;
    for (int i = 0; i < min; ++i) all.insert(all.end(), s.begin(), s.end());
    all.insert(all.end(), tail.begin(), tail.end());
    return ref(rule({std::move(all)}));
}

std::shared_ptr<const Grammar> GrammarBuilder::finish(int root) {
    auto g = std::make_shared<Grammar>();
    for (size_t r = 0; r < rules_.size(); ++r)
        if (!defined_[r]) fail("grammar: rule {} was declared but never defined", r);
    if (root < 0 || static_cast<size_t>(root) >= rules_.size()) fail("grammar: root rule {} does not exist", root);
    g->sets = sets_;
    g->rule_alts.resize(rules_.size());
    for (size_t r = 0; r < rules_.size(); ++r) {
        for (const Seq& alt : rules_[r]) {
            g->rule_alts[r].push_back(static_cast<int32_t>(g->code.size()));
            for (const Elem& e : alt) {
                if (e.kind == Grammar::kRef && (e.arg < 0 || static_cast<size_t>(e.arg) >= rules_.size()))
                    fail("grammar: reference to undefined rule {}", e.arg);
                g->code.push_back(e);
            }
            g->code.push_back(Elem{Grammar::kEnd, 0});
        }
    }
    g->root = root;
    return g;
}

// ---------------------------------------------------------------------------------------------

GrammarState::GrammarState(std::shared_ptr<const Grammar> g) : g_(std::move(g)) {
    if (!g_) fail("grammar state: no grammar");
    for (int32_t a : g_->rule_alts[g_->root]) expand(Stack{a}, stacks_, 0);
    normalize(stacks_);
}

// Moves `st` forward until its top is a byte element (or it is empty = complete), branching at
// every rule reference. The element below a rule's frame was already advanced past the reference.
void GrammarState::expand(Stack st, std::vector<Stack>& out, int depth) const {
    const auto& code = g_->code;
    for (;;) {
        if (out.size() > kMaxStacks || depth > kMaxDepth || st.size() > static_cast<size_t>(kMaxDepth)) return;
        if (st.empty()) {
            out.push_back(std::move(st));
            return;
        }
        const int32_t pos = st.back();
        const Grammar::Elem e = code[pos];
        if (e.kind == Grammar::kEnd) {
            st.pop_back();
            continue;
        }
        if (e.kind == Grammar::kBytes) {
            out.push_back(std::move(st));
            return;
        }
        st.back() = pos + 1;
        if (code[pos + 1].kind == Grammar::kEnd) st.pop_back();  // tail position: no frame to return to
        const auto& alts = g_->rule_alts[e.arg];
        for (size_t i = 0; i + 1 < alts.size(); ++i) {
            Stack copy = st;
            copy.push_back(alts[i]);
            expand(std::move(copy), out, depth + 1);
        }
        st.push_back(alts.back());
        ++depth;
    }
}

void GrammarState::normalize(std::vector<Stack>& v) const {
    std::sort(v.begin(), v.end());
    v.erase(std::unique(v.begin(), v.end()), v.end());
    if (v.size() > kMaxStacks) v.clear();  // ambiguity blow-up: treat as a dead end
}

bool GrammarState::feed(uint8_t b) {
    std::vector<Stack> next;
    for (const Stack& st : stacks_) {
        if (st.empty()) continue;
        const Grammar::Elem e = g_->code[st.back()];
        if (!g_->sets[e.arg].test(b)) continue;
        Stack s2 = st;
        s2.back() += 1;
        expand(std::move(s2), next, 0);
    }
    normalize(next);
    stacks_ = std::move(next);
    return !stacks_.empty();
}

bool GrammarState::feed(std::string_view s) {
    for (char c : s)
        if (!feed(static_cast<uint8_t>(c))) return false;
    return !stacks_.empty();
}

bool GrammarState::accepting() const {
    return std::any_of(stacks_.begin(), stacks_.end(), [](const Stack& s) { return s.empty(); });
}

bool GrammarState::can_continue() const {
    return std::any_of(stacks_.begin(), stacks_.end(), [](const Stack& s) { return !s.empty(); });
}

std::bitset<256> GrammarState::next_bytes() const {
    std::bitset<256> r;
    for (const Stack& st : stacks_)
        if (!st.empty()) r |= g_->sets[g_->code[st.back()].arg];
    return r;
}

}  // namespace calpaca::serve
