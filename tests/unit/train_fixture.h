// Loads tests/fixtures/train (made by tools/reference/make_train_fixtures.py): the tiny HF base
// as calpaca BaseWeights (q/k rows permuted to the GGUF layout), its sequences and settings.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "calpaca/base/error.h"
#include "calpaca/base/fileio.h"
#include "calpaca/convert/hf_to_gguf.h"
#include "calpaca/formats/safetensors.h"
#include "calpaca/train/llama_train.h"

namespace calpaca::test {

inline std::string train_fixture_dir() { return std::string(CALPACA_TEST_DATA) + "/train"; }

inline nlohmann::json train_fixture_json() {
    return nlohmann::json::parse(read_file(train_fixture_dir() + "/train.json"));
}

// dtype: the matrices are stored in this type (F32, F16 or BF16) to exercise each base type.
inline BaseWeights train_fixture_base(DType dtype = DType::F32) {
    const nlohmann::json j = train_fixture_json();
    const auto& c = j["config"];
    BaseWeights b;
    b.cfg.n_vocab = c["vocab_size"];
    b.cfg.n_embd = c["hidden_size"];
    b.cfg.n_layer = c["num_hidden_layers"];
    b.cfg.n_head = c["num_attention_heads"];
    b.cfg.n_head_kv = c["num_key_value_heads"];
    b.cfg.n_ff = c["intermediate_size"];
    b.cfg.n_ctx_train = c["max_position_embeddings"];
    b.cfg.n_rot = b.cfg.head_dim();
    b.cfg.rms_eps = c["rms_norm_eps"];
    b.cfg.rope_theta = c["rope_theta"];
    auto st = SafeTensorsFile::open(train_fixture_dir() + "/base/model.safetensors");
    auto get = [&](const std::string& name) {
        const SafeTensorInfo* t = st->find(name);
        if (!t) calpaca::fail("fixture: missing {}", name);
        std::vector<float> v(t->n_elements());
        to_f32(t->type, t->data, v.data(), v.size());
        return v;
    };
    b.owned.reserve(64);
    auto matrix = [&](std::vector<float> v, int64_t rows, int64_t cols, int64_t perm_heads) {
        if (perm_heads) {
            std::vector<float> p(v.size());
            permute_qk_rows_hf_to_gguf(v.data(), p.data(), rows, cols, perm_heads);
            v.swap(p);
        }
        std::vector<float> store;
        if (dtype == DType::F32) {
            store = std::move(v);
        } else {
            store.resize((v.size() + 1) / 2);
            auto* h = reinterpret_cast<uint16_t*>(store.data());
            for (size_t i = 0; i < v.size(); ++i) h[i] = dtype == DType::F16 ? fp32_to_fp16(v[i]) : fp32_to_bf16(v[i]);
        }
        b.owned.push_back(std::move(store));
        MatrixView m;
        m.data = b.owned.back().data();
        m.type = dtype;
        m.rows = rows;
        m.cols = cols;
        return m;
    };
    const auto& cfg = b.cfg;
    b.tok_embd = matrix(get("model.embed_tokens.weight"), cfg.n_vocab, cfg.n_embd, 0);
    b.output = matrix(get("lm_head.weight"), cfg.n_vocab, cfg.n_embd, 0);
    b.output_norm = get("model.norm.weight");
    for (int64_t l = 0; l < cfg.n_layer; ++l) {
        const std::string p = "model.layers." + std::to_string(l) + ".";
        LayerWeights L;
        L.attn_norm = get(p + "input_layernorm.weight");
        L.ffn_norm = get(p + "post_attention_layernorm.weight");
        L.wq = matrix(get(p + "self_attn.q_proj.weight"), cfg.n_embd, cfg.n_embd, cfg.n_head);
        L.wk = matrix(get(p + "self_attn.k_proj.weight"), cfg.n_embd_kv(), cfg.n_embd, cfg.n_head_kv);
        L.wv = matrix(get(p + "self_attn.v_proj.weight"), cfg.n_embd_kv(), cfg.n_embd, 0);
        L.wo = matrix(get(p + "self_attn.o_proj.weight"), cfg.n_embd, cfg.n_embd, 0);
        L.w_gate = matrix(get(p + "mlp.gate_proj.weight"), cfg.n_ff, cfg.n_embd, 0);
        L.w_up = matrix(get(p + "mlp.up_proj.weight"), cfg.n_ff, cfg.n_embd, 0);
        L.w_down = matrix(get(p + "mlp.down_proj.weight"), cfg.n_embd, cfg.n_ff, 0);
        b.layers.push_back(std::move(L));
    }
    return b;
}

inline LoraSettings train_fixture_lora() {
    const nlohmann::json j = train_fixture_json();
    LoraSettings s;
    s.r = j["lora"]["r"];
    s.alpha = j["lora"]["lora_alpha"];
    s.dropout = j["lora"]["lora_dropout"];
    return s;
}

inline std::vector<Example> train_fixture_seqs() {
    std::vector<Example> out;
    const nlohmann::json j = train_fixture_json();
    for (const auto& s : j["seqs"]) {
        Example e;
        e.ids = s["ids"].get<std::vector<int32_t>>();
        e.labels = s["labels"].get<std::vector<int32_t>>();
        out.push_back(std::move(e));
    }
    return out;
}

}  // namespace calpaca::test
