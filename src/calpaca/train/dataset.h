// Training data, built as the original's scripts build it (seed-features.md §6.2).
//
// PT (run_clm_pt_with_peft.py): every line of each text file is one example, tokenized with BOS
// (and EOS with `add_eos`, as v2 does); within each batch of 1000 lines all ids are concatenated
// and cut into block_size blocks; the remainder is dropped unless the batch is shorter than one
// block (then it is one short block). labels = input_ids.
//
// SFT (build_dataset.py): Alpaca JSON (a list, or JSON lines) of {instruction, input, output};
// source = template(instruction [+ "\n" + input]) tokenized with BOS; target = output tokens + EOS;
// ids = (source + target)[:max_seq_length], labels = ([-100] * len(source) + target)[:max_seq_length].
//
// Tokenized data is cached next to each input file ("<file>.calpaca-<kind>-<hash>.cache") keyed by
// a hash of the file's content, the tokenizer's vocabulary and the options; a cache that cannot
// be written (read-only directory) is skipped, one that does not parse is rebuilt.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "calpaca/train/llama_train.h"

namespace calpaca {

class Tokenizer;

enum class DataKind { PT, SFT };

struct DataOptions {
    DataKind kind = DataKind::PT;
    int64_t block_size = 512;       // PT
    bool add_eos = false;           // PT: v2 appends EOS to each line
    int64_t max_seq_length = 512;   // SFT
    std::string template_name = "alpaca";  // SFT: "alpaca" | "alpaca-2" (any chat_template name)
    bool use_cache = true;
};

// Examples of all files, in order. Errors name the file, record number and field.
std::vector<Example> load_dataset(const std::vector<std::string>& files, const Tokenizer& tok, const DataOptions& o,
                                  bool verbose = false);

// Per-file builders (no cache), exposed for tests.
std::vector<Example> build_pt_examples(const std::string& text, const Tokenizer& tok, const DataOptions& o);
std::vector<Example> build_sft_examples(const std::string& json, const std::string& file_name, const Tokenizer& tok,
                                        const DataOptions& o);

// 64-bit FNV-1a-then-mixed hash (for cache keys and data fingerprints).
uint64_t hash_bytes(const void* data, size_t n, uint64_t seed = 0);
uint64_t tokenizer_fingerprint(const Tokenizer& tok);

}  // namespace calpaca
