// Minimal, bounds-checked ZIP reader for PyTorch checkpoints (.bin / .pth). torch.save
// writes a zip whose entries are STORED (not compressed); we read the central directory
// (ZIP64 included: 7B shards are larger than 4 GB) and locate each entry's bytes inside the
// caller's buffer (usually an mmap). Compressed or encrypted entries are refused by name.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace calpaca {

struct ZipEntry {
    std::string name;
    uint16_t method = 0;         // 0 = stored
    uint16_t flags = 0;
    uint32_t crc32 = 0;
    uint64_t compressed_size = 0;
    uint64_t size = 0;           // uncompressed
    uint64_t local_header_offset = 0;
    uint64_t data_offset = 0;    // start of the entry's bytes (after the local header)
};

class ZipReader {
public:
    // Parses the archive in [data, data+size); `name` is used in error messages.
    ZipReader(const uint8_t* data, size_t size, std::string name);
    const std::vector<ZipEntry>& entries() const { return entries_; }
    const ZipEntry* find(const std::string& name) const;
    // The stored bytes of an entry; throws for compressed or encrypted entries.
    const uint8_t* data(const ZipEntry& e) const;
    const std::string& name() const { return name_; }

private:
    const uint8_t* data_;
    size_t size_;
    std::string name_;
    std::vector<ZipEntry> entries_;
    std::map<std::string, size_t> index_;
};

// CRC-32 (ISO-HDLC, as zip uses), incremental: crc = crc32_update(crc, p, n), start with 0.
uint32_t crc32_update(uint32_t crc, const void* data, size_t n);

}  // namespace calpaca
