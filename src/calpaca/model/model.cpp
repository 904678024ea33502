#include "calpaca/model/model.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "calpaca/base/error.h"
#include "calpaca/base/threadpool.h"
#include "calpaca/tensor/packed.h"

namespace calpaca {

namespace {

MatrixView get_matrix(const GGUFFile& f, const std::string& name, int64_t cols, int64_t rows) {
    const GGUFTensorInfo* t = f.find_tensor(name);
    if (!t) fail("{}: missing tensor '{}'", f.path(), name);
    if (t->ne.size() != 2 || static_cast<int64_t>(t->ne[0]) != cols || static_cast<int64_t>(t->ne[1]) != rows) {
        std::string dims;
        for (size_t i = 0; i < t->ne.size(); ++i) dims += (i ? "x" : "") + std::to_string(t->ne[i]);
        fail("{}: tensor {}: expected {}x{}, found {}", f.path(), name, cols, rows, dims);
    }
    if (!matmul_supports(t->type))
        fail("{}: tensor {}: type {} is not supported for weights (expected F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, "
             "Q8_0 or Q2_K..Q6_K)", f.path(), name, dtype_name(t->type));
    MatrixView m;
    m.data = f.tensor_data(*t);
    m.type = t->type;
    m.cols = cols;
    m.rows = rows;
    return m;
}

std::vector<float> get_vector(const GGUFFile& f, const std::string& name, int64_t n) {
    const GGUFTensorInfo* t = f.find_tensor(name);
    if (!t) fail("{}: missing tensor '{}'", f.path(), name);
    if (t->ne.size() != 1 || static_cast<int64_t>(t->ne[0]) != n)
        fail("{}: tensor {}: expected {} elements in one dimension", f.path(), name, n);
    std::vector<float> v(n);
    to_f32(t->type, f.tensor_data(*t), v.data(), n);
    return v;
}

}  // namespace

std::unique_ptr<Model> Model::load(const std::string& path, const std::string& vocab_override) {
    std::unique_ptr<Model> m(new Model());
    m->file_ = GGUFFile::open(path);
    const GGUFFile& f = *m->file_;
    m->cfg_ = LlamaConfig::from_gguf(f);
    auto& c = m->cfg_;

    // Vocabulary: from the file, or from an override that must agree in size.
    const GGUFTensorInfo* emb = f.find_tensor("token_embd.weight");
    if (!emb) fail("{}: missing tensor 'token_embd.weight' (a vocabulary-only GGUF cannot run)", path);
    if (emb->ne.size() == 2) c.n_vocab = static_cast<int64_t>(emb->ne[1]);
    if (!vocab_override.empty()) {
        Vocab v = load_vocab_spm(vocab_override);
        if (static_cast<int64_t>(v.size()) != c.n_vocab)
            fail("vocabulary size mismatch: tokenizer {} has {} pieces but model {} has {} embedding rows "
                 "(LLaMA 32000, Chinese-LLaMA 49953, Chinese-Alpaca 49954, Chinese-LLaMA-2 55296: use the "
                 "tokenizer that belongs to this model)",
                 vocab_override, v.size(), path, c.n_vocab);
        m->tok_ = std::make_unique<Tokenizer>(std::move(v));
    } else {
        if (!f.has("tokenizer.ggml.tokens")) fail("{}: no vocabulary in the file (tokenizer.ggml.tokens); pass --vocab tokenizer.model", path);
        Vocab v = load_vocab_gguf(f);
        if (static_cast<int64_t>(v.size()) != c.n_vocab)
            fail("vocabulary size mismatch in {}: tokenizer.ggml.tokens has {} pieces but token_embd.weight has {} rows",
                 path, v.size(), c.n_vocab);
        m->tok_ = std::make_unique<Tokenizer>(std::move(v));
    }

    m->tok_embd = get_matrix(f, "token_embd.weight", c.n_embd, c.n_vocab);
    m->output = f.find_tensor("output.weight") ? get_matrix(f, "output.weight", c.n_embd, c.n_vocab) : m->tok_embd;
    m->output_norm = get_vector(f, "output_norm.weight", c.n_embd);
    const int64_t kv = c.n_embd_kv();
    for (int64_t i = 0; i < c.n_layer; ++i) {
        std::string p = "blk." + std::to_string(i) + ".";
        LayerWeights L;
        L.attn_norm = get_vector(f, p + "attn_norm.weight", c.n_embd);
        L.ffn_norm = get_vector(f, p + "ffn_norm.weight", c.n_embd);
        L.wq = get_matrix(f, p + "attn_q.weight", c.n_embd, c.n_embd);
        L.wk = get_matrix(f, p + "attn_k.weight", c.n_embd, kv);
        L.wv = get_matrix(f, p + "attn_v.weight", c.n_embd, kv);
        L.wo = get_matrix(f, p + "attn_output.weight", c.n_embd, c.n_embd);
        L.w_gate = get_matrix(f, p + "ffn_gate.weight", c.n_embd, c.n_ff);
        L.w_down = get_matrix(f, p + "ffn_down.weight", c.n_ff, c.n_embd);
        L.w_up = get_matrix(f, p + "ffn_up.weight", c.n_embd, c.n_ff);
        m->layers.push_back(std::move(L));
    }
    return m;
}

void Model::pack_weights(ThreadPool* pool, size_t slice_bytes) {
    if (const char* e = std::getenv("CALPACA_PACK"); e && std::strcmp(e, "0") == 0) return;
    std::vector<MatrixView*> todo;
    for (auto& L : layers)
        for (MatrixView* v : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}) todo.push_back(v);
    todo.push_back(&output);
    for (MatrixView* v : todo) {
        if (v->packed || !packable(v->type, v->rows, v->cols)) continue;
        const size_t n = packed_bytes(v->type, v->rows, v->cols);
        auto buf = std::make_unique<AnonBuffer>(n);
        const int64_t groups = v->rows / kPackRows;
        const size_t group_bytes = row_bytes(v->type, static_cast<uint64_t>(v->cols)) * kPackRows;
        // In slices of the original (32 MiB by default), each slice's mapped pages handed back once
        // it is copied: the resident set grows by one slice at a time, not by a whole matrix (the
        // 1.3B Q4_K_M's peak RSS 868 → 709 MiB; its 186 MB output head, packed whole, had taken it
        // close to the file + KV + 10 % budget).
        // tok_embd may share these bytes (tied output): it reads single rows, which fault back in.
        // (The original's size, not the copy's: a packed Q4_K block is larger.)
        const int64_t slice = std::max<int64_t>(1, static_cast<int64_t>(slice_bytes / group_bytes));
        const auto* src = static_cast<const uint8_t*>(v->data);
        for (int64_t s0 = 0; s0 < groups; s0 += slice) {
            const int64_t s1 = std::min(groups, s0 + slice);
            auto body = [&](size_t g0, size_t g1) {
                calpaca::pack_weights(v->type, v->data, v->cols, s0 + static_cast<int64_t>(g0), s0 + static_cast<int64_t>(g1),
                                      buf->data());
            };
            if (pool)
                pool->parallel_for(static_cast<size_t>(s1 - s0), body);
            else
                body(0, static_cast<size_t>(s1 - s0));
            file_->drop_pages(src + static_cast<size_t>(s0) * group_bytes, static_cast<size_t>(s1 - s0) * group_bytes);
        }
        v->packed = buf->data();
        packed_.push_back(std::move(buf));
        file_->drop_pages(v->data, group_bytes * static_cast<size_t>(groups));  // the pages the slices straddled
    }
}

void Model::embed(int32_t id, float* out) const {
    if (id < 0 || id >= cfg_.n_vocab) fail("token id {} is outside the vocabulary [0, {})", id, cfg_.n_vocab);
    to_f32(tok_embd.type, tok_embd.row(id), out, static_cast<size_t>(cfg_.n_embd));
}

const uint8_t* Model::adopt(std::vector<uint8_t> bytes) {
    owned_.push_back(std::move(bytes));
    return owned_.back().data();
}

void Model::replace_vocab(Vocab v) {
    if (static_cast<int64_t>(v.size()) != tok_embd.rows || static_cast<int64_t>(v.size()) != output.rows)
        fail("vocabulary size mismatch: tokenizer {} has {} pieces but the model's token_embd has {} rows and output {}",
             v.source, v.size(), tok_embd.rows, output.rows);
    cfg_.n_vocab = static_cast<int64_t>(v.size());
    tok_ = std::make_unique<Tokenizer>(std::move(v));
}

}  // namespace calpaca
