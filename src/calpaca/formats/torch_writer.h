// Writes a PyTorch checkpoint (what torch.save of a flat dict name → tensor produces, so
// torch.load, llama.cpp's convert scripts and our own reader accept it): a zip archive
// "<stem>/version", "<stem>/data/<k>" (raw little-endian storages, 64-byte aligned), and
// "<stem>/data.pkl" (pickle protocol 2 calling torch._utils._rebuild_tensor_v2 with
// persistent-id storages). Entries are stored (no compression), streamed with data
// descriptors and ZIP64 records, so tensors of any size are written without buffering.
// The file is written under a temporary name and renamed by finish().
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "calpaca/tensor/dtype.h"

namespace calpaca {

class TorchZipWriter {
public:
    explicit TorchZipWriter(std::string path);
    ~TorchZipWriter();
    // Starts tensor `name` (F32, F16 or BF16; contiguous, PyTorch-order shape); its bytes
    // follow through write() — exactly numel * element size of them.
    void begin_tensor(const std::string& name, DType type, std::vector<uint64_t> shape);
    void write(const void* data, size_t n);
    void finish();
    const std::string& path() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace calpaca
