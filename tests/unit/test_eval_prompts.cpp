// The original runners' prompts, byte for byte, and their token ids, on fixture questions
// (expected values: tools/reference/make_eval_fixtures.py, with pandas + transformers), plus the
// answer-extraction cascade against Python's re.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "calpaca/base/error.h"
#include "calpaca/eval/ceval.h"
#include "calpaca/eval/cmmlu.h"
#include "calpaca/eval/multiple_choice.h"
#include "calpaca/tokenizer/tokenizer.h"

using namespace calpaca;

namespace {
const std::string kFix = std::string(CALPACA_TEST_DATA) + "/eval";

std::vector<nlohmann::json> records(const std::string& kind) {
    std::ifstream in(kFix + "/expected/prompts.jsonl");
    std::vector<nlohmann::json> out;
    std::string line;
    while (std::getline(in, line))
        if (auto j = nlohmann::json::parse(line); j["kind"] == kind) out.push_back(j);
    return out;
}

const Tokenizer& tokenizer(const std::string& name) {
    static std::map<std::string, std::unique_ptr<Tokenizer>> cache;
    auto& t = cache[name];
    if (!t)
        t = std::make_unique<Tokenizer>(
            load_vocab_spm(std::string(CALPACA_TEST_DATA) + "/tokenizers/" + name + "/tokenizer.model"));
    return *t;
}

PromptStyle style_of(const std::string& s) {
    return s == "plain" ? PromptStyle::Plain : s == "alpaca" ? PromptStyle::Alpaca : PromptStyle::Alpaca2;
}
}  // namespace

TEST(EvalPrompts, MatchTheOriginalByteForByteAndTokenForToken) {
    CevalData cd;
    cd.dir = kFix + "/ceval";
    CmmluData md;
    md.dir = kFix + "/cmmlu";
    std::map<std::string, McSubject> subjects;
    for (auto& s : load_ceval(cd)) subjects["ceval/" + s.key] = s;
    for (auto& s : load_cmmlu(md)) subjects["cmmlu/" + s.key] = s;
    auto recs = records("prompt");
    ASSERT_GE(recs.size(), 60u);
    std::map<std::string, int> seen;
    for (const auto& r : recs) {
        const std::string bench = r["benchmark"];
        const McSubject& s = subjects.at(bench + "/" + r["subject"].get<std::string>());
        PromptOptions o;
        o.style = style_of(r["style"]);
        o.shots = r["shots"];
        o.cot = r["cot"];
        o.system = bench == "ceval" ? kCevalSystemPrompt : kCmmluSystemPrompt;
        const std::string p = build_prompt(few_shot_history(s, o), s.test.at(r["row"].get<size_t>()), o);
        const std::string what = r.dump().substr(0, 160);
        ASSERT_EQ(p, r["prompt"].get<std::string>()) << what;
        EXPECT_EQ(tokenize_prompt(tokenizer(r["tokenizer"]), p), r["ids"].get<std::vector<int32_t>>()) << what;
        ++seen[r["style"].get<std::string>() + (r["shots"] == 0 ? "-0" : "-5") + (r["cot"] == true ? "-cot" : "")];
    }
    // every variant was exercised
    for (const char* k : {"plain-0", "plain-5", "plain-5-cot", "alpaca-0", "alpaca-5", "alpaca-5-cot", "alpaca2-0",
                          "alpaca2-5", "alpaca2-5-cot"})
        EXPECT_GT(seen[k], 0) << k;
}

