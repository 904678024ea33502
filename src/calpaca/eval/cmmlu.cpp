#include "calpaca/eval/cmmlu.h"

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "calpaca/base/error.h"
#include "calpaca/base/fileio.h"

namespace calpaca {

const std::vector<std::string>& cmmlu_groups() {
    static const std::vector<std::string> g{"China specific", "STEM", "Social Science", "Humanities", "Other"};
    return g;
}

namespace {
std::vector<std::string> string_list(const nlohmann::ordered_json& v, const std::string& path, const std::string& what) {
    if (!v.is_array()) fail("{}: {}: expected a list of strings", path, what);
    std::vector<std::string> out;
    for (const auto& x : v) {
        if (!x.is_string()) fail("{}: {}: expected a list of strings", path, what);
        out.push_back(x.get<std::string>());
    }
    return out;
}
}  // namespace

std::vector<SubjectInfo> load_cmmlu_mapping(const std::string& path) {
    nlohmann::ordered_json j;
    try {
        j = nlohmann::ordered_json::parse(read_file(path));
    } catch (const nlohmann::json::exception& e) {
        fail("{}: invalid JSON: {}", path, e.what());
    }
    if (!j.is_object() || j.empty()) fail("{}: expected a JSON object", path);
    const auto& groups = cmmlu_groups();
    std::vector<SubjectInfo> out;
    if (!j.contains("categories")) {  // C-Eval form
        for (const auto& [key, v] : j.items()) {
            auto l = string_list(v, path, "subject '" + key + "'");
            if (l.size() != 3) fail("{}: subject '{}': expected [English name, Chinese name, group]", path, key);
            if (std::find(groups.begin(), groups.end(), l[2]) == groups.end())
                fail("{}: subject '{}': unknown group '{}'", path, key, l[2]);
            out.push_back({key, l[0], l[1], l[2]});
        }
        return out;
    }
    for (const char* k : {"name_en2zh", "subcategories", "categories"})
        if (!j.contains(k) || !j[k].is_object()) fail("{}: missing object '{}'", path, k);
    const auto& cats = j["categories"];
    for (const auto& [g, v] : cats.items()) {
        string_list(v, path, "categories." + g);
        if (std::find(groups.begin(), groups.end(), g) == groups.end())
            fail("{}: categories: unknown group '{}'", path, g);
    }
    for (const auto& [key, zh] : j["name_en2zh"].items()) {
        if (!zh.is_string()) fail("{}: name_en2zh.{}: expected a string", path, key);
        if (!j["subcategories"].contains(key)) fail("{}: subject '{}' has no subcategories entry", path, key);
        auto subs = string_list(j["subcategories"][key], path, "subcategories." + key);
        std::string group;
        for (const auto& [g, v] : cats.items()) {  // the last matching group wins
            for (const auto& c : v)
                if (std::find(subs.begin(), subs.end(), c.get<std::string>()) != subs.end()) group = g;
        }
        if (group.empty()) fail("{}: subject '{}': none of its subcategories is in any category", path, key);
        out.push_back({key, "", zh.get<std::string>(), group});
    }
    return out;
}

std::vector<McSubject> load_cmmlu(const CmmluData& d) {
    namespace fs = std::filesystem;
    std::error_code ec;
    if (!fs::is_directory(d.dir, ec)) fail("{}: not a directory (expected the CMMLU folder with dev/ and test/)", d.dir);
    const std::string mapping = d.mapping.empty() ? (fs::path(d.dir) / "subject_mapping.json").string() : d.mapping;
    BenchmarkLayout l;
    l.name = "CMMLU";
    l.test_dir = (fs::path(d.dir) / "test").string();
    l.test_suffix = ".csv";
    l.dev_dir = (fs::path(d.dir) / "dev").string();
    l.dev_suffix = ".csv";
    l.question_col = "Question";
    l.answer_col = "Answer";
    return load_subjects(load_cmmlu_mapping(mapping), mapping, l, d.subjects, d.need_dev);
}

}  // namespace calpaca
