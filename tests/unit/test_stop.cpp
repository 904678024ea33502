// StopMatcher: stop strings over streamed text pieces.
#include <gtest/gtest.h>

#include <random>

#include "calpaca/base/utf8.h"
#include "calpaca/generate/stop.h"

using namespace calpaca;

namespace {

struct StreamRun {
    std::string emitted;
    bool stopped = false;
    int index = -1;
    std::vector<std::string> chunks;
};

// Feeds the pieces, stopping at the first stop; flushes at the end if no stop was hit.
StreamRun feed(StopMatcher& m, const std::vector<std::string>& pieces) {
    StreamRun r;
    for (const auto& p : pieces) {
        auto res = m.push(p);
        r.emitted += res.text;
        r.chunks.push_back(res.text);
        if (res.stopped) {
            r.stopped = true;
            r.index = res.stop_index;
            return r;
        }
    }
    r.emitted += m.flush();
    return r;
}

}  // namespace

TEST(StopMatcher, EmptyListPassesThrough) {
    StopMatcher m;
    EXPECT_TRUE(m.empty());
    auto r = m.push("Hello ###");
    EXPECT_EQ(r.text, "Hello ###");
    EXPECT_FALSE(r.stopped);
    EXPECT_EQ(m.flush(), "");
    StopMatcher only_empty({"", ""});  // empty strings are ignored
    EXPECT_TRUE(only_empty.empty());
    EXPECT_EQ(only_empty.push("abc").text, "abc");
}

TEST(StopMatcher, StopInsideOnePiece) {
    StopMatcher m({"###"});
    auto r = m.push("Hello###World");
    EXPECT_EQ(r.text, "Hello");
    EXPECT_TRUE(r.stopped);
    EXPECT_EQ(r.stop_index, 0);
    // After the stop nothing more comes out.
    auto r2 = m.push("more");
    EXPECT_EQ(r2.text, "");
    EXPECT_TRUE(r2.stopped);
    EXPECT_EQ(m.flush(), "");
}

TEST(StopMatcher, StopSplitAcrossPieces) {
    StopMatcher m({"###"});
    auto a = m.push("Hel");
    EXPECT_EQ(a.text, "Hel");
    auto b = m.push("lo #");
    EXPECT_EQ(b.text, "lo ");  // "#" held back
    EXPECT_EQ(m.held(), "#");
    auto c = m.push("#");
    EXPECT_EQ(c.text, "");
    EXPECT_EQ(m.held(), "##");
    auto d = m.push("# tail");
    EXPECT_TRUE(d.stopped);
    EXPECT_EQ(d.text, "");
}

TEST(StopMatcher, FalseAlarmIsReleased) {
    StopMatcher m({"###"});
    EXPECT_EQ(m.push("a##").text, "a");
    EXPECT_EQ(m.push("b").text, "##b");
    EXPECT_EQ(m.push("#").text, "");
    EXPECT_EQ(m.flush(), "#");  // end of generation: the held tail is released
    EXPECT_FALSE(m.stopped());
}

TEST(StopMatcher, OverlappingSelfPrefix) {
    // "aab" inside "aaab": the first 'a' is released only once it can no longer start the stop.
    StopMatcher m({"aab"});
    auto r = feed(m, {"a", "a", "a", "b", "zzz"});
    EXPECT_TRUE(r.stopped);
    EXPECT_EQ(r.emitted, "a");
    EXPECT_EQ(r.chunks, (std::vector<std::string>{"", "", "a", ""}));
}

TEST(StopMatcher, MultipleStopsEarliestWins) {
    {
        StopMatcher m({"World", "lo"});
        auto r = feed(m, {"Hello World"});
        EXPECT_TRUE(r.stopped);
        EXPECT_EQ(r.emitted, "Hel");
        EXPECT_EQ(r.index, 1);
    }
    {
        // Overlapping stops sharing a prefix: "abc" starts first.
        StopMatcher m({"bcd", "abc"});
        auto r = feed(m, {"xab", "cd"});
        EXPECT_TRUE(r.stopped);
        EXPECT_EQ(r.emitted, "x");
        EXPECT_EQ(r.index, 1);
    }
    {
        // Same start: the first in the list is reported; the emitted text is the same anyway.
        StopMatcher m({"ab", "abc"});
        auto r = feed(m, {"zabc"});
        EXPECT_EQ(r.emitted, "z");
        EXPECT_EQ(r.index, 0);
    }
    {
        // One stop is a prefix of another: hold for the longer one, match the shorter when it's whole.
        StopMatcher m({"\n\n### Instruction", "\n\n###"});
        EXPECT_EQ(m.push("ok\n").text, "ok");
        auto r = m.push("\n##");
        EXPECT_FALSE(r.stopped);
        EXPECT_EQ(r.text, "");
        r = m.push("# Res");
        EXPECT_TRUE(r.stopped);
        EXPECT_EQ(r.stop_index, 1);
        EXPECT_EQ(r.text, "");
    }
}

