// Small file helpers. Outputs are written to "<path>.tmp-<pid>" and renamed into place
// when complete, so a killed process never leaves a truncated file under the real name.
#pragma once
#include <cstdio>
#include <string>

namespace calpaca {

std::string read_file(const std::string& path);

class AtomicFile {
public:
    explicit AtomicFile(std::string path);
    ~AtomicFile();  // removes the temporary file unless commit() was called
    AtomicFile(const AtomicFile&) = delete;
    AtomicFile& operator=(const AtomicFile&) = delete;

    void write(const void* data, size_t n);
    void write(const std::string& s) { write(s.data(), s.size()); }
    uint64_t offset() const { return offset_; }
    void commit();  // flush, fsync, rename
    const std::string& path() const { return path_; }

private:
    std::string path_, tmp_;
    FILE* f_ = nullptr;
    uint64_t offset_ = 0;
};

void write_file_atomic(const std::string& path, const std::string& content);

}  // namespace calpaca
