// Stop strings over streamed text.
//
// Generated text arrives piece by piece (one detokenized token at a time). A StopMatcher passes
// it through, holding back only the shortest tail that could still grow into a stop string, and
// reports when a stop string appears. Everything before the stop string is emitted; the stop
// string itself and anything after it never are (OpenAI `stop` semantics). A stop string takes
// effect as soon as it is complete (as vLLM checks after every token): if several are complete
// after the same push, the one that starts earliest wins (equal starts: the first in the list);
// a longer stop string that started earlier but is still incomplete does not win.
//
// Matching is on bytes, so a stop string split across pieces (even inside one UTF-8 character,
// as byte-fallback tokens produce) is still found. If the pieces concatenate to valid UTF-8 and
// the stop strings are valid UTF-8, every emitted chunk boundary falls on a character boundary
// too — except where the input pieces themselves split a character, which this class passes
// through unchanged (a UTF-8-aware decoder upstream is the place to hold partial characters).
//
// Usage:
//   StopMatcher m({"###", "</s>"});
//   for each piece: auto r = m.push(piece); out << r.text; if (r.stopped) break;
//   at end of generation (no stop hit): out << m.flush();
#pragma once
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace calpaca {

class StopMatcher {
public:
    struct Result {
        std::string text;       // safe to emit now (may be empty)
        bool stopped = false;   // a stop string was found (now or earlier)
        int stop_index = -1;    // index into stops() of the string that matched, -1 if none
    };

    // Empty strings in `stops` are ignored (they cannot meaningfully match); an empty list makes
    // the matcher a pass-through.
    explicit StopMatcher(std::vector<std::string> stops = {});

    // Feeds the next piece. After a stop has been found, every further push returns empty text
    // with stopped = true.
    Result push(std::string_view piece);

    // Releases the held-back tail at the end of generation (empty once stopped).
    std::string flush();

    // Forgets all state (held text and any stop found); the stop strings are kept.
    void reset();

    bool stopped() const { return stop_index_ >= 0; }
    int stop_index() const { return stop_index_; }
    // The text currently held back (a proper prefix of some stop string).
    const std::string& held() const { return held_; }
    const std::vector<std::string>& stops() const { return stops_; }
    bool empty() const { return stops_.empty(); }

private:
    std::vector<std::string> stops_;
    size_t max_len_ = 0;
    std::string held_;
    int stop_index_ = -1;
};

}  // namespace calpaca
