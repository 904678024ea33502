#include "calpaca/eval/multiple_choice.h"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>

#include "calpaca/base/error.h"
#include "calpaca/eval/csv.h"
#include "calpaca/generate/generator.h"
#include "calpaca/model/session.h"

namespace calpaca {

namespace {
constexpr const char* kLetters[4] = {"A", "B", "C", "D"};
const std::string kAnswerMark = "\n答案：";
const std::string kCotPlain = "\n答案：让我们一步一步思考，\n1.";
const std::string kCotAsk = "\n答案是什么？让我们一步一步思考，\n1.";
const std::string kAlpacaHead =
    "Below is an instruction that describes a task. Write a response that appropriately completes the "
    "request.\n\n### Instruction:\n";
const std::string kAlpacaTail = "\n\n### Response: ";

std::string sys_block(const std::string& sys) { return "[INST] <<SYS>>\n" + sys + "\n<</SYS>>\n\n"; }

std::string header_line(const McSubject& s, const PromptOptions& o) {
    const std::string& name = o.subject_name_zh && !s.name_zh.empty() ? s.name_zh : s.key;
    return "以下是中国关于" + name + "考试的单项选择题，请选出其中的正确答案。\n\n";
}

std::string options_block(const McQuestion& q) {
    std::string e = q.question;
    for (int i = 0; i < 4; ++i) e += std::string("\n") + kLetters[i] + ". " + q.options[i];
    return e;
}
}  // namespace

std::string format_example(const McQuestion& q, bool include_answer, bool cot, PromptStyle style) {
    std::string e = options_block(q);
    if (include_answer) {
        if (cot)
            e += "\n答案：让我们一步一步思考，\n" + q.explanation + "\n所以答案是" + q.answer + "。\n\n";
        else
            e += kAnswerMark + q.answer + "\n\n";
        return e;
    }
    switch (style) {
        case PromptStyle::Plain: e += cot ? kCotPlain : kAnswerMark; break;
        case PromptStyle::Alpaca: e += cot ? kCotAsk : "\n答案是什么？ "; break;
        case PromptStyle::Alpaca2: e += cot ? kCotAsk : kAnswerMark; break;
    }
    return e;
}

std::string few_shot_history(const McSubject& s, const PromptOptions& o) {
    if (o.shots == 0) return "";
    size_t k = o.shots < 0 ? s.dev.size() : static_cast<size_t>(o.shots);
    if (k > s.dev.size())
        fail("{}: {} few-shot examples requested but the dev file has {} rows", s.dev_file.empty() ? s.key : s.dev_file,
             k, s.dev.size());
    if (o.style == PromptStyle::Alpaca2) {
        const std::string& name = o.subject_name_zh && !s.name_zh.empty() ? s.name_zh : s.key;
        std::string h = sys_block(o.system) + header_line(s, o) + " [/INST]好的，我会结合" + name + "相关知识回答";
        for (size_t i = 0; i < k; ++i) h += "[INST] " + options_block(s.dev[i]) + kAnswerMark + "[/INST]" + s.dev[i].answer + "\n";
        return h;
    }
    std::string h = header_line(s, o);
    for (size_t i = 0; i < k; ++i) {
        if (o.cot && s.dev[i].explanation.empty())
            fail("{}: row {}: --cot needs the 'explanation' column, which is empty or missing", s.dev_file, i + 1);
        h += format_example(s.dev[i], true, o.cot, o.style);
    }
    return h;
}

std::string build_prompt(const std::string& history, const McQuestion& q, const PromptOptions& o) {
    const std::string ex = format_example(q, false, o.cot, o.style);
    switch (o.style) {
        case PromptStyle::Plain: return history + ex;
        case PromptStyle::Alpaca: return kAlpacaHead + history + ex + kAlpacaTail;
        case PromptStyle::Alpaca2: return history + sys_block(o.system) + ex + " [/INST]";
    }
    return history + ex;
}

std::vector<int32_t> tokenize_prompt(const Tokenizer& tok, const std::string& prompt) {
    Tokenizer::Options eo;
    eo.add_bos = true;
    eo.parse_special = true;
    return tok.encode(prompt, eo);
}

ChoiceTokens ChoiceTokens::from(const Tokenizer& tok) {
    ChoiceTokens ct;
    for (int i = 0; i < 4; ++i) {
        auto a = tok.encode(kLetters[i]);
        auto b = tok.encode(std::string("：") + kLetters[i]);
        if (a.empty() || b.empty()) fail("tokenizer cannot encode the option letter {}", kLetters[i]);
        ct.spaced[i] = a.front();
        ct.bare[i] = b.back();
    }
    return ct;
}

ConstrainedChoice constrained_choice(std::span<const float> logits, std::span<const int32_t> prompt,
                                     const ChoiceTokens& ct, float repetition_penalty, float temperature) {
    if (!(temperature > 0)) fail("constrained decoding needs a temperature > 0, got {}", temperature);
    std::vector<float> s(logits.begin(), logits.end());
    sampling::apply_repetition_penalty(s, prompt, repetition_penalty);
    ConstrainedChoice r;
    for (auto& v : s) v /= temperature;
    for (int i = 0; i < 4; ++i) {
        for (int32_t id : {ct.spaced[i], ct.bare[i]})
            if (id < 0 || static_cast<size_t>(id) >= s.size())
                fail("option token id {} is outside the model's {} logits", id, s.size());
        r.scores[i] = s[ct.spaced[i]] + s[ct.bare[i]];
        if (!std::isfinite(r.scores[i])) fail("constrained decoding: the score of option {} is not finite", kLetters[i]);
        if (r.scores[i] > r.scores[r.choice]) r.choice = i;
    }
    r.top_token = static_cast<int32_t>(std::max_element(s.begin(), s.end()) - s.begin());
    return r;
}

const char* extract_rule_name(ExtractRule r) {
    switch (r) {
        case ExtractRule::SoAnswerIs: return "so-answer-is";
        case ExtractRule::Pattern: return "pattern";
        case ExtractRule::FirstLetter: return "first-letter";
        case ExtractRule::OptionText: return "option-text";
        case ExtractRule::Random: return "random";
    }
    return "?";
}

namespace {
bool is_letter(char c) { return c >= 'A' && c <= 'D'; }

size_t cp_len(std::string_view s, size_t i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    return std::min(n, s.size() - i);
}

// Last match of 所以答案是(.+?)。 (Python re.findall semantics; '.' excludes '\n').
std::optional<std::string> last_so_answer(std::string_view s) {
    static const std::string pre = "所以答案是", stop = "。";
    std::optional<std::string> last;
    size_t pos = 0;
    while ((pos = s.find(pre, pos)) != std::string_view::npos) {
        const size_t c = pos + pre.size();
        bool matched = false;
        if (c < s.size() && s[c] != '\n') {
            size_t first_end = c + cp_len(s, c);
            size_t e = s.find(stop, first_end);
            size_t nl = s.find('\n', c);
            if (e != std::string_view::npos && (nl == std::string_view::npos || nl > e)) {
                last = std::string(s.substr(c, e - c));
                pos = e + stop.size();
                matched = true;
            }
        }
        if (!matched) pos += 1;
    }
    return last;
}

// First match of prefix[ABCD]suffix; returns the letter or 0.
char find_pattern(std::string_view s, std::string_view prefix, std::string_view suffix) {
    for (size_t i = 0; i + prefix.size() < s.size(); ++i) {
        if (s.compare(i, prefix.size(), prefix) != 0) continue;
        char c = s[i + prefix.size()];
        if (!is_letter(c)) continue;
        if (s.compare(i + prefix.size() + 1, suffix.size(), suffix) == 0 && i + prefix.size() + 1 + suffix.size() <= s.size())
            return c;
    }
    return 0;
}
}  // namespace

Extraction extract_answer(std::string_view r, const McQuestion& q) {
    if (auto m = last_so_answer(r); m && m->size() == 1 && is_letter((*m)[0])) return {(*m)[0], ExtractRule::SoAnswerIs};
    static const std::pair<std::string_view, std::string_view> patterns[] = {
        {"", "是正确的"}, {"选项", "正确"}, {"答案为", ""}, {"答案是", ""},
        {"答案", ""},     {"选择", ""},     {"答案：", ""}, {"选择答案", ""},
    };
    for (const auto& [pre, suf] : patterns)
        if (char c = find_pattern(r, pre, suf)) return {c, ExtractRule::Pattern};
    for (char c : r)
        if (is_letter(c)) return {c, ExtractRule::FirstLetter};
    // leftmost position; at one position the first option (A..D) whose text matches
    for (size_t i = 0; i <= r.size(); ++i) {
        for (int k = 0; k < 4; ++k) {
            const std::string& t = q.options[k];
            if (r.compare(i, t.size(), t) != 0 || i + t.size() > r.size()) continue;
            int letter = k;  // equal texts: the last option with this text wins (dict semantics)
            for (int j = 0; j < 4; ++j)
                if (q.options[j] == t) letter = j;
            return {kLetters[letter][0], ExtractRule::OptionText};
        }
    }
    return {0, ExtractRule::Random};
}

LogitsProvider::~LogitsProvider() = default;

SessionLogitsProvider::SessionLogitsProvider(Session& s, bool reuse_prefix, int batch)
    : s_(s), reuse_(reuse_prefix), batch_(batch) {}

const Tokenizer& SessionLogitsProvider::tokenizer() const { return s_.model().tokenizer(); }

void SessionLogitsProvider::reset_if_needed() {
    if (reuse_) return;
    cached_.clear();
    s_.truncate(0);
}

std::span<const float> SessionLogitsProvider::next_logits(const std::vector<int32_t>& prompt) {
    reset_if_needed();
    size_t reused = feed_prompt(s_, cached_, prompt, batch_);
    reused_ += reused;
    evaluated_ += prompt.size() - reused;
    return {s_.last_logits(), static_cast<size_t>(s_.model().config().n_vocab)};
}

std::vector<int32_t> SessionLogitsProvider::generate(const std::vector<int32_t>& prompt, Sampler& sampler, int max_new) {
    reset_if_needed();
    GenerateParams gp;
    gp.max_new_tokens = max_new;
    gp.batch = batch_;
    auto r = calpaca::generate(s_, cached_, prompt, sampler, gp, nullptr);
    reused_ += r.n_reused;
    evaluated_ += r.n_prompt - r.n_reused + (r.tokens.empty() ? 0 : r.tokens.size() - 1);
    return r.tokens;
}

namespace {
uint64_t fnv1a(std::string_view s) {
    uint64_t h = 1469598103934665603ull;
    for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
    return h;
}
}  // namespace

SubjectResult evaluate_subject(LogitsProvider& model, const McSubject& s, const EvalOptions& o,
                               const std::function<void(size_t)>& on_progress) {
    const auto t0 = std::chrono::steady_clock::now();
    const Tokenizer& tok = model.tokenizer();
    SubjectResult r;
    r.key = s.key;
    r.name_zh = s.name_zh;
    r.group = s.group;
    const std::string history = few_shot_history(s, o.prompt);
    const size_t n = o.limit ? std::min(o.limit, s.test.size()) : s.test.size();
    const ChoiceTokens ct = ChoiceTokens::from(tok);
    const uint64_t subject_seed = o.seed ^ fnv1a(s.key);
    for (size_t i = 0; i < n; ++i) {
        const McQuestion& q = s.test[i];
        const auto ids = tokenize_prompt(tok, build_prompt(history, q, o.prompt));
        QuestionResult qr;
        qr.prompt_tokens = ids.size();
        const std::string where = fmt::format("{} question {}", s.test_file.empty() ? s.key : s.test_file, i + 1);
        if (o.constrained) {
            auto logits = with_context(where, [&] { return model.next_logits(ids); });
            if (logits.size() != tok.size())
                fail("the model has {} logits but its tokenizer {} pieces", logits.size(), tok.size());
            auto c = constrained_choice(logits, ids, ct, o.sampling.repetition_penalty, o.sampling.temperature);
            qr.predicted = kLetters[c.choice];
            qr.scores = c.scores;
            qr.response = tok.decode({c.top_token}, false);
        } else {
            SamplingParams sp = o.sampling;
            sp.seed = subject_seed + i;
            sp.has_seed = true;
            Sampler sampler(sp, tok.size());
            auto gen = with_context(where, [&] { return model.generate(ids, sampler, o.max_new_tokens); });
            qr.response = tok.decode(gen, true);
            Extraction e = extract_answer(qr.response, q);
            qr.rule = e.rule;
            if (e.letter == 0) {
                std::mt19937_64 rng(subject_seed + 0x9E3779B97F4A7C15ull * (i + 1));
                e.letter = kLetters[rng() % 4][0];
            }
            qr.predicted = std::string(1, e.letter);
        }
        qr.correct = !q.answer.empty() && qr.predicted == q.answer;
        r.correct += qr.correct;
        r.questions.push_back(std::move(qr));
        if (on_progress) on_progress(i + 1);
    }
    r.num = n;
    r.score = n ? 100.0 * static_cast<double>(r.correct) / static_cast<double>(n) : 0.0;
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return r;
}

Summary summarize(std::vector<SubjectResult> subjects, const std::vector<std::string>& group_order) {
    Summary sm;
    for (const auto& g : group_order) sm.groups.push_back(GroupScore{g, 0.0, 0, 0.0});
    sm.all.name = "All";
    for (const auto& s : subjects) {
        auto it = std::find_if(sm.groups.begin(), sm.groups.end(), [&](const GroupScore& g) { return g.name == s.group; });
        if (it == sm.groups.end()) fail("subject {}: unknown group '{}'", s.key, s.group);
        it->num += s.num;
        it->correct += s.score * static_cast<double>(s.num) / 100.0;  // the original's float arithmetic
    }
    for (auto& g : sm.groups) {
        g.score = g.num ? g.correct / static_cast<double>(g.num) : 0.0;
        sm.all.num += g.num;
        sm.all.correct += g.correct;
    }
    sm.all.score = sm.all.num ? sm.all.correct / static_cast<double>(sm.all.num) : 0.0;
    sm.subjects = std::move(subjects);
    return sm;
}

namespace {
// Python's repr(float): shortest round-trip digits; scientific when the exponent is < -4 or
// >= 16, fixed otherwise with at least one digit after the point.
std::string py_float(double v) {
    if (std::isnan(v)) return "NaN";
    if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
    char buf[64];
    auto res = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific);
    std::string sci(buf, res.ptr);
    size_t epos = sci.find('e');
    int exp = std::stoi(sci.substr(epos + 1));
    std::string mant = sci.substr(0, epos);
    bool neg = mant[0] == '-';
    if (neg) mant.erase(0, 1);
    std::string digits;
    for (char c : mant)
        if (c != '.') digits += c;
    std::string out;
    if (exp < -4 || exp >= 16) {
        out = digits.substr(0, 1);
        if (digits.size() > 1) out += "." + digits.substr(1);
        out += fmt::format("e{}{:02d}", exp < 0 ? '-' : '+', std::abs(exp));
    } else if (exp < 0) {
        out = "0." + std::string(static_cast<size_t>(-exp - 1), '0') + digits;
    } else {
        const size_t ip = static_cast<size_t>(exp) + 1;
        if (digits.size() <= ip)
            out = digits + std::string(ip - digits.size(), '0') + ".0";
        else
            out = digits.substr(0, ip) + "." + digits.substr(ip);
    }
    return neg ? "-" + out : out;
}

std::string jstr(const std::string& s) { return nlohmann::json(s).dump(); }
}  // namespace

