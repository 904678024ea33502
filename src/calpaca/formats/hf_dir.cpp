#include "calpaca/formats/hf_dir.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <regex>
#include <set>

#include "calpaca/base/error.h"
#include "calpaca/base/fileio.h"

namespace fs = std::filesystem;

namespace calpaca {

nlohmann::json read_json_file(const std::string& path) {
    std::string text = read_file(path);
    try {
        return nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
        fail("{}: invalid JSON: {}", path, e.what());
    }
}

namespace {

struct IndexedSet {
    std::vector<std::string> files;
    std::map<std::string, std::string> weight_map;  // tensor → file
};

IndexedSet read_index(const fs::path& index) {
    IndexedSet s;
    nlohmann::json j = read_json_file(index.string());
    if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
        fail("{}: missing object 'weight_map'", index.string());
    std::set<std::string> seen;
    for (auto& [k, v] : j["weight_map"].items()) {
        if (!v.is_string()) fail("{}: weight_map[\"{}\"] is not a file name", index.string(), k);
        std::string f = v.get<std::string>();
        if (f.empty() || f.find('/') != std::string::npos || f.find('\\') != std::string::npos || f == "." || f == "..")
            fail("{}: weight_map[\"{}\"] = \"{}\" is not a plain file name", index.string(), k, f);
        s.weight_map[k] = f;
        if (seen.insert(f).second) s.files.push_back(f);
    }
    std::sort(s.files.begin(), s.files.end());
    return s;
}

}  // namespace

std::vector<std::string> hf_weight_files(const std::string& dir_s) {
    const fs::path dir(dir_s);
    if (!fs::is_directory(dir)) fail("{}: not a directory", dir_s);
    auto check_all = [&](const fs::path& index, const std::vector<std::string>& files) {
        std::vector<std::string> out;
        for (const auto& f : files) {
            if (!fs::exists(dir / f))
                fail("{}: missing shard {} (listed in {})", dir_s, f, index.filename().string());
            out.push_back((dir / f).string());
        }
        return out;
    };
    for (const char* idx : {"model.safetensors.index.json", "pytorch_model.bin.index.json"}) {
        if (fs::exists(dir / idx)) {
            IndexedSet s = read_index(dir / idx);
            if (s.files.empty()) fail("{}: {} lists no shards", dir_s, idx);
            return check_all(dir / idx, s.files);
        }
    }
    for (const char* single : {"model.safetensors", "pytorch_model.bin"})
        if (fs::exists(dir / single)) return {(dir / single).string()};
    // shards without an index: pytorch_model-00001-of-00002.bin …
    static const std::regex shard(R"((pytorch_model|model)-(\d+)-of-(\d+)\.(bin|safetensors))");
    std::map<std::string, std::vector<std::pair<int, std::string>>> groups;
    std::map<std::string, int> totals;
    for (const auto& e : fs::directory_iterator(dir)) {
        std::smatch m;
        std::string name = e.path().filename().string();
        if (std::regex_match(name, m, shard)) {
            std::string key = m[1].str() + "." + m[4].str();
            groups[key].push_back({std::stoi(m[2].str()), name});
            totals[key] = std::stoi(m[3].str());
        }
    }
    for (const char* key : {"model.safetensors", "pytorch_model.bin"}) {
        auto it = groups.find(key);
        if (it == groups.end()) continue;
        auto& v = it->second;
        std::sort(v.begin(), v.end());
        const int total = totals[key];
        std::vector<std::string> out;
        std::string stem = std::string(key).substr(0, std::string(key).find('.'));
        std::string ext = std::string(key).substr(std::string(key).find('.') + 1);
        for (int i = 1; i <= total; ++i) {
            char buf[64];
            std::snprintf(buf, sizeof buf, "%s-%05d-of-%05d.%s", stem.c_str(), i, total, ext.c_str());
            if (!fs::exists(dir / buf)) fail("{}: missing shard {} (found {} of {} shards and no index file)", dir_s, buf, v.size(), total);
            out.push_back((dir / buf).string());
        }
        return out;
    }
    fail("{}: no weights found (expected model.safetensors[.index.json] or pytorch_model.bin[.index.json])", dir_s);
}

TensorSource open_hf_weights(const std::string& dir_s) {
    const fs::path dir(dir_s);
    std::vector<std::string> files = hf_weight_files(dir_s);
    TensorSource all(dir_s);
    for (const auto& f : files) all.absorb(TensorSource::open_file(f));
    // an index must not promise tensors its shards do not have
    for (const char* idx : {"model.safetensors.index.json", "pytorch_model.bin.index.json"}) {
        if (!fs::exists(dir / idx)) continue;
        IndexedSet s = read_index(dir / idx);
        for (const auto& [t, f] : s.weight_map)
            if (!all.find(t)) fail("{}: tensor '{}' is listed in {} (shard {}) but is not in the shard", dir_s, t, idx, f);
        break;
    }
    return all;
}

}  // namespace calpaca
