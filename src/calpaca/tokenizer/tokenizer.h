// SentencePiece-BPE-compatible tokenizer (LLaMA, Chinese-LLaMA/Alpaca v1 and v2).
//
// encode() reproduces libsentencepiece's EncodeAsIds for BPE models exactly:
//   normalize  : identity (no NFKC), "▁" (U+2581) dummy prefix, every ' ' → "▁",
//                optional remove_extra_whitespaces (off for LLaMA);
//   segment    : one symbol per UTF-8 character (user-defined pieces are matched first and
//                never merged);
//   merge      : repeatedly join the adjacent pair whose concatenation is a NORMAL,
//                USER_DEFINED or UNUSED piece with the highest score; equal scores go to the
//                leftmost pair (sentencepiece's priority queue over a linked list of symbols);
//   output     : UNUSED pieces are split back into the pair they were made from; symbols that
//                are not pieces become "<0xXX>" byte pieces (byte_fallback) or one <unk> per
//                run of unknown symbols.
// Merges run on integer symbol ids through a precomputed pair table, so the hot loop never
// hashes strings and never allocates (scratch buffers are reused per thread).
//
// decode() follows HF's slow LlamaTokenizer (legacy) on top of sentencepiece's decoder.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace calpaca {

class GGUFFile;
class GGUFWriter;

enum class TokenType : int32_t { Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6 };
const char* token_type_name(TokenType t);

struct Vocab {
    std::vector<std::string> pieces;
    std::vector<float> scores;
    std::vector<TokenType> types;
    int32_t unk_id = 0, bos_id = 1, eos_id = 2, pad_id = -1;
    bool add_dummy_prefix = true, byte_fallback = true, add_bos = true, add_eos = false;
    bool remove_extra_whitespaces = false;   // normalizer_spec; LLaMA: false
    std::string unk_surface = " \xE2\x81\x87 ";  // what spm's decoder prints for <unk> (" ⁇ ")
    std::string source;   // file it came from, for error messages
    size_t size() const { return pieces.size(); }
};

// tokenizer.model (SentencePiece ModelProto). Only BPE models with the identity normalizer
// are accepted (that is every LLaMA-family tokenizer); anything else is refused by name.
// trainer_spec.vocab_size is ignored (stale in the merged Chinese models): the piece count is
// the vocabulary size. The pad id comes from trainer_spec.pad_id when set, else from a
// special_tokens_map.json next to the file, else from a "<pad>" / "[PAD]" piece (the
// Chinese-LLaMA-2 and Chinese-Alpaca conventions). add_bos/add_eos come from a
// tokenizer_config.json next to the file when present (defaults true/false).
Vocab load_vocab_spm(const std::string& path);
// Same, from the bytes of a ModelProto (`name` is used in error messages).
Vocab parse_vocab_spm(std::string_view bytes, const std::string& name);
// tokenizer.ggml.* keys (tokenizer.ggml.model must be "llama", i.e. SentencePiece).
Vocab load_vocab_gguf(const GGUFFile& f);
// tokenizer.ggml.model="llama", tokens, scores, token_type, bos/eos/unknown(/padding)_token_id,
// add_bos_token, add_eos_token, add_space_prefix.
void write_vocab_gguf(const Vocab& v, GGUFWriter& w);

// sentencepiece decoder state (internal; in the header so StreamDecoder can hold one).
struct TokenizerDecodeState {
    bool is_bos_ws = true;     // a leading "▁" may still be dropped
    bool bos_ws_seen = false;  // the previous piece had its "▁" dropped
    bool emitted = false;      // some text has been produced
};

class Tokenizer {
public:
    explicit Tokenizer(Vocab v);  // validates the vocab (throws Error naming v.source)

    const Vocab& vocab() const;
    size_t size() const { return vocab().size(); }
    int32_t bos() const { return vocab().bos_id; }
    int32_t eos() const { return vocab().eos_id; }
    int32_t pad() const { return vocab().pad_id; }
    int32_t unk() const { return vocab().unk_id; }

    // Plain sentencepiece encode: no special-token parsing, no BOS/EOS. Equals
    // libsentencepiece's EncodeAsIds. Invalid UTF-8 → Error naming the byte offset.
    std::vector<int32_t> encode(std::string_view text) const;
    // Appends to `out` (no clearing): the allocation-free form for batch callers.
    void encode_into(std::string_view text, std::vector<int32_t>& out) const;

    struct Options {
        bool add_bos = false;
        bool add_eos = false;
        bool parse_special = false;
    };
    // parse_special: HF slow LlamaTokenizer (legacy): the text is split on the literal strings
    // of <s>, </s>, <unk> and the pad piece (if any); each other chunk is encoded on its own
    // (so each gets its own dummy prefix); empty chunks produce nothing; no whitespace is
    // stripped around the special tokens.
    std::vector<int32_t> encode(std::string_view text, const Options& o) const;

    // HF decode (slow LlamaTokenizer, transformers 4.35, legacy). skip_special drops
    // bos/eos/unk/pad. Pieces are joined with "▁" → " ", byte pieces become bytes (each byte
    // of an invalid UTF-8 sequence → U+FFFD), control pieces print nothing, and the leading
    // space of the dummy prefix is stripped: HF drops the first token's "▁" and then
    // sentencepiece drops the next leading "▁" if nothing was printed yet (so up to two
    // leading spaces disappear, exactly as in HF). With skip_special=false the special tokens appear as
    // their strings, with HF-legacy spacing (" " before a special token unless it is first or
    // follows another special; each run between specials is decoded on its own).
    std::string decode(const std::vector<int32_t>& ids, bool skip_special = true) const;
    // sentencepiece's own DecodeIds (control → "", <unk> → unk_surface).
    std::string decode_spm(const std::vector<int32_t>& ids) const;

    const std::string& piece(int32_t id) const;   // raw piece string; throws Error for an out-of-range id
    std::string token_bytes(int32_t id) const;    // bytes this token contributes ("▁"→" ", <0xXX>→byte, control → "")
    TokenType type(int32_t id) const;
    float score(int32_t id) const;
    bool is_special(int32_t id) const;            // what HF's skip_special_tokens drops: bos/eos/unk/pad
    int32_t byte_value(int32_t id) const;         // 0..255 for a byte piece, else -1
    int32_t piece_to_id(std::string_view piece) const;  // -1 when absent

    struct Impl;

private:
    friend class StreamDecoder;
    std::shared_ptr<const Impl> impl_;
};

// Incremental decoding for streaming: push ids one at a time, get back only complete UTF-8
// text (never half a character). The concatenation of everything returned by push() and
// flush() equals decode(ids, /*skip_special=*/true) when strip_leading_space is true
// (false: the dummy-prefix space at the start of the stream is kept). flush() returns what is
// left (invalid bytes → U+FFFD) and resets the decoder for a new stream.
class StreamDecoder {
public:
    explicit StreamDecoder(const Tokenizer& t, bool strip_leading_space = true);
    std::string push(int32_t id);
    std::string flush();

private:
    std::shared_ptr<const Tokenizer::Impl> impl_;  // keeps the vocabulary alive
    bool strip_;
    bool started_ = false;
    TokenizerDecodeState st_;
    std::string pending_;
};

// Each byte that does not start a valid UTF-8 sequence becomes U+FFFD (sentencepiece's rule).
std::string sanitize_utf8(std::string_view s);

}  // namespace calpaca
