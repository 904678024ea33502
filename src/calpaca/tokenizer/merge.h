// `calpaca tokenizer merge`: Chinese-LLaMA's merge_tokenizers.py as a library function, plus the
// Hugging Face tokenizer files that its LlamaTokenizer.save_pretrained() call wrote.
//
// The base (LLaMA's BPE tokenizer.model) keeps its pieces, order, trainer_spec and normalizer_spec;
// each piece of the added model (chinese_sp.model, a unigram model) that is not yet a piece of the
// base is appended in order with an explicit score 0 (see merge_model_protos). LLaMA +
// chinese_sp.model gives the published Chinese-LLaMA tokenizer byte for byte (49953 pieces), and
// appending "[PAD]" gives Chinese-Alpaca's (49954).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "calpaca/tokenizer/tokenizer.h"

namespace calpaca {

struct TokenizerMergeOptions {
    std::string base;     // BPE tokenizer.model (LLaMA's)
    std::string add;      // tokenizer.model whose pieces are appended (any model type)
    std::string out;      // merged tokenizer.model (its folder is created if needed)
    std::string pad;      // when non-empty: appended after the merge (score 0) and declared as pad
    // HF files (tokenizer_config.json, special_tokens_map.json) go next to `out`, or into hf_dir,
    // which then also gets a copy of the model as tokenizer.model (a complete HF tokenizer folder).
    std::string hf_dir;
    bool hf_files = true;
};

struct TokenizerMergeResult {
    size_t base_pieces = 0, add_pieces = 0, added = 0, total = 0;
    int32_t pad_id = -1;
    std::vector<std::string> written;  // files written, in order
};

TokenizerMergeResult merge_tokenizers(const TokenizerMergeOptions& opt);

// The two JSON files exactly as transformers 4.35.2 `LlamaTokenizer(vocab_file=...,
// pad_token=...).save_pretrained()` writes them (json.dumps(indent=2, sort_keys=True,
// ensure_ascii=False) + "\n"); bos/eos/unk ids and strings come from `vocab`.
std::string hf_tokenizer_config_json(const Vocab& vocab);
std::string hf_special_tokens_map_json(const Vocab& vocab);

}  // namespace calpaca
