// Read-only memory mapping of a whole file. Weights are views into it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace calpaca {

class MappedFile {
public:
    MappedFile() = default;
    explicit MappedFile(const std::string& path);
    ~MappedFile();
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;
    MappedFile(MappedFile&& o) noexcept;
    MappedFile& operator=(MappedFile&& o) noexcept;

    const uint8_t* data() const { return data_; }
    size_t size() const { return size_; }
    const std::string& path() const { return path_; }
    // Lets the kernel reclaim the mapped pages that lie wholly inside [p, p + n) (madvise
    // MADV_DONTNEED): the mapping is read-only and file-backed, so a later read faults the
    // bytes back in from the file. For weights that were copied elsewhere (packed.h); keeps
    // the resident set at one copy. Ranges outside the mapping are ignored.
    void drop_pages(const void* p, size_t n) const;

private:
    void release();
    std::string path_;
    const uint8_t* data_ = nullptr;
    size_t size_ = 0;
};

// Anonymous memory for large weight copies (packed.h): page-aligned, backed by transparent
// huge pages where the kernel allows (madvise MADV_HUGEPAGE: fewer TLB misses while decode
// streams the weights), returned to the system on destruction.
class AnonBuffer {
public:
    explicit AnonBuffer(size_t n);
    ~AnonBuffer();
    AnonBuffer(const AnonBuffer&) = delete;
    AnonBuffer& operator=(const AnonBuffer&) = delete;
    uint8_t* data() const { return data_; }
    size_t size() const { return size_; }

private:
    uint8_t* data_ = nullptr;
    size_t size_ = 0;
};

}  // namespace calpaca
