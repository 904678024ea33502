// Four-option multiple-choice evaluation (C-Eval, CMMLU), as the original runners do it
// (Chinese-LLaMA-Alpaca{,-2} scripts/ceval/llama_evaluator.py, scripts/cmmlu/llama2_evaluator.py;
// seed-features §7).
//
// Prompts (byte-exact; `{subject}` is the subject's file key, e.g. "computer_network" — the
// original's quirk — unless PromptOptions::subject_name says otherwise):
//   example(q)        = question + "\nA. {A}\nB. {B}\nC. {C}\nD. {D}"
//   dev shot          = example + "\n答案：{answer}\n\n"
//                       (CoT: example + "\n答案：让我们一步一步思考，\n{explanation}\n所以答案是{answer}。\n\n")
//   question suffix   Plain / Alpaca2: "\n答案：", CoT "\n答案：让我们一步一步思考，\n1." (Plain) or
//                     "\n答案是什么？让我们一步一步思考，\n1." (Alpaca2);
//                     Alpaca (v1): "\n答案是什么？ ", CoT "\n答案是什么？让我们一步一步思考，\n1."
//   history (shots>0) Plain / Alpaca: "以下是中国关于{subject}考试的单项选择题，请选出其中的正确答案。\n\n"
//                     + the dev shots;
//                     Alpaca2: "[INST] <<SYS>>\n{sys}\n<</SYS>>\n\n" + that header line
//                     + " [/INST]好的，我会结合{subject}相关知识回答" + per shot
//                     "[INST] " + example + "\n答案：[/INST]{answer}\n" (no CoT in the shots)
//   prompt            Plain:   history + example + suffix
//                     Alpaca:  "Below is an instruction that describes a task. Write a response that
//                              appropriately completes the request.\n\n### Instruction:\n"
//                              + history + example + suffix + "\n\n### Response: "
//                     Alpaca2: history + "[INST] <<SYS>>\n{sys}\n<</SYS>>\n\n" + example + suffix
//                              + " [/INST]"   (the system prompt appears twice with shots)
// The prompt is tokenized as HF `tokenizer(prompt)` does: BOS, then the text with literal
// "<s>"/"</s>" parsed as control tokens (legacy slow LlamaTokenizer).
//
// Answer selection:
//   constrained  (default for C-Eval) one forward pass; the next-token logits go through HF's
//                processors as `generate(max_new_tokens=1, top_k=0, top_p=1, output_scores=True)`
//                leaves them: repetition penalty (1.1, over every distinct prompt id) then / T.
//                score[X] = s[id("▁X")] + s[id("X")], id("▁X") = encode("X")[0],
//                id("X") = encode("：X")[-1]; the answer is the argmax over A..D (ties → first).
//   generation   (default for CMMLU) sample up to 20 tokens (T 0.2, top-k 40, top-p 0.9,
//                repetition penalty 1.1), decode, then the regex cascade of extract_answer().
//
// Speed: the LogitsProvider sees every prompt of a subject in turn; the Session-backed one keeps
// the KV cache of the previous prompt and re-evaluates only what follows the common token prefix
// (the few-shot history is evaluated once per subject).
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "calpaca/generate/sampler.h"
#include "calpaca/tokenizer/tokenizer.h"

