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

}  // namespace calpaca
