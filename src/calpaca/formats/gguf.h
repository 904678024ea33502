// GGUF v3 (llama.cpp's model file): reader over an mmap and a streaming writer.
//
// File layout (little-endian): magic "GGUF", u32 version, u64 n_tensors, u64 n_kv,
// n_kv × (string key, u32 value type, value), n_tensors × (string name, u32 n_dims,
// u64 ne[n_dims], u32 type, u64 offset), padding to `general.alignment` (default 32),
// then tensor data; each offset is relative to the start of the data section and aligned.
// Strings are u64 length + bytes (no terminator). Arrays are u32 element type + u64 count
// + elements, and may nest.
//
// Every count, length, offset and size is checked against the bytes that are really
// there before it is used: a hostile file gets an Error naming the field, never a crash.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "calpaca/base/mmap.h"
#include "calpaca/tensor/dtype.h"

namespace calpaca {

enum class GGUFType : uint32_t {
    UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6, BOOL = 7,
    STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};
const char* gguf_type_name(GGUFType t);

// A metadata value. Scalars live in the matching field; arrays keep their element type
// and their elements in `items` (each itself a GGUFValue, so arrays can nest).
struct GGUFValue {
    GGUFType type = GGUFType::UINT32;
    uint64_t u = 0;       // UINT8/16/32/64, BOOL
    int64_t i = 0;        // INT8/16/32/64
    double f = 0;         // FLOAT32/64
    std::string str;      // STRING
    GGUFType elem_type = GGUFType::UINT8;  // ARRAY
    std::vector<GGUFValue> items;          // ARRAY

    // Constructors for writers.
    static GGUFValue of_u32(uint32_t v) { GGUFValue x; x.type = GGUFType::UINT32; x.u = v; return x; }
    static GGUFValue of_i32(int32_t v) { GGUFValue x; x.type = GGUFType::INT32; x.i = v; return x; }
    static GGUFValue of_u64(uint64_t v) { GGUFValue x; x.type = GGUFType::UINT64; x.u = v; return x; }
    static GGUFValue of_f32(float v) { GGUFValue x; x.type = GGUFType::FLOAT32; x.f = v; return x; }
    static GGUFValue of_bool(bool v) { GGUFValue x; x.type = GGUFType::BOOL; x.u = v; return x; }
    static GGUFValue of_str(std::string v) { GGUFValue x; x.type = GGUFType::STRING; x.str = std::move(v); return x; }
    static GGUFValue of_array(GGUFType elem, std::vector<GGUFValue> items) {
        GGUFValue x; x.type = GGUFType::ARRAY; x.elem_type = elem; x.items = std::move(items); return x;
    }
    static GGUFValue of_strs(const std::vector<std::string>& v);
    static GGUFValue of_f32s(const std::vector<float>& v);
    static GGUFValue of_i32s(const std::vector<int32_t>& v);

    bool is_integer() const;
    bool is_number() const;
    // Checked conversions: throw Error naming `what` when the type does not fit.
    uint64_t as_u64(const std::string& what) const;
    int64_t as_i64(const std::string& what) const;
    double as_f64(const std::string& what) const;
    bool as_bool(const std::string& what) const;
    const std::string& as_str(const std::string& what) const;
    std::vector<std::string> as_strs(const std::string& what) const;
    std::vector<float> as_f32s(const std::string& what) const;
    std::vector<int32_t> as_i32s(const std::string& what) const;
    std::string to_display(size_t max_items = 8) const;  // short human-readable form
};

struct GGUFTensorInfo {
    std::string name;
    std::vector<uint64_t> ne;  // fastest-varying first
    DType type = DType::F32;
    uint64_t offset = 0;       // relative to the data section
    uint64_t n_elements() const;
    uint64_t n_bytes() const;  // validated on read
};

class GGUFFile {
public:
    // Maps and parses `path`. Throws Error("<path>: ...") on any problem.
    static std::unique_ptr<GGUFFile> open(const std::string& path);
    // Parses a buffer that outlives the object (used by tests and the fuzzer).
    static std::unique_ptr<GGUFFile> parse(const uint8_t* data, size_t size, const std::string& name);

    const std::string& path() const { return name_; }
    uint32_t version() const { return version_; }
    uint64_t alignment() const { return alignment_; }
    uint64_t data_offset() const { return data_offset_; }
    uint64_t file_size() const { return size_; }

    const std::vector<std::pair<std::string, GGUFValue>>& kv() const { return kv_; }
    const GGUFValue* find(const std::string& key) const;
    const GGUFValue& get(const std::string& key) const;  // throws "<file>: missing metadata key ..."
    bool has(const std::string& key) const { return find(key) != nullptr; }

    const std::vector<GGUFTensorInfo>& tensors() const { return tensors_; }
    const GGUFTensorInfo* find_tensor(const std::string& name) const;
    const uint8_t* tensor_data(const GGUFTensorInfo& t) const { return data_ + data_offset_ + t.offset; }
    // MappedFile::drop_pages on the file's mapping (no-op for bytes that are not in it).
    void drop_pages(const void* p, size_t n) const { map_.drop_pages(p, n); }

private:
    GGUFFile() = default;
    void parse_all();
    MappedFile map_;
    std::string name_;
    const uint8_t* data_ = nullptr;
    size_t size_ = 0;
    uint32_t version_ = 0;
    uint64_t alignment_ = 32;
    uint64_t data_offset_ = 0;
    std::vector<std::pair<std::string, GGUFValue>> kv_;
    std::map<std::string, size_t> kv_index_;
    std::vector<GGUFTensorInfo> tensors_;
    std::map<std::string, size_t> tensor_index_;
};

// Streaming writer. Declare all metadata and tensor infos first, then call begin(),
// then write each tensor's bytes in declaration order (write_tensor_data may be called
// several times per tensor to stream it in pieces), then finish(). The file is written to
// a temporary name and renamed on finish(); if the writer is destroyed before, nothing is
// left behind.
class GGUFWriter {
public:
    explicit GGUFWriter(std::string path, uint64_t alignment = 32);
    ~GGUFWriter();

    void set(const std::string& key, GGUFValue v);  // replaces an existing key, keeps order
    void add_tensor(const std::string& name, DType type, std::vector<uint64_t> ne);
    void begin();
    void write_tensor_data(const void* data, size_t n);
    void finish();

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace calpaca
