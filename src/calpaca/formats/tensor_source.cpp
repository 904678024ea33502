#include "calpaca/formats/tensor_source.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "calpaca/base/error.h"
#include "calpaca/base/mmap.h"
#include "calpaca/formats/gguf.h"
#include "calpaca/formats/torch_file.h"
#include "calpaca/formats/safetensors.h"
#include "calpaca/tensor/kernels.h"

namespace calpaca {

uint64_t TensorInfo::n_elements() const {
    uint64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
}

uint64_t TensorInfo::row_elements() const {
    if (shape.size() < 2) return shape.empty() ? 1 : shape[0];
    uint64_t n = 1;
    for (size_t i = 1; i < shape.size(); ++i) n *= shape[i];
    return n;
}

std::string TensorInfo::shape_str() const {
    std::string s;
    for (auto d : shape) s += (s.empty() ? "" : "x") + std::to_string(d);
    return s.empty() ? "scalar" : s;
}

namespace {

void run_to_f32(DType t, const uint8_t* src, float* dst, size_t n) {
    switch (t) {
        case DType::F32:
        case DType::F16:
        case DType::BF16: to_f32(t, src, dst, n); return;
        case DType::F64:
            for (size_t i = 0; i < n; ++i) {
                double d;
                std::memcpy(&d, src + 8 * i, 8);
                dst[i] = static_cast<float>(d);
            }
            return;
        case DType::I64:
        case DType::I32:
        case DType::I16:
        case DType::I8: {
            const size_t es = dtype_info(t).type_size;
            for (size_t i = 0; i < n; ++i) {
                int64_t v = 0;
                if (es == 8) { int64_t x; std::memcpy(&x, src + 8 * i, 8); v = x; }
                if (es == 4) { int32_t x; std::memcpy(&x, src + 4 * i, 4); v = x; }
                if (es == 2) { int16_t x; std::memcpy(&x, src + 2 * i, 2); v = x; }
                if (es == 1) { v = static_cast<int8_t>(src[i]); }
                dst[i] = static_cast<float>(v);
            }
            return;
        }
        default: fail("cannot convert {} data to f32", dtype_name(t));
    }
}

// Drops the pages of [p, p+n) ∩ region from this process (they stay in the page cache).
void release_range(const StridedTensor& v, const uint8_t* p, uint64_t n) {
    if (!v.region_begin || n == 0) return;
    const uint8_t* lo = std::max(p, v.region_begin);
    const uint8_t* hi = std::min(p + n, v.region_begin + v.region_bytes);
    if (hi <= lo) return;
    static const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
    uintptr_t a = reinterpret_cast<uintptr_t>(lo) & ~(page - 1);        // down: same mapping
    uintptr_t b = reinterpret_cast<uintptr_t>(hi) & ~(page - 1);        // down: never past the mapping
    if (b > a) ::madvise(reinterpret_cast<void*>(a), b - a, MADV_DONTNEED);
}

}  // namespace

void strided_rows_to_f32(const StridedTensor& v, uint64_t r0, uint64_t r1, float* out, uint64_t ld) {
    if (dtype_info(v.type).block_size != 1)
        fail("{} tensors cannot be read element-wise (dequantize the model first, or use an f32/f16/bf16 one)", dtype_name(v.type));
    const size_t es = dtype_info(v.type).type_size;
    // normalise to [rows][...]: 0-D → [1][1], 1-D → [1][n]
    std::vector<uint64_t> shape = v.shape;
    std::vector<int64_t> stride = v.stride;
    if (shape.empty()) {
        shape = {1, 1};
        stride = {0, 1};
    } else if (shape.size() == 1) {
        shape.insert(shape.begin(), 1);
        stride.insert(stride.begin(), 0);
    }
    const size_t nd = shape.size();
    uint64_t row_elems = 1;
    bool contiguous = true;  // dims 1.. are packed row-major
    int64_t expect = 1;
    for (size_t d = nd; d-- > 1;) {
        if (shape[d] != 1 && stride[d] != expect) contiguous = false;
        expect *= static_cast<int64_t>(shape[d]);
        row_elems *= shape[d];
    }
    if (r1 > shape[0] || r0 > r1) fail("rows [{}, {}) outside a tensor of {} rows", r0, r1, shape[0]);
    if (row_elems == 0 || r0 == r1) return;
    if (contiguous && (stride[0] == static_cast<int64_t>(row_elems) || r1 - r0 == 1) && ld == row_elems) {
        const uint8_t* p = v.base + static_cast<uint64_t>(stride[0]) * r0 * es;
        run_to_f32(v.type, p, out, (r1 - r0) * row_elems);
        release_range(v, p, (r1 - r0) * row_elems * es);
        return;
    }
    std::vector<uint64_t> idx(nd, 0);
    for (uint64_t r = r0; r < r1; ++r) {
        float* dst = out + (r - r0) * ld;
        const uint8_t* row = v.base + static_cast<uint64_t>(stride[0]) * r * es;
        if (contiguous) {
            run_to_f32(v.type, row, dst, row_elems);
            release_range(v, row, row_elems * es);
            continue;
        }
        // general strides: walk dims 1..nd-2, inner dim nd-1
        std::fill(idx.begin(), idx.end(), 0);
        const uint64_t inner = shape[nd - 1];
        const int64_t is = stride[nd - 1];
        uint64_t written = 0;
        while (written < row_elems) {
            int64_t off = 0;
            for (size_t d = 1; d + 1 < nd; ++d) off += static_cast<int64_t>(idx[d]) * stride[d];
            const uint8_t* p = row + off * static_cast<int64_t>(es);
            if (is == 1) {
                run_to_f32(v.type, p, dst + written, inner);
            } else {
                for (uint64_t k = 0; k < inner; ++k) run_to_f32(v.type, p + static_cast<int64_t>(k) * is * static_cast<int64_t>(es), dst + written + k, 1);
            }
            written += inner;
            for (size_t d = nd - 1; d-- > 1;) {
                if (++idx[d] < shape[d]) break;
                idx[d] = 0;
            }
        }
    }
}

// ------------------------------------------------------------------ TensorSource
const TensorInfo* TensorSource::find(const std::string& name) const {
    auto it = index_.find(name);
    return it == index_.end() ? nullptr : &infos_[it->second];
}

const TensorInfo& TensorSource::get(const std::string& name) const {
    const TensorInfo* t = find(name);
    if (!t) fail("{}: no tensor '{}'", path_, name);
    return *t;
}

const TensorSource::Entry& TensorSource::entry(const std::string& name) const {
    auto it = index_.find(name);
    if (it == index_.end()) fail("{}: no tensor '{}'", path_, name);
    return entries_[it->second];
}

const std::vector<StridedTensor>& TensorSource::pieces(const std::string& name) const { return entry(name).pieces; }
int TensorSource::axis(const std::string& name) const { return entry(name).axis; }

void TensorSource::add(TensorInfo info, std::vector<StridedTensor> pieces, int axis) {
    if (index_.count(info.name)) fail("{}: tensor '{}' appears twice", path_, info.name);
    if (pieces.empty()) fail("{}: tensor '{}' has no data", path_, info.name);
    if (axis != 0 && axis != 1) fail("{}: tensor '{}': concatenation axis {} is not supported", path_, info.name, axis);
    index_[info.name] = entries_.size();
    infos_.push_back(info);
    entries_.push_back({std::move(info), std::move(pieces), axis});
}

void TensorSource::absorb(TensorSource&& other) {
    for (auto& e : other.entries_) add(std::move(e.info), std::move(e.pieces), e.axis);
    for (auto& o : other.owners_) owners_.push_back(std::move(o));
    other.entries_.clear();
    other.infos_.clear();
    other.index_.clear();
    other.owners_.clear();
}

void TensorSource::read_rows_f32(const std::string& name, uint64_t r0, uint64_t r1, float* out) const {
    const Entry& e = entry(name);
    const uint64_t rows = e.info.rows(), re = e.info.row_elements();
    if (r0 > r1 || r1 > rows) fail("{}: tensor '{}': rows [{}, {}) outside its {} rows", path_, name, r0, r1, rows);
    with_context(path_ + ": tensor '" + name + "'", [&] {
        auto strip = [&](StridedTensor v) {
            if (!release_) v.region_begin = nullptr;
            return v;
        };
        if (e.pieces.size() == 1) {
            strided_rows_to_f32(strip(e.pieces[0]), r0, r1, out, re);
        } else if (e.axis == 0) {  // stacked rows
            uint64_t base = 0;
            for (const auto& p : e.pieces) {
                const uint64_t pr = p.shape.size() >= 2 ? p.shape[0] : 1;
                const uint64_t a = std::max(r0, base), b = std::min(r1, base + pr);
                if (a < b) strided_rows_to_f32(strip(p), a - base, b - base, out + (a - r0) * re, re);
                base += pr;
            }
        } else {  // side by side (axis 1): each piece fills a column band of every row
            uint64_t col = 0;
            for (const auto& p : e.pieces) {
                strided_rows_to_f32(strip(p), r0, r1, out + col, re);
                uint64_t pc = 1;
                for (size_t d = 1; d < p.shape.size(); ++d) pc *= p.shape[d];
                col += pc;
            }
        }
    });
}

void TensorSource::read_f32(const std::string& name, float* out) const { read_rows_f32(name, 0, get(name).rows(), out); }

std::vector<float> TensorSource::read_f32(const std::string& name) const {
    std::vector<float> v(get(name).n_elements());
    read_f32(name, v.data());
    return v;
}

// ------------------------------------------------------------------ formats
namespace {

StridedTensor contiguous_view(const uint8_t* data, DType t, const std::vector<uint64_t>& shape, uint64_t n_bytes, bool mapped) {
    StridedTensor v;
    v.base = data;
    v.type = t;
    v.shape = shape;
    v.stride.assign(shape.size(), 1);
    for (size_t d = shape.size(); d-- > 1;) v.stride[d - 1] = v.stride[d] * static_cast<int64_t>(shape[d]);
    if (mapped) {
        v.region_begin = data;
        v.region_bytes = n_bytes;
    }
    return v;
}

}  // namespace

TensorSource open_safetensors_source(const std::string& path) {
    auto f = std::shared_ptr<SafeTensorsFile>(SafeTensorsFile::open(path));
    TensorSource s(path);
    for (const auto& t : f->tensors()) {
        TensorInfo info{t.name, t.type, t.shape};
        s.add(info, {contiguous_view(t.data, t.type, t.shape, t.n_bytes, true)});
    }
    s.keep_alive(f);
    return s;
}

TensorSource parse_torch_buffer(const uint8_t* data, size_t size, const std::string& name) {
    TensorSource s(name);
    for (auto& t : parse_torch_checkpoint(data, size, name)) s.add(std::move(t.info), {std::move(t.view)});
    return s;
}

TensorSource open_torch_source(const std::string& path) {
    auto map = std::make_shared<MappedFile>(path);
    TensorSource parsed = parse_torch_buffer(map->data(), map->size(), path);
    // re-add with page release enabled over the mapped file
    TensorSource s(path);
    for (const auto& info : parsed.tensors()) {
        std::vector<StridedTensor> p = parsed.pieces(info.name);
        for (auto& v : p) {
            v.region_begin = map->data();
            v.region_bytes = map->size();
        }
        s.add(info, std::move(p));
    }
    s.keep_alive(map);
    return s;
}

TensorSource open_gguf_source(const std::string& path) {
    auto f = std::shared_ptr<GGUFFile>(GGUFFile::open(path));
    TensorSource s(path);
    for (const auto& t : f->tensors()) {
        std::vector<uint64_t> shape(t.ne.rbegin(), t.ne.rend());
        StridedTensor v = contiguous_view(f->tensor_data(t), t.type, shape, t.n_bytes(), true);
        s.add(TensorInfo{t.name, t.type, shape}, {std::move(v)});
    }
    s.keep_alive(f);
    return s;
}

TensorSource TensorSource::open_file(const std::string& path) {
    FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) fail("{}: cannot open: {}", path, std::strerror(errno));
    unsigned char magic[4] = {0, 0, 0, 0};
    size_t n = std::fread(magic, 1, 4, f);
    std::fclose(f);
    if (n == 4 && std::memcmp(magic, "GGUF", 4) == 0) return open_gguf_source(path);
    if (n == 4 && magic[0] == 'P' && magic[1] == 'K') return open_torch_source(path);
    return open_safetensors_source(path);
}

}  // namespace calpaca
