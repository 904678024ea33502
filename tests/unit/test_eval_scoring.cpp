// Scoring and aggregation on synthetic models whose logits are known, so every accuracy is known
// in advance; the output files' exact format; and the Session-backed provider's prefix reuse.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "calpaca/base/error.h"
#include "calpaca/base/threadpool.h"
#include "calpaca/convert/random_model.h"
#include "calpaca/eval/ceval.h"
#include "calpaca/eval/cmmlu.h"
#include "calpaca/eval/csv.h"
#include "calpaca/eval/multiple_choice.h"
#include "calpaca/model/model.h"
#include "calpaca/model/session.h"

using namespace calpaca;

namespace {
const std::string kV2 = std::string(CALPACA_TEST_DATA) + "/tokenizers/chinese-llama-2/tokenizer.model";

const Tokenizer& v2() {
    static Tokenizer t(load_vocab_spm(kV2));
    return t;
}

// A model that recognises the question at the end of the prompt (by its text) and answers with
// the logits it was told to: `spaced[i]`/`bare[i]` on the ids of "▁A".."▁D" / "A".."D", 0 elsewhere.
// In generation mode it returns the tokens of a canned response.
class FakeModel : public LogitsProvider {
public:
    struct Script {
        std::array<float, 4> spaced{}, bare{};
        std::string response;
    };
    explicit FakeModel(const Tokenizer& t) : tok_(t), ct_(ChoiceTokens::from(t)) {}
    void on(const std::string& question, Script s) { scripts_.emplace_back(question, std::move(s)); }
    const Tokenizer& tokenizer() const override { return tok_; }

    std::span<const float> next_logits(const std::vector<int32_t>& prompt) override {
        const Script& s = find(prompt);
        logits_.assign(tok_.size(), 0.0f);
        for (int i = 0; i < 4; ++i) {
            logits_[ct_.spaced[i]] = s.spaced[i];
            logits_[ct_.bare[i]] = s.bare[i];
        }
        ++calls;
        return logits_;
    }
    std::vector<int32_t> generate(const std::vector<int32_t>& prompt, Sampler&, int max_new) override {
        auto ids = tok_.encode(find(prompt).response);
        if (static_cast<int>(ids.size()) > max_new) ids.resize(static_cast<size_t>(max_new));
        ++calls;
        return ids;
    }
    int calls = 0;

private:
    const Script& find(const std::vector<int32_t>& prompt) {
        const std::string text = tok_.decode(prompt, true);
        const Script* best = nullptr;
        size_t best_pos = 0;
        for (const auto& [q, s] : scripts_) {
            size_t p = text.rfind(q);
            if (p != std::string::npos && (!best || p >= best_pos)) {
                best = &s;
                best_pos = p;
            }
        }
        if (!best) throw Error("fake model: no scripted question in the prompt");
        return *best;
    }
    const Tokenizer& tok_;
    ChoiceTokens ct_;
    std::vector<std::pair<std::string, Script>> scripts_;
    std::vector<float> logits_;
};

FakeModel::Script pick(int letter, float strength = 5.0f) {
    FakeModel::Script s;
    s.spaced[letter] = strength;
    return s;
}

McQuestion question(const std::string& text, const std::string& answer) {
    return McQuestion{text, {text + "-甲", text + "-乙", text + "-丙", text + "-丁"}, answer, ""};
}

McSubject subject(const std::string& key, const std::string& group, std::vector<McQuestion> test) {
    McSubject s;
    s.key = key;
    s.name_zh = key + "中文";
    s.group = group;
    s.test = std::move(test);
    s.dev = {question(key + "示例一", "A"), question(key + "示例二", "B")};
    return s;
}
}  // namespace