TEST(StopMatcher, CompleteStopWinsOverEarlierIncompleteOne) {
    // "#ba" started first but is incomplete when "b" completes: generation stops at "b" now.
    StopMatcher m({"#ba", "b"});
    EXPECT_EQ(m.push("#").text, "");
    auto r = m.push("b");
    EXPECT_TRUE(r.stopped);
    EXPECT_EQ(r.stop_index, 1);
    EXPECT_EQ(r.text, "#");
}

TEST(StopMatcher, StopAtStartAndWholePiece) {
    StopMatcher m({"</s>"});
    auto r = m.push("</s>");
    EXPECT_TRUE(r.stopped);
    EXPECT_EQ(r.text, "");
}

TEST(StopMatcher, Utf8ChineseStopSplitInsideCharacters) {
    const std::string text = "你好，世界。用户：再见";
    StopMatcher m({"用户：", "User:"});
    // One byte at a time: the stop string arrives split inside its 3-byte characters.
    std::vector<std::string> bytes;
    for (char c : text) bytes.emplace_back(1, c);
    auto r = feed(m, bytes);
    EXPECT_TRUE(r.stopped);
    EXPECT_EQ(r.index, 0);
    EXPECT_EQ(r.emitted, "你好，世界。");

    // Whole characters in, whole characters out (every emitted chunk is valid UTF-8).
    StopMatcher w({"用户：", "用法"});
    std::vector<std::string> chars = {"你", "好", "用", "法", "律", "用", "户", "：", "再"};
    auto r2 = feed(w, chars);
    EXPECT_TRUE(r2.stopped);
    EXPECT_EQ(r2.index, 1);
    EXPECT_EQ(r2.emitted, "你好");
    StopMatcher w2({"用户："});
    auto r3 = feed(w2, {"你", "好", "用", "法", "律", "用", "户", "：", "再"});
    EXPECT_EQ(r3.emitted, "你好用法律");
    for (const auto& c : r3.chunks) EXPECT_TRUE(utf8::is_valid(c)) << c;
}

TEST(StopMatcher, ResetStartsOver) {
    StopMatcher m({"##"});
    m.push("a#");
    m.push("#");
    EXPECT_TRUE(m.stopped());
    m.reset();
    EXPECT_FALSE(m.stopped());
    EXPECT_EQ(m.held(), "");
    EXPECT_EQ(m.push("xy").text, "xy");
}

TEST(StopMatcher, RandomizedAgainstPrefixSearch) {
    std::mt19937 rng(3);
    const std::string alphabet = "ab#\n";
    for (int trial = 0; trial < 3000; ++trial) {
        std::vector<std::string> stops;
        int ns = static_cast<int>(rng() % 4);
        for (int i = 0; i < ns; ++i) {
            std::string s;
            int len = 1 + static_cast<int>(rng() % 4);
            for (int j = 0; j < len; ++j) s += alphabet[rng() % alphabet.size()];
            stops.push_back(s);
        }
        std::string text;
        int len = static_cast<int>(rng() % 30);
        for (int j = 0; j < len; ++j) text += alphabet[rng() % alphabet.size()];
        std::vector<std::string> pieces;
        for (size_t i = 0; i < text.size();) {
            size_t k = std::min(text.size() - i, static_cast<size_t>(rng() % 5));
            pieces.push_back(text.substr(i, k));
            i += k;
        }
        // Expected (streaming semantics): after each piece, look for the stops in everything
        // received so far; the first time any is found, the output is the text before the
        // earliest-starting one. A longer stop that started earlier but is still incomplete
        // does not win over one that is complete now.
        std::string want, prefix;
        bool want_stop = false;
        for (const auto& p : pieces) {
            prefix += p;
            size_t best = std::string::npos;
            for (const auto& s : stops) best = std::min(best, prefix.find(s));
            if (best != std::string::npos) {
                want = prefix.substr(0, best);
                want_stop = true;
                break;
            }
        }
        if (!want_stop) want = text;

        StopMatcher m(stops);
        std::string so_far;  // invariant: emitted + held is always a prefix of the input
        StreamRun r;
        for (const auto& p : pieces) {
            so_far += p;
            auto res = m.push(p);
            r.emitted += res.text;
            if (res.stopped) {
                r.stopped = true;
                break;
            }
            ASSERT_EQ(r.emitted + m.held(), so_far);
            if (!m.held().empty()) {  // what is held is a proper prefix of some stop string
                bool is_prefix = false;
                for (const auto& s : stops)
                    if (s.size() > m.held().size() && s.compare(0, m.held().size(), m.held()) == 0) is_prefix = true;
                ASSERT_TRUE(is_prefix) << m.held();
            }
        }
        if (!r.stopped) r.emitted += m.flush();
        ASSERT_EQ(r.emitted, want) << "trial " << trial << " text '" << text << "' stops "
                                   << ::testing::PrintToString(stops) << " pieces " << ::testing::PrintToString(pieces);
        ASSERT_EQ(r.stopped, want_stop);
    }
}
