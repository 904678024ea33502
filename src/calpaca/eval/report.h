// `calpaca eval report`: one table from several evaluation runs, in the form of the original's
// quantization table (model | size | PPL | C-Eval 0/5-shot | CMMLU 0/5-shot).
//
// Inputs, each "LABEL=PATH" or "PATH" (PATHs with the same LABEL form one row):
//   * an output directory of `calpaca eval ceval|cmmlu` (its run.json and summary.json);
//   * a run.json or summary.json file (a bare summary.json has no shot count: column "?");
//   * a perplexity result (`calpaca perplexity --json`): a JSON object with a numeric "ppl" (or
//     "perplexity"), optionally "model" (path; its file size is the Size when it exists and no
//     "model_bytes" is given) and "model_bytes".
// Without a LABEL the row is named after the model file in run.json / the perplexity result,
// else after the path.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace calpaca {

struct ReportRow {
    std::string label;
    std::optional<uint64_t> size_bytes;
    std::optional<double> perplexity;
    std::map<int, double> ceval, cmmlu;  // shots (-1 = unknown) → accuracy in percent
};

struct Report {
    std::vector<ReportRow> rows;  // in order of first appearance
};

Report build_report(const std::vector<std::string>& args);
// Columns without any value are left out; missing cells are "–". Accuracies with one decimal,
// perplexity with three, sizes in MiB/GiB.
std::string report_markdown(const Report& r);
std::string report_json(const Report& r);

}  // namespace calpaca
