// SHA-256 (FIPS 180-4) through OpenSSL's libcrypto: incremental hashing of streamed
// outputs, and hashing of whole files (the original project publishes SHA256.md).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace calpaca {

class Sha256 {
public:
    Sha256();
    ~Sha256();
    Sha256(const Sha256&) = delete;
    Sha256& operator=(const Sha256&) = delete;
    void update(const void* data, size_t n);
    std::string hex_digest();  // finishes the hash; lowercase hex, 64 characters

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

std::string sha256_hex(const void* data, size_t n);
// Reads the file in blocks (shows Progress on a terminal when `progress`).
std::string sha256_file(const std::string& path, bool progress = false);

}  // namespace calpaca
