#include "calpaca/train/checkpoint.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "calpaca/base/error.h"
#include "calpaca/base/fileio.h"
#include "calpaca/formats/safetensors.h"
#include "calpaca/tensor/kernels.h"
#include "calpaca/train/tensor_file_writer.h"

namespace fs = std::filesystem;

namespace calpaca {

namespace {

// checkpoint-<N> → N, or -1 for anything else (temporary directories included)
int64_t checkpoint_step(const fs::path& p) {
    const std::string n = p.filename().string();
    if (n.rfind("checkpoint-", 0) != 0) return -1;
    const std::string num = n.substr(11);
    if (num.empty() || num.find_first_not_of("0123456789") != std::string::npos || num.size() > 15) return -1;
    return std::stoll(num);
}

std::vector<std::pair<int64_t, fs::path>> list_checkpoints(const std::string& out_dir) {
    std::vector<std::pair<int64_t, fs::path>> v;
    const fs::path root = fs::path(out_dir) / "checkpoints";
    if (!fs::is_directory(root)) return v;
    for (const auto& e : fs::directory_iterator(root)) {
        const int64_t s = checkpoint_step(e.path());
        if (s >= 0 && e.is_directory() && fs::exists(e.path() / "state.json")) v.emplace_back(s, e.path());
    }
    std::sort(v.begin(), v.end());
    return v;
}

}  // namespace

void save_checkpoint(const std::string& out_dir, const TrainableParams& p, const AdamW& opt, const CheckpointInfo& info,
                     const std::string& base_name, int keep) {
    const fs::path root = fs::path(out_dir) / "checkpoints";
    fs::create_directories(root);
    const fs::path final_dir = root / ("checkpoint-" + std::to_string(info.step));
    const fs::path tmp = root / ("checkpoint-" + std::to_string(info.step) + ".tmp-" + std::to_string(getpid()));
    fs::remove_all(tmp);
    fs::create_directories(tmp);
    p.save_peft(tmp.string(), base_name);
    F32SafeTensorsWriter w;
    for (size_t k = 0; k < p.params().size(); ++k) {
        const Param& q = *p.params()[k];
        w.add("param." + q.name, q.shape, q.w);
        w.add("adam_m." + q.name, q.shape, opt.m()[k]);
        w.add("adam_v." + q.name, q.shape, opt.v()[k]);
    }
    w.write((tmp / "state.safetensors").string());
    nlohmann::json j;
    j["step"] = info.step;
    j["optimizer_steps"] = opt.steps();
    j["fingerprint"] = fmt::format("{:016x}", info.fingerprint);
    write_file_atomic((tmp / "state.json").string(), j.dump(1) + "\n");
    std::error_code ec;
    fs::remove_all(final_dir, ec);
    fs::rename(tmp, final_dir, ec);
    if (ec) fail("cannot rename checkpoint {} to {}: {}", tmp.string(), final_dir.string(), ec.message());
    auto all = list_checkpoints(out_dir);
    for (size_t i = 0; keep > 0 && i + static_cast<size_t>(keep) < all.size(); ++i) fs::remove_all(all[i].second);
    // leftovers of killed runs
    for (const auto& e : fs::directory_iterator(root))
        if (e.path().filename().string().find(".tmp-") != std::string::npos) fs::remove_all(e.path(), ec);
}

std::string latest_checkpoint(const std::string& out_dir) {
    auto all = list_checkpoints(out_dir);
    return all.empty() ? std::string() : all.back().second.string();
}

CheckpointInfo load_checkpoint(const std::string& dir, TrainableParams& p, AdamW& opt) {
    const std::string sj = dir + "/state.json";
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(read_file(sj));
    } catch (const nlohmann::json::exception& e) {
        fail("{}: invalid JSON: {}", sj, e.what());
    }
    CheckpointInfo info;
    if (!j.contains("step") || !j["step"].is_number_integer()) fail("{}: missing field 'step'", sj);
    if (!j.contains("optimizer_steps") || !j["optimizer_steps"].is_number_integer())
        fail("{}: missing field 'optimizer_steps'", sj);
    if (!j.contains("fingerprint") || !j["fingerprint"].is_string()) fail("{}: missing field 'fingerprint'", sj);
    info.step = j["step"];
    info.fingerprint = std::stoull(j["fingerprint"].get<std::string>(), nullptr, 16);
    const std::string st = dir + "/state.safetensors";
    auto f = SafeTensorsFile::open(st);
    auto read_into = [&](const std::string& name, std::vector<float>& dst) {
        const SafeTensorInfo* t = f->find(name);
        if (!t) fail("{}: missing tensor '{}'", st, name);
        if (t->type != DType::F32 || t->n_elements() != dst.size())
            fail("{}: tensor {}: expected {} f32 values", st, name, dst.size());
        to_f32(t->type, t->data, dst.data(), dst.size());
    };
    for (size_t k = 0; k < p.params().size(); ++k) {
        Param& q = *p.params()[k];
        read_into("param." + q.name, q.w);
        read_into("adam_m." + q.name, opt.m()[k]);
        read_into("adam_v." + q.name, opt.v()[k]);
    }
    opt.set_steps(j["optimizer_steps"]);
    return info;
}

}  // namespace calpaca
