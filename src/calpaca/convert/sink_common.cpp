#include <unistd.h>

#include <filesystem>

#include "calpaca/base/error.h"
#include "calpaca/base/threadpool.h"
#include "calpaca/convert/sink.h"
#include "calpaca/tensor/quant.h"

namespace fs = std::filesystem;

namespace calpaca {

void encode_rows(const float* src, uint64_t n_rows, uint64_t cols, DType type, uint8_t* dst, ThreadPool* pool) {
    const uint64_t rb = row_bytes(type, cols);
    auto work = [&](size_t b, size_t e) {
        for (size_t r = b; r < e; ++r) {
            const float* s = src + r * cols;
            uint8_t* d = dst + r * rb;
            switch (type) {
                case DType::F32: std::memcpy(d, s, cols * 4); break;
                case DType::F16:
                    for (uint64_t i = 0; i < cols; ++i) {
                        uint16_t h = fp32_to_fp16(s[i]);
                        std::memcpy(d + 2 * i, &h, 2);
                    }
                    break;
                case DType::BF16:
                    for (uint64_t i = 0; i < cols; ++i) {
                        uint16_t h = fp32_to_bf16(s[i]);
                        std::memcpy(d + 2 * i, &h, 2);
                    }
                    break;
                default:
                    if (!is_weight_quant(type)) fail("cannot write tensors of type {}", dtype_name(type));
                    quantize_row_ref(type, s, d, static_cast<int64_t>(cols));
            }
        }
    };
    if (pool && n_rows > 1) pool->parallel_for(n_rows, work);
    else work(0, n_rows);
}

DType gguf_tensor_type(const OutTensor& t, DType outtype) {
    if (t.shape.size() < 2) return DType::F32;
    if (outtype == DType::F32 || outtype == DType::F16 || outtype == DType::BF16) return outtype;
    const uint64_t cols = t.shape.back();
    if (cols % dtype_info(outtype).block_size) return DType::F16;
    return outtype;
}

uint32_t gguf_file_type(DType t) {
    switch (t) {
        case DType::F32: return 0;
        case DType::F16: return 1;
        case DType::Q4_0: return 2;
        case DType::Q4_1: return 3;
        case DType::Q8_0: return 7;
        case DType::Q5_0: return 8;
        case DType::Q5_1: return 9;
        case DType::Q2_K: return 10;
        case DType::Q3_K: return 11;
        case DType::Q4_K: return 14;
        case DType::Q5_K: return 16;
        case DType::Q6_K: return 18;
        case DType::BF16: return 32;
        default: fail("--outtype {} is not a model file type", dtype_name(t));
    }
}

OutputDir::OutputDir(std::string dir) : dir_(std::move(dir)) {
    while (dir_.size() > 1 && dir_.back() == '/') dir_.pop_back();
    if (fs::exists(dir_) && !(fs::is_directory(dir_) && fs::is_empty(dir_)))
        fail("{}: output directory exists and is not empty; choose another -o or remove it", dir_);
    tmp_ = dir_ + ".tmp-" + std::to_string(::getpid());
    std::error_code ec;
    fs::remove_all(tmp_, ec);
    if (!fs::create_directories(tmp_, ec) && ec) fail("{}: cannot create: {}", tmp_, ec.message());
}

OutputDir::~OutputDir() {
    if (!committed_) {
        std::error_code ec;
        fs::remove_all(tmp_, ec);
    }
}

std::string OutputDir::tmp_path(const std::string& file) const { return (fs::path(tmp_) / file).string(); }
std::string OutputDir::final_path(const std::string& file) const { return (fs::path(dir_) / file).string(); }

void OutputDir::commit() {
    std::error_code ec;
    if (fs::exists(dir_)) {
        if (!(fs::is_directory(dir_) && fs::is_empty(dir_))) fail("{}: output directory appeared while writing; not overwriting it", dir_);
        fs::remove(dir_, ec);
    }
    fs::rename(tmp_, dir_, ec);
    if (ec) fail("{}: cannot rename {} into place: {}", dir_, tmp_, ec.message());
    committed_ = true;
}

}  // namespace calpaca
