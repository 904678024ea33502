// TensorSource: one lazy interface over every checkpoint format we read (safetensors,
// PyTorch zip+pickle .bin/.pth, GGUF; single files and sharded sets; Meta shards that are
// concatenated per tensor). Opening reads only headers; tensor bytes stay in the mmap'd
// files until a caller asks for rows of one tensor, converted to f32. Pages that were read
// are handed back to the kernel (madvise), so streaming a 13 GB checkpoint keeps the
// resident set at about one tensor.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "calpaca/tensor/dtype.h"

namespace calpaca {

struct TensorInfo {
    std::string name;
    DType type = DType::F32;         // stored element type
    std::vector<uint64_t> shape;     // slowest-varying first (PyTorch order)
    uint64_t n_elements() const;
    // Rows are the slices along the first dimension (a 1-D or 0-D tensor is one row).
    uint64_t rows() const { return shape.size() >= 2 ? shape[0] : 1; }
    uint64_t row_elements() const;
    std::string shape_str() const;   // "4096x11008"
};

// A (possibly strided) tensor inside memory that outlives the view. Strides in elements.
struct StridedTensor {
    const uint8_t* base = nullptr;   // element (0, …, 0)
    DType type = DType::F32;
    std::vector<uint64_t> shape;
    std::vector<int64_t> stride;
    const uint8_t* region_begin = nullptr;  // the bytes this view may touch (for page release)
    uint64_t region_bytes = 0;
};

// Rows [r0, r1) of `v` (see TensorInfo::rows) to f32; row i goes to out + (i - r0) * ld.
void strided_rows_to_f32(const StridedTensor& v, uint64_t r0, uint64_t r1, float* out, uint64_t ld);

class TensorSource {
public:
    explicit TensorSource(std::string path = "") : path_(std::move(path)) {}
    TensorSource(TensorSource&&) = default;
    TensorSource& operator=(TensorSource&&) = default;

    // Opens one file: *.safetensors, PyTorch zip (*.bin, *.pth, *.pt) or *.gguf (decided by
    // the file's magic bytes, not its name).
    static TensorSource open_file(const std::string& path);

    const std::string& path() const { return path_; }
    const std::vector<TensorInfo>& tensors() const { return infos_; }
    const TensorInfo* find(const std::string& name) const;
    const TensorInfo& get(const std::string& name) const;  // Error naming the source if absent

    // Rows [r0, r1) as contiguous f32 (r1 - r0 rows of row_elements() each).
    void read_rows_f32(const std::string& name, uint64_t r0, uint64_t r1, float* out) const;
    void read_f32(const std::string& name, float* out) const;
    std::vector<float> read_f32(const std::string& name) const;

    // Building blocks (used by the format readers and by renaming / concatenating sources).
    // A tensor is the concatenation of `pieces` along `axis` (one piece: the tensor itself).
    void add(TensorInfo info, std::vector<StridedTensor> pieces, int axis = 0);
    void keep_alive(std::shared_ptr<const void> owner) { owners_.push_back(std::move(owner)); }
    // Moves every tensor of `other` into this source (error on a duplicate name).
    void absorb(TensorSource&& other);
    // The pieces of a tensor (to build a renamed / concatenated source from this one).
    const std::vector<StridedTensor>& pieces(const std::string& name) const;
    int axis(const std::string& name) const;
    const std::vector<std::shared_ptr<const void>>& owners() const { return owners_; }

    // Whether read pages are given back to the kernel after each read (default: yes).
    void set_release_pages(bool on) { release_ = on; }

private:
    struct Entry {
        TensorInfo info;
        std::vector<StridedTensor> pieces;
        int axis = 0;
    };
    const Entry& entry(const std::string& name) const;
    std::string path_;
    std::vector<TensorInfo> infos_;
    std::vector<Entry> entries_;
    std::map<std::string, size_t> index_;
    std::vector<std::shared_ptr<const void>> owners_;
    bool release_ = true;
};

// Per-format openers (each keeps its file mapped through keep_alive).
TensorSource open_safetensors_source(const std::string& path);
TensorSource open_torch_source(const std::string& path);
TensorSource open_gguf_source(const std::string& path);  // GGUF names; shapes reversed to PyTorch order

// Parses a buffer (no file) — used by the fuzzers and tests; the buffer must outlive the source.
TensorSource parse_torch_buffer(const uint8_t* data, size_t size, const std::string& name);

}  // namespace calpaca
