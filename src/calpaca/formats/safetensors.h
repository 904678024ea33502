// safetensors reader and streaming writer (single file; sharded sets: hf_dir.h): an 8-byte
// little-endian header length, a JSON header {name: {dtype, shape, data_offsets:[b,e]},
// "__metadata__": {...}}, then raw little-endian tensor bytes. Mapped, bounds-checked.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "calpaca/base/mmap.h"
#include "calpaca/tensor/dtype.h"

namespace calpaca {

struct SafeTensorInfo {
    std::string name;
    DType type = DType::F32;
    std::vector<uint64_t> shape;  // as stored: slowest-varying first (PyTorch order)
    const uint8_t* data = nullptr;
    uint64_t n_bytes = 0;
    uint64_t n_elements() const;
};

class SafeTensorsFile {
public:
    static std::unique_ptr<SafeTensorsFile> open(const std::string& path);
    static std::unique_ptr<SafeTensorsFile> parse(const uint8_t* data, size_t size, const std::string& name);
    const std::string& path() const { return name_; }
    const std::vector<SafeTensorInfo>& tensors() const { return tensors_; }
    const SafeTensorInfo* find(const std::string& name) const;
    const std::map<std::string, std::string>& metadata() const { return metadata_; }

private:
    SafeTensorsFile() = default;
    void parse_all(const uint8_t* data, size_t size);
    MappedFile map_;
    std::string name_;
    std::vector<SafeTensorInfo> tensors_;
    std::map<std::string, size_t> index_;
    std::map<std::string, std::string> metadata_;
};

class AtomicFile;

// Streaming writer: declare every tensor (name, F32/F16/BF16, PyTorch-order shape), then
// begin(), then write each tensor's bytes in declaration order (in as many pieces as you
// like), then finish(). Written to a temporary name and renamed when complete.
class SafeTensorsStreamWriter {
public:
    explicit SafeTensorsStreamWriter(std::string path);
    ~SafeTensorsStreamWriter();
    void add(const std::string& name, DType type, std::vector<uint64_t> shape);
    void set_metadata(const std::string& key, const std::string& value);
    void begin();
    void write(const void* data, size_t n);
    void finish();
    uint64_t data_bytes() const { return total_; }  // sum of the declared tensors' sizes

private:
    struct Decl {
        std::string name;
        DType type;
        std::vector<uint64_t> shape;
        uint64_t begin, end;
    };
    std::string path_;
    std::vector<Decl> decls_;
    std::map<std::string, std::string> meta_;
    std::unique_ptr<AtomicFile> file_;
    uint64_t total_ = 0, written_ = 0;
    bool begun_ = false;
};

}  // namespace calpaca
