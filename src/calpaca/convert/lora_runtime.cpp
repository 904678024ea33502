#include "calpaca/convert/lora_runtime.h"

#include <cstdio>
#include <map>

#include "calpaca/base/error.h"
#include "calpaca/convert/lora_delta.h"
#include "calpaca/convert/names.h"
#include "calpaca/convert/sink.h"
#include "calpaca/formats/peft_adapter.h"
#include "calpaca/model/model.h"

namespace calpaca {

namespace {

MatrixView* find_matrix(Model& m, const std::string& hf) {
    if (hf == "model.embed_tokens.weight") return &m.tok_embd;
    if (hf == "lm_head.weight") return &m.output;
    const int64_t l = hf_layer_index(hf);
    if (l < 0 || l >= static_cast<int64_t>(m.layers.size())) return nullptr;
    LayerWeights& L = m.layers[static_cast<size_t>(l)];
    auto ends = [&](const char* x) {
        std::string s(x);
        return hf.size() >= s.size() && hf.compare(hf.size() - s.size(), s.size(), s) == 0;
    };
    if (ends(".self_attn.q_proj.weight")) return &L.wq;
    if (ends(".self_attn.k_proj.weight")) return &L.wk;
    if (ends(".self_attn.v_proj.weight")) return &L.wv;
    if (ends(".self_attn.o_proj.weight")) return &L.wo;
    if (ends(".mlp.gate_proj.weight")) return &L.w_gate;
    if (ends(".mlp.up_proj.weight")) return &L.w_up;
    if (ends(".mlp.down_proj.weight")) return &L.w_down;
    return nullptr;
}

bool plain(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

}  // namespace

void apply_lora_in_memory(Model& model, const std::vector<std::string>& dirs, const std::string& vocab_override, ThreadPool* pool) {
    const LlamaConfig& c = model.config();
    const bool tied = model.output.data == model.tok_embd.data;
    std::string tokenizer;
    std::vector<float> w, A, B, scratch;
    for (const auto& dir : dirs) {
        PeftAdapter a = open_peft_adapter(dir);
        for (const auto& [key, stored] : a.replace) {
            MatrixView* mv = find_matrix(model, key);
            if (!mv || (key != "model.embed_tokens.weight" && key != "lm_head.weight"))
                fail("{}: --lora: replacing '{}' in memory is not supported (only embed_tokens and lm_head)", dir, key);
            const TensorInfo& t = a.tensors.get(stored);
            if (t.shape.size() != 2 || static_cast<int64_t>(t.shape[1]) != c.n_embd)
                fail("{}: tensor '{}': shape {} does not fit a model of hidden size {}", dir, stored, t.shape_str(), c.n_embd);
            if (static_cast<int64_t>(t.shape[0]) < mv->rows)
                fail("{}: tensor '{}' has {} rows but the model has {}: the vocabulary must not shrink", dir, stored, t.shape[0], mv->rows);
            const DType type = plain(mv->type) ? mv->type : DType::F16;
            w.resize(t.n_elements());
            a.tensors.read_f32(stored, w.data());
            round_to_storage(w.data(), w.size(), type);  // the original's .half() of the new tensor
            std::vector<uint8_t> bytes(row_bytes(type, static_cast<uint64_t>(c.n_embd)) * t.shape[0]);
            encode_rows(w.data(), t.shape[0], static_cast<uint64_t>(c.n_embd), type, bytes.data(), pool);
            MatrixView nv{model.adopt(std::move(bytes)), type, static_cast<int64_t>(t.shape[0]), c.n_embd};
            *mv = nv;
            if (tied && key == "model.embed_tokens.weight" && !a.replace.count("lm_head.weight")) model.output = nv;
        }
        for (const auto& [key, ka] : a.lora_a) {
            MatrixView* mv = find_matrix(model, key);
            if (!mv || key == "model.embed_tokens.weight" || key == "lm_head.weight")
                fail("{}: adapter has LoRA weights for '{}', which this {}-layer model does not have (adapter for another model?)",
                     dir, key, c.n_layer);
            if (!plain(mv->type))
                fail("{}: --lora needs an f32/f16/bf16 model, but '{}' is {}: merge with `calpaca merge-lora` and quantize "
                     "the result instead",
                     dir, key, dtype_name(mv->type));
            const TensorInfo& ai = a.tensors.get(ka);
            const TensorInfo& bi = a.tensors.get(a.lora_b.at(key));
            LoraFactors f;
            f.rank = static_cast<int64_t>(ai.shape[0]);
            f.n_in = static_cast<int64_t>(ai.shape[1]);
            f.n_out = static_cast<int64_t>(bi.shape[0]);
            f.fan_in_fan_out = a.fan_in_fan_out;
            f.scaling = static_cast<float>(a.scaling);
            const int64_t rows = f.fan_in_fan_out ? f.n_in : f.n_out, cols = f.fan_in_fan_out ? f.n_out : f.n_in;
            if (rows != mv->rows || cols != mv->cols)
                fail("{}: shape mismatch for tensor '{}': the adapter's delta is {}x{} but the model's weight is {}x{} (an adapter "
                     "for another model size?)",
                     dir, key, rows, cols, mv->rows, mv->cols);
            A = a.tensors.read_f32(ka);
            B = a.tensors.read_f32(a.lora_b.at(key));
            f.A = A.data();
            f.B = B.data();
            w.resize(static_cast<size_t>(rows * cols));
            for (int64_t r = 0; r < rows; ++r) to_f32(mv->type, mv->row(r), w.data() + r * cols, static_cast<size_t>(cols));
            const int qk = qk_kind(key);
            const int64_t head_dim = c.head_dim();
            if (qk) qk_rows_interleaved_to_hf(w.data(), rows, cols, head_dim, scratch);
            add_lora_delta_rows(f, 0, rows, w.data(), mv->type, pool);
            if (qk) qk_rows_hf_to_interleaved(w.data(), rows, cols, head_dim, scratch);
            std::vector<uint8_t> bytes(row_bytes(mv->type, static_cast<uint64_t>(cols)) * static_cast<uint64_t>(rows));
            encode_rows(w.data(), static_cast<uint64_t>(rows), static_cast<uint64_t>(cols), mv->type, bytes.data(), pool);
            mv->data = model.adopt(std::move(bytes));
            mv->packed = nullptr;
        }
        if (!a.tokenizer_model.empty()) tokenizer = a.tokenizer_model;
        std::fprintf(stderr, "lora: merged %s (r=%lld, alpha=%g, %zu LoRA pairs, %zu replaced tensors)\n", dir.c_str(),
                     static_cast<long long>(a.r), a.lora_alpha, a.lora_a.size(), a.replace.size());
    }
    if (!vocab_override.empty()) tokenizer = vocab_override;
    if (model.tok_embd.rows != model.output.rows)
        fail("after --lora, token_embd has {} rows but output has {}: the adapters must replace both", model.tok_embd.rows,
             model.output.rows);
    if (!tokenizer.empty()) {
        model.replace_vocab(load_vocab_spm(tokenizer));
    } else if (model.tok_embd.rows != c.n_vocab) {
        fail("--lora resized the vocabulary to {} but no adapter has a tokenizer.model: pass --vocab", model.tok_embd.rows);
    }
}

}  // namespace calpaca
