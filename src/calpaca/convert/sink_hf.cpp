#include <filesystem>

#include "calpaca/base/error.h"
#include "calpaca/base/fileio.h"
#include "calpaca/convert/sink.h"
#include "calpaca/formats/safetensors.h"

namespace fs = std::filesystem;

namespace calpaca {

const char* torch_dtype_name(DType t) {
    switch (t) {
        case DType::F32: return "float32";
        case DType::F16: return "float16";
        case DType::BF16: return "bfloat16";
        default: fail("Hugging Face / PyTorch output supports --outtype f32, f16 and bf16, not {}", dtype_name(t));
    }
}

// Copies the tokenizer and its side files into an output directory.
void copy_tokenizer_files(const OutputModel& m, const OutputDir& out, std::vector<std::string>& written, bool side_files) {
    if (m.tokenizer_model.empty())
        fail("{}: no tokenizer.model to copy (the vocabulary came from a GGUF file): pass --vocab tokenizer.model",
             out.final_path(""));
    fs::copy_file(m.tokenizer_model, out.tmp_path("tokenizer.model"));
    written.push_back(out.final_path("tokenizer.model"));
    if (!side_files) return;
    for (const char* f : {"tokenizer_config.json", "special_tokens_map.json"}) {
        fs::path src = fs::path(m.tokenizer_dir) / f;
        if (!m.tokenizer_dir.empty() && fs::exists(src)) {
            fs::copy_file(src, out.tmp_path(f));
            written.push_back(out.final_path(f));
        }
    }
}

namespace {

class HFSink : public TensorSink {
public:
    HFSink(std::string dir, uint64_t max_shard, ThreadPool* pool) : dir_(std::move(dir)), max_shard_(max_shard), pool_(pool) {}
    QKLayout layout() const override { return QKLayout::RotateHalf; }

    void begin(const OutputModel& m) override {
        m_ = &m;
        torch_dtype_name(m.outtype);
        out_ = std::make_unique<OutputDir>(dir_);
        // plan shards: consecutive tensors up to max_shard bytes each
        uint64_t cur = 0;
        for (size_t i = 0; i < m.tensors.size(); ++i) {
            const auto& t = m.tensors[i];
            uint64_t n = dtype_info(m.outtype).type_size;
            for (auto d : t.shape) n *= d;
            if (shard_of_.empty() || (cur > 0 && cur + n > max_shard_)) {
                shard_first_.push_back(i);
                cur = 0;
            }
            shard_of_.push_back(shard_first_.size() - 1);
            cur += n;
            rows_.push_back(t.shape.size() >= 2 ? t.shape[0] : 1);
            cols_.push_back(t.shape.size() >= 2 ? t.shape[1] : (t.shape.empty() ? 1 : t.shape[0]));
        }
        open_shard(0);
    }

    void write_rows(const float* rows, uint64_t n) override {
        if (cur_ >= rows_.size()) fail("{}: more tensors written than declared", dir_);
        buf_.resize(n * cols_[cur_] * dtype_info(m_->outtype).type_size);
        encode_rows(rows, n, cols_[cur_], m_->outtype, buf_.data(), pool_);
        w_->write(buf_.data(), buf_.size());
        done_ += n;
        if (done_ == rows_[cur_]) {
            done_ = 0;
            ++cur_;
            if (cur_ == rows_.size() || shard_of_[cur_] != shard_of_[cur_ - 1]) {
                w_->finish();
                if (cur_ < rows_.size()) open_shard(shard_of_[cur_]);
            }
        }
    }

    std::vector<std::string> finish() override {
        if (cur_ != rows_.size()) fail("{}: only {} of {} tensors were written", dir_, cur_, rows_.size());
        std::vector<std::string> written;
        const size_t n_shards = shard_first_.size();
        for (size_t s = 0; s < n_shards; ++s) written.push_back(out_->final_path(shard_name(s)));
        if (n_shards > 1) {
            nlohmann::ordered_json idx;
            uint64_t total = 0;
            for (const auto& t : m_->tensors) {
                uint64_t n = dtype_info(m_->outtype).type_size;
                for (auto d : t.shape) n *= d;
                total += n;
            }
            idx["metadata"] = {{"total_size", total}};
            nlohmann::ordered_json wm = nlohmann::ordered_json::object();
            for (size_t i = 0; i < m_->tensors.size(); ++i) wm[m_->tensors[i].name] = shard_name(shard_of_[i]);
            idx["weight_map"] = wm;
            write_file_atomic(out_->tmp_path("model.safetensors.index.json"), idx.dump(2) + "\n");
            written.push_back(out_->final_path("model.safetensors.index.json"));
        }
        nlohmann::json cfg = m_->hf_config;
        cfg["vocab_size"] = m_->hp.n_vocab;
        cfg["torch_dtype"] = torch_dtype_name(m_->outtype);
        cfg["hidden_size"] = m_->hp.n_embd;
        cfg["intermediate_size"] = m_->hp.n_ff;
        cfg["num_hidden_layers"] = m_->hp.n_layer;
        cfg["num_attention_heads"] = m_->hp.n_head;
        cfg["num_key_value_heads"] = m_->hp.n_head_kv;
        cfg["max_position_embeddings"] = m_->hp.n_ctx;
        cfg["rms_norm_eps"] = m_->hp.rms_eps;
        cfg["rope_theta"] = m_->hp.rope_theta;
        if (m_->hp.rope_scaling_type == "linear")
            cfg["rope_scaling"] = {{"type", "linear"}, {"factor", m_->hp.rope_scaling_factor}};
        else if (!cfg.contains("rope_scaling"))
            cfg["rope_scaling"] = nullptr;
        write_file_atomic(out_->tmp_path("config.json"), cfg.dump(2) + "\n");
        written.push_back(out_->final_path("config.json"));
        if (!m_->generation_config.empty()) {
            fs::copy_file(m_->generation_config, out_->tmp_path("generation_config.json"));
            written.push_back(out_->final_path("generation_config.json"));
        }
        copy_tokenizer_files(*m_, *out_, written, true);
        out_->commit();
        return written;
    }

private:
    std::string shard_name(size_t s) const {
        const size_t n = shard_first_.size();
        if (n == 1) return "model.safetensors";
        char buf[64];
        std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", s + 1, n);
        return buf;
    }
    void open_shard(size_t s) {
        w_ = std::make_unique<SafeTensorsStreamWriter>(out_->tmp_path(shard_name(s)));
        w_->set_metadata("format", "pt");
        for (size_t i = shard_first_[s]; i < shard_of_.size() && shard_of_[i] == s; ++i)
            w_->add(m_->tensors[i].name, m_->outtype, m_->tensors[i].shape);
        w_->begin();
    }

    std::string dir_;
    uint64_t max_shard_;
    ThreadPool* pool_;
    const OutputModel* m_ = nullptr;
    std::unique_ptr<OutputDir> out_;
    std::unique_ptr<SafeTensorsStreamWriter> w_;
    std::vector<size_t> shard_first_, shard_of_;
    std::vector<uint64_t> rows_, cols_;
    size_t cur_ = 0;
    uint64_t done_ = 0;
    std::vector<uint8_t> buf_;
};

}  // namespace

std::unique_ptr<TensorSink> make_hf_sink(const std::string& dir, uint64_t max_shard_bytes, ThreadPool* pool) {
    if (max_shard_bytes == 0) fail("--shard-size must be positive");
    return std::make_unique<HFSink>(dir, max_shard_bytes, pool);
}

}  // namespace calpaca