std::string summary_json(const Summary& s) {
    std::string o = "{";
    bool first = true;
    auto sep = [&](int indent) {
        o += first ? "\n" : ",\n";
        first = false;
        o += std::string(static_cast<size_t>(indent), ' ');
    };
    for (const auto& r : s.subjects) {
        sep(2);
        const double correct = r.score * static_cast<double>(r.num) / 100.0;
        o += fmt::format("{}: {{\n    \"score\": {},\n    \"num\": {},\n    \"correct\": {}\n  }}", jstr(r.key),
                         py_float(r.score), r.num, py_float(correct));
    }
    sep(2);
    o += "\"grouped\": {";
    for (size_t i = 0; i < s.groups.size(); ++i) {
        const auto& g = s.groups[i];
        o += i ? ",\n    " : "\n    ";
        o += fmt::format("{}: {{\n      \"correct\": {},\n      \"num\": {},\n      \"score\": {}\n    }}", jstr(g.name),
                         py_float(g.correct), g.num, g.num ? py_float(g.score) : "null");
    }
    o += s.groups.empty() ? "}" : "\n  }";
    sep(2);
    o += fmt::format("\"All\": {{\n    \"score\": {},\n    \"num\": {},\n    \"correct\": {}\n  }}",
                     s.all.num ? py_float(s.all.score) : "null", s.all.num, py_float(s.all.correct));
    o += "\n}\n";
    return o;
}

