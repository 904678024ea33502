#include "calpaca/train/tensor_file_writer.h"

#include <nlohmann/json.hpp>

#include "calpaca/base/error.h"
#include "calpaca/base/fileio.h"

namespace calpaca {

void F32SafeTensorsWriter::add(std::string name, std::vector<int64_t> shape, std::vector<float> data) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    if (n != static_cast<int64_t>(data.size())) fail("safetensors: tensor {}: shape does not match its data", name);
    entries_.push_back({std::move(name), std::move(shape), std::move(data)});
}

void F32SafeTensorsWriter::write(const std::string& path, const std::map<std::string, std::string>& metadata) const {
    nlohmann::ordered_json h;
    if (!metadata.empty()) h["__metadata__"] = metadata;
    uint64_t off = 0;
    for (const Entry& e : entries_) {
        const uint64_t n = e.data.size() * 4;
        h[e.name] = {{"dtype", "F32"}, {"shape", e.shape}, {"data_offsets", {off, off + n}}};
        off += n;
    }
    std::string hs = h.dump();
    while ((hs.size() + 8) % 8) hs.push_back(' ');
    AtomicFile f(path);
    uint64_t hl = hs.size();
    unsigned char len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(hl >> (8 * i));
    f.write(len, 8);
    f.write(hs);
    for (const Entry& e : entries_) f.write(e.data.data(), e.data.size() * 4);
    f.commit();
}

}  // namespace calpaca
