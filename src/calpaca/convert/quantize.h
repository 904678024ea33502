// `calpaca quantize`: GGUF → GGUF with the weight matrices re-encoded to a quantized (or
// float) type, streamed tensor by tensor (peak memory: one chunk of rows per thread plus
// one output chunk), rows quantized in parallel with ggml's reference quantizers, so the
// bytes equal llama.cpp's `llama-quantize` output for the same tensor and type.
//
// Which tensors get which type (docs/quantization.md has the table):
//  * only 2-D tensors named "*weight" are converted; 1-D tensors (norms) are copied as is.
//  * plain types (Q4_0 … Q6_K): every matrix gets the type, except the output head
//    (output.weight, or token_embd.weight when the model ties them), which gets Q6_K
//    (Q8_0 stays Q8_0) — llama.cpp's rule for every quantized file type. --pure drops it.
//  * mixes Q4_K_M / Q5_K_M (llama.cpp's policy): Q4_K / Q5_K everywhere, Q6_K for the head
//    and for attn_v and ffn_down in the layers where use_more_bits(i, n) holds (the first
//    and last n/8 layers and every third layer in between).
//  * F32 / F16 / BF16: every matrix converted to that float type.
//  * a matrix whose row length is not a multiple of the type's block size falls back as in
//    llama.cpp: Q2_K/Q3_K → Q4_0, Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0, and F16 when even
//    that does not fit; the report lists every fallback.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "calpaca/tensor/dtype.h"

namespace calpaca {

struct QuantMix {
    std::string name;           // canonical name: "Q4_0", "Q4_K_M", "F16", …
    DType base = DType::Q4_0;   // type of the ordinary matrices
    bool k_m = false;           // Q4_K_M / Q5_K_M: attn_v / ffn_down get Q6_K in use_more_bits layers
    uint32_t file_type = 2;     // llama.cpp's LLAMA_FTYPE value (general.file_type)
};

// Case-insensitive; false for an unknown name.
bool parse_quant_mix(std::string_view name, QuantMix& out);
// "Q4_0, Q4_1, …" for messages and --help.
std::string quant_mix_names();

// llama.cpp's use_more_bits(i_layer, n_layers).
bool use_more_bits(int i_layer, int n_layers);

// Type of one tensor. `index`/`count` are the tensor's position among the tensors of its
// kind (attn_v / ffn_down) in file order, as llama.cpp counts them; `tied_head` is true for
// token_embd.weight in a file without output.weight. A fallback, if any, is explained in
// *note (else *note is cleared).
DType choose_tensor_type(const QuantMix& mix, const std::string& name, uint64_t row_len, int index, int count,
                         bool tied_head, bool pure, std::string* note);

struct QuantizeOptions {
    int threads = 0;                // 0: default_thread_count()
    bool allow_requantize = false;  // accept quantized input tensors (dequantized, then re-quantized)
    bool pure = false;              // no special type for the output head
    bool progress = true;
};

struct QuantizeReport {
    std::string mix;
    size_t n_tensors = 0, n_converted = 0, n_copied = 0;
    uint64_t n_elements = 0;                 // all tensors
    uint64_t bytes_in = 0, bytes_out = 0;    // tensor data
    uint64_t file_in = 0, file_out = 0;      // whole files
    std::map<std::string, size_t> out_types; // type name → number of tensors (all tensors)
    std::vector<std::string> fallbacks;      // one line each
    std::vector<std::pair<std::string, std::string>> tensor_types;  // name → output type, in file order
    double seconds = 0;
    int threads = 0;
    double bits_per_weight() const { return n_elements ? 8.0 * static_cast<double>(bytes_out) / static_cast<double>(n_elements) : 0; }
};

// Writes `out` atomically (temporary name, renamed when complete).
QuantizeReport quantize_gguf(const std::string& in, const std::string& out, const QuantMix& mix, const QuantizeOptions& opt);

}  // namespace calpaca
