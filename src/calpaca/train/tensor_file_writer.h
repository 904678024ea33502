// A small safetensors writer (F32 tensors): 8-byte header length, JSON header, raw data.
// Written atomically (temp name + rename).
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace calpaca {

class F32SafeTensorsWriter {
public:
    void add(std::string name, std::vector<int64_t> shape, std::vector<float> data);
    void write(const std::string& path, const std::map<std::string, std::string>& metadata = {}) const;

private:
    struct Entry {
        std::string name;
        std::vector<int64_t> shape;
        std::vector<float> data;
    };
    std::vector<Entry> entries_;
};

}  // namespace calpaca
