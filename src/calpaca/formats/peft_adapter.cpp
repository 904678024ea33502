#include "calpaca/formats/peft_adapter.h"

#include <cmath>
#include <filesystem>

#include "calpaca/base/error.h"
#include "calpaca/formats/hf_dir.h"

namespace fs = std::filesystem;

namespace calpaca {

namespace {

void replace_all(std::string& s, const std::string& a, const std::string& b) {
    for (size_t p = s.find(a); p != std::string::npos; p = s.find(a, p + b.size())) s.replace(p, a.size(), b);
}

bool ends_with(const std::string& s, const std::string& x) {
    return s.size() >= x.size() && s.compare(s.size() - x.size(), x.size(), x) == 0;
}

}  // namespace

PeftAdapter open_peft_adapter(const std::string& dir_s) {
    const fs::path dir(dir_s);
    if (!fs::is_directory(dir)) fail("{}: LoRA adapter directory not found", dir_s);
    const std::string cfg_path = (dir / "adapter_config.json").string();
    if (!fs::exists(cfg_path)) fail("{}: not a PEFT adapter (no adapter_config.json)", dir_s);
    nlohmann::json c = read_json_file(cfg_path);
    if (!c.is_object()) fail("{}: expected a JSON object", cfg_path);
    PeftAdapter a;
    a.dir = dir_s;
    if (c.contains("peft_type") && c["peft_type"].is_string() && c["peft_type"].get<std::string>() != "LORA")
        fail("{}: peft_type is '{}', only LORA adapters can be merged", cfg_path, c["peft_type"].get<std::string>());
    if (!c.contains("r") || !c["r"].is_number_integer()) fail("{}: LoRA rank 'r' is missing (needed for the scaling lora_alpha/r)", cfg_path);
    if (!c.contains("lora_alpha") || !c["lora_alpha"].is_number())
        fail("{}: 'lora_alpha' is missing (needed for the scaling lora_alpha/r)", cfg_path);
    a.r = c["r"].get<int64_t>();
    a.lora_alpha = c["lora_alpha"].get<double>();
    if (a.r <= 0) fail("{}: r must be positive, found {}", cfg_path, a.r);
    const bool rslora = c.contains("use_rslora") && c["use_rslora"].is_boolean() && c["use_rslora"].get<bool>();
    a.scaling = rslora ? a.lora_alpha / std::sqrt(static_cast<double>(a.r)) : a.lora_alpha / static_cast<double>(a.r);
    if (c.contains("fan_in_fan_out") && c["fan_in_fan_out"].is_boolean()) a.fan_in_fan_out = c["fan_in_fan_out"].get<bool>();
    auto strs = [&](const char* k, std::vector<std::string>& out) {
        if (!c.contains(k) || c[k].is_null()) return;
        if (c[k].is_string()) {
            out.push_back(c[k].get<std::string>());
            return;
        }
        if (!c[k].is_array()) fail("{}: '{}' must be a list of module names", cfg_path, k);
        for (const auto& x : c[k]) {
            if (!x.is_string()) fail("{}: '{}' must be a list of module names", cfg_path, k);
            out.push_back(x.get<std::string>());
        }
    };
    strs("target_modules", a.target_modules);
    strs("modules_to_save", a.modules_to_save);

    for (const char* f : {"adapter_model.safetensors", "adapter_model.bin"})
        if (fs::exists(dir / f)) {
            a.weights_file = (dir / f).string();
            break;
        }
    if (a.weights_file.empty()) fail("{}: no adapter_model.safetensors or adapter_model.bin", dir_s);
    a.tensors = TensorSource::open_file(a.weights_file);
    if (fs::exists(dir / "tokenizer.model")) a.tokenizer_model = (dir / "tokenizer.model").string();

    for (const auto& t : a.tensors.tensors()) {
        std::string k = t.name;
        if (k.rfind("base_model.model.", 0) == 0) k = k.substr(17);
        if (k.find("original_module") != std::string::npos) continue;
        replace_all(k, ".modules_to_save.default.", ".");
        replace_all(k, ".lora_A.default.", ".lora_A.");
        replace_all(k, ".lora_B.default.", ".lora_B.");
        if (ends_with(k, ".lora_A.weight")) {
            a.lora_a[k.substr(0, k.size() - 14) + ".weight"] = t.name;
        } else if (ends_with(k, ".lora_B.weight")) {
            a.lora_b[k.substr(0, k.size() - 14) + ".weight"] = t.name;
        } else if (k.find("lora_") != std::string::npos) {
            fail("{}: tensor '{}' is not a LoRA A/B weight this merger understands", a.weights_file, t.name);
        } else {
            a.replace[k] = t.name;
        }
    }
    for (const auto& [k, name] : a.lora_a) {
        if (!a.lora_b.count(k)) fail("{}: '{}' has no matching lora_B", a.weights_file, name);
        const TensorInfo& A = a.tensors.get(name);
        const TensorInfo& B = a.tensors.get(a.lora_b[k]);
        if (A.shape.size() != 2 || B.shape.size() != 2 || A.shape[0] != B.shape[1])
            fail("{}: LoRA pair for '{}': lora_A {} and lora_B {} do not multiply (expected [r, in] and [out, r])", a.weights_file,
                 k, A.shape_str(), B.shape_str());
        if (static_cast<int64_t>(A.shape[0]) != a.r)
            fail("{}: '{}' has rank {} but adapter_config.json says r = {}", a.weights_file, name, A.shape[0], a.r);
    }
    for (const auto& [k, name] : a.lora_b)
        if (!a.lora_a.count(k)) fail("{}: '{}' has no matching lora_A", a.weights_file, name);
    if (a.lora_a.empty() && a.replace.empty()) fail("{}: the adapter holds no LoRA weights", a.weights_file);
    return a;
}

}  // namespace calpaca