namespace calpaca {

class Session;

struct McQuestion {
    std::string question;
    std::array<std::string, 4> options;
    std::string answer;       // "A".."D"; empty when the split has no answers (C-Eval test)
    std::string explanation;  // chain-of-thought text (C-Eval dev only)
};

// One subject's data, as read from the benchmark's CSV files.
struct McSubject {
    std::string key;      // file key, e.g. "computer_network"
    std::string name_en;  // may be empty
    std::string name_zh;
    std::string group;    // "STEM", "Social Science", "Humanities", "Other", "China specific"
    std::vector<McQuestion> dev, test;
    std::string dev_file, test_file;
    // The test CSV as read (header and rows), written back with the model's outputs.
    std::vector<std::string> test_header;
    std::vector<std::vector<std::string>> test_rows;
};

// A subject as a benchmark's mapping file describes it.
struct SubjectInfo {
    std::string key, name_en, name_zh, group;
};

// Where a benchmark keeps its files and what its columns are called.
struct BenchmarkLayout {
    std::string name;          // "C-Eval", "CMMLU" (messages)
    std::string test_dir;      // e.g. DIR/val
    std::string test_suffix;   // file name = key + suffix, e.g. "_val.csv" or ".csv"
    std::string dev_dir, dev_suffix;
    std::string question_col;  // "question" / "Question"
    std::string answer_col;    // "answer" / "Answer"
    bool answers_required = true;  // false for C-Eval's test split (no answer column)
};

// Reads the subjects: every test file must belong to a mapped subject (else an Error naming the
// file and the mapping); `only` (if not empty) restricts to those keys (an unknown key is an
// Error listing the known ones). Subjects come in mapping order. Dev files are read when
// need_dev. Bad rows give one-line Errors naming the file, row and line.
std::vector<McSubject> load_subjects(const std::vector<SubjectInfo>& mapping, const std::string& mapping_file,
                                     const BenchmarkLayout& layout, const std::vector<std::string>& only,
                                     bool need_dev);

enum class PromptStyle {
    Plain,    // no chat template (--with_prompt False)
    Alpaca,   // v1 Chinese-Alpaca: Stanford-Alpaca training template
    Alpaca2,  // v2 Chinese-Alpaca-2: Llama-2 chat template
};

struct PromptOptions {
    PromptStyle style = PromptStyle::Plain;
    int shots = 5;             // dev examples in the history; 0 = zero-shot (no header); -1 = all
    bool cot = false;
    std::string system;        // Alpaca2 system prompt (C-Eval: the v2 default; CMMLU: Chinese only)
    bool subject_name_zh = false;  // use the Chinese subject name in the header instead of the key
};

// The pieces of the formats above, exposed for tests.
std::string format_example(const McQuestion& q, bool include_answer, bool cot, PromptStyle style);
std::string few_shot_history(const McSubject& s, const PromptOptions& o);
std::string build_prompt(const std::string& history, const McQuestion& q, const PromptOptions& o);
// Tokenized as the original does (BOS + text with "<s>"/"</s>" parsed as control tokens).
std::vector<int32_t> tokenize_prompt(const Tokenizer& tok, const std::string& prompt);

// The token ids summed per option.
struct ChoiceTokens {
    std::array<int32_t, 4> spaced{};  // "▁A".."▁D": encode("A")[0]
    std::array<int32_t, 4> bare{};    // "A".."D":  encode("：A")[-1]
    static ChoiceTokens from(const Tokenizer& tok);
};

struct ConstrainedChoice {
    int choice = 0;                  // 0..3
    std::array<float, 4> scores{};   // processed score sums
    int32_t top_token = -1;          // argmax of the processed scores (the original's "response")
};

// The constrained-decoding rule on raw next-token logits. Throws Error if a summed score is not
// finite (the original asserts the same).
ConstrainedChoice constrained_choice(std::span<const float> logits, std::span<const int32_t> prompt,
                                     const ChoiceTokens& ct, float repetition_penalty, float temperature);

// Which rule of the cascade produced an extracted answer.
enum class ExtractRule { SoAnswerIs, Pattern, FirstLetter, OptionText, Random };
const char* extract_rule_name(ExtractRule r);

struct Extraction {
    char letter = 0;     // 'A'..'D'; 0 only when rule == Random (the caller draws)
    ExtractRule rule = ExtractRule::Random;
};

// The original's regex cascade over a generated response:
//   1. the last `所以答案是(.+?)。` match, if its group is exactly one of A–D;
//   2. the first match of, in this order, `([ABCD])是正确的`, `选项([ABCD])正确`, `答案为([ABCD])`,
//      `答案是([ABCD])`, `答案([ABCD])`, `选择([ABCD])`, `答案：([ABCD])`, `选择答案([ABCD])`;
//   3. the first A–D anywhere;
//   4. the leftmost occurrence of an option's text (at one position, options are tried A..D; equal
//      texts map to the last such option, as the original's dict does; an empty option text matches
//      at position 0);
//   5. nothing: rule Random, letter 0 (the runner picks a seeded random letter).
Extraction extract_answer(std::string_view response, const McQuestion& q);

// What the evaluator needs from a model. The real one is backed by a Session; tests use fakes
// whose logits are known in advance.
class LogitsProvider {
public:
    virtual ~LogitsProvider();
    virtual const Tokenizer& tokenizer() const = 0;
    // Raw next-token logits after `prompt` (n_vocab values; valid until the next call).
    virtual std::span<const float> next_logits(const std::vector<int32_t>& prompt) = 0;
    // Up to max_new sampled token ids after `prompt` (stops before EOS).
    virtual std::vector<int32_t> generate(const std::vector<int32_t>& prompt, Sampler& sampler, int max_new) = 0;
};

class SessionLogitsProvider : public LogitsProvider {
public:
    // reuse_prefix=false re-evaluates every prompt from scratch (for speed comparisons).
    SessionLogitsProvider(Session& s, bool reuse_prefix, int batch = 512);
    const Tokenizer& tokenizer() const override;
    std::span<const float> next_logits(const std::vector<int32_t>& prompt) override;
    std::vector<int32_t> generate(const std::vector<int32_t>& prompt, Sampler& sampler, int max_new) override;

