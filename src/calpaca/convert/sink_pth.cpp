#include <filesystem>

#include "calpaca/base/error.h"
#include "calpaca/base/fileio.h"
#include "calpaca/convert/names.h"
#include "calpaca/convert/sink.h"
#include "calpaca/formats/meta_dir.h"
#include "calpaca/formats/torch_writer.h"

namespace calpaca {

namespace {

// The original merge script's split: the first n-1 shards get floor(size/n), the last the rest.
std::vector<uint64_t> split_sizes(uint64_t total, int n) {
    std::vector<uint64_t> v(static_cast<size_t>(n), total / static_cast<uint64_t>(n));
    v.back() = total - (total / static_cast<uint64_t>(n)) * static_cast<uint64_t>(n - 1);
    return v;
}

class PthSink : public TensorSink {
public:
    PthSink(std::string dir, int n_shards, ThreadPool* pool) : dir_(std::move(dir)), n_(n_shards), pool_(pool) {}
    QKLayout layout() const override { return QKLayout::Interleaved; }

    void begin(const OutputModel& m) override {
        m_ = &m;
        torch_dtype_name(m.outtype);
        if (n_ <= 0) {
            switch (m.hp.n_embd) {
                case 5120: n_ = 2; break;
                case 6656: n_ = 4; break;
                case 8192: n_ = 8; break;
                default: n_ = 1;
            }
        }
        if (n_ > 64) fail("--pth-shards {}: too many shards", n_);
        out_ = std::make_unique<OutputDir>(dir_);
        for (int s = 0; s < n_; ++s) {
            char buf[40];
            std::snprintf(buf, sizeof buf, "consolidated.%02d.pth", s);
            names_.push_back(buf);
            w_.push_back(std::make_unique<TorchZipWriter>(out_->tmp_path(buf)));
        }
        es_ = dtype_info(m.outtype).type_size;
    }

    void write_rows(const float* rows, uint64_t n) override {
        if (cur_ >= m_->tensors.size()) fail("{}: more tensors written than declared", dir_);
        const OutTensor& t = m_->tensors[cur_];
        const uint64_t R = t.shape.size() >= 2 ? t.shape[0] : 1;
        const uint64_t C = t.shape.size() >= 2 ? t.shape[1] : (t.shape.empty() ? 1 : t.shape[0]);
        const std::string meta = hf_to_meta_name(t.name);
        const int axis = t.shape.size() >= 2 ? meta_split_axis(meta) : -1;
        if (done_ == 0) start_tensor(t, meta, axis, R, C);
        buf_.resize(n * C * es_);
        encode_rows(rows, n, C, m_->outtype, buf_.data(), pool_);
        if (axis < 0 || n_ == 1) {
            for (auto& w : w_) w->write(buf_.data(), buf_.size());
        } else if (axis == 0) {
            std::vector<uint64_t> sz = split_sizes(R, n_);
            uint64_t base = 0;
            for (int s = 0; s < n_; ++s) {
                const uint64_t a = std::max(done_, base), b = std::min(done_ + n, base + sz[s]);
                if (a < b) w_[s]->write(buf_.data() + (a - done_) * C * es_, (b - a) * C * es_);
                base += sz[s];
            }
        } else {
            std::vector<uint64_t> sz = split_sizes(C, n_);
            uint64_t col = 0;
            for (int s = 0; s < n_; ++s) {
                band_.resize(n * sz[s] * es_);
                for (uint64_t r = 0; r < n; ++r)
                    std::memcpy(band_.data() + r * sz[s] * es_, buf_.data() + (r * C + col) * es_, sz[s] * es_);
                w_[s]->write(band_.data(), band_.size());
                col += sz[s];
            }
        }
        done_ += n;
        if (done_ == R) {
            done_ = 0;
            ++cur_;
        }
    }

    std::vector<std::string> finish() override {
        if (cur_ != m_->tensors.size()) fail("{}: only {} of {} tensors were written", dir_, cur_, m_->tensors.size());
        std::vector<std::string> written;
        for (int s = 0; s < n_; ++s) {
            w_[s]->finish();
            written.push_back(out_->final_path(names_[s]));
        }
        const auto& p = m_->hp;
        nlohmann::ordered_json params;
        params["dim"] = p.n_embd;
        params["multiple_of"] = 256;
        params["n_heads"] = p.n_head;
        params["n_layers"] = p.n_layer;
        if (p.n_head_kv != p.n_head) params["n_kv_heads"] = p.n_head_kv;
        params["norm_eps"] = p.rms_eps;
        if (p.rope_theta != 10000.0) params["rope_theta"] = p.rope_theta;
        params["vocab_size"] = -1;
        write_file_atomic(out_->tmp_path("params.json"), params.dump());
        written.push_back(out_->final_path("params.json"));
        copy_tokenizer_files(*m_, *out_, written, false);
        out_->commit();
        return written;
    }

private:
    void start_tensor(const OutTensor& t, const std::string& meta, int axis, uint64_t R, uint64_t C) {
        if (meta.empty()) fail("{}: no Meta name for tensor '{}'", dir_, t.name);
        if (axis >= 0 && n_ > 1) {
            std::vector<uint64_t> sz = split_sizes(axis == 0 ? R : C, n_);
            for (int s = 0; s < n_; ++s) {
                std::vector<uint64_t> shape = axis == 0 ? std::vector<uint64_t>{sz[s], C} : std::vector<uint64_t>{R, sz[s]};
                if (sz[s] == 0) fail("{}: tensor '{}' is too small to split over {} shards", dir_, t.name, n_);
                w_[s]->begin_tensor(meta, m_->outtype, shape);
            }
        } else {
            for (auto& w : w_) w->begin_tensor(meta, m_->outtype, t.shape);
        }
    }

    std::string dir_;
    int n_;
    ThreadPool* pool_;
    const OutputModel* m_ = nullptr;
    std::unique_ptr<OutputDir> out_;
    std::vector<std::unique_ptr<TorchZipWriter>> w_;
    std::vector<std::string> names_;
    size_t cur_ = 0;
    uint64_t done_ = 0, es_ = 2;
    std::vector<uint8_t> buf_, band_;
};

}  // namespace

std::unique_ptr<TensorSink> make_pth_sink(const std::string& dir, int n_shards, ThreadPool* pool) {
    return std::make_unique<PthSink>(dir, n_shards, pool);
}

}  // namespace calpaca
