#include "calpaca/convert/hf_to_gguf.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <regex>
#include <vector>

#include "calpaca/base/error.h"
#include "calpaca/base/fileio.h"
#include "calpaca/base/progress.h"
#include "calpaca/formats/gguf.h"
#include "calpaca/formats/safetensors.h"
#include "calpaca/tensor/kernels.h"
#include "calpaca/tokenizer/tokenizer.h"

namespace fs = std::filesystem;

namespace calpaca {

void permute_qk_rows_hf_to_gguf(const float* src, float* dst, int64_t rows, int64_t cols, int64_t n_heads) {
    if (rows % n_heads) fail("q/k permutation: {} rows are not divisible by {} heads", rows, n_heads);
    const int64_t d = rows / n_heads;
    if (d % 2) fail("q/k permutation: head dimension {} is odd", d);
    for (int64_t h = 0; h < n_heads; ++h)
        for (int64_t i = 0; i < d / 2; ++i)
            for (int64_t j = 0; j < 2; ++j) {
                const float* s = src + (h * d + j * (d / 2) + i) * cols;
                std::copy(s, s + cols, dst + (h * d + 2 * i + j) * cols);
            }
}

namespace {

struct Source {
    std::vector<std::unique_ptr<SafeTensorsFile>> files;
    std::map<std::string, const SafeTensorInfo*> tensors;
};

Source open_checkpoint(const fs::path& dir) {
    Source s;
    fs::path single = dir / "model.safetensors", index = dir / "model.safetensors.index.json";
    std::vector<fs::path> shards;
    if (fs::exists(index)) {
        nlohmann::json j;
        try {
            j = nlohmann::json::parse(read_file(index.string()));
        } catch (const nlohmann::json::exception& e) {
            fail("{}: invalid JSON: {}", index.string(), e.what());
        }
        if (!j.contains("weight_map") || !j["weight_map"].is_object()) fail("{}: missing object 'weight_map'", index.string());
        std::map<std::string, int> seen;
        for (auto& [k, v] : j["weight_map"].items()) {
            if (!v.is_string()) fail("{}: weight_map[{}] is not a file name", index.string(), k);
            std::string f = v.get<std::string>();
            if (f.find('/') != std::string::npos || f.find("..") != std::string::npos)
                fail("{}: weight_map[{}] = '{}' is not a plain file name", index.string(), k, f);
            if (!seen.count(f)) {
                seen[f] = 1;
                shards.push_back(dir / f);
            }
        }
    } else if (fs::exists(single)) {
        shards.push_back(single);
    } else {
        if (fs::exists(dir / "pytorch_model.bin") || fs::exists(dir / "pytorch_model.bin.index.json"))
            fail("{}: PyTorch .bin checkpoints are not supported by this converter yet; save with safe_serialization=True",
                 dir.string());
        fail("{}: no model.safetensors or model.safetensors.index.json found", dir.string());
    }
    for (const auto& p : shards) {
        s.files.push_back(SafeTensorsFile::open(p.string()));
        for (const auto& t : s.files.back()->tensors()) {
            if (s.tensors.count(t.name)) fail("{}: tensor '{}' appears in more than one shard", dir.string(), t.name);
            s.tensors[t.name] = &t;
        }
    }
    return s;
}

int64_t jint(const nlohmann::json& c, const std::string& key, const std::string& src) {
    if (!c.contains(key) || !c[key].is_number_integer()) fail("{}: missing integer field '{}'", src, key);
    return c[key].get<int64_t>();
}

std::string map_name(const std::string& hf) {
    static const std::regex layer(R"(model\.layers\.(\d+)\.(.+)\.weight)");
    if (hf == "model.embed_tokens.weight") return "token_embd.weight";
    if (hf == "model.norm.weight") return "output_norm.weight";
    if (hf == "lm_head.weight") return "output.weight";
    std::smatch m;
    if (std::regex_match(hf, m, layer)) {
        static const std::map<std::string, std::string> sub = {
            {"input_layernorm", "attn_norm"},      {"post_attention_layernorm", "ffn_norm"},
            {"self_attn.q_proj", "attn_q"},        {"self_attn.k_proj", "attn_k"},
            {"self_attn.v_proj", "attn_v"},        {"self_attn.o_proj", "attn_output"},
            {"mlp.gate_proj", "ffn_gate"},         {"mlp.up_proj", "ffn_up"},
            {"mlp.down_proj", "ffn_down"},
        };
        auto it = sub.find(m[2].str());
        if (it != sub.end()) return "blk." + m[1].str() + "." + it->second + ".weight";
    }
    return "";
}

}  // namespace

size_t convert_hf_to_gguf(const std::string& dir_s, const std::string& out, const ConvertOptions& opt) {
    if (opt.outtype != DType::F32 && opt.outtype != DType::F16 && opt.outtype != DType::BF16)
        fail("--outtype {}: this converter writes f32, f16 or bf16", dtype_name(opt.outtype));
    const fs::path dir(dir_s);
    const std::string cfg_path = (dir / "config.json").string();
    nlohmann::json c;
    try {
        c = nlohmann::json::parse(read_file(cfg_path));
    } catch (const nlohmann::json::exception& e) {
        fail("{}: invalid JSON: {}", cfg_path, e.what());
    }
    const int64_t n_embd = jint(c, "hidden_size", cfg_path), n_layer = jint(c, "num_hidden_layers", cfg_path);
    const int64_t n_head = jint(c, "num_attention_heads", cfg_path);
    const int64_t n_head_kv = c.contains("num_key_value_heads") && c["num_key_value_heads"].is_number_integer()
                                  ? c["num_key_value_heads"].get<int64_t>()
                                  : n_head;
    const int64_t n_ff = jint(c, "intermediate_size", cfg_path), n_vocab = jint(c, "vocab_size", cfg_path);
    const int64_t n_ctx = jint(c, "max_position_embeddings", cfg_path);
    if (n_head <= 0 || n_head_kv <= 0 || n_embd % n_head || n_head % n_head_kv)
        fail("{}: inconsistent head counts (hidden {}, heads {}, kv heads {})", cfg_path, n_embd, n_head, n_head_kv);
    const double eps = c.value("rms_norm_eps", 1e-6);
    const double theta = c.contains("rope_theta") && c["rope_theta"].is_number() ? c["rope_theta"].get<double>() : 10000.0;

    std::string vocab_path = opt.vocab_path.empty() ? (dir / "tokenizer.model").string() : opt.vocab_path;
    Vocab vocab = load_vocab_spm(vocab_path);

    Source src = open_checkpoint(dir);
    GGUFWriter w(out);
    w.set("general.architecture", GGUFValue::of_str("llama"));
    w.set("general.name", GGUFValue::of_str(opt.name.empty() ? fs::absolute(dir).filename().string() : opt.name));
    w.set("general.file_type", GGUFValue::of_u32(opt.outtype == DType::F32 ? 0 : opt.outtype == DType::F16 ? 1 : 32));
    w.set("llama.context_length", GGUFValue::of_u32(static_cast<uint32_t>(n_ctx)));
    w.set("llama.embedding_length", GGUFValue::of_u32(static_cast<uint32_t>(n_embd)));
    w.set("llama.block_count", GGUFValue::of_u32(static_cast<uint32_t>(n_layer)));
    w.set("llama.feed_forward_length", GGUFValue::of_u32(static_cast<uint32_t>(n_ff)));
    w.set("llama.attention.head_count", GGUFValue::of_u32(static_cast<uint32_t>(n_head)));
    w.set("llama.attention.head_count_kv", GGUFValue::of_u32(static_cast<uint32_t>(n_head_kv)));
    w.set("llama.rope.dimension_count", GGUFValue::of_u32(static_cast<uint32_t>(n_embd / n_head)));
    w.set("llama.attention.layer_norm_rms_epsilon", GGUFValue::of_f32(static_cast<float>(eps)));
    w.set("llama.rope.freq_base", GGUFValue::of_f32(static_cast<float>(theta)));
    w.set("llama.vocab_size", GGUFValue::of_u32(static_cast<uint32_t>(n_vocab)));
    if (c.contains("rope_scaling") && c["rope_scaling"].is_object()) {
        const auto& rs = c["rope_scaling"];
        std::string type = rs.value("type", rs.value("rope_type", std::string("")));
        if (type != "linear") fail("{}: rope_scaling type '{}' is not supported (expected 'linear')", cfg_path, type);
        if (!rs.contains("factor") || !rs["factor"].is_number()) fail("{}: rope_scaling.factor missing", cfg_path);
        w.set("llama.rope.scaling.type", GGUFValue::of_str("linear"));
        w.set("llama.rope.scaling.factor", GGUFValue::of_f32(rs["factor"].get<float>()));
    }
    if (static_cast<int64_t>(vocab.size()) != n_vocab)
        fail("vocabulary size mismatch: tokenizer {} has {} pieces but {} says vocab_size {}", vocab_path, vocab.size(),
             cfg_path, n_vocab);
    write_vocab_gguf(vocab, w);

    // Plan: every known tensor in a stable order (embeddings, layers, norm, head).
    struct Item {
        std::string gguf;
        const SafeTensorInfo* t;
        int64_t permute_heads;  // 0 = none
    };
    std::vector<Item> items;
    std::map<std::string, const SafeTensorInfo*> by_gguf;
    for (const auto& [name, t] : src.tensors) {
        if (name.find("rotary_emb.inv_freq") != std::string::npos) continue;
        std::string g = map_name(name);
        if (g.empty()) fail("{}: unexpected tensor '{}' in a LLaMA checkpoint", dir_s, name);
        by_gguf[g] = t;
    }
    auto want = [&](const std::string& g, int64_t heads, std::vector<uint64_t> shape) {
        auto it = by_gguf.find(g);
        if (it == by_gguf.end()) fail("{}: checkpoint lacks the tensor for {}", dir_s, g);
        if (it->second->shape != shape) {
            std::string got, exp;
            for (auto d : it->second->shape) got += (got.empty() ? "" : "x") + std::to_string(d);
            for (auto d : shape) exp += (exp.empty() ? "" : "x") + std::to_string(d);
            fail("{}: tensor {} ({}): expected shape {}, found {}", dir_s, it->second->name, g, exp, got);
        }
        items.push_back({g, it->second, heads});
    };
    const uint64_t E = n_embd, KV = n_embd / n_head * n_head_kv;
    want("token_embd.weight", 0, {uint64_t(n_vocab), E});
    for (int64_t l = 0; l < n_layer; ++l) {
        std::string p = "blk." + std::to_string(l) + ".";
        want(p + "attn_norm.weight", 0, {E});
        want(p + "attn_q.weight", n_head, {E, E});
        want(p + "attn_k.weight", n_head_kv, {KV, E});
        want(p + "attn_v.weight", 0, {KV, E});
        want(p + "attn_output.weight", 0, {E, E});
        want(p + "ffn_norm.weight", 0, {E});
        want(p + "ffn_gate.weight", 0, {uint64_t(n_ff), E});
        want(p + "ffn_up.weight", 0, {uint64_t(n_ff), E});
        want(p + "ffn_down.weight", 0, {E, uint64_t(n_ff)});
    }
    want("output_norm.weight", 0, {E});
    if (by_gguf.count("output.weight")) want("output.weight", 0, {uint64_t(n_vocab), E});
    if (items.size() != by_gguf.size()) fail("{}: checkpoint has tensors for more layers than config.json says", dir_s);

    for (const auto& it : items) {
        std::vector<uint64_t> ne(it.t->shape.rbegin(), it.t->shape.rend());  // GGUF lists fastest first
        w.add_tensor(it.gguf, it.t->shape.size() == 1 ? DType::F32 : opt.outtype, ne);
    }
    w.begin();
    Progress prog("convert", items.size(), opt.progress);
    std::vector<float> buf, perm;
    std::vector<uint8_t> outb;
    size_t done = 0;
    for (const auto& it : items) {
        const size_t n = it.t->n_elements();
        buf.resize(n);
        to_f32(it.t->type, it.t->data, buf.data(), n);
        const float* data = buf.data();
        if (it.permute_heads) {
            perm.resize(n);
            permute_qk_rows_hf_to_gguf(buf.data(), perm.data(), static_cast<int64_t>(it.t->shape[0]),
                                       static_cast<int64_t>(it.t->shape[1]), it.permute_heads);
            data = perm.data();
        }
        DType ot = it.t->shape.size() == 1 ? DType::F32 : opt.outtype;
        if (ot == DType::F32) {
            w.write_tensor_data(data, n * 4);
        } else {
            outb.resize(n * 2);
            for (size_t i = 0; i < n; ++i) {
                uint16_t h = ot == DType::F16 ? fp32_to_fp16(data[i]) : fp32_to_bf16(data[i]);
                std::memcpy(&outb[2 * i], &h, 2);
            }
            w.write_tensor_data(outb.data(), outb.size());
        }
        prog.update(++done, it.gguf);
    }
    w.finish();
    return items.size();
}

}  // namespace calpaca
