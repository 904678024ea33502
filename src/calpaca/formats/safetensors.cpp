#include "calpaca/formats/safetensors.h"

#include <cstring>
#include <nlohmann/json.hpp>

#include "calpaca/base/error.h"
#include "calpaca/base/fileio.h"

namespace calpaca {

uint64_t SafeTensorInfo::n_elements() const {
    uint64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
}

std::unique_ptr<SafeTensorsFile> SafeTensorsFile::open(const std::string& path) {
    std::unique_ptr<SafeTensorsFile> f(new SafeTensorsFile());
    f->map_ = MappedFile(path);
    f->name_ = path;
    with_context(path, [&] { f->parse_all(f->map_.data(), f->map_.size()); });
    return f;
}

std::unique_ptr<SafeTensorsFile> SafeTensorsFile::parse(const uint8_t* data, size_t size, const std::string& name) {
    std::unique_ptr<SafeTensorsFile> f(new SafeTensorsFile());
    f->name_ = name;
    with_context(name, [&] { f->parse_all(data, size); });
    return f;
}

static DType st_dtype(const std::string& s, const std::string& tensor) {
    if (s == "F32") return DType::F32;
    if (s == "F16") return DType::F16;
    if (s == "BF16") return DType::BF16;
    if (s == "F64") return DType::F64;
    if (s == "I64") return DType::I64;
    if (s == "I32") return DType::I32;
    if (s == "I16") return DType::I16;
    if (s == "I8") return DType::I8;
    fail("tensor '{}': unknown dtype \"{}\" (expected F32, F16 or BF16)", tensor, s);
}

void SafeTensorsFile::parse_all(const uint8_t* data, size_t size) {
    if (size < 8) fail("not a safetensors file: {} bytes is too short", size);
    uint64_t hlen;
    std::memcpy(&hlen, data, 8);
    if (hlen > size - 8) fail("header length {} runs past the end of the file ({} bytes)", hlen, size);
    nlohmann::json h;
    try {
        h = nlohmann::json::parse(data + 8, data + 8 + hlen);
    } catch (const std::exception& e) {
        fail("header is not valid JSON: {}", e.what());
    }
    if (!h.is_object()) fail("header is not a JSON object");
    const uint8_t* base = data + 8 + hlen;
    uint64_t avail = size - 8 - hlen;
    for (auto it = h.begin(); it != h.end(); ++it) {
        if (it.key() == "__metadata__") {
            if (it->is_object())
                for (auto m = it->begin(); m != it->end(); ++m)
                    if (m->is_string()) metadata_[m.key()] = m->get<std::string>();
            continue;
        }
        const auto& v = *it;
        SafeTensorInfo t;
        t.name = it.key();
        if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
            fail("tensor '{}': entry needs dtype, shape and data_offsets", t.name);
        if (!v["dtype"].is_string()) fail("tensor '{}': dtype is not a string", t.name);
        t.type = st_dtype(v["dtype"].get<std::string>(), t.name);
        if (!v["shape"].is_array()) fail("tensor '{}': shape is not an array", t.name);
        uint64_t n = 1;
        for (const auto& d : v["shape"]) {
            if (!d.is_number_unsigned()) fail("tensor '{}': shape has a non-integer entry", t.name);
            uint64_t x = d.get<uint64_t>();
            if (x != 0 && n > (uint64_t(1) << 62) / x) fail("tensor '{}': shape overflows", t.name);
            n *= x;
            t.shape.push_back(x);
        }
        const auto& off = v["data_offsets"];
        if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
            fail("tensor '{}': data_offsets must be [begin, end]", t.name);
        uint64_t b = off[0].get<uint64_t>(), e = off[1].get<uint64_t>();
        if (b > e || e > avail) fail("tensor '{}': data_offsets [{}, {}] outside the {} data bytes", t.name, b, e, avail);
        uint64_t want = n * dtype_info(t.type).type_size;
        if (e - b != want) fail("tensor '{}': {} bytes stored but shape needs {}", t.name, e - b, want);
        t.data = base + b;
        t.n_bytes = e - b;
        index_[t.name] = tensors_.size();
        tensors_.push_back(std::move(t));
    }
}

const SafeTensorInfo* SafeTensorsFile::find(const std::string& name) const {
    auto it = index_.find(name);
    return it == index_.end() ? nullptr : &tensors_[it->second];
}



// ---------------------------------------------------------------- writer
static const char* st_name(DType t, const std::string& path, const std::string& tensor) {
    switch (t) {
        case DType::F32: return "F32";
        case DType::F16: return "F16";
        case DType::BF16: return "BF16";
        default: fail("{}: tensor '{}': safetensors output supports F32, F16 and BF16, not {}", path, tensor, dtype_name(t));
    }
}

SafeTensorsStreamWriter::SafeTensorsStreamWriter(std::string path) : path_(std::move(path)) {}
SafeTensorsStreamWriter::~SafeTensorsStreamWriter() = default;

void SafeTensorsStreamWriter::add(const std::string& name, DType type, std::vector<uint64_t> shape) {
    if (begun_) fail("{}: tensor added after begin()", path_);
    st_name(type, path_, name);
    uint64_t n = dtype_info(type).type_size;
    for (auto d : shape) n *= d;
    decls_.push_back({name, type, std::move(shape), total_, total_ + n});
    total_ += n;
}

void SafeTensorsStreamWriter::set_metadata(const std::string& key, const std::string& value) { meta_[key] = value; }

void SafeTensorsStreamWriter::begin() {
    nlohmann::ordered_json h;
    if (!meta_.empty()) {
        nlohmann::ordered_json m = nlohmann::ordered_json::object();
        for (const auto& [k, v] : meta_) m[k] = v;
        h["__metadata__"] = m;
    }
    for (const auto& d : decls_)
        h[d.name] = {{"dtype", st_name(d.type, path_, d.name)}, {"shape", d.shape}, {"data_offsets", {d.begin, d.end}}};
    std::string text = h.dump();
    while (text.size() % 8) text.push_back(' ');  // keep the data 8-byte aligned
    file_ = std::make_unique<AtomicFile>(path_);
    uint64_t n = text.size();
    uint8_t le[8];
    for (int i = 0; i < 8; ++i) le[i] = static_cast<uint8_t>(n >> (8 * i));
    file_->write(le, 8);
    file_->write(text);
    begun_ = true;
}

void SafeTensorsStreamWriter::write(const void* data, size_t n) {
    if (!begun_) fail("{}: data written before begin()", path_);
    if (written_ + n > total_) fail("{}: more tensor data written than declared", path_);
    file_->write(data, n);
    written_ += n;
}

void SafeTensorsStreamWriter::finish() {
    if (!begun_) begin();
    if (written_ != total_) fail("{}: {} of {} data bytes were written", path_, written_, total_);
    file_->commit();
}

}  // namespace calpaca
