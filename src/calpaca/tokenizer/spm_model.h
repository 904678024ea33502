// Reading and writing SentencePiece ModelProto files (tokenizer.model) as protobuf
// messages, for tools that edit them (merge-tokenizer) and for load_vocab_spm.
// Unknown fields survive parse → serialize (proto2), and a file parsed and serialized again
// is byte-identical: every TrainerSpec / NormalizerSpec field is declared.
#pragma once
#include <string>
#include <string_view>

#include "calpaca/tokenizer/tokenizer.h"
#include "sentencepiece_model.pb.h"  // generated from sentencepiece_model.proto

namespace calpaca {

// Throws Error("<path>: ...") when the file is missing or is not a ModelProto.
spm::ModelProto load_model_proto(const std::string& path);
spm::ModelProto parse_model_proto(std::string_view bytes, const std::string& name);
// Serializes deterministically and writes atomically (temporary name, then rename).
void save_model_proto(const spm::ModelProto& m, const std::string& path);
std::string serialize_model_proto(const spm::ModelProto& m);

// The Vocab of a BPE ModelProto (see load_vocab_spm for what is checked).
Vocab vocab_from_model_proto(const spm::ModelProto& m, const std::string& name);

// Chinese-LLaMA's merge_tokenizers.py: `base` (LLaMA) keeps everything (pieces, order,
// trainer_spec, normalizer_spec); every piece of `extra` (chinese_sp.model) whose string is not
// yet in `base` is appended, in order, as a NORMAL piece with an explicit score 0 (type unset).
// Returns the number of pieces added. LLaMA + chinese_sp.model gives the 49953-piece
// Chinese-LLaMA tokenizer byte for byte; append_piece(m, "[PAD]") then gives Chinese-Alpaca's.
size_t merge_model_protos(spm::ModelProto& base, const spm::ModelProto& extra);
// Appends one NORMAL piece with an explicit score (type unset), as the merge script does.
// Throws Error if the piece already exists.
void append_piece(spm::ModelProto& m, const std::string& piece, float score = 0.0f);

}  // namespace calpaca
