// Tokenizer statistics on a text file: how many tokens each vocabulary needs, per character and
// per byte, and how often it falls back to <unk> or to byte pieces. Used to check the claim that
// the Chinese-LLaMA vocabulary roughly halves the tokens of Chinese text (docs/tokenizer.md).
//
// The text is encoded line by line, without BOS, exactly as `calpaca tokenize -f` and
// `spm_encode` do (each line gets its own dummy prefix; the '\n' itself is not counted).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "calpaca/tokenizer/tokenizer.h"

namespace calpaca {

class ThreadPool;

struct TokenizerStats {
    std::string name;            // column label
    size_t vocab_size = 0;
    uint64_t lines = 0;          // lines of the text (a last line without '\n' counts)
    uint64_t chars = 0;          // Unicode code points, '\n' excluded
    uint64_t bytes = 0;          // UTF-8 bytes, '\n' excluded
    uint64_t tokens = 0;
    uint64_t unk_tokens = 0;     // tokens equal to the unknown id
    uint64_t byte_tokens = 0;    // <0xXX> byte-fallback tokens
    uint64_t byte_chars = 0;     // characters spelled with byte tokens (lead bytes among them)

    double tokens_per_char() const { return chars ? static_cast<double>(tokens) / chars : 0; }
    double tokens_per_byte() const { return bytes ? static_cast<double>(tokens) / bytes : 0; }
    double unk_rate() const { return tokens ? static_cast<double>(unk_tokens) / tokens : 0; }
    double byte_token_rate() const { return tokens ? static_cast<double>(byte_tokens) / tokens : 0; }
    double byte_char_rate() const { return chars ? static_cast<double>(byte_chars) / chars : 0; }
};

// Encodes every line of `text` (`source` names the text in errors: "<source>: line N: invalid
// UTF-8 at byte K"). Lines are spread over `pool` when given; the counts do not depend on it.
TokenizerStats measure_tokenizer(const Tokenizer& tok, std::string_view text, const std::string& source,
                                 ThreadPool* pool = nullptr);

// A Markdown table, one column per tokenizer, rows: vocabulary size, tokens, tokens per
// character and per byte, characters per token, tokens relative to the first column, unknown
// and byte-fallback rates. `text_label` names the text in the heading line.
std::string format_stats_markdown(const std::vector<TokenizerStats>& s, const std::string& text_label);
// The same numbers as a JSON array (one object per tokenizer).
std::string format_stats_json(const std::vector<TokenizerStats>& s);

}  // namespace calpaca
