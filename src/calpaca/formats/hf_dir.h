// Hugging Face checkpoint directories: which weight files make up the model, opened as one
// TensorSource. Accepted layouts, in order of preference:
//   model.safetensors.index.json + shards   |  model.safetensors
//   pytorch_model.bin.index.json + shards   |  pytorch_model.bin
//   pytorch_model-XXXXX-of-YYYYY.bin without an index (what the original merge script accepts)
// Every shard named by an index (or implied by -of-YYYYY) must exist; a tensor the index
// places in a shard must be in that shard.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "calpaca/formats/tensor_source.h"

namespace calpaca {

// The weight files of a HF model directory (Error naming the directory if there are none).
std::vector<std::string> hf_weight_files(const std::string& dir);
TensorSource open_hf_weights(const std::string& dir);
// Reads and parses a JSON file, naming it on error.
nlohmann::json read_json_file(const std::string& path);

}  // namespace calpaca
