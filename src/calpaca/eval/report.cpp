#include "calpaca/eval/report.h"

#include <algorithm>
#include <filesystem>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <set>

#include "calpaca/base/error.h"
#include "calpaca/base/fileio.h"

namespace calpaca {

namespace {
using json = nlohmann::json;

json read_json(const std::string& path) {
    try {
        return json::parse(read_file(path));
    } catch (const json::exception& e) {
        fail("{}: invalid JSON: {}", path, e.what());
    }
}

double number(const json& j, const char* key, const std::string& path) {
    if (!j.contains(key) || !j[key].is_number()) fail("{}: expected a number in \"{}\"", path, key);
    return j[key].get<double>();
}

std::string file_name(const std::string& p) { return std::filesystem::path(p).filename().string(); }

// Fills `row` from one input; returns the model path it names, if any.
std::string absorb(ReportRow& row, const std::string& path) {
    namespace fs = std::filesystem;
    std::error_code ec;
    if (fs::is_directory(path, ec)) {
        const auto run = (fs::path(path) / "run.json").string();
        if (!fs::exists(run, ec)) fail("{}: no run.json (is this an output directory of `calpaca eval`?)", path);
        return absorb(row, run);
    }
    json j = read_json(path);
    if (!j.is_object()) fail("{}: expected a JSON object", path);
    if (j.contains("benchmark")) {  // run.json
        const std::string bench = j["benchmark"].is_string() ? j["benchmark"].get<std::string>() : "";
        if (bench != "ceval" && bench != "cmmlu") fail("{}: benchmark must be \"ceval\" or \"cmmlu\"", path);
        const int shots = static_cast<int>(number(j, "shots", path));
        if (bench == "ceval" && j.contains("split") && j["split"] == "test")
            fail("{}: a C-Eval test-split run has no answers to score (submit its submission.json instead)", path);
        const auto summary = (fs::path(path).parent_path() / "summary.json").string();
        json s = read_json(summary);
        if (!s.contains("All") || !s["All"].is_object()) fail("{}: no \"All\" entry", summary);
        (bench == "ceval" ? row.ceval : row.cmmlu)[shots] = 100.0 * number(s["All"], "score", summary);
        if (j.contains("model_bytes") && j["model_bytes"].is_number_unsigned()) row.size_bytes = j["model_bytes"].get<uint64_t>();
        return j.contains("model") && j["model"].is_string() ? j["model"].get<std::string>() : "";
    }
    if (j.contains("grouped")) {  // bare summary.json
        if (!j.contains("All") || !j["All"].is_object()) fail("{}: no \"All\" entry", path);
        const bool cmmlu = j["grouped"].is_object() && j["grouped"].contains("China specific");
        (cmmlu ? row.cmmlu : row.ceval)[-1] = 100.0 * number(j["All"], "score", path);
        return "";
    }
    const char* key = j.contains("perplexity") ? "perplexity" : j.contains("ppl") ? "ppl" : nullptr;
    if (!key) fail("{}: not a run.json, summary.json or perplexity result (no \"perplexity\" number)", path);
    row.perplexity = number(j, key, path);
    const std::string model = j.contains("model") && j["model"].is_string() ? j["model"].get<std::string>() : "";
    if (j.contains("model_bytes") && j["model_bytes"].is_number_unsigned()) {
        row.size_bytes = j["model_bytes"].get<uint64_t>();
    } else if (!model.empty() && !row.size_bytes) {  // `calpaca perplexity --json` names the model file
        auto bytes = fs::file_size(model, ec);
        if (!ec) row.size_bytes = bytes;
    }
    return model;
}

std::string shots_name(int s) { return s < 0 ? "?" : std::to_string(s); }

std::vector<int> shot_set(const Report& r, bool ceval) {
    std::set<int> s;
    for (const auto& row : r.rows)
        for (const auto& [k, v] : ceval ? row.ceval : row.cmmlu) s.insert(k);
    return {s.begin(), s.end()};
}

std::string size_text(uint64_t b) {
    const double mib = static_cast<double>(b) / (1024.0 * 1024.0);
    return mib >= 1024 ? fmt::format("{:.2f} GiB", mib / 1024) : fmt::format("{:.1f} MiB", mib);
}

std::string acc_cell(const std::map<int, double>& m, const std::vector<int>& shots) {
    std::string c;
    for (size_t i = 0; i < shots.size(); ++i) {
        if (i) c += "/";
        auto it = m.find(shots[i]);
        c += it == m.end() ? "–" : fmt::format("{:.1f}", it->second);
    }
    return c;
}

std::string acc_header(const char* name, const std::vector<int>& shots) {
    std::vector<std::string> s;
    for (int x : shots) s.push_back(shots_name(x));
    return fmt::format("{} ({}-shot)", name, fmt::join(s, "/"));
}
}  // namespace

Report build_report(const std::vector<std::string>& args) {
    if (args.empty()) fail("eval report: give at least one run (an output directory or a JSON result)");
    Report r;
    std::vector<bool> labelled;
    for (const auto& a : args) {
        std::string label, path = a;
        const size_t eq = a.find('=');
        if (eq != std::string::npos && !std::filesystem::exists(a)) {
            label = a.substr(0, eq);
            path = a.substr(eq + 1);
            if (label.empty() || path.empty()) fail("eval report: '{}': expected LABEL=PATH", a);
        }
        auto it = std::find_if(r.rows.begin(), r.rows.end(), [&](const ReportRow& x) { return !label.empty() && x.label == label; });
        ReportRow tmp;
        ReportRow& row = it != r.rows.end() ? *it : tmp;
        std::string model = with_context(path, [&] { return absorb(row, path); });
        if (it == r.rows.end()) {
            row.label = !label.empty() ? label : !model.empty() ? file_name(model) : path;
            // unlabelled inputs naming the same model merge too
            auto same = std::find_if(r.rows.begin(), r.rows.end(), [&](const ReportRow& x) { return x.label == row.label; });
            if (same == r.rows.end()) {
                r.rows.push_back(std::move(row));
            } else {
                if (row.size_bytes) same->size_bytes = row.size_bytes;
                if (row.perplexity) same->perplexity = row.perplexity;
                for (auto& [k, v] : row.ceval) same->ceval[k] = v;
                for (auto& [k, v] : row.cmmlu) same->cmmlu[k] = v;
            }
        }
    }
    return r;
}

std::string report_markdown(const Report& r) {
    const auto cs = shot_set(r, true), ms = shot_set(r, false);
    bool has_size = false, has_ppl = false;
    for (const auto& row : r.rows) {
        has_size |= row.size_bytes.has_value();
        has_ppl |= row.perplexity.has_value();
    }
    std::vector<std::string> head{"Model"};
    if (has_size) head.push_back("Size");
    if (has_ppl) head.push_back("PPL");
    if (!cs.empty()) head.push_back(acc_header("C-Eval", cs));
    if (!ms.empty()) head.push_back(acc_header("CMMLU", ms));
    std::string o = "| " + fmt::format("{}", fmt::join(head, " | ")) + " |\n|";
    for (size_t i = 0; i < head.size(); ++i) o += i ? "---:|" : "---|";
    o += "\n";
    for (const auto& row : r.rows) {
        std::vector<std::string> c{row.label};
        if (has_size) c.push_back(row.size_bytes ? size_text(*row.size_bytes) : "–");
        if (has_ppl) c.push_back(row.perplexity ? fmt::format("{:.3f}", *row.perplexity) : "–");
        if (!cs.empty()) c.push_back(acc_cell(row.ceval, cs));
        if (!ms.empty()) c.push_back(acc_cell(row.cmmlu, ms));
        o += "| " + fmt::format("{}", fmt::join(c, " | ")) + " |\n";
    }
    return o;
}

std::string report_json(const Report& r) {
    json rows = json::array();
    for (const auto& row : r.rows) {
        json j = {{"label", row.label}};
        j["size_bytes"] = row.size_bytes ? json(*row.size_bytes) : json(nullptr);
        j["perplexity"] = row.perplexity ? json(*row.perplexity) : json(nullptr);
        for (const auto& [name, m] : {std::pair<const char*, const std::map<int, double>*>{"ceval", &row.ceval},
                                      {"cmmlu", &row.cmmlu}}) {
            json a = json::object();
            for (const auto& [k, v] : *m) a[shots_name(k)] = v;
            j[name] = a;
        }
        rows.push_back(j);
    }
    return json{{"rows", rows}}.dump(2) + "\n";
}

}  // namespace calpaca
