#include "calpaca/base/sha256.h"

#include <openssl/evp.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#include "calpaca/base/error.h"
#include "calpaca/base/progress.h"

namespace calpaca {

struct Sha256::Impl {
    EVP_MD_CTX* ctx = nullptr;
    bool done = false;
};

Sha256::Sha256() : impl_(new Impl()) {
    impl_->ctx = EVP_MD_CTX_new();
    if (!impl_->ctx || EVP_DigestInit_ex(impl_->ctx, EVP_sha256(), nullptr) != 1) fail("sha256: cannot initialise OpenSSL digest");
}

Sha256::~Sha256() { EVP_MD_CTX_free(impl_->ctx); }

void Sha256::update(const void* data, size_t n) {
    if (impl_->done) fail("sha256: update after the digest was taken");
    if (n && EVP_DigestUpdate(impl_->ctx, data, n) != 1) fail("sha256: digest update failed");
}

std::string Sha256::hex_digest() {
    if (impl_->done) fail("sha256: digest taken twice");
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_DigestFinal_ex(impl_->ctx, md, &len) != 1 || len != 32) fail("sha256: digest finalisation failed");
    impl_->done = true;
    static const char* hex = "0123456789abcdef";
    std::string s(64, '0');
    for (unsigned i = 0; i < 32; ++i) {
        s[2 * i] = hex[md[i] >> 4];
        s[2 * i + 1] = hex[md[i] & 15];
    }
    return s;
}

std::string sha256_hex(const void* data, size_t n) {
    Sha256 h;
    h.update(data, n);
    return h.hex_digest();
}

std::string sha256_file(const std::string& path, bool progress) {
    FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) fail("{}: cannot open: {}", path, std::strerror(errno));
    std::fseek(f, 0, SEEK_END);
    long total = std::ftell(f);
    std::fseek(f, 0, SEEK_SET);
    Progress prog("sha256 " + path, total > 0 ? static_cast<uint64_t>(total) : 0, progress);
    Sha256 h;
    std::vector<unsigned char> buf(1 << 20);
    uint64_t done = 0;
    for (;;) {
        size_t n = std::fread(buf.data(), 1, buf.size(), f);
        if (n) h.update(buf.data(), n);
        done += n;
        prog.update(done);
        if (n < buf.size()) break;
    }
    bool bad = std::ferror(f) != 0;
    std::fclose(f);
    if (bad) fail("{}: read error", path);
    prog.finish();
    return h.hex_digest();
}

}  // namespace calpaca
