#include "calpaca/tensor/dtype.h"

#include <cctype>

#include "calpaca/base/error.h"

namespace calpaca {

namespace {
struct Entry {
    uint32_t id;
    DTypeInfo info;
};
const Entry kTypes[] = {
    {0, {"F32", 1, 4}},      {1, {"F16", 1, 2}},       {2, {"Q4_0", 32, 18}},    {3, {"Q4_1", 32, 20}},
    {6, {"Q5_0", 32, 22}},   {7, {"Q5_1", 32, 24}},    {8, {"Q8_0", 32, 34}},    {9, {"Q8_1", 32, 36}},
    {10, {"Q2_K", 256, 84}}, {11, {"Q3_K", 256, 110}}, {12, {"Q4_K", 256, 144}}, {13, {"Q5_K", 256, 176}},
    {14, {"Q6_K", 256, 210}}, {15, {"Q8_K", 256, 292}}, {24, {"I8", 1, 1}},      {25, {"I16", 1, 2}},
    {26, {"I32", 1, 4}},     {27, {"I64", 1, 8}},      {28, {"F64", 1, 8}},      {30, {"BF16", 1, 2}},
};
}  // namespace

const DTypeInfo* dtype_info(uint32_t raw) {
    for (const auto& e : kTypes)
        if (e.id == raw) return &e.info;
    return nullptr;
}

const DTypeInfo& dtype_info(DType t) {
    const DTypeInfo* i = dtype_info(static_cast<uint32_t>(t));
    if (!i) fail("unknown tensor type {}", static_cast<uint32_t>(t));
    return *i;
}

bool dtype_from_name(std::string_view name, DType& out) {
    for (const auto& e : kTypes) {
        std::string_view n = e.info.name;
        if (n.size() != name.size()) continue;
        bool eq = true;
        for (size_t i = 0; i < n.size(); ++i)
            if (std::toupper(static_cast<unsigned char>(name[i])) != n[i]) eq = false;
        if (eq) {
            out = static_cast<DType>(e.id);
            return true;
        }
    }
    return false;
}

uint64_t row_bytes(DType t, uint64_t n) {
    const auto& i = dtype_info(t);
    if (n % i.block_size) fail("{} row of {} elements is not a multiple of the block size {}", i.name, n, i.block_size);
    return n / i.block_size * i.type_size;
}

float fp16_to_fp32(uint16_t h) {
    uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else {  // subnormal: normalize
            int e = -1;
            do {
                ++e;
                mant <<= 1;
            } while ((mant & 0x400) == 0);
            mant &= 0x3ff;
            bits = sign | (static_cast<uint32_t>(127 - 15 - e) << 23) | (mant << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000 | (mant << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    return fp32_from_bits(bits);
}

uint16_t fp32_to_fp16(float f) {
    uint32_t x = fp32_to_bits(f);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t absx = x & 0x7fffffff;
    if (absx > 0x7f800000) return static_cast<uint16_t>(sign | 0x7e00);  // NaN
    if (absx >= 0x477ff000) return static_cast<uint16_t>(sign | 0x7c00);  // rounds to >= 65520 -> inf
    if (absx < 0x38800000) {
        // subnormal or zero in half: value = absx as float; half subnormal unit = 2^-24
        float a = fp32_from_bits(absx);
        // scale so that one half-subnormal ulp == 1.0, then round to nearest even via float arithmetic
        float scaled = a * 16777216.0f;  // 2^24
        uint32_t r = static_cast<uint32_t>(scaled);
        float frac = scaled - static_cast<float>(r);
        if (frac > 0.5f || (frac == 0.5f && (r & 1))) ++r;
        return static_cast<uint16_t>(sign | r);
    }
    uint32_t exp = ((absx >> 23) - 127 + 15);
    uint32_t mant = absx & 0x7fffff;
    uint32_t h = (exp << 10) | (mant >> 13);
    uint32_t rest = mant & 0x1fff;
    if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) ++h;  // may carry into exponent: still correct
    return static_cast<uint16_t>(sign | h);
}

}  // namespace calpaca