TEST(EvalPrompts, HandWrittenFormats) {
    McSubject s;
    s.key = "logic";
    s.name_zh = "逻辑学";
    McQuestion dev{"Q1?", {"a", "b", "c", "d"}, "B", "因为。"};
    s.dev = {dev, dev};
    McQuestion q{"问题____", {"甲", "乙", "丙", "丁"}, "C", ""};
    PromptOptions o;
    o.shots = 1;
    EXPECT_EQ(build_prompt(few_shot_history(s, o), q, o),
              "以下是中国关于logic考试的单项选择题，请选出其中的正确答案。\n\nQ1?\nA. a\nB. b\nC. c\nD. d\n答案：B\n\n"
              "问题____\nA. 甲\nB. 乙\nC. 丙\nD. 丁\n答案：");
    o.subject_name_zh = true;
    EXPECT_EQ(few_shot_history(s, o).substr(0, 30), "以下是中国关于逻辑学");
    o.subject_name_zh = false;
    o.shots = 0;
    o.style = PromptStyle::Alpaca;
    EXPECT_EQ(build_prompt(few_shot_history(s, o), q, o),
              "Below is an instruction that describes a task. Write a response that appropriately completes the "
              "request.\n\n### Instruction:\n问题____\nA. 甲\nB. 乙\nC. 丙\nD. 丁\n答案是什么？ \n\n### Response: ");
    o.style = PromptStyle::Alpaca2;
    o.system = "SYS";
    o.shots = 1;
    EXPECT_EQ(build_prompt(few_shot_history(s, o), q, o),
              "[INST] <<SYS>>\nSYS\n<</SYS>>\n\n以下是中国关于logic考试的单项选择题，请选出其中的正确答案。\n\n [/INST]"
              "好的，我会结合logic相关知识回答[INST] Q1?\nA. a\nB. b\nC. c\nD. d\n答案：[/INST]B\n"
              "[INST] <<SYS>>\nSYS\n<</SYS>>\n\n问题____\nA. 甲\nB. 乙\nC. 丙\nD. 丁\n答案： [/INST]");
    o.style = PromptStyle::Plain;
    o.cot = true;
    EXPECT_EQ(format_example(dev, true, true, PromptStyle::Plain),
              "Q1?\nA. a\nB. b\nC. c\nD. d\n答案：让我们一步一步思考，\n因为。\n所以答案是B。\n\n");
    EXPECT_EQ(format_example(q, false, true, PromptStyle::Plain), "问题____\nA. 甲\nB. 乙\nC. 丙\nD. 丁\n答案：让我们一步一步思考，\n1.");
    // too many shots for the dev file
    o.shots = 3;
    s.dev_file = "dev/logic_dev.csv";
    EXPECT_THROW(few_shot_history(s, o), Error);
    o.shots = -1;  // all of them
    EXPECT_NE(few_shot_history(s, o).find("因为。"), std::string::npos);
}

TEST(EvalPrompts, ChoiceTokensMatchTransformers) {
    for (const auto& r : records("choice_tokens")) {
        auto ct = ChoiceTokens::from(tokenizer(r["tokenizer"]));
        auto spaced = r["spaced"].get<std::vector<int32_t>>(), bare = r["bare"].get<std::vector<int32_t>>();
        for (int i = 0; i < 4; ++i) {
            EXPECT_EQ(ct.spaced[i], spaced[i]) << r["tokenizer"] << " " << i;
            EXPECT_EQ(ct.bare[i], bare[i]) << r["tokenizer"] << " " << i;
        }
    }
}

TEST(EvalPrompts, AnswerExtractionMatchesPythonRe) {
    auto recs = records("extract");
    ASSERT_GE(recs.size(), 20u);
    for (const auto& r : recs) {
        McQuestion q;
        auto opts = r["options"].get<std::vector<std::string>>();
        for (int i = 0; i < 4; ++i) q.options[i] = opts[i];
        const std::string resp = r["response"];
        Extraction e = extract_answer(resp, q);
        const std::string want = r["letter"].is_null() ? "" : r["letter"].get<std::string>();
        EXPECT_EQ(e.letter ? std::string(1, e.letter) : "", want) << resp;
        EXPECT_EQ(extract_rule_name(e.rule), r["rule"].get<std::string>()) << resp;
    }
}
