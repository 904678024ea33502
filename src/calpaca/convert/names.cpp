#include "calpaca/convert/names.h"

#include <map>
#include <regex>

namespace calpaca {

namespace {

struct Sub {
    const char* hf;    // suffix after "model.layers.N."
    const char* gguf;  // suffix after "blk.N."
    const char* meta;  // suffix after "layers.N."
};
const Sub kSubs[] = {
    {"input_layernorm.weight", "attn_norm.weight", "attention_norm.weight"},
    {"self_attn.q_proj.weight", "attn_q.weight", "attention.wq.weight"},
    {"self_attn.k_proj.weight", "attn_k.weight", "attention.wk.weight"},
    {"self_attn.v_proj.weight", "attn_v.weight", "attention.wv.weight"},
    {"self_attn.o_proj.weight", "attn_output.weight", "attention.wo.weight"},
    {"post_attention_layernorm.weight", "ffn_norm.weight", "ffn_norm.weight"},
    {"mlp.gate_proj.weight", "ffn_gate.weight", "feed_forward.w1.weight"},
    {"mlp.up_proj.weight", "ffn_up.weight", "feed_forward.w3.weight"},
    {"mlp.down_proj.weight", "ffn_down.weight", "feed_forward.w2.weight"},
};
struct Top {
    const char* hf;
    const char* gguf;
    const char* meta;
};
const Top kTops[] = {
    {"model.embed_tokens.weight", "token_embd.weight", "tok_embeddings.weight"},
    {"model.norm.weight", "output_norm.weight", "norm.weight"},
    {"lm_head.weight", "output.weight", "output.weight"},
};

// which: 0 hf, 1 gguf, 2 meta
const char* field(const Sub& s, int which) { return which == 0 ? s.hf : which == 1 ? s.gguf : s.meta; }
const char* field(const Top& s, int which) { return which == 0 ? s.hf : which == 1 ? s.gguf : s.meta; }

std::string translate(const std::string& name, int from, int to) {
    for (const auto& t : kTops)
        if (name == field(t, from)) return field(t, to);
    static const char* prefixes[] = {"model.layers.", "blk.", "layers."};
    const std::string pre = prefixes[from];
    if (name.compare(0, pre.size(), pre) != 0) return "";
    size_t p = pre.size(), q = p;
    while (q < name.size() && name[q] >= '0' && name[q] <= '9') ++q;
    if (q == p || q >= name.size() || name[q] != '.' || q - p > 6) return "";
    const std::string idx = name.substr(p, q - p), rest = name.substr(q + 1);
    for (const auto& s : kSubs)
        if (rest == field(s, from)) return std::string(prefixes[to]) + idx + "." + field(s, to);
    return "";
}

}  // namespace

std::vector<std::string> llama_hf_names(int64_t n_layer, bool with_head) {
    std::vector<std::string> v{"model.embed_tokens.weight"};
    for (int64_t l = 0; l < n_layer; ++l)
        for (const auto& s : kSubs) v.push_back("model.layers." + std::to_string(l) + "." + s.hf);
    v.push_back("model.norm.weight");
    if (with_head) v.push_back("lm_head.weight");
    return v;
}

std::string hf_to_gguf_name(const std::string& hf) { return translate(hf, 0, 1); }
std::string gguf_to_hf_name(const std::string& g) { return translate(g, 1, 0); }
std::string hf_to_meta_name(const std::string& hf) { return translate(hf, 0, 2); }
std::string meta_to_hf_name(const std::string& m) { return translate(m, 2, 0); }

int qk_kind(const std::string& hf) {
    auto ends = [&](const std::string& x) { return hf.size() >= x.size() && hf.compare(hf.size() - x.size(), x.size(), x) == 0; };
    if (ends(".self_attn.q_proj.weight")) return 1;
    if (ends(".self_attn.k_proj.weight")) return 2;
    return 0;
}

int64_t hf_layer_index(const std::string& hf) {
    const std::string pre = "model.layers.";
    if (hf.compare(0, pre.size(), pre) != 0) return -1;
    size_t q = pre.size();
    int64_t v = 0;
    while (q < hf.size() && hf[q] >= '0' && hf[q] <= '9' && v < 1000000) v = v * 10 + (hf[q++] - '0');
    return q > pre.size() ? v : -1;
}

}  // namespace calpaca
