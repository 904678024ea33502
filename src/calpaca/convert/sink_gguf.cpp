#include <cstring>
#include <map>

#include "calpaca/base/error.h"
#include "calpaca/convert/names.h"
#include "calpaca/convert/quantize.h"
#include "calpaca/convert/sink.h"
#include "calpaca/formats/gguf.h"
#include "calpaca/tensor/quant.h"

namespace calpaca {

namespace {

class GGUFSink : public TensorSink {
public:
    GGUFSink(std::string path, ThreadPool* pool) : path_(std::move(path)), pool_(pool) {}
    QKLayout layout() const override { return QKLayout::Interleaved; }

    void begin(const OutputModel& m) override {
        const auto& p = m.hp;
        if (!m.vocab) fail("{}: no vocabulary for the GGUF file (pass --vocab tokenizer.model)", path_);
        w_ = std::make_unique<GGUFWriter>(path_);
        auto u32 = [](int64_t v) { return GGUFValue::of_u32(static_cast<uint32_t>(v)); };
        w_->set("general.architecture", GGUFValue::of_str("llama"));
        w_->set("general.name", GGUFValue::of_str(m.name));
        w_->set("general.file_type", GGUFValue::of_u32(gguf_file_type(m.outtype)));
        w_->set("llama.context_length", u32(p.n_ctx));
        w_->set("llama.embedding_length", u32(p.n_embd));
        w_->set("llama.block_count", u32(p.n_layer));
        w_->set("llama.feed_forward_length", u32(p.n_ff));
        w_->set("llama.attention.head_count", u32(p.n_head));
        w_->set("llama.attention.head_count_kv", u32(p.n_head_kv));
        w_->set("llama.rope.dimension_count", u32(p.head_dim()));
        w_->set("llama.attention.layer_norm_rms_epsilon", GGUFValue::of_f32(static_cast<float>(p.rms_eps)));
        w_->set("llama.rope.freq_base", GGUFValue::of_f32(static_cast<float>(p.rope_theta)));
        w_->set("llama.vocab_size", u32(p.n_vocab));
        if (p.rope_scaling_type == "linear") {
            w_->set("llama.rope.scaling.type", GGUFValue::of_str("linear"));
            w_->set("llama.rope.scaling.factor", GGUFValue::of_f32(static_cast<float>(p.rope_scaling_factor)));
        }
        if (!m.chat_template.empty()) w_->set("calpaca.chat_template", GGUFValue::of_str(m.chat_template));
        if (static_cast<int64_t>(m.vocab->size()) != p.n_vocab)
            fail("{}: vocabulary has {} pieces but the model has {} embedding rows", path_, m.vocab->size(), p.n_vocab);
        write_vocab_gguf(*m.vocab, *w_);
        // quantized outtypes follow llama.cpp's per-tensor policy (convert/quantize.h: Q6_K head, fallbacks)
        QuantMix mix;
        const bool quant = is_weight_quant(m.outtype);
        if (quant && !parse_quant_mix(dtype_name(m.outtype), mix)) fail("--outtype {}: not a model quantization type", dtype_name(m.outtype));
        std::map<std::string, int> kind_total, kind_seen;
        auto kind_of = [](const std::string& g) {
            for (const char* k : {"attn_v.weight", "ffn_down.weight"})
                if (g.size() > std::strlen(k) && g.compare(g.size() - std::strlen(k), std::string::npos, k) == 0) return std::string(k);
            return std::string();
        };
        for (const auto& t : m.tensors) ++kind_total[kind_of(hf_to_gguf_name(t.name))];
        for (const auto& t : m.tensors) {
            std::string g = hf_to_gguf_name(t.name);
            if (g.empty()) fail("{}: no GGUF name for tensor '{}'", path_, t.name);
            DType ty = gguf_tensor_type(t, m.outtype);
            if (quant && t.shape.size() == 2) {
                const std::string k = kind_of(g);
                std::string note;
                ty = choose_tensor_type(mix, g, t.shape[1], kind_seen[k]++, kind_total[k], !m.hp.has_head && g == "token_embd.weight",
                                        false, &note);
            }
            types_.push_back(ty);
            rows_.push_back(t.shape.size() >= 2 ? t.shape[0] : 1);
            cols_.push_back(t.shape.size() >= 2 ? t.shape[1] : (t.shape.empty() ? 1 : t.shape[0]));
            w_->add_tensor(g, ty, std::vector<uint64_t>(t.shape.rbegin(), t.shape.rend()));
        }
        w_->begin();
    }

    void write_rows(const float* rows, uint64_t n) override {
        if (cur_ >= types_.size()) fail("{}: more tensors written than declared", path_);
        if (done_ + n > rows_[cur_]) fail("{}: too many rows for tensor {}", path_, cur_);
        buf_.resize(n * row_bytes(types_[cur_], cols_[cur_]));
        encode_rows(rows, n, cols_[cur_], types_[cur_], buf_.data(), pool_);
        w_->write_tensor_data(buf_.data(), buf_.size());
        done_ += n;
        if (done_ == rows_[cur_]) {
            ++cur_;
            done_ = 0;
        }
    }

    std::vector<std::string> finish() override {
        w_->finish();
        return {path_};
    }

private:
    std::string path_;
    ThreadPool* pool_;
    std::unique_ptr<GGUFWriter> w_;
    std::vector<DType> types_;
    std::vector<uint64_t> rows_, cols_;
    size_t cur_ = 0;
    uint64_t done_ = 0;
    std::vector<uint8_t> buf_;
};

}  // namespace

std::unique_ptr<TensorSink> make_gguf_sink(const std::string& path, ThreadPool* pool) {
    return std::make_unique<GGUFSink>(path, pool);
}

}  // namespace calpaca
