#include "calpaca/convert/random_model.h"

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "calpaca/base/error.h"
#include "calpaca/base/progress.h"
#include "calpaca/formats/gguf.h"
#include "calpaca/tokenizer/tokenizer.h"

namespace calpaca {

namespace {
// splitmix64 → Box-Muller: fast, deterministic across platforms (unlike std::normal_distribution).
struct Rng {
    uint64_t s;
    uint64_t next() {
        uint64_t z = (s += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }
    double uniform() { return (static_cast<double>(next() >> 11) + 0.5) * (1.0 / 9007199254740992.0); }
    void normals(float* out, size_t n, float std) {
        for (size_t i = 0; i < n; i += 2) {
            double r = std::sqrt(-2.0 * std::log(uniform())), a = 6.283185307179586 * uniform();
            out[i] = static_cast<float>(r * std::cos(a)) * std;
            if (i + 1 < n) out[i + 1] = static_cast<float>(r * std::sin(a)) * std;
        }
    }
};
}  // namespace

void write_random_model(const RandomModelSpec& s, const std::string& out) {
    if (s.type != DType::F32 && s.type != DType::F16 && s.type != DType::BF16)
        fail("--type {}: random models are written as f32, f16 or bf16 (quantize them afterwards)", dtype_name(s.type));
    if (s.n_embd <= 0 || s.n_layer <= 0 || s.n_head <= 0 || s.n_head_kv <= 0 || s.n_ff <= 0 || s.n_ctx <= 0)
        fail("random model: every dimension must be positive");
    if (s.n_embd % s.n_head || s.n_head % s.n_head_kv || (s.n_embd / s.n_head) % 2)
        fail("random model: n_embd {} / heads {} / kv heads {} are inconsistent", s.n_embd, s.n_head, s.n_head_kv);
    Vocab vocab = load_vocab_spm(s.vocab_path);
    const uint64_t V = vocab.size(), E = s.n_embd, F = s.n_ff, KV = s.n_embd / s.n_head * s.n_head_kv;

    GGUFWriter w(out);
    w.set("general.architecture", GGUFValue::of_str("llama"));
    w.set("general.name", GGUFValue::of_str(s.name));
    if (!s.description.empty()) w.set("general.description", GGUFValue::of_str(s.description));
    w.set("general.file_type", GGUFValue::of_u32(s.type == DType::F32 ? 0 : s.type == DType::F16 ? 1 : 32));
    w.set("llama.context_length", GGUFValue::of_u32(static_cast<uint32_t>(s.n_ctx)));
    w.set("llama.embedding_length", GGUFValue::of_u32(static_cast<uint32_t>(E)));
    w.set("llama.block_count", GGUFValue::of_u32(static_cast<uint32_t>(s.n_layer)));
    w.set("llama.feed_forward_length", GGUFValue::of_u32(static_cast<uint32_t>(F)));
    w.set("llama.attention.head_count", GGUFValue::of_u32(static_cast<uint32_t>(s.n_head)));
    w.set("llama.attention.head_count_kv", GGUFValue::of_u32(static_cast<uint32_t>(s.n_head_kv)));
    w.set("llama.rope.dimension_count", GGUFValue::of_u32(static_cast<uint32_t>(E / s.n_head)));
    w.set("llama.attention.layer_norm_rms_epsilon", GGUFValue::of_f32(s.rms_eps));
    w.set("llama.rope.freq_base", GGUFValue::of_f32(s.rope_theta));
    w.set("llama.vocab_size", GGUFValue::of_u32(static_cast<uint32_t>(V)));
    if (!s.chat_template.empty()) w.set("calpaca.chat_template", GGUFValue::of_str(s.chat_template));
    write_vocab_gguf(vocab, w);

    struct T {
        std::string name;
        std::vector<uint64_t> ne;
    };
    std::vector<T> ts;
    ts.push_back({"token_embd.weight", {E, V}});
    for (int64_t l = 0; l < s.n_layer; ++l) {
        std::string p = "blk." + std::to_string(l) + ".";
        ts.push_back({p + "attn_norm.weight", {E}});
        ts.push_back({p + "attn_q.weight", {E, E}});
        ts.push_back({p + "attn_k.weight", {E, KV}});
        ts.push_back({p + "attn_v.weight", {E, KV}});
        ts.push_back({p + "attn_output.weight", {E, E}});
        ts.push_back({p + "ffn_norm.weight", {E}});
        ts.push_back({p + "ffn_gate.weight", {E, F}});
        ts.push_back({p + "ffn_up.weight", {E, F}});
        ts.push_back({p + "ffn_down.weight", {F, E}});
    }
    ts.push_back({"output_norm.weight", {E}});
    if (!s.tie_embeddings) ts.push_back({"output.weight", {E, V}});
    for (const auto& t : ts) w.add_tensor(t.name, t.ne.size() == 1 ? DType::F32 : s.type, t.ne);
    w.begin();

    Rng rng{s.seed};
    Progress prog("random model", ts.size(), s.progress);
    std::vector<float> buf;
    std::vector<uint16_t> half;
    size_t done = 0;
    for (const auto& t : ts) {
        size_t n = 1;
        for (auto d : t.ne) n *= d;
        buf.resize(n);
        if (t.ne.size() == 1) {
            std::fill(buf.begin(), buf.end(), 1.0f);
            w.write_tensor_data(buf.data(), n * 4);
        } else {
            rng.normals(buf.data(), n, s.std);
            if (s.type == DType::F32) {
                w.write_tensor_data(buf.data(), n * 4);
            } else {
                half.resize(n);
                for (size_t i = 0; i < n; ++i) half[i] = s.type == DType::F16 ? fp32_to_fp16(buf[i]) : fp32_to_bf16(buf[i]);
                w.write_tensor_data(half.data(), n * 2);
            }
        }
        prog.update(++done, t.name);
    }
    w.finish();
}

}  // namespace calpaca
