// Where converted / merged tensors go. The pipeline (merge_lora.h) hands a sink every
// tensor of the output model, in order, as rows of f32 already in the sink's q/k layout;
// the sink encodes them (f32/f16/bf16, or a ggml block type for GGUF) and streams them to
// disk. Nothing appears under the output name until finish() succeeds.
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "calpaca/convert/checkpoint.h"
#include "calpaca/tensor/dtype.h"
#include "calpaca/tokenizer/tokenizer.h"

namespace calpaca {

class ThreadPool;

struct OutTensor {
    std::string name;               // canonical (HF) name
    std::vector<uint64_t> shape;    // PyTorch order
};

struct OutputModel {
    LlamaParams hp;
    std::vector<OutTensor> tensors;  // in writing order
    const Vocab* vocab = nullptr;    // final vocabulary (size hp.n_vocab)
    std::string tokenizer_model;     // file to copy ("" when the vocabulary came from a GGUF)
    std::string tokenizer_dir;       // where tokenizer_config.json / special_tokens_map.json come from
    nlohmann::json hf_config;        // config.json to write (vocab_size and torch_dtype are set by the sink)
    std::string generation_config;   // path of a generation_config.json to copy, or ""
    std::string name;                // general.name
    std::string chat_template;       // calpaca.chat_template ("" = none)
    DType outtype = DType::F16;
};

class TensorSink {
public:
    virtual ~TensorSink() = default;
    virtual QKLayout layout() const = 0;
    virtual void begin(const OutputModel& m) = 0;
    // The next n_rows rows of the current tensor (row length = TensorInfo::row_elements()).
    virtual void write_rows(const float* rows, uint64_t n_rows) = 0;
    // Commits; returns the files written (final paths), for hashing.
    virtual std::vector<std::string> finish() = 0;
};

// GGUF file. outtype F32/F16/BF16 or a ggml block type (matrices whose row length is not a
// multiple of the block size fall back to F16); 1-D tensors are always F32.
std::unique_ptr<TensorSink> make_gguf_sink(const std::string& path, ThreadPool* pool);
// Hugging Face directory: model.safetensors (or model-0000i-of-0000n.safetensors + index
// when the data exceed max_shard_bytes), config.json, generation_config.json, tokenizer files.
std::unique_ptr<TensorSink> make_hf_sink(const std::string& dir, uint64_t max_shard_bytes, ThreadPool* pool);
// Meta directory: consolidated.0i.pth (PyTorch zip), params.json, tokenizer.model; n_shards
// 0 = by model width as the original (4096→1, 5120→2, 6656→4, 8192→8).
std::unique_ptr<TensorSink> make_pth_sink(const std::string& dir, int n_shards, ThreadPool* pool);

// Encodes f32 rows into `type` (F32/F16/BF16 or a block type), rows split over the pool.
void encode_rows(const float* src, uint64_t n_rows, uint64_t cols, DType type, uint8_t* dst, ThreadPool* pool);
// The output type of a tensor in a GGUF sink for a requested outtype.
DType gguf_tensor_type(const OutTensor& t, DType outtype);
// llama.cpp's general.file_type for an outtype.
uint32_t gguf_file_type(DType outtype);

// A directory written under "<dir>.tmp-<pid>" and renamed to `dir` on commit(); removed if
// never committed. An existing non-empty `dir` is an error (nothing is overwritten).
class OutputDir {
public:
    explicit OutputDir(std::string dir);
    ~OutputDir();
    std::string tmp_path(const std::string& file) const;   // path inside the temporary dir
    std::string final_path(const std::string& file) const;
    void commit();

private:
    std::string dir_, tmp_;
    bool committed_ = false;
};

// Helpers shared by the directory sinks.
const char* torch_dtype_name(DType t);  // "float16" …; Error for other types
void copy_tokenizer_files(const OutputModel& m, const OutputDir& out, std::vector<std::string>& written, bool side_files);

}  // namespace calpaca
