// UTF-8 helpers: validation with a precise error position, and the length of a
// complete prefix (used by streaming decoders so they never emit half a character).
#pragma once
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace calpaca::utf8 {

// Length of the sequence announced by lead byte c (1..4), or 0 if c cannot start one.
size_t sequence_length(unsigned char c);

// Returns the byte offset of the first invalid sequence, or std::string::npos if s is valid.
// An incomplete sequence at the very end counts as invalid.
size_t find_invalid(std::string_view s);
inline bool is_valid(std::string_view s) { return find_invalid(s) == std::string::npos; }

// Number of leading bytes of s that form complete characters, treating a truncated
// (possibly valid-to-be) sequence at the end as "not yet complete". Invalid bytes in the
// middle are counted as complete (they will never become valid).
size_t complete_prefix(std::string_view s);

// Split into code points (each a string). Invalid bytes become single-byte strings.
void split_chars(std::string_view s, std::vector<std::string_view>& out);

}  // namespace calpaca::utf8
