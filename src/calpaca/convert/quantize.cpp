#include "calpaca/convert/quantize.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "calpaca/base/error.h"
#include "calpaca/base/progress.h"
#include "calpaca/base/threadpool.h"
#include "calpaca/formats/gguf.h"
#include "calpaca/tensor/kernels.h"
#include "calpaca/tensor/quant.h"

namespace calpaca {

namespace {

// name, base type, K_M mix, llama.cpp LLAMA_FTYPE
struct MixEntry {
    const char* name;
    DType base;
    bool k_m;
    uint32_t ftype;
};
const MixEntry kMixes[] = {
    {"Q4_0", DType::Q4_0, false, 2},    {"Q4_1", DType::Q4_1, false, 3},   {"Q5_0", DType::Q5_0, false, 8},
    {"Q5_1", DType::Q5_1, false, 9},    {"Q8_0", DType::Q8_0, false, 7},   {"Q2_K", DType::Q2_K, false, 10},
    {"Q3_K", DType::Q3_K, false, 11},   {"Q4_K", DType::Q4_K, false, 14},  {"Q5_K", DType::Q5_K, false, 16},
    {"Q6_K", DType::Q6_K, false, 18},   {"Q4_K_M", DType::Q4_K, true, 15}, {"Q5_K_M", DType::Q5_K, true, 17},
    {"F16", DType::F16, false, 1},      {"BF16", DType::BF16, false, 32},  {"F32", DType::F32, false, 0},
};

bool ends_with(const std::string& s, std::string_view suf) {
    return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

// llama.cpp's fallback for a row length the type's blocks do not divide.
DType fallback_type(DType t, uint64_t row_len) {
    DType f = t;
    switch (t) {
        case DType::Q2_K: case DType::Q3_K: f = DType::Q4_0; break;
        case DType::Q4_K: f = DType::Q5_0; break;
        case DType::Q5_K: f = DType::Q5_1; break;
        case DType::Q6_K: f = DType::Q8_0; break;
        default: break;
    }
    if (row_len % dtype_info(f).block_size) f = DType::F16;
    return f;
}

bool is_float(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

// A tensor the quantizer converts: 2-D, named *weight, float or quantized data.
bool convertible(const GGUFTensorInfo& t) {
    return t.ne.size() == 2 && ends_with(t.name, "weight") && (is_float(t.type) || is_quantized(t.type));
}

}  // namespace

bool parse_quant_mix(std::string_view name, QuantMix& out) {
    std::string up(name);
    for (auto& c : up) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    for (const auto& m : kMixes) {
        if (up == m.name) {
            out.name = m.name;
            out.base = m.base;
            out.k_m = m.k_m;
            out.file_type = m.ftype;
            return true;
        }
    }
    return false;
}

std::string quant_mix_names() {
    std::string s;
    for (const auto& m : kMixes) s += (s.empty() ? "" : ", ") + std::string(m.name);
    return s;
}

bool use_more_bits(int i_layer, int n_layers) {
    return i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer - n_layers / 8) % 3 == 2;
}

DType choose_tensor_type(const QuantMix& mix, const std::string& name, uint64_t row_len, int index, int count,
                         bool tied_head, bool pure, std::string* note) {
    if (note) note->clear();
    DType t = mix.base;
    if (is_float(t)) return t;
    if (!pure) {
        const bool head = name == "output.weight" || (tied_head && name == "token_embd.weight");
        if (head) {
            if (row_len % dtype_info(t).block_size) t = DType::Q8_0;
            else if (t != DType::Q8_0) t = DType::Q6_K;
        } else if (mix.k_m && (ends_with(name, "attn_v.weight") || ends_with(name, "ffn_down.weight"))) {
            if (use_more_bits(index, count)) t = DType::Q6_K;
        }
    }
    if (row_len % dtype_info(t).block_size) {
        const DType f = fallback_type(t, row_len);
        if (note)
            *note = fmt::format("{}: rows of {} are not a multiple of the {} block size {}: using {}", name, row_len,
                                dtype_name(t), dtype_info(t).block_size, dtype_name(f));
        t = f;
    }
    return t;
}

QuantizeReport quantize_gguf(const std::string& in, const std::string& out, const QuantMix& mix, const QuantizeOptions& opt) {
    const auto t_start = std::chrono::steady_clock::now();
    auto src = GGUFFile::open(in);
    QuantizeReport rep;
    rep.mix = mix.name;
    rep.file_in = src->file_size();
    rep.threads = opt.threads > 0 ? opt.threads : default_thread_count();

    const auto& tensors = src->tensors();
    const bool tied = src->find_tensor("output.weight") == nullptr;
    int n_attn_v = 0, n_ffn_down = 0;
    for (const auto& t : tensors) {
        if (ends_with(t.name, "attn_v.weight")) ++n_attn_v;
        if (ends_with(t.name, "ffn_down.weight")) ++n_ffn_down;
    }

    // Plan every tensor's output type first: the header needs them, and a refused
    // requantization must fail before anything is written.
    std::vector<DType> types(tensors.size());
    int i_attn_v = 0, i_ffn_down = 0;
    bool any_quant_out = false;
    for (size_t i = 0; i < tensors.size(); ++i) {
        const auto& t = tensors[i];
        types[i] = t.type;
        int index = 0, count = 0;
        if (ends_with(t.name, "attn_v.weight")) index = i_attn_v++, count = n_attn_v;
        if (ends_with(t.name, "ffn_down.weight")) index = i_ffn_down++, count = n_ffn_down;
        if (!convertible(t)) continue;
        std::string note;
        const DType want = choose_tensor_type(mix, t.name, t.ne[0], index, count, tied, opt.pure, &note);
        if (is_quantized(t.type) && !opt.allow_requantize)
            fail("{}: tensor {} is already quantized ({}); re-quantizing loses quality, pass --allow-requantize to do it anyway",
                 in, t.name, dtype_name(t.type));
        if (!note.empty()) rep.fallbacks.push_back(note);
        types[i] = want;
    }
    for (DType t : types) any_quant_out = any_quant_out || is_quantized(t);

    GGUFWriter w(out, src->alignment());
    for (const auto& [k, v] : src->kv()) w.set(k, v);
    w.set("general.file_type", GGUFValue::of_u32(mix.file_type));
    if (any_quant_out) w.set("general.quantization_version", GGUFValue::of_u32(2));
    uint64_t total_work = 0;
    for (size_t i = 0; i < tensors.size(); ++i) {
        w.add_tensor(tensors[i].name, types[i], tensors[i].ne);
        total_work += tensors[i].n_elements();
    }
    w.begin();

    ThreadPool pool(rep.threads);
    Progress progress("quantize " + mix.name, total_work, opt.progress);
    uint64_t done = 0;
    std::vector<uint8_t> buf;
    for (size_t i = 0; i < tensors.size(); ++i) {
        const auto& t = tensors[i];
        const DType to = types[i];
        const uint8_t* data = src->tensor_data(t);
        rep.n_elements += t.n_elements();
        rep.bytes_in += t.n_bytes();
        rep.out_types[dtype_name(to)]++;
        rep.tensor_types.emplace_back(t.name, dtype_name(to));
        if (to == t.type) {  // copied byte for byte
            w.write_tensor_data(data, t.n_bytes());
            rep.bytes_out += t.n_bytes();
            ++rep.n_copied;
            done += t.n_elements();
            progress.update(done, t.name);
            continue;
        }
        ++rep.n_converted;
        const uint64_t cols = t.ne[0], rows = t.ne[1];
        const uint64_t in_rb = row_bytes(t.type, cols), out_rb = row_bytes(to, cols);
        // chunks of about 4M elements: bounded memory, many rows per thread
        const uint64_t chunk = std::max<uint64_t>(1, (uint64_t{4} << 20) / std::max<uint64_t>(cols, 1));
        for (uint64_t r0 = 0; r0 < rows; r0 += chunk) {
            const uint64_t nr = std::min(chunk, rows - r0);
            buf.resize(nr * out_rb);
            pool.parallel_for(static_cast<size_t>(nr), [&](size_t a, size_t b) {
                std::vector<float> row(cols);
                for (size_t r = a; r < b; ++r) {
                    const uint8_t* sp = data + (r0 + r) * in_rb;
                    uint8_t* dp = buf.data() + r * out_rb;
                    to_f32(t.type, sp, row.data(), cols);
                    if (to == DType::F32)
                        std::memcpy(dp, row.data(), cols * 4);
                    else if (to == DType::F16 || to == DType::BF16)
                        for (uint64_t c = 0; c < cols; ++c) {
                            const uint16_t h = to == DType::F16 ? fp32_to_fp16(row[c]) : fp32_to_bf16(row[c]);
                            std::memcpy(dp + 2 * c, &h, 2);
                        }
                    else
                        quantize_row_ref(to, row.data(), dp, static_cast<int64_t>(cols));
                }
            });
            w.write_tensor_data(buf.data(), buf.size());
            done += nr * cols;
            progress.update(done, t.name);
        }
        rep.bytes_out += rows * out_rb;
    }
    w.finish();
    progress.finish();
    rep.n_tensors = tensors.size();
    std::error_code ec;
    rep.file_out = std::filesystem::file_size(out, ec);
    rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
    return rep;
}

}  // namespace calpaca
