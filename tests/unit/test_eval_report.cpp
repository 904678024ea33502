// `eval report`: several runs (and perplexity results) → one quantization-style table.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "calpaca/base/error.h"
#include "calpaca/eval/report.h"

using namespace calpaca;
namespace fs = std::filesystem;

namespace {
struct Scratch {
    fs::path dir = fs::temp_directory_path() / ("calpaca-eval-report-" + std::to_string(::getpid()));
    Scratch() {
        fs::remove_all(dir);
        fs::create_directories(dir);
    }
    ~Scratch() { fs::remove_all(dir); }
    std::string run(const std::string& name, const std::string& bench, int shots, double all, uint64_t bytes,
                    const std::string& model) {
        fs::path d = dir / name;
        fs::create_directories(d);
        nlohmann::json r = {{"benchmark", bench}, {"split", bench == "ceval" ? "val" : "test"}, {"shots", shots},
                            {"model", model},     {"model_bytes", bytes}};
        std::ofstream(d / "run.json") << r.dump();
        std::ofstream(d / "summary.json") << nlohmann::json{{"All", {{"score", all}, {"num", 10}, {"correct", all * 10}}}}.dump();
        return d.string();
    }
    std::string file(const std::string& name, const std::string& text) {
        std::ofstream(dir / name) << text;
        return (dir / name).string();
    }
};
}  // namespace

TEST(EvalReport, QuantizationTable) {
    Scratch s;
    const uint64_t f16 = 13'476'838'400ull, q4 = 3'825'000'000ull;
    std::vector<std::string> args = {
        "F16=" + s.run("f16-c0", "ceval", 0, 0.282, f16, "/m/llama-2-7b-f16.gguf"),
        "F16=" + s.run("f16-c5", "ceval", 5, 0.360, f16, "/m/llama-2-7b-f16.gguf"),
        "F16=" + s.file("f16-ppl.json", R"({"perplexity": 9.3731, "model": "/m/llama-2-7b-f16.gguf"})"),
        s.run("q4-c0", "ceval", 0, 0.255, q4, "/m/llama-2-7b-q4_0.gguf"),
        s.run("q4-c5", "ceval", 5, 0.328, q4, "/m/llama-2-7b-q4_0.gguf"),  // same model file → same row
        s.run("q4-m5", "cmmlu", 5, 0.25, q4, "/m/llama-2-7b-q4_0.gguf"),
    };
    Report r = build_report(args);
    ASSERT_EQ(r.rows.size(), 2u);
    EXPECT_EQ(r.rows[0].label, "F16");
    EXPECT_EQ(r.rows[1].label, "llama-2-7b-q4_0.gguf");
    EXPECT_EQ(report_markdown(r),
              "| Model | Size | PPL | C-Eval (0/5-shot) | CMMLU (5-shot) |\n"
              "|---|---:|---:|---:|---:|\n"
              "| F16 | 12.55 GiB | 9.373 | 28.2/36.0 | – |\n"
              "| llama-2-7b-q4_0.gguf | 3.56 GiB | – | 25.5/32.8 | 25.0 |\n");
    auto j = nlohmann::json::parse(report_json(r));
    EXPECT_DOUBLE_EQ(j["rows"][0]["ceval"]["5"].get<double>(), 36.0);
    EXPECT_TRUE(j["rows"][1]["perplexity"].is_null());
    EXPECT_EQ(j["rows"][1]["size_bytes"].get<uint64_t>(), q4);
}

TEST(EvalReport, BareSummaryAndErrors) {
    Scratch s;
    auto bare = s.file("summary.json", R"({"grouped": {"China specific": {}}, "All": {"score": 0.5}})");
    // `calpaca perplexity --json` output: "ppl", and the model file gives the size
    auto model = s.file("m.gguf", std::string(2048, 'x'));
    Report p = build_report({s.file("ppl.json", R"({"ppl": 12.5, "model": ")" + model + R"("})")});
    EXPECT_EQ(report_markdown(p), "| Model | Size | PPL |\n|---|---:|---:|\n| m.gguf | 0.0 MiB | 12.500 |\n");
    Report r = build_report({"x=" + bare});
    EXPECT_EQ(report_markdown(r), "| Model | CMMLU (?-shot) |\n|---|---:|\n| x | 50.0 |\n");
    auto expect_err = [](const std::vector<std::string>& a, const std::string& needle) {
        try {
            build_report(a);
            ADD_FAILURE() << "no error for " << a[0];
        } catch (const Error& e) {
            EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
        }
    };
    expect_err({}, "at least one run");
    expect_err({s.file("junk.json", "[1]")}, "expected a JSON object");
    expect_err({s.file("other.json", R"({"loss": 1})")}, "not a run.json, summary.json or perplexity result");
    expect_err({s.file("bad.json", "{")}, "invalid JSON");
    expect_err({s.dir.string()}, "no run.json");
    std::string test_run = s.run("t", "ceval", 5, 0, 1, "m.gguf");
    s.file("t/run.json", R"({"benchmark": "ceval", "split": "test", "shots": 5})");
    expect_err({test_run}, "test-split run has no answers");
}