std::string submission_json(const Summary& s) {
    std::string o = "{";
    for (size_t k = 0; k < s.subjects.size(); ++k) {
        const auto& r = s.subjects[k];
        o += k ? ",\n    " : "\n    ";
        o += jstr(r.key) + ": {";
        for (size_t i = 0; i < r.questions.size(); ++i)
            o += fmt::format("{}\n        \"{}\": {}", i ? "," : "", i, jstr(r.questions[i].predicted));
        o += r.questions.empty() ? "}" : "\n    }";
    }
    o += s.subjects.empty() ? "}\n" : "\n}\n";
    return o;
}

std::string scores_csv(const Summary& s) {
    std::string o;
    append_csv_row(o, {"subject", "name", "group", "num", "correct", "accuracy"});
    for (const auto& r : s.subjects)
        append_csv_row(o, {r.key, r.name_zh, r.group, std::to_string(r.num), std::to_string(r.correct),
                           fmt::format("{:.2f}", r.score)});
    for (const auto& g : s.groups)
        append_csv_row(o, {g.name, "", "group", std::to_string(g.num), fmt::format("{:.0f}", g.correct),
                           g.num ? fmt::format("{:.2f}", 100 * g.score) : ""});
    append_csv_row(o, {"Average", "", "all", std::to_string(s.all.num), fmt::format("{:.0f}", s.all.correct),
                       s.all.num ? fmt::format("{:.2f}", 100 * s.all.score) : ""});
    return o;
}