TEST(EvalScoring, ConstrainedAccuracyAndGroupsAreKnownInAdvance) {
    FakeModel fake(v2());
    // s1 (STEM): 3 of 4 right; s2 (STEM): 0 of 2; s3 (Humanities): 3 of 3; nothing in Social Science / Other
    std::vector<McSubject> subjects = {
        subject("s1", "STEM", {question("一号", "A"), question("二号", "B"), question("三号", "C"), question("四号", "D")}),
        subject("s2", "STEM", {question("五号", "A"), question("六号", "B")}),
        subject("s3", "Humanities", {question("七号", "C"), question("八号", "C"), question("九号", "D")}),
    };
    fake.on("一号", pick(0));
    fake.on("二号", pick(1));
    fake.on("三号", pick(2));
    fake.on("四号", pick(0));  // wrong
    fake.on("五号", pick(3));  // wrong
    fake.on("六号", pick(0));  // wrong
    fake.on("七号", pick(2));
    fake.on("八号", pick(2));
    fake.on("九号", pick(3));
    EvalOptions o;
    o.prompt.shots = 2;
    std::vector<SubjectResult> rs;
    for (const auto& s : subjects) {
        size_t progress = 0;
        rs.push_back(evaluate_subject(fake, s, o, [&](size_t d) { progress = d; }));
        EXPECT_EQ(progress, s.test.size());
    }
    EXPECT_EQ(fake.calls, 9);
    EXPECT_EQ(rs[0].correct, 3u);
    EXPECT_DOUBLE_EQ(rs[0].score, 75.0);
    EXPECT_EQ(rs[1].correct, 0u);
    EXPECT_EQ(rs[2].correct, 3u);
    EXPECT_EQ(rs[0].questions[3].predicted, "A");
    EXPECT_FALSE(rs[0].questions[3].correct);
    ASSERT_TRUE(rs[0].questions[0].scores.has_value());
    EXPECT_FLOAT_EQ((*rs[0].questions[0].scores)[0], 5.0f / 0.2f);  // no penalty on "▁A" (not in the prompt), / T

    Summary sm = summarize(rs, ceval_groups());
    ASSERT_EQ(sm.groups.size(), 4u);
    EXPECT_EQ(sm.groups[0].name, "STEM");
    EXPECT_EQ(sm.groups[0].num, 6u);
    EXPECT_DOUBLE_EQ(sm.groups[0].score, 0.5);
    EXPECT_EQ(sm.groups[1].num, 0u);  // Social Science
    EXPECT_DOUBLE_EQ(sm.groups[2].score, 1.0);
    EXPECT_EQ(sm.all.num, 9u);
    EXPECT_DOUBLE_EQ(sm.all.score, 6.0 / 9.0);

    // CMMLU's five groups; a group the benchmark does not know is an error
    EXPECT_EQ(summarize(rs, {"China specific", "STEM", "Social Science", "Humanities", "Other"}).groups[0].num, 0u);
    EXPECT_THROW(summarize(rs, {"STEM"}), Error);

    // --limit
    o.limit = 2;
    EXPECT_EQ(evaluate_subject(fake, subjects[0], o).num, 2u);
}

TEST(EvalScoring, RepetitionPenaltyDecidesAsInTheOriginal) {
    const ChoiceTokens ct = ChoiceTokens::from(v2());
    std::vector<float> logits(v2().size(), 0.0f);
    logits[ct.spaced[0]] = 2.0f;  // A: 2.0 + (-1.0) = 1.0 raw
    logits[ct.bare[0]] = -1.0f;
    logits[ct.spaced[1]] = 0.5f;  // B: 0.5 + 0.45 = 0.95 raw
    logits[ct.bare[1]] = 0.45f;
    const std::vector<int32_t> no_letters = {1, 100, 200};
    const std::vector<int32_t> with_letters = {1, ct.bare[0], ct.bare[1], ct.bare[0]};
    // raw order: A wins
    EXPECT_EQ(constrained_choice(logits, no_letters, ct, 1.1f, 0.2f).choice, 0);
    EXPECT_EQ(constrained_choice(logits, with_letters, ct, 1.0f, 0.2f).choice, 0);
    // the bare letters occur in the prompt: A = 2.0 + (-1.0 * 1.1) = 0.9, B = 0.5 + 0.45 / 1.1 = 0.909 → B
    auto c = constrained_choice(logits, with_letters, ct, 1.1f, 0.2f);
    EXPECT_EQ(c.choice, 1);
    EXPECT_NEAR(c.scores[0], (2.0f - 1.1f) / 0.2f, 1e-4);
    EXPECT_NEAR(c.scores[1], (0.5f + 0.45f / 1.1f) / 0.2f, 1e-4);
    EXPECT_EQ(c.top_token, ct.spaced[0]);
    // ties go to the first option
    std::vector<float> flat(v2().size(), 0.0f);
    EXPECT_EQ(constrained_choice(flat, no_letters, ct, 1.1f, 0.2f).choice, 0);
    flat[ct.spaced[3]] = 1e-3f;
    EXPECT_EQ(constrained_choice(flat, no_letters, ct, 1.1f, 0.2f).choice, 3);
    // non-finite scores are an error, as the original's assert
    flat[ct.bare[2]] = std::nanf("");
    EXPECT_THROW(constrained_choice(flat, no_letters, ct, 1.1f, 0.2f), Error);
}

