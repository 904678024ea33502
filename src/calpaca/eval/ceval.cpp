#include "calpaca/eval/ceval.h"

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "calpaca/base/error.h"
#include "calpaca/base/fileio.h"

namespace calpaca {

const std::vector<std::string>& ceval_groups() {
    static const std::vector<std::string> g{"STEM", "Social Science", "Humanities", "Other"};
    return g;
}

std::vector<SubjectInfo> load_ceval_mapping(const std::string& path) {
    nlohmann::ordered_json j;
    try {
        j = nlohmann::ordered_json::parse(read_file(path));
    } catch (const nlohmann::json::exception& e) {
        fail("{}: invalid JSON: {}", path, e.what());
    }
    if (!j.is_object() || j.empty()) fail("{}: expected an object {{subject: [English name, Chinese name, group]}}", path);
    std::vector<SubjectInfo> out;
    const auto& groups = ceval_groups();
    for (const auto& [key, v] : j.items()) {
        if (!v.is_array() || v.size() != 3 || !v[0].is_string() || !v[1].is_string() || !v[2].is_string())
            fail("{}: subject '{}': expected [English name, Chinese name, group]", path, key);
        SubjectInfo s{key, v[0].get<std::string>(), v[1].get<std::string>(), v[2].get<std::string>()};
        if (std::find(groups.begin(), groups.end(), s.group) == groups.end())
            fail("{}: subject '{}': group '{}' is not one of STEM, Social Science, Humanities, Other", path, key, s.group);
        out.push_back(std::move(s));
    }
    return out;
}

std::vector<McSubject> load_ceval(const CevalData& d) {
    namespace fs = std::filesystem;
    if (d.split != "val" && d.split != "test") fail("C-Eval split must be val or test, got '{}'", d.split);
    std::error_code ec;
    if (!fs::is_directory(d.dir, ec)) fail("{}: not a directory (expected the C-Eval folder with dev/, val/, test/)", d.dir);
    const std::string mapping = d.mapping.empty() ? (fs::path(d.dir) / "subject_mapping.json").string() : d.mapping;
    BenchmarkLayout l;
    l.name = "C-Eval";
    l.test_dir = (fs::path(d.dir) / d.split).string();
    l.test_suffix = "_" + d.split + ".csv";
    l.dev_dir = (fs::path(d.dir) / "dev").string();
    l.dev_suffix = "_dev.csv";
    l.question_col = "question";
    l.answer_col = "answer";
    l.answers_required = d.split == "val";
    return load_subjects(load_ceval_mapping(mapping), mapping, l, d.subjects, d.need_dev);
}

}  // namespace calpaca
