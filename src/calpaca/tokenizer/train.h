// Training a SentencePiece model (the step that made Chinese-LLaMA's chinese_sp.model) through
// libsentencepiece's own trainer, so the result is exactly what `spm_train` would write.
//
// The defaults reproduce chinese_sp.model's trainer_spec: UNIGRAM, vocab_size 20000,
// character_coverage 0.9995, num_threads 32, train_extremely_large_corpus true, nmt_nfkc
// normalizer, everything else at sentencepiece's defaults. (The thread count changes what the
// unigram trainer produces, so it is fixed rather than taken from the machine.)
//
// Debian's libsentencepiece.so.0 carries a private copy of protobuf-lite 3.14 and exports its
// symbols; calpaca uses libprotobuf 3.21. With both in one symbol scope, one library's protobuf
// calls bind to the other's code (abort at startup: "compiled against version 3.14.0", or a
// segfault). Hence: calpaca links libprotobuf statically with its symbols hidden
// (--exclude-libs), so the process exports no protobuf symbol, and loads
// libsentencepiece_train.so.0 only here, with dlopen(RTLD_LOCAL), so its symbols never enter the
// global scope; its protobuf references then resolve to its own copy. (RTLD_DEEPBIND is not
// used: it would also bind the library to libstdc++'s own, never-constructed std::cerr instead
// of the executable's copy-relocated one, and crash.) docs/tokenizer.md has the details.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace calpaca {

struct SpmTrainOptions {
    std::vector<std::string> inputs;       // text files, one sentence per line
    std::string model_prefix;              // recorded in trainer_spec.model_prefix (spm_train's --model_prefix)
    int vocab_size = 20000;
    std::string model_type = "unigram";    // unigram | bpe | word | char
    double character_coverage = 0.9995;
    bool byte_fallback = false;
    bool split_digits = false;
    std::string normalization = "nmt_nfkc";  // nmt_nfkc | nfkc | nmt_nfkc_cf | nfkc_cf | identity
    bool add_dummy_prefix = true;
    bool remove_extra_whitespaces = true;
    int threads = 32;
    uint64_t input_sentence_size = 0;      // 0 = every sentence
    int max_sentence_length = 4192;        // bytes
    int max_sentencepiece_length = 16;
    bool train_extremely_large_corpus = true;
    std::vector<std::string> user_defined_symbols;
    std::vector<std::pair<std::string, std::string>> extra;  // further spm_train flags (name, value)
    bool verbose = false;                  // pass sentencepiece's own log through to stderr
    bool progress = true;                  // progress bar on a terminal
};

struct SpmTrainResult {
    std::string model;            // serialized ModelProto
    size_t pieces = 0;
    uint64_t sentences = 0;       // sentences used, as sentencepiece reports them (0 if unknown)
    uint64_t alphabet = 0;        // characters kept (0 if unknown)
    double coverage = -1;         // final character coverage reported by the trainer (-1 if unknown)
    double seconds = 0;
};

// Checks the options (inputs exist and are readable, sizes and names are valid), trains, and
// returns the model bytes; the caller writes them (atomically). Errors from the trainer become
// one-line Errors. Throws when libsentencepiece_train.so.0 cannot be loaded (the library name can
// be overridden with the environment variable CALPACA_SPM_TRAIN_LIB).
SpmTrainResult train_sentencepiece(const SpmTrainOptions& opt);

// The trainer arguments train_sentencepiece() passes (name → value, spm_train's flag names): the
// fields chinese_sp.model's trainer_spec sets, plus every option that differs from
// sentencepiece's default. The trainer records exactly these in trainer_spec (spm_train records
// all fields), so a default run has chinese_sp.model's trainer_spec fields; the pieces and
// scores equal spm_train's for the same settings.
std::vector<std::pair<std::string, std::string>> spm_train_args(const SpmTrainOptions& opt);

}  // namespace calpaca