TEST(EvalScoring, GenerationModeUsesTheCascadeAndASeededFallback) {
    FakeModel fake(v2());
    McSubject s = subject("g", "Other", {question("甲题", "C"), question("乙题", "A"), question("丙题", "B"), question("丁题", "D")});
    fake.on("甲题", {{}, {}, "所以答案是C。"});
    fake.on("乙题", {{}, {}, "我认为答案为B"});
    fake.on("丙题", {{}, {}, "应该是丙题-乙吧"});
    fake.on("丁题", {{}, {}, "不知道"});
    EvalOptions o;
    o.constrained = false;
    o.prompt.shots = 0;
    auto r = evaluate_subject(fake, s, o);
    EXPECT_EQ(r.questions[0].predicted, "C");
    EXPECT_EQ(*r.questions[0].rule, ExtractRule::SoAnswerIs);
    EXPECT_EQ(r.questions[0].response, "所以答案是C。");
    EXPECT_EQ(r.questions[1].predicted, "B");
    EXPECT_EQ(*r.questions[1].rule, ExtractRule::Pattern);
    EXPECT_EQ(r.questions[2].predicted, "B");
    EXPECT_EQ(*r.questions[2].rule, ExtractRule::OptionText);
    EXPECT_EQ(*r.questions[3].rule, ExtractRule::Random);
    const std::string random_pick = r.questions[3].predicted;
    EXPECT_EQ(r.correct, 2u + (random_pick == "D"));
    // the fallback is reproducible for a seed
    for (int i = 0; i < 3; ++i) EXPECT_EQ(evaluate_subject(fake, s, o).questions[3].predicted, random_pick);
    // generation length is bounded by max_new_tokens
    o.max_new_tokens = 1;
    EXPECT_LE(v2().encode(evaluate_subject(fake, s, o).questions[0].response).size(), 1u);
}

