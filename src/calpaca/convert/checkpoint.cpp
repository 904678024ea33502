#include "calpaca/convert/checkpoint.h"

#include <filesystem>

#include "calpaca/base/error.h"
#include "calpaca/convert/names.h"
#include "calpaca/formats/gguf.h"
#include "calpaca/formats/hf_dir.h"
#include "calpaca/formats/meta_dir.h"
#include "calpaca/model/config.h"

namespace fs = std::filesystem;

namespace calpaca {

const char* qk_layout_name(QKLayout l) { return l == QKLayout::RotateHalf ? "rotate-half (HF)" : "interleaved (Meta/GGUF)"; }

std::vector<uint64_t> LlamaParams::shape_of(const std::string& n) const {
    const uint64_t E = static_cast<uint64_t>(n_embd), KV = static_cast<uint64_t>(n_embd_kv()), F = static_cast<uint64_t>(n_ff),
                   V = static_cast<uint64_t>(n_vocab);
    auto ends = [&](const char* x) {
        std::string s(x);
        return n.size() >= s.size() && n.compare(n.size() - s.size(), s.size(), s) == 0;
    };
    if (n == "model.embed_tokens.weight" || n == "lm_head.weight") return {V, E};
    if (n == "model.norm.weight" || ends("layernorm.weight")) return {E};
    if (ends("q_proj.weight") || ends("o_proj.weight")) return {E, E};
    if (ends("k_proj.weight") || ends("v_proj.weight")) return {KV, E};
    if (ends("gate_proj.weight") || ends("up_proj.weight")) return {F, E};
    if (ends("down_proj.weight")) return {E, F};
    fail("unknown LLaMA tensor '{}'", n);
}

namespace {

int64_t jint(const nlohmann::json& c, const std::string& key, const std::string& src) {
    if (!c.contains(key) || !c[key].is_number_integer()) fail("{}: missing integer field '{}'", src, key);
    return c[key].get<int64_t>();
}

void check_params(const LlamaParams& p, const std::string& src) {
    if (p.n_embd <= 0 || p.n_layer <= 0 || p.n_head <= 0 || p.n_head_kv <= 0 || p.n_ff <= 0 || p.n_vocab <= 0)
        fail("{}: dimensions must be positive (hidden {}, layers {}, heads {}, kv heads {}, ffn {}, vocab {})", src, p.n_embd,
             p.n_layer, p.n_head, p.n_head_kv, p.n_ff, p.n_vocab);
    if (p.n_embd % p.n_head || p.n_head % p.n_head_kv || p.head_dim() % 2)
        fail("{}: inconsistent head counts (hidden {}, heads {}, kv heads {})", src, p.n_embd, p.n_head, p.n_head_kv);
    if (p.n_layer > 1024 || p.n_embd > (1 << 20) || p.n_ff > (1 << 22) || p.n_vocab > (1 << 24))
        fail("{}: implausible model dimensions", src);
}

// Builds a canonical-name source from `raw` via `rename` ("" = skip when `skippable`, else error).
template <typename F, typename S>
TensorSource canonical(TensorSource& raw, const std::string& path, F rename, S skippable) {
    TensorSource out(path);
    for (const auto& t : raw.tensors()) {
        std::string n = rename(t.name);
        if (n.empty()) {
            if (skippable(t.name)) continue;
            fail("{}: unexpected tensor '{}' in a LLaMA checkpoint", path, t.name);
        }
        TensorInfo info = t;
        info.name = n;
        out.add(info, raw.pieces(t.name), raw.axis(t.name));
    }
    for (const auto& o : raw.owners()) out.keep_alive(o);
    return out;
}

bool is_rotary_buffer(const std::string& n) {
    return n.find("rotary_emb.inv_freq") != std::string::npos || n == "rope.freqs";
}

LlamaCheckpoint open_hf(const fs::path& dir) {
    LlamaCheckpoint ck;
    ck.kind = LlamaCheckpoint::Kind::HF;
    ck.path = ck.dir = dir.string();
    const std::string cfg_path = (dir / "config.json").string();
    nlohmann::json c = read_json_file(cfg_path);
    if (!c.is_object()) fail("{}: expected a JSON object", cfg_path);
    auto& p = ck.hp;
    p.n_embd = jint(c, "hidden_size", cfg_path);
    p.n_layer = jint(c, "num_hidden_layers", cfg_path);
    p.n_head = jint(c, "num_attention_heads", cfg_path);
    p.n_head_kv = c.contains("num_key_value_heads") && c["num_key_value_heads"].is_number_integer() ? c["num_key_value_heads"].get<int64_t>() : p.n_head;
    p.n_ff = jint(c, "intermediate_size", cfg_path);
    p.n_vocab = jint(c, "vocab_size", cfg_path);
    p.n_ctx = jint(c, "max_position_embeddings", cfg_path);
    if (c.contains("rms_norm_eps") && c["rms_norm_eps"].is_number()) p.rms_eps = c["rms_norm_eps"].get<double>();
    if (c.contains("rope_theta") && c["rope_theta"].is_number()) p.rope_theta = c["rope_theta"].get<double>();
    if (c.contains("rope_scaling") && c["rope_scaling"].is_object()) {
        const auto& rs = c["rope_scaling"];
        std::string type = rs.contains("type") && rs["type"].is_string() ? rs["type"].get<std::string>()
                           : rs.contains("rope_type") && rs["rope_type"].is_string() ? rs["rope_type"].get<std::string>()
                                                                                     : "";
        if (type != "linear") fail("{}: rope_scaling type '{}' is not supported (expected 'linear')", cfg_path, type);
        if (!rs.contains("factor") || !rs["factor"].is_number()) fail("{}: rope_scaling.factor missing", cfg_path);
        p.rope_scaling_type = "linear";
        p.rope_scaling_factor = rs["factor"].get<double>();
    }
    check_params(p, cfg_path);
    ck.hf_config = c;
    TensorSource raw = open_hf_weights(ck.path);
    ck.tensors = canonical(raw, ck.path, [](const std::string& n) { return hf_to_gguf_name(n).empty() ? std::string() : n; },
                           is_rotary_buffer);
    p.has_head = ck.tensors.find("lm_head.weight") != nullptr;
    if (fs::exists(dir / "tokenizer.model")) ck.tokenizer_model = (dir / "tokenizer.model").string();
    ck.layout = QKLayout::RotateHalf;
    ck.name = fs::absolute(dir).lexically_normal().filename().string();
    if (ck.name.empty()) ck.name = fs::absolute(dir).lexically_normal().parent_path().filename().string();
    return ck;
}

LlamaCheckpoint open_meta(const fs::path& dir, const CheckpointOptions& opt) {
    LlamaCheckpoint ck;
    ck.kind = LlamaCheckpoint::Kind::Meta;
    ck.path = ck.dir = dir.string();
    const std::string ppath = (dir / "params.json").string();
    MetaParams mp = read_meta_params(ppath);
    TensorSource raw = open_meta_weights(ck.path);
    ck.tensors = canonical(raw, ck.path, meta_to_hf_name, is_rotary_buffer);
    auto& p = ck.hp;
    p.n_embd = mp.dim;
    p.n_layer = mp.n_layers;
    p.n_head = mp.n_heads;
    p.n_head_kv = mp.n_kv_heads;
    p.rms_eps = mp.norm_eps;
    p.rope_theta = mp.rope_theta;
    const TensorInfo& emb = ck.tensors.get("model.embed_tokens.weight");
    if (emb.shape.size() != 2) fail("{}: tok_embeddings.weight is not a matrix", ck.path);
    p.n_vocab = mp.vocab_size > 0 ? mp.vocab_size : static_cast<int64_t>(emb.shape[0]);
    const TensorInfo& w1 = ck.tensors.get("model.layers.0.mlp.gate_proj.weight");
    p.n_ff = static_cast<int64_t>(w1.shape[0]);
    // params.json has no context length: LLaMA-1 2048, Llama-2 (norm_eps 1e-5) 4096
    p.n_ctx = opt.n_ctx > 0 ? opt.n_ctx : (mp.norm_eps < 5e-6 ? 2048 : 4096);
    p.has_head = ck.tensors.find("lm_head.weight") != nullptr;
    check_params(p, ppath);
    ck.layout = QKLayout::Interleaved;
    for (const fs::path& t : {dir / "tokenizer.model", dir.parent_path() / "tokenizer.model"})
        if (fs::exists(t)) {
            ck.tokenizer_model = t.string();
            break;
        }
    ck.hf_config = {{"architectures", {"LlamaForCausalLM"}},
                    {"model_type", "llama"},
                    {"hidden_act", "silu"},
                    {"bos_token_id", 1},
                    {"eos_token_id", 2},
                    {"pad_token_id", 0},
                    {"initializer_range", 0.02},
                    {"tie_word_embeddings", false},
                    {"use_cache", true}};
    ck.name = fs::absolute(dir).lexically_normal().filename().string();
    return ck;
}

LlamaCheckpoint open_gguf(const std::string& path) {
    LlamaCheckpoint ck;
    ck.kind = LlamaCheckpoint::Kind::GGUF;
    ck.path = path;
    ck.dir = fs::path(path).parent_path().string();
    auto f = GGUFFile::open(path);
    LlamaConfig c = LlamaConfig::from_gguf(*f);
    auto& p = ck.hp;
    p.n_embd = c.n_embd;
    p.n_layer = c.n_layer;
    p.n_head = c.n_head;
    p.n_head_kv = c.n_head_kv;
    p.n_ff = c.n_ff;
    p.n_ctx = c.n_ctx_train;
    p.rms_eps = c.rms_eps;
    p.rope_theta = c.rope_theta;
    if (c.rope_linear_factor != 1.0f) {
        p.rope_scaling_type = "linear";
        p.rope_scaling_factor = c.rope_linear_factor;
    }
    if (const GGUFTensorInfo* t = f->find_tensor("token_embd.weight"); t && t->ne.size() == 2)
        p.n_vocab = static_cast<int64_t>(t->ne[1]);
    else
        p.n_vocab = c.n_vocab;
    if (f->has("tokenizer.ggml.tokens")) ck.vocab = std::make_unique<Vocab>(load_vocab_gguf(*f));
    ck.chat_template = c.chat_template;
    ck.name = c.name;
    f.reset();
    TensorSource raw = open_gguf_source(path);
    ck.tensors = canonical(raw, path, gguf_to_hf_name, [](const std::string& n) { return n == "rope_freqs.weight"; });
    p.has_head = ck.tensors.find("lm_head.weight") != nullptr;
    check_params(p, path);
    ck.layout = QKLayout::Interleaved;
    ck.hf_config = {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"hidden_act", "silu"},
                    {"bos_token_id", 1},                      {"eos_token_id", 2},    {"pad_token_id", 0},
                    {"initializer_range", 0.02},              {"tie_word_embeddings", !p.has_head}, {"use_cache", true}};
    return ck;
}

}  // namespace

LlamaCheckpoint open_llama_checkpoint(const std::string& path, const CheckpointOptions& opt) {
    const fs::path p(path);
    if (!fs::exists(p)) fail("{}: no such file or directory", path);
    if (!fs::is_directory(p)) return open_gguf(path);
    if (fs::exists(p / "params.json")) return open_meta(p, opt);
    if (fs::exists(p / "config.json")) {
        LlamaCheckpoint ck = open_hf(p);
        if (opt.n_ctx > 0) ck.hp.n_ctx = opt.n_ctx;
        return ck;
    }
    if (fs::exists(p / "adapter_config.json"))
        fail("{}: this is a LoRA adapter, not a model: merge it into its base model with `calpaca merge-lora --base BASE --lora {}`",
             path, path);
    fail("{}: not a model directory (expected config.json for Hugging Face or params.json for Meta .pth)", path);
}

}  // namespace calpaca
