#include "calpaca/formats/torch_file.h"

#include <fmt/ranges.h>

#include "calpaca/base/error.h"
#include "calpaca/formats/pickle.h"
#include "calpaca/formats/zip.h"

namespace calpaca {

std::vector<TorchTensorView> parse_torch_checkpoint(const uint8_t* data, size_t size, const std::string& name) {
    ZipReader zip(data, size, name);
    const ZipEntry* pkl = nullptr;
    for (const auto& e : zip.entries()) {
        const std::string suffix = "data.pkl";
        if (e.name.size() >= suffix.size() && e.name.compare(e.name.size() - suffix.size(), suffix.size(), suffix) == 0 &&
            (e.name.size() == suffix.size() || e.name[e.name.size() - suffix.size() - 1] == '/')) {
            if (pkl) fail("{}: more than one data.pkl in the archive", name);
            pkl = &e;
        }
    }
    if (!pkl) fail("{}: zip archive without data.pkl: not a PyTorch checkpoint", name);
    const std::string prefix = pkl->name.substr(0, pkl->name.size() - 8);  // "archive/"
    const uint8_t* pdata = zip.data(*pkl);
    TorchStateDict sd = unpickle_torch_state_dict(pdata, pkl->size, name + ": " + pkl->name);
    std::vector<TorchTensorView> out;
    for (auto& [tname, t] : sd.tensors) {
        if (!t.dtype_supported)
            fail("{}: tensor '{}': storage type {} is not supported (expected Float, Half or BFloat16 storage)", name, tname,
                 t.storage_type);
        const std::string ename = prefix + "data/" + t.storage_key;
        const ZipEntry* e = zip.find(ename);
        if (!e) fail("{}: tensor '{}': storage entry '{}' is missing", name, tname, ename);
        const uint8_t* sdata = zip.data(*e);
        unsigned __int128 need = static_cast<unsigned __int128>(t.storage_numel) * t.elem_size;
        if (need > e->size)
            fail("{}: tensor '{}': storage '{}' holds {} bytes but {} elements of {} need {}", name, tname, ename, e->size,
                 t.storage_numel, t.storage_type, static_cast<uint64_t>(need));
        // every element the view can address must lie inside the storage
        unsigned __int128 numel = 1, last = t.offset;
        for (size_t d = 0; d < t.shape.size(); ++d) {
            numel *= t.shape[d];
            if (numel > (static_cast<unsigned __int128>(1) << 62)) fail("{}: tensor '{}': shape overflows", name, tname);
            if (t.shape[d] > 0) last += static_cast<unsigned __int128>(t.shape[d] - 1) * static_cast<uint64_t>(t.stride[d]);
            if (last > (static_cast<unsigned __int128>(1) << 100)) fail("{}: tensor '{}': strides overflow", name, tname);
        }
        if (t.offset > t.storage_numel) fail("{}: tensor '{}': offset {} beyond its {}-element storage", name, tname, t.offset, t.storage_numel);
        if (numel > 0 && last >= t.storage_numel)
            fail("{}: tensor '{}': shape {} with offset {} reaches element {} of a {}-element storage", name, tname,
                 fmt::format("{}", fmt::join(t.shape, "x")), t.offset, static_cast<uint64_t>(last), t.storage_numel);
        StridedTensor v;
        v.base = sdata + t.offset * t.elem_size;
        v.type = t.type;
        v.shape = t.shape;
        v.stride = t.stride;
        out.push_back({TensorInfo{tname, t.type, t.shape}, std::move(v)});
    }
    return out;
}

}  // namespace calpaca
