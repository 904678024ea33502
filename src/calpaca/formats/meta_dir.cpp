#include "calpaca/formats/meta_dir.h"

#include <filesystem>
#include <map>
#include <regex>

#include "calpaca/base/error.h"
#include "calpaca/formats/hf_dir.h"

namespace fs = std::filesystem;

namespace calpaca {

MetaParams read_meta_params(const std::string& path) {
    nlohmann::json j = read_json_file(path);
    if (!j.is_object()) fail("{}: expected a JSON object", path);
    MetaParams p;
    auto geti = [&](const char* k, int64_t& v, bool required) {
        if (!j.contains(k) || j[k].is_null()) {
            if (required) fail("{}: missing integer field '{}'", path, k);
            return;
        }
        if (!j[k].is_number_integer()) fail("{}: field '{}' must be an integer", path, k);
        v = j[k].get<int64_t>();
    };
    auto getf = [&](const char* k, double& v) {
        if (!j.contains(k) || j[k].is_null()) return;
        if (!j[k].is_number()) fail("{}: field '{}' must be a number", path, k);
        v = j[k].get<double>();
    };
    geti("dim", p.dim, true);
    geti("n_layers", p.n_layers, true);
    geti("n_heads", p.n_heads, true);
    p.n_kv_heads = p.n_heads;
    geti("n_kv_heads", p.n_kv_heads, false);
    geti("vocab_size", p.vocab_size, false);
    geti("multiple_of", p.multiple_of, false);
    getf("norm_eps", p.norm_eps);
    getf("rope_theta", p.rope_theta);
    getf("ffn_dim_multiplier", p.ffn_dim_multiplier);
    if (p.dim <= 0 || p.n_layers <= 0 || p.n_heads <= 0 || p.n_kv_heads <= 0 || p.dim % p.n_heads || p.n_heads % p.n_kv_heads)
        fail("{}: inconsistent dimensions (dim {}, n_heads {}, n_kv_heads {}, n_layers {})", path, p.dim, p.n_heads, p.n_kv_heads,
             p.n_layers);
    return p;
}

int meta_split_axis(const std::string& name) {
    auto ends = [&](const char* s) {
        std::string x(s);
        return name.size() >= x.size() && name.compare(name.size() - x.size(), x.size(), x) == 0;
    };
    if (name == "tok_embeddings.weight" || ends(".attention.wo.weight") || ends(".feed_forward.w2.weight")) return 1;
    if (name == "output.weight" || ends(".attention.wq.weight") || ends(".attention.wk.weight") || ends(".attention.wv.weight") ||
        ends(".feed_forward.w1.weight") || ends(".feed_forward.w3.weight"))
        return 0;
    return -1;
}

TensorSource open_meta_weights(const std::string& dir_s) {
    const fs::path dir(dir_s);
    static const std::regex shard(R"(consolidated\.(\d+)\.pth)");
    std::map<int, fs::path> found;
    for (const auto& e : fs::directory_iterator(dir)) {
        std::smatch m;
        std::string name = e.path().filename().string();
        if (std::regex_match(name, m, shard)) found[std::stoi(m[1].str())] = e.path();
    }
    if (found.empty()) fail("{}: no consolidated.NN.pth files", dir_s);
    const int n = found.rbegin()->first + 1;
    std::vector<TensorSource> shards;
    for (int i = 0; i < n; ++i) {
        if (!found.count(i)) {
            char buf[40];
            std::snprintf(buf, sizeof buf, "consolidated.%02d.pth", i);
            fail("{}: missing shard {} (found shards up to consolidated.{:02d}.pth)", dir_s, buf, n - 1);
        }
        shards.push_back(TensorSource::open_file(found[i].string()));
    }
    TensorSource out(dir_s);
    for (const auto& info : shards[0].tensors()) {
        const int axis = meta_split_axis(info.name);
        std::vector<StridedTensor> pieces;
        TensorInfo total = info;
        for (int i = 0; i < n; ++i) {
            const TensorInfo* t = shards[i].find(info.name);
            if (!t) fail("{}: tensor '{}' is in {} but not in {}", dir_s, info.name, found[0].filename().string(),
                         found[i].filename().string());
            if (t->type != info.type) fail("{}: tensor '{}' has different types in different shards", dir_s, info.name);
            const std::vector<StridedTensor>& p = shards[i].pieces(info.name);
            if (axis < 0) {
                if (t->shape != info.shape) fail("{}: replicated tensor '{}' has different shapes in different shards", dir_s, info.name);
                if (i == 0) pieces.insert(pieces.end(), p.begin(), p.end());
                continue;
            }
            if (t->shape.size() != 2) fail("{}: tensor '{}' should be a matrix, found shape {}", dir_s, info.name, t->shape_str());
            if (t->shape[1 - axis] != info.shape[1 - axis])
                fail("{}: tensor '{}': shard {} has shape {} but shard 0 has {}", dir_s, info.name, i, t->shape_str(), info.shape_str());
            if (i > 0) total.shape[axis] += t->shape[axis];
            pieces.insert(pieces.end(), p.begin(), p.end());
        }
        out.add(total, std::move(pieces), axis < 0 ? 0 : axis);
    }
    for (auto& s : shards) {
        if (s.tensors().size() != shards[0].tensors().size())
            fail("{}: shards hold different numbers of tensors ({} vs {})", dir_s, s.tensors().size(), shards[0].tensors().size());
        for (const auto& o : s.owners()) out.keep_alive(o);
    }
    return out;
}

}  // namespace calpaca
