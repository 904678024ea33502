#include "calpaca/model/config.h"

#include "calpaca/base/error.h"
#include "calpaca/formats/gguf.h"

namespace calpaca {

LlamaConfig LlamaConfig::from_gguf(const GGUFFile& f) {
    const std::string& src = f.path();
    const GGUFValue* arch = f.find("general.architecture");
    if (!arch) fail("{}: missing metadata key 'general.architecture' (not a model file?)", src);
    const std::string a = arch->as_str(src + ": general.architecture");
    if (a != "llama") fail("{}: architecture '{}' is not supported (expected 'llama')", src, a);

    auto geti = [&](const std::string& key) -> int64_t {
        return f.get(key).as_i64(src + ": " + key);
    };
    auto getf_or = [&](const std::string& key, double dflt) -> double {
        const GGUFValue* v = f.find(key);
        return v ? v->as_f64(src + ": " + key) : dflt;
    };
    LlamaConfig c;
    c.n_embd = geti("llama.embedding_length");
    c.n_layer = geti("llama.block_count");
    c.n_head = geti("llama.attention.head_count");
    c.n_head_kv = f.has("llama.attention.head_count_kv") ? geti("llama.attention.head_count_kv") : c.n_head;
    c.n_ff = geti("llama.feed_forward_length");
    c.n_ctx_train = geti("llama.context_length");
    c.rms_eps = static_cast<float>(getf_or("llama.attention.layer_norm_rms_epsilon", 1e-5));
    c.rope_theta = static_cast<float>(getf_or("llama.rope.freq_base", 10000.0));
    if (const GGUFValue* st = f.find("llama.rope.scaling.type")) {
        const std::string& type = st->as_str(src + ": llama.rope.scaling.type");
        if (type == "linear") {
            c.rope_linear_factor = static_cast<float>(getf_or("llama.rope.scaling.factor", 1.0));
        } else if (type != "none") {
            fail("{}: llama.rope.scaling.type '{}' is not supported (expected 'none' or 'linear')", src, type);
        }
    } else if (f.has("llama.rope.scale_linear")) {
        c.rope_linear_factor = static_cast<float>(getf_or("llama.rope.scale_linear", 1.0));
    }
    if (f.has("llama.vocab_size")) {
        c.n_vocab = geti("llama.vocab_size");
    } else if (const GGUFTensorInfo* t = f.find_tensor("token_embd.weight"); t && t->ne.size() == 2) {
        c.n_vocab = static_cast<int64_t>(t->ne[1]);
    } else if (const GGUFValue* toks = f.find("tokenizer.ggml.tokens")) {
        c.n_vocab = static_cast<int64_t>(toks->items.size());
    }
    c.n_rot = f.has("llama.rope.dimension_count") ? geti("llama.rope.dimension_count") : 0;
    if (const GGUFValue* n = f.find("general.name"); n && n->type == GGUFType::STRING) c.name = n->str;
    if (const GGUFValue* t = f.find("calpaca.chat_template"); t && t->type == GGUFType::STRING) c.chat_template = t->str;
    if (c.n_rot == 0 && c.n_head > 0) c.n_rot = c.n_embd / c.n_head;
    c.validate(src);
    return c;
}

void LlamaConfig::validate(const std::string& src) const {
    auto pos = [&](int64_t v, const char* key) {
        if (v <= 0) fail("{}: {} must be positive, found {}", src, key, v);
    };
    pos(n_embd, "llama.embedding_length");
    pos(n_layer, "llama.block_count");
    pos(n_head, "llama.attention.head_count");
    pos(n_head_kv, "llama.attention.head_count_kv");
    pos(n_ff, "llama.feed_forward_length");
    pos(n_ctx_train, "llama.context_length");
    pos(n_vocab, "llama.vocab_size");
    if (n_embd % n_head) fail("{}: embedding length {} is not divisible by head count {}", src, n_embd, n_head);
    if (n_head % n_head_kv) fail("{}: head count {} is not a multiple of the KV head count {}", src, n_head, n_head_kv);
    if (head_dim() % 2) fail("{}: head dimension {} must be even for RoPE", src, head_dim());
    if (n_rot != head_dim())
        fail("{}: llama.rope.dimension_count {} differs from the head dimension {} (partial RoPE is not supported)", src,
             n_rot, head_dim());
    if (!(rms_eps > 0)) fail("{}: llama.attention.layer_norm_rms_epsilon must be positive", src);
    if (!(rope_theta > 0)) fail("{}: llama.rope.freq_base must be positive", src);
    if (!(rope_linear_factor > 0)) fail("{}: llama.rope.scaling.factor must be positive", src);
    if (n_layer > 1024 || n_embd > (1 << 20) || n_ff > (1 << 22) || n_vocab > (1 << 24))
        fail("{}: implausible model dimensions", src);
}

}  // namespace calpaca