std::string subject_csv(const McSubject& s, const SubjectResult& r) {
    std::string o;
    std::vector<std::string> head{""};
    for (size_t i = 0; i < s.test_header.size(); ++i)
        head.push_back(s.test_header[i].empty() ? fmt::format("Unnamed: {}", i) : s.test_header[i]);
    head.push_back("model_output");
    head.push_back("correctness");
    append_csv_row(o, head);
    for (size_t i = 0; i < r.questions.size() && i < s.test_rows.size(); ++i) {
        std::vector<std::string> row{std::to_string(i)};
        row.insert(row.end(), s.test_rows[i].begin(), s.test_rows[i].end());
        row.push_back(r.questions[i].response);
        row.push_back(r.questions[i].correct ? "1" : "0");
        append_csv_row(o, row);
    }
    return o;
}

namespace {
std::vector<McQuestion> read_questions(const CsvTable& t, const BenchmarkLayout& l, bool answers_required, bool dev) {
    const size_t qc = t.require_column(l.question_col);
    size_t oc[4];
    for (int i = 0; i < 4; ++i) oc[i] = t.require_column(kLetters[i]);
    const int ac = answers_required ? static_cast<int>(t.require_column(l.answer_col)) : t.column(l.answer_col);
    const int ec = dev ? t.column("explanation") : -1;
    std::vector<McQuestion> out;
    out.reserve(t.rows.size());
    for (size_t r = 0; r < t.rows.size(); ++r) {
        const auto& row = t.rows[r];
        McQuestion q;
        q.question = row[qc];
        for (int i = 0; i < 4; ++i) q.options[i] = row[oc[i]];
        if (ac >= 0) {
            q.answer = row[static_cast<size_t>(ac)];
            if (q.answer.size() != 1 || q.answer[0] < 'A' || q.answer[0] > 'D')
                fail("{}: {} '{}' is not one of A, B, C, D", t.where(r), l.answer_col, q.answer);
        }
        if (ec >= 0) q.explanation = row[static_cast<size_t>(ec)];
        out.push_back(std::move(q));
    }
    return out;
}
}  // namespace