TEST(EvalScoring, OutputFilesHaveTheOriginalsFormat) {
    SubjectResult a;
    a.key = "s1";
    a.group = "STEM";
    a.num = 11;
    a.correct = 1;
    a.score = 100.0 * 1 / 11;
    a.questions.resize(11);
    for (auto& q : a.questions) q.predicted = "B";
    SubjectResult b = a;
    b.key = "s2";
    b.group = "Other";
    b.num = 7;
    b.correct = 7;
    b.score = 100.0;
    b.questions.assign(7, QuestionResult{});
    for (auto& q : b.questions) q.predicted = "A";
    Summary sm = summarize({a, b}, ceval_groups());
    // the numbers are Python's json.dump of the original's float arithmetic (correct = score * num / 100)
    EXPECT_EQ(summary_json(sm),
              "{\n"
              "  \"s1\": {\n    \"score\": 9.090909090909092,\n    \"num\": 11,\n    \"correct\": 1.0000000000000002\n  },\n"
              "  \"s2\": {\n    \"score\": 100.0,\n    \"num\": 7,\n    \"correct\": 7.0\n  },\n"
              "  \"grouped\": {\n"
              "    \"STEM\": {\n      \"correct\": 1.0000000000000002,\n      \"num\": 11,\n      \"score\": 0.09090909090909093\n    },\n"
              "    \"Social Science\": {\n      \"correct\": 0.0,\n      \"num\": 0,\n      \"score\": null\n    },\n"
              "    \"Humanities\": {\n      \"correct\": 0.0,\n      \"num\": 0,\n      \"score\": null\n    },\n"
              "    \"Other\": {\n      \"correct\": 7.0,\n      \"num\": 7,\n      \"score\": 1.0\n    }\n"
              "  },\n"
              "  \"All\": {\n    \"score\": 0.4444444444444444,\n    \"num\": 18,\n    \"correct\": 8.0\n  }\n"
              "}\n");
    const std::string sub = submission_json(sm);
    EXPECT_EQ(sub.rfind("{\n    \"s1\": {\n        \"0\": \"B\",\n        \"1\": \"B\",\n        \"2\":", 0), 0u) << sub;
    auto j = nlohmann::json::parse(sub);
    EXPECT_EQ(j["s2"]["6"], "A");
    auto csv = parse_csv(scores_csv(sm), "scores.csv");
    EXPECT_EQ(csv.rows.back(), (std::vector<std::string>{"Average", "", "all", "18", "8", "44.44"}));
    // the per-subject CSV as pandas.to_csv writes it
    McSubject s;
    s.test_header = {"", "Question", "A", "B", "C", "D", "Answer"};
    s.test_rows = {{"0", "问,题", "a", "b", "c", "d", "B"}, {"1", "q", "a", "b", "c", "d", "A"}, {"2", "q", "a", "b", "c", "d", "C"}};
    a.questions[0].response = "B";
    a.questions[0].correct = true;
    a.questions.resize(3);
    EXPECT_EQ(subject_csv(s, a),
              ",Unnamed: 0,Question,A,B,C,D,Answer,model_output,correctness\n"
              "0,0,\"问,题\",a,b,c,d,B,B,1\n1,1,q,a,b,c,d,A,,0\n2,2,q,a,b,c,d,C,,0\n");
}

TEST(EvalScoring, PrefixReuseGivesTheSameAnswersWithFewerTokens) {
    const std::string path = (std::filesystem::temp_directory_path() / ("calpaca-eval-model-" + std::to_string(::getpid()) + ".gguf")).string();
    RandomModelSpec spec;
    spec.vocab_path = kV2;
    spec.n_embd = 32;
    spec.n_head = 4;
    spec.n_head_kv = 2;
    spec.n_ff = 64;
    spec.std = 0.5f;
    spec.tie_embeddings = true;
    spec.progress = false;
    write_random_model(spec, path);
    auto model = Model::load(path);
    ThreadPool pool(2);
    CevalData cd;
    cd.dir = std::string(CALPACA_TEST_DATA) + "/eval/ceval";
    auto subjects = load_ceval(cd);
    EvalOptions o;
    o.prompt.shots = 5;
    SessionOptions so;
    so.kv_type = DType::F32;
    Session s1(*model, so, &pool), s2(*model, so, &pool);
    SessionLogitsProvider reuse(s1, true), fresh(s2, false);
    for (const auto& s : subjects) {
        auto a = evaluate_subject(reuse, s, o), b = evaluate_subject(fresh, s, o);
        for (size_t i = 0; i < a.questions.size(); ++i) {
            EXPECT_EQ(a.questions[i].predicted, b.questions[i].predicted);
            for (int k = 0; k < 4; ++k) EXPECT_NEAR((*a.questions[i].scores)[k], (*b.questions[i].scores)[k], 1e-3);
        }
    }
    EXPECT_EQ(fresh.tokens_reused(), 0u);
    EXPECT_GT(reuse.tokens_reused(), reuse.tokens_evaluated());  // the 5-shot history dominates
    EXPECT_EQ(reuse.tokens_reused() + reuse.tokens_evaluated(), fresh.tokens_evaluated());
    std::filesystem::remove(path);
}
