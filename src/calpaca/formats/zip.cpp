#include "calpaca/formats/zip.h"

#include <cstring>

#include "calpaca/base/error.h"

namespace calpaca {

namespace {

constexpr uint32_t kEocdSig = 0x06054b50, kEocd64Sig = 0x06064b50, kLocatorSig = 0x07064b50;
constexpr uint32_t kCentralSig = 0x02014b50, kLocalSig = 0x04034b50;

uint16_t u16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t u32(const uint8_t* p) { return u16(p) | (static_cast<uint32_t>(u16(p + 2)) << 16); }
uint64_t u64(const uint8_t* p) { return u32(p) | (static_cast<uint64_t>(u32(p + 4)) << 32); }

}  // namespace

ZipReader::ZipReader(const uint8_t* data, size_t size, std::string name) : data_(data), size_(size), name_(std::move(name)) {
    if (size < 22) fail("{}: not a zip archive ({} bytes); PyTorch checkpoints saved before torch 1.6 (legacy format) are not supported", name_, size);
    // End of central directory: 22 bytes plus a comment of up to 65535 bytes, at the end.
    size_t eocd = SIZE_MAX;
    size_t lowest = size > 22 + 65535 ? size - 22 - 65535 : 0;
    for (size_t p = size - 22 + 1; p-- > lowest;) {
        if (u32(data + p) == kEocdSig && p + 22 + u16(data + p + 20) == size) {
            eocd = p;
            break;
        }
    }
    if (eocd == SIZE_MAX)
        fail("{}: not a zip archive (no end-of-central-directory record); PyTorch checkpoints saved before torch 1.6 "
             "(legacy format) are not supported: re-save it with a newer torch",
             name_);
    const uint8_t* e = data + eocd;
    if (u16(e + 4) != 0 || u16(e + 6) != 0) fail("{}: multi-disk zip archives are not supported", name_);
    uint64_t n_entries = u16(e + 10), cd_size = u32(e + 12), cd_offset = u32(e + 16);
    if (n_entries == 0xFFFF || cd_size == 0xFFFFFFFFu || cd_offset == 0xFFFFFFFFu) {
        if (eocd < 20 || u32(data + eocd - 20) != kLocatorSig) fail("{}: ZIP64 end-of-central-directory locator missing", name_);
        uint64_t off64 = u64(data + eocd - 20 + 8);
        if (size < 56 || off64 > size - 56 || off64 + 56 > eocd - 20) fail("{}: ZIP64 end-of-central-directory offset {} out of range", name_, off64);
        const uint8_t* z = data + off64;
        if (u32(z) != kEocd64Sig) fail("{}: bad ZIP64 end-of-central-directory signature", name_);
        n_entries = u64(z + 32);
        cd_size = u64(z + 40);
        cd_offset = u64(z + 48);
    }
    if (cd_offset > size || cd_size > size - cd_offset)
        fail("{}: central directory [{}, +{}) lies outside the {}-byte file (truncated download?)", name_, cd_offset, cd_size, size);
    if (n_entries > cd_size / 46) fail("{}: {} entries cannot fit in a {}-byte central directory", name_, n_entries, cd_size);
    const uint8_t* p = data + cd_offset;
    const uint8_t* end = p + cd_size;
    entries_.reserve(n_entries);
    for (uint64_t i = 0; i < n_entries; ++i) {
        if (end - p < 46 || u32(p) != kCentralSig) fail("{}: central directory entry {} is malformed", name_, i);
        ZipEntry z;
        z.flags = u16(p + 8);
        z.method = u16(p + 10);
        z.crc32 = u32(p + 16);
        z.compressed_size = u32(p + 20);
        z.size = u32(p + 24);
        uint16_t nlen = u16(p + 28), xlen = u16(p + 30), clen = u16(p + 32);
        z.local_header_offset = u32(p + 42);
        if (static_cast<size_t>(end - p) < 46u + nlen + xlen + clen) fail("{}: central directory entry {} runs past its end", name_, i);
        z.name.assign(reinterpret_cast<const char*>(p + 46), nlen);
        // ZIP64 extended information: only the fields whose 32-bit value is 0xFFFFFFFF, in order.
        const uint8_t* x = p + 46 + nlen;
        const uint8_t* xend = x + xlen;
        while (xend - x >= 4) {
            uint16_t id = u16(x), len = u16(x + 2);
            if (xend - x - 4 < len) fail("{}: entry '{}': extra field runs past its end", name_, z.name);
            if (id == 1) {
                const uint8_t* f = x + 4;
                int left = len;
                auto take = [&](uint64_t& v) {
                    if (v != 0xFFFFFFFFu) return;
                    if (left < 8) fail("{}: entry '{}': ZIP64 extra field too short", name_, z.name);
                    v = u64(f);
                    f += 8;
                    left -= 8;
                };
                take(z.size);
                take(z.compressed_size);
                take(z.local_header_offset);
            }
            x += 4 + len;
        }
        p += 46 + nlen + xlen + clen;
        // local header: its own name/extra lengths decide where the bytes start
        uint64_t lh = z.local_header_offset;
        if (lh > size || size - lh < 30 || u32(data + lh) != kLocalSig)
            fail("{}: entry '{}': local header at offset {} is missing (truncated file?)", name_, z.name, lh);
        uint64_t start = lh + 30 + u16(data + lh + 26) + u16(data + lh + 28);
        if (start > size || z.compressed_size > size - start)
            fail("{}: entry '{}': {} bytes at offset {} run past the end of the {}-byte file (truncated download?)", name_,
                 z.name, z.compressed_size, start, size);
        z.data_offset = start;
        if (index_.count(z.name)) fail("{}: entry '{}' appears twice", name_, z.name);
        index_[z.name] = entries_.size();
        entries_.push_back(std::move(z));
    }
}

const ZipEntry* ZipReader::find(const std::string& name) const {
    auto it = index_.find(name);
    return it == index_.end() ? nullptr : &entries_[it->second];
}

const uint8_t* ZipReader::data(const ZipEntry& e) const {
    if (e.flags & 1) fail("{}: entry '{}' is encrypted", name_, e.name);
    if (e.method != 0)
        fail("{}: entry '{}' is compressed (zip method {}); torch.save stores entries uncompressed — re-save the "
             "checkpoint with torch.save instead of re-zipping it",
             name_, e.name, e.method);
    if (e.size != e.compressed_size) fail("{}: entry '{}': stored size {} differs from size {}", name_, e.name, e.compressed_size, e.size);
    return data_ + e.data_offset;
}

uint32_t crc32_update(uint32_t crc, const void* data, size_t n) {
    static const auto table = [] {
        struct T {
            uint32_t v[8][256];
        } t{};
        for (uint32_t i = 0; i < 256; ++i) {
            uint32_t c = i;
            for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            t.v[0][i] = c;
        }
        for (uint32_t i = 0; i < 256; ++i)
            for (int s = 1; s < 8; ++s) t.v[s][i] = (t.v[s - 1][i] >> 8) ^ t.v[0][t.v[s - 1][i] & 0xFF];
        return t;
    }();
    const uint8_t* p = static_cast<const uint8_t*>(data);
    uint32_t c = ~crc;
    while (n >= 8) {  // slicing-by-8
        uint32_t a = c ^ u32(p), b = u32(p + 4);
        c = table.v[7][a & 0xFF] ^ table.v[6][(a >> 8) & 0xFF] ^ table.v[5][(a >> 16) & 0xFF] ^ table.v[4][a >> 24] ^
            table.v[3][b & 0xFF] ^ table.v[2][(b >> 8) & 0xFF] ^ table.v[1][(b >> 16) & 0xFF] ^ table.v[0][b >> 24];
        p += 8;
        n -= 8;
    }
    while (n--) c = table.v[0][(c ^ *p++) & 0xFF] ^ (c >> 8);
    return ~c;
}

}  // namespace calpaca