std::vector<McSubject> load_subjects(const std::vector<SubjectInfo>& mapping, const std::string& mapping_file,
                                     const BenchmarkLayout& l, const std::vector<std::string>& only, bool need_dev) {
    namespace fs = std::filesystem;
    std::error_code ec;
    if (!fs::is_directory(l.test_dir, ec)) fail("{}: not a directory (expected the {} CSV files)", l.test_dir, l.name);
    auto known = [&](const std::string& key) {
        return std::find_if(mapping.begin(), mapping.end(), [&](const SubjectInfo& s) { return s.key == key; }) !=
               mapping.end();
    };
    std::vector<std::string> present;
    for (const auto& e : fs::directory_iterator(l.test_dir)) {
        const std::string name = e.path().filename().string();
        if (!e.is_regular_file() || name.size() <= l.test_suffix.size() ||
            name.compare(name.size() - l.test_suffix.size(), l.test_suffix.size(), l.test_suffix) != 0)
            continue;
        const std::string key = name.substr(0, name.size() - l.test_suffix.size());
        if (!known(key))
            fail("{}: subject '{}' is not in {} (a {} subject key was expected)", e.path().string(), key, mapping_file,
                 l.name);
        present.push_back(key);
    }
    if (present.empty()) fail("{}: no *{} files", l.test_dir, l.test_suffix);
    std::vector<std::string> keys;
    for (const auto& k : only) {
        if (!known(k)) {
            std::vector<std::string> names;
            for (const auto& s : mapping) names.push_back(s.key);
            fail("unknown {} subject '{}' (known: {})", l.name, k, fmt::join(names, ", "));
        }
        if (std::find(present.begin(), present.end(), k) == present.end())
            fail("{}: no file for subject '{}'", (fs::path(l.test_dir) / (k + l.test_suffix)).string(), k);
    }
    std::vector<McSubject> out;
    for (const auto& info : mapping) {
        if (std::find(present.begin(), present.end(), info.key) == present.end()) continue;
        if (!only.empty() && std::find(only.begin(), only.end(), info.key) == only.end()) continue;
        McSubject s;
        s.key = info.key;
        s.name_en = info.name_en;
        s.name_zh = info.name_zh;
        s.group = info.group;
        s.test_file = (fs::path(l.test_dir) / (info.key + l.test_suffix)).string();
        CsvTable t = read_csv(s.test_file);
        s.test = read_questions(t, l, l.answers_required, false);
        s.test_header = std::move(t.header);
        s.test_rows = std::move(t.rows);
        if (need_dev) {
            s.dev_file = (fs::path(l.dev_dir) / (info.key + l.dev_suffix)).string();
            if (!fs::exists(s.dev_file, ec)) fail("{}: missing (needed for few-shot examples)", s.dev_file);
            s.dev = read_questions(read_csv(s.dev_file), l, true, true);
        }
        out.push_back(std::move(s));
    }
    return out;
}

}  // namespace calpaca
