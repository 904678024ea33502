#include "calpaca/base/utf8.h"

namespace calpaca::utf8 {

size_t sequence_length(unsigned char c) {
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) return 2;
    if (c >= 0xE0 && c <= 0xEF) return 3;
    if (c >= 0xF0 && c <= 0xF4) return 4;
    return 0;
}

// Checks bytes s[i..i+len) as one sequence (len from the lead byte).
static bool valid_at(std::string_view s, size_t i, size_t len) {
    if (i + len > s.size()) return false;
    auto b = [&](size_t k) { return static_cast<unsigned char>(s[i + k]); };
    for (size_t k = 1; k < len; ++k)
        if ((b(k) & 0xC0) != 0x80) return false;
    if (len == 3) {
        if (b(0) == 0xE0 && b(1) < 0xA0) return false;  // overlong
        if (b(0) == 0xED && b(1) >= 0xA0) return false;  // surrogates
    } else if (len == 4) {
        if (b(0) == 0xF0 && b(1) < 0x90) return false;  // overlong
        if (b(0) == 0xF4 && b(1) >= 0x90) return false;  // > U+10FFFF
    }
    return true;
}

size_t find_invalid(std::string_view s) {
    size_t i = 0;
    while (i < s.size()) {
        size_t len = sequence_length(static_cast<unsigned char>(s[i]));
        if (len == 0 || !valid_at(s, i, len)) return i;
        i += len;
    }
    return std::string::npos;
}

size_t complete_prefix(std::string_view s) {
    // Look back at most 3 bytes for a lead byte whose sequence runs past the end.
    size_t n = s.size();
    for (size_t back = 1; back <= 3 && back <= n; ++back) {
        unsigned char c = static_cast<unsigned char>(s[n - back]);
        if ((c & 0xC0) == 0x80) continue;  // continuation byte, keep looking
        size_t len = sequence_length(c);
        if (len > back) {
            // Truncated: could still become valid if what we have so far is consistent.
            bool consistent = true;
            for (size_t k = 1; k < back; ++k)
                if ((static_cast<unsigned char>(s[n - back + k]) & 0xC0) != 0x80) consistent = false;
            if (consistent) return n - back;
        }
        break;
    }
    return n;
}

void split_chars(std::string_view s, std::vector<std::string_view>& out) {
    size_t i = 0;
    while (i < s.size()) {
        size_t len = sequence_length(static_cast<unsigned char>(s[i]));
        if (len == 0 || !valid_at(s, i, len)) len = 1;
        out.push_back(s.substr(i, len));
        i += len;
    }
}

}  // namespace calpaca::utf8
