#include "calpaca/train/lora.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "calpaca/base/error.h"
#include "calpaca/base/fileio.h"
#include "calpaca/formats/safetensors.h"
#include "calpaca/train/llama_train.h"
#include "calpaca/train/tensor_file_writer.h"

namespace calpaca {

uint64_t mix64(uint64_t x) {  // splitmix64 finaliser
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static const char* kTargetNames[kNumLoraTargets] = {"q_proj", "k_proj", "v_proj", "o_proj",
                                                    "gate_proj", "up_proj", "down_proj"};

const char* lora_target_name(LoraTarget t) { return kTargetNames[static_cast<int>(t)]; }

LoraTarget parse_lora_target(const std::string& name) {
    for (int i = 0; i < kNumLoraTargets; ++i) {
        const std::string full = kTargetNames[i];
        if (name == full || name + "_proj" == full) return static_cast<LoraTarget>(i);
    }
    fail("unknown LoRA target '{}' (expected q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)", name);
}

std::vector<LoraTarget> parse_lora_targets(const std::string& list) {
    if (list == "all") return LoraSettings{}.targets;
    std::vector<LoraTarget> out;
    size_t b = 0;
    while (b <= list.size()) {
        size_t e = list.find(',', b);
        if (e == std::string::npos) e = list.size();
        std::string item = list.substr(b, e - b);
        if (!item.empty()) {
            LoraTarget t = parse_lora_target(item);
            if (std::find(out.begin(), out.end(), t) == out.end()) out.push_back(t);
        }
        b = e + 1;
    }
    if (out.empty()) fail("--lora-targets: no target modules given");
    std::sort(out.begin(), out.end());
    return out;
}

bool LoraSettings::has(LoraTarget t) const { return std::find(targets.begin(), targets.end(), t) != targets.end(); }

static std::string module_key(int64_t layer, LoraTarget t) {
    const bool attn = t == LoraTarget::Q || t == LoraTarget::K || t == LoraTarget::V || t == LoraTarget::O;
    return "base_model.model.model.layers." + std::to_string(layer) + (attn ? ".self_attn." : ".mlp.") +
           lora_target_name(t);
}
static const char* kEmbedKey = "base_model.model.model.embed_tokens.weight";
static const char* kHeadKey = "base_model.model.lm_head.weight";

std::unique_ptr<TrainableParams> TrainableParams::create(const BaseWeights& base, const LoraSettings& s,
                                                         uint64_t seed) {
    if (s.r <= 0) fail("--lora-r must be positive, got {}", s.r);
    if (!(s.dropout >= 0.0f && s.dropout < 1.0f)) fail("--lora-dropout must be in [0, 1), got {}", s.dropout);
    if (!(s.alpha > 0.0f)) fail("--lora-alpha must be positive, got {}", s.alpha);
    std::unique_ptr<TrainableParams> p(new TrainableParams());
    p->settings_ = s;
    p->cfg_ = base.cfg;
    const LlamaConfig& c = base.cfg;
    p->lora_.resize(static_cast<size_t>(c.n_layer));
    auto add = [&](std::string name, std::vector<int64_t> shape) {
        auto q = std::make_unique<Param>();
        q->name = std::move(name);
        q->shape = std::move(shape);
        int64_t n = 1;
        for (int64_t d : q->shape) n *= d;
        q->w.assign(static_cast<size_t>(n), 0.0f);
        q->g.assign(static_cast<size_t>(n), 0.0f);
        p->params_.push_back(std::move(q));
        return p->params_.back().get();
    };
    for (int64_t l = 0; l < c.n_layer; ++l)
        for (int ti = 0; ti < kNumLoraTargets; ++ti) {
            const LoraTarget t = static_cast<LoraTarget>(ti);
            if (!s.has(t)) continue;
            const MatrixView& W = base.matrix(l, t);
            LoraModule m;
            m.in = W.cols;
            m.out = W.rows;
            m.A = add(module_key(l, t) + ".lora_A.weight", {s.r, m.in});
            m.B = add(module_key(l, t) + ".lora_B.weight", {m.out, s.r});
            // kaiming_uniform_(a=sqrt(5)) on [r][in]: gain sqrt(2/(1+5)), bound gain*sqrt(3/in) = 1/sqrt(in)
            const double bound = 1.0 / std::sqrt(static_cast<double>(m.in));
            const uint64_t stream = mix64(seed ^ mix64(static_cast<uint64_t>(l * 16 + ti) + 0xA11CEull));
            for (size_t i = 0; i < m.A->w.size(); ++i)
                m.A->w[i] = static_cast<float>((2.0 * hash_uniform(stream, i) - 1.0) * bound);
            p->lora_[static_cast<size_t>(l)][static_cast<size_t>(ti)] = m;
        }
    if (s.train_embed) {
        p->embed_ = add(kEmbedKey, {c.n_vocab, c.n_embd});
        to_f32(base.tok_embd.type, base.tok_embd.data, p->embed_->w.data(), p->embed_->w.size());
    }
    if (s.train_head) {
        p->head_ = add(kHeadKey, {c.n_vocab, c.n_embd});
        to_f32(base.output.type, base.output.data, p->head_->w.data(), p->head_->w.size());
    }
    return p;
}

const LoraModule* TrainableParams::lora(int64_t layer, LoraTarget t) const {
    const LoraModule& m = lora_[static_cast<size_t>(layer)][static_cast<size_t>(t)];
    return m.A ? &m : nullptr;
}

Param* TrainableParams::find(const std::string& name) const {
    for (const auto& p : params_)
        if (p->name == name) return p.get();
    return nullptr;
}

int64_t TrainableParams::n_trainable() const {
    int64_t n = 0;
    for (const auto& p : params_) n += p->numel();
    return n;
}

void TrainableParams::zero_grad() {
    for (auto& p : params_) std::fill(p->g.begin(), p->g.end(), 0.0f);
}

int64_t TrainableParams::heads_of(LoraTarget t) const {
    if (t == LoraTarget::Q) return cfg_.n_head;
    if (t == LoraTarget::K) return cfg_.n_head_kv;
    return 0;
}

// GGUF row h*d + 2i + j  =  HF row h*d + j*(d/2) + i
static void permute_rows(std::vector<float>& b, int64_t out, int64_t r, int64_t n_heads, bool to_hf) {
    const int64_t d = out / n_heads;
    std::vector<float> src = b;
    for (int64_t h = 0; h < n_heads; ++h)
        for (int64_t i = 0; i < d / 2; ++i)
            for (int64_t j = 0; j < 2; ++j) {
                const int64_t g = h * d + 2 * i + j, f = h * d + j * (d / 2) + i;
                const int64_t dst_row = to_hf ? f : g, src_row = to_hf ? g : f;
                std::copy(src.begin() + src_row * r, src.begin() + (src_row + 1) * r, b.begin() + dst_row * r);
            }
}

void TrainableParams::b_gguf_to_hf(std::vector<float>& b, int64_t out, int64_t r, int64_t n_heads) {
    permute_rows(b, out, r, n_heads, true);
}
void TrainableParams::b_hf_to_gguf(std::vector<float>& b, int64_t out, int64_t r, int64_t n_heads) {
    permute_rows(b, out, r, n_heads, false);
}

void TrainableParams::save_peft(const std::string& dir, const std::string& base_name) const {
    std::filesystem::create_directories(dir);
    F32SafeTensorsWriter w;
    for (const auto& p : params_) {
        std::vector<float> v = p->w;
        for (int64_t l = 0; l < cfg_.n_layer; ++l)
            for (LoraTarget t : {LoraTarget::Q, LoraTarget::K}) {
                const LoraModule* m = lora(l, t);
                if (m && m->B == p.get()) b_gguf_to_hf(v, m->out, settings_.r, heads_of(t));
            }
        w.add(p->name, p->shape, std::move(v));
    }
    w.write(dir + "/adapter_model.safetensors", {{"format", "pt"}});
    nlohmann::ordered_json j;
    j["base_model_name_or_path"] = base_name;
    j["bias"] = "none";
    j["fan_in_fan_out"] = false;
    j["inference_mode"] = true;
    j["init_lora_weights"] = true;
    j["lora_alpha"] = settings_.alpha;
    j["lora_dropout"] = settings_.dropout;
    std::vector<std::string> mts;
    if (settings_.train_embed) mts.push_back("embed_tokens");
    if (settings_.train_head) mts.push_back("lm_head");
    j["modules_to_save"] = mts.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(mts);
    j["peft_type"] = "LORA";
    j["r"] = settings_.r;
    std::vector<std::string> tm;
    for (LoraTarget t : settings_.targets) tm.push_back(lora_target_name(t));
    j["target_modules"] = tm;
    j["task_type"] = "CAUSAL_LM";
    write_file_atomic(dir + "/adapter_config.json", j.dump(2) + "\n");
}

LoraSettings read_peft_settings(const std::string& dir) {
    const std::string path = dir + "/adapter_config.json";
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(read_file(path));
    } catch (const nlohmann::json::exception& e) {
        fail("{}: invalid JSON: {}", path, e.what());
    }
    LoraSettings s;
    if (!j.contains("r") || !j["r"].is_number_integer()) fail("{}: missing or non-integer field 'r'", path);
    if (!j.contains("lora_alpha") || !j["lora_alpha"].is_number()) fail("{}: missing field 'lora_alpha'", path);
    if (!j.contains("target_modules") || !j["target_modules"].is_array())
        fail("{}: missing list field 'target_modules'", path);
    s.r = j["r"];
    s.alpha = j["lora_alpha"].get<float>();
    s.dropout = j.contains("lora_dropout") && j["lora_dropout"].is_number() ? j["lora_dropout"].get<float>() : 0.0f;
    s.targets.clear();
    for (const auto& t : j["target_modules"]) {
        if (!t.is_string()) fail("{}: target_modules must be a list of names", path);
        s.targets.push_back(parse_lora_target(t.get<std::string>()));
    }
    std::sort(s.targets.begin(), s.targets.end());
    s.train_embed = s.train_head = false;
    if (j.contains("modules_to_save") && j["modules_to_save"].is_array())
        for (const auto& m : j["modules_to_save"]) {
            const std::string name = m.is_string() ? m.get<std::string>() : "";
            if (name == "embed_tokens") s.train_embed = true;
            else if (name == "lm_head") s.train_head = true;
            else fail("{}: modules_to_save entry {} is not supported (embed_tokens, lm_head)", path, m.dump());
        }
    return s;
}

void TrainableParams::load_peft(const std::string& dir) {
    const std::string cfg_path = dir + "/adapter_config.json";
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(read_file(cfg_path));
    } catch (const nlohmann::json::exception& e) {
        fail("{}: invalid JSON: {}", cfg_path, e.what());
    }
    auto need = [&](const char* k) -> const nlohmann::json& {
        if (!j.contains(k)) fail("{}: missing field '{}'", cfg_path, k);
        return j[k];
    };
    if (!need("r").is_number_integer() || need("r").get<int64_t>() != settings_.r)
        fail("{}: r is {}, but this run uses --lora-r {}", cfg_path, need("r").dump(), settings_.r);
    if (!need("lora_alpha").is_number() || std::abs(need("lora_alpha").get<double>() - settings_.alpha) > 1e-6)
        fail("{}: lora_alpha is {}, but this run uses --lora-alpha {}", cfg_path, need("lora_alpha").dump(),
             settings_.alpha);
    if (j.contains("fan_in_fan_out") && j["fan_in_fan_out"].is_boolean() && j["fan_in_fan_out"].get<bool>())
        fail("{}: fan_in_fan_out = true is not supported for llama adapters", cfg_path);
    std::vector<LoraTarget> targets;
    if (!need("target_modules").is_array()) fail("{}: target_modules must be a list", cfg_path);
    for (const auto& t : j["target_modules"]) {
        if (!t.is_string()) fail("{}: target_modules must be a list of names", cfg_path);
        targets.push_back(parse_lora_target(t.get<std::string>()));
    }
    std::sort(targets.begin(), targets.end());
    if (targets != settings_.targets) fail("{}: target_modules differ from this run's --lora-targets", cfg_path);
    const std::string st_path = dir + "/adapter_model.safetensors";
    auto f = SafeTensorsFile::open(st_path);
    for (auto& p : params_) {
        const SafeTensorInfo* t = f->find(p->name);
        if (!t) fail("{}: missing tensor '{}'", st_path, p->name);
        std::vector<uint64_t> want(p->shape.begin(), p->shape.end());
        if (t->shape != want) fail("{}: tensor {} has an unexpected shape", st_path, p->name);
        to_f32(t->type, t->data, p->w.data(), p->w.size());
        for (int64_t l = 0; l < cfg_.n_layer; ++l)
            for (LoraTarget lt : {LoraTarget::Q, LoraTarget::K}) {
                const LoraModule* m = lora(l, lt);
                if (m && m->B == p.get()) b_hf_to_gguf(p->w, m->out, settings_.r, heads_of(lt));
            }
    }
    for (const auto& t : f->tensors())
        if (!find(t.name)) fail("{}: tensor '{}' is not trained by this run (check --lora-targets / modules_to_save)",
                                st_path, t.name);
}

}  // namespace calpaca
