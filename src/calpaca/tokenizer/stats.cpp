#include "calpaca/tokenizer/stats.h"

#include <algorithm>
#include <limits>
#include <mutex>

#include <nlohmann/json.hpp>

#include "calpaca/base/error.h"
#include "calpaca/base/threadpool.h"
#include "calpaca/base/utf8.h"

namespace calpaca {

namespace {

struct Counts {
    uint64_t chars = 0, bytes = 0, tokens = 0, unk = 0, byte_tokens = 0, byte_chars = 0;
    void add(const Counts& o) {
        chars += o.chars;
        bytes += o.bytes;
        tokens += o.tokens;
        unk += o.unk;
        byte_tokens += o.byte_tokens;
        byte_chars += o.byte_chars;
    }
};

uint64_t count_chars(std::string_view s) {
    uint64_t n = 0;
    for (unsigned char c : s) n += (c & 0xC0) != 0x80;  // valid UTF-8: count lead bytes
    return n;
}

std::string pct(uint64_t part, double rate) { return fmt::format("{} ({:.3f}%)", part, 100.0 * rate); }

}  // namespace

TokenizerStats measure_tokenizer(const Tokenizer& tok, std::string_view text, const std::string& source,
                                 ThreadPool* pool) {
    std::vector<std::string_view> lines;
    for (size_t pos = 0; pos < text.size();) {
        size_t nl = text.find('\n', pos);
        if (nl == std::string_view::npos) nl = text.size();
        lines.push_back(text.substr(pos, nl - pos));
        pos = nl + 1;
    }
    const int32_t unk = tok.unk();
    std::vector<char> is_byte(tok.size());
    for (size_t i = 0; i < tok.size(); ++i) is_byte[i] = tok.type(static_cast<int32_t>(i)) == TokenType::Byte;

    std::mutex mu;
    Counts total;
    size_t bad_line = std::numeric_limits<size_t>::max();
    std::string bad_msg;
    auto work = [&](size_t b, size_t e) {
        Counts c;
        std::vector<int32_t> ids;
        for (size_t i = b; i < e; ++i) {
            const std::string_view line = lines[i];
            try {
                const size_t bad = utf8::find_invalid(line);
                if (bad != std::string::npos) fail("{}: line {}: invalid UTF-8 at byte {}", source, i + 1, bad);
                ids.clear();
                tok.encode_into(line, ids);
            } catch (const Error& err) {
                std::lock_guard<std::mutex> lk(mu);
                if (i < bad_line) {
                    bad_line = i;
                    bad_msg = err.what();
                }
                return;
            }
            c.chars += count_chars(line);
            c.bytes += line.size();
            c.tokens += ids.size();
            for (int32_t id : ids) {
                if (id == unk) ++c.unk;
                if (is_byte[id]) {
                    ++c.byte_tokens;
                    const int32_t v = tok.byte_value(id);
                    if ((v & 0xC0) != 0x80) ++c.byte_chars;  // a byte that starts a character
                }
            }
        }
        std::lock_guard<std::mutex> lk(mu);
        total.add(c);
    };
    if (pool && pool->size() > 1) pool->parallel_for(lines.size(), work);
    else work(0, lines.size());
    if (!bad_msg.empty()) throw Error(bad_msg);

    TokenizerStats s;
    s.vocab_size = tok.size();
    s.lines = lines.size();
    s.chars = total.chars;
    s.bytes = total.bytes;
    s.tokens = total.tokens;
    s.unk_tokens = total.unk;
    s.byte_tokens = total.byte_tokens;
    s.byte_chars = total.byte_chars;
    return s;
}

std::string format_stats_markdown(const std::vector<TokenizerStats>& s, const std::string& text_label) {
    if (s.empty()) return {};
    std::string out = fmt::format("{}: {} lines, {} characters, {} bytes\n\n", text_label, s[0].lines, s[0].chars,
                                  s[0].bytes);
    auto row = [&](const std::string& label, auto cell) {
        out += "| " + label + " |";
        for (const auto& x : s) out += " " + cell(x) + " |";
        out += "\n";
    };
    out += "| |";
    for (const auto& x : s) out += " " + x.name + " |";
    out += "\n|---|";
    for (size_t i = 0; i < s.size(); ++i) out += "---:|";
    out += "\n";
    const double first = static_cast<double>(s[0].tokens);
    row("vocabulary size", [](const TokenizerStats& x) { return std::to_string(x.vocab_size); });
    row("tokens", [](const TokenizerStats& x) { return std::to_string(x.tokens); });
    row("tokens / character", [](const TokenizerStats& x) { return fmt::format("{:.4f}", x.tokens_per_char()); });
    row("tokens / byte", [](const TokenizerStats& x) { return fmt::format("{:.4f}", x.tokens_per_byte()); });
    row("characters / token", [](const TokenizerStats& x) {
        return x.tokens ? fmt::format("{:.4f}", static_cast<double>(x.chars) / x.tokens) : std::string("-");
    });
    row("tokens vs first column", [&](const TokenizerStats& x) {
        return first > 0 ? fmt::format("{:.3f}×", x.tokens / first) : std::string("-");
    });
    row("unknown tokens", [](const TokenizerStats& x) { return pct(x.unk_tokens, x.unk_rate()); });
    row("byte-fallback tokens", [](const TokenizerStats& x) { return pct(x.byte_tokens, x.byte_token_rate()); });
    row("characters spelled in bytes", [](const TokenizerStats& x) { return pct(x.byte_chars, x.byte_char_rate()); });
    return out;
}

std::string format_stats_json(const std::vector<TokenizerStats>& s) {
    nlohmann::json a = nlohmann::json::array();
    for (const auto& x : s) {
        a.push_back({{"name", x.name},
                     {"vocab_size", x.vocab_size},
                     {"lines", x.lines},
                     {"chars", x.chars},
                     {"bytes", x.bytes},
                     {"tokens", x.tokens},
                     {"tokens_per_char", x.tokens_per_char()},
                     {"tokens_per_byte", x.tokens_per_byte()},
                     {"unk_tokens", x.unk_tokens},
                     {"unk_rate", x.unk_rate()},
                     {"byte_tokens", x.byte_tokens},
                     {"byte_token_rate", x.byte_token_rate()},
                     {"byte_chars", x.byte_chars},
                     {"byte_char_rate", x.byte_char_rate()}});
    }
    return a.dump(2) + "\n";
}

}  // namespace calpaca
