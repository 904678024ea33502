// Minimal .npy reader for test fixtures (float32, C order, 1-D or 2-D).
#pragma once
#include <cstdint>
#include <cctype>
#include <cstring>
#include <string>
#include <vector>

#include "calpaca/base/error.h"
#include "calpaca/base/fileio.h"

namespace calpaca::test {

struct NpyF32 {
    std::vector<size_t> shape;
    std::vector<float> data;
};

inline NpyF32 read_npy_f32(const std::string& path) {
    std::string b = read_file(path);
    if (b.size() < 10 || b.compare(0, 6, "\x93NUMPY") != 0) fail("{}: not a .npy file", path);
    size_t hl, off;
    if (b[6] == 1) {
        uint16_t h;
        std::memcpy(&h, &b[8], 2);
        hl = h;
        off = 10;
    } else {
        uint32_t h;
        std::memcpy(&h, &b[8], 4);
        hl = h;
        off = 12;
    }
    std::string header = b.substr(off, hl);
    if (header.find("'<f4'") == std::string::npos) fail("{}: expected float32 little-endian", path);
    if (header.find("'fortran_order': False") == std::string::npos) fail("{}: expected C order", path);
    size_t p = header.find("'shape': (");
    if (p == std::string::npos) fail("{}: no shape", path);
    p += 10;
    NpyF32 r;
    size_t n = 1;
    while (p < header.size() && header[p] != ')') {
        while (p < header.size() && (header[p] == ' ' || header[p] == ',')) ++p;
        if (header[p] == ')') break;
        size_t v = std::stoul(header.substr(p));
        r.shape.push_back(v);
        n *= v;
        while (p < header.size() && std::isdigit(static_cast<unsigned char>(header[p]))) ++p;
    }
    if (b.size() != off + hl + n * 4) fail("{}: data size mismatch", path);
    r.data.resize(n);
    std::memcpy(r.data.data(), b.data() + off + hl, n * 4);
    return r;
}

}  // namespace calpaca::test