    uint64_t tokens_evaluated() const { return evaluated_; }
    uint64_t tokens_reused() const { return reused_; }

private:
    void reset_if_needed();
    Session& s_;
    bool reuse_;
    int batch_;
    std::vector<int32_t> cached_;
    uint64_t evaluated_ = 0, reused_ = 0;
};

struct EvalOptions {
    PromptOptions prompt;
    bool constrained = true;
    SamplingParams sampling;   // generation mode; constrained mode uses its repetition penalty and temperature
    int max_new_tokens = 20;
    uint64_t seed = 0;         // for the random fallback of extract_answer (and sampling if unseeded)
    size_t limit = 0;          // evaluate only the first N questions of each subject (0 = all)
};

struct QuestionResult {
    std::string predicted;     // "A".."D"
    std::string response;      // generated text, or the decoded top token (constrained)
    bool correct = false;
    std::optional<ExtractRule> rule;              // generation mode
    std::optional<std::array<float, 4>> scores;   // constrained mode
    size_t prompt_tokens = 0;
};

struct SubjectResult {
    std::string key, name_zh, group;
    size_t num = 0, correct = 0;
    double score = 0;          // percent, as the original: 100 * correct / num
    std::vector<QuestionResult> questions;
    double seconds = 0;
};

// Evaluates one subject. on_progress(done) is called after each question.
SubjectResult evaluate_subject(LogitsProvider& model, const McSubject& s, const EvalOptions& o,
                               const std::function<void(size_t)>& on_progress = nullptr);

struct GroupScore {
    std::string name;
    double correct = 0;  // sum of the subjects' (score * num / 100), as the original computes it
    size_t num = 0;
    double score = 0;    // fraction correct / num (0 when num == 0)
};

struct Summary {
    std::vector<SubjectResult> subjects;
    std::vector<GroupScore> groups;  // in the benchmark's group order
    GroupScore all;                  // every question ("All"; the READMEs' "Average")
};

// Aggregates per group in `group_order`; a subject whose group is not listed is an Error.
Summary summarize(std::vector<SubjectResult> subjects, const std::vector<std::string>& group_order);

// summary.json as the original writes it: per subject {score (percent), num, correct}, then
// "grouped": {group: {correct, num, score (fraction)}}, then "All": {score, num, correct}. A
// group with no questions gets "score": null (the original would divide by zero).
std::string summary_json(const Summary& s);
// submission.json: {subject: {"0": "A", ...}} (row index → predicted letter), indent 4.
std::string submission_json(const Summary& s);
// scores.csv: subject,name,group,num,correct,accuracy (percent) per subject, then one line per
// group and "Average".
std::string scores_csv(const Summary& s);
// {subject}_test.csv as pandas.to_csv writes it: an unnamed index column, the test CSV's own
// columns (an unnamed one becomes "Unnamed: 0"), then model_output and correctness.
std::string subject_csv(const McSubject& s, const SubjectResult& r);

}  // namespace calpaca
