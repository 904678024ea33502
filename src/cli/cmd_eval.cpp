// `calpaca eval ceval|cmmlu|report`: the C-Eval / CMMLU runners of the original
// (scripts/ceval, scripts/cmmlu) and a table of several runs.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "calpaca/base/error.h"
#include "calpaca/base/fileio.h"
#include "calpaca/base/progress.h"
#include "calpaca/eval/ceval.h"
#include "calpaca/eval/cmmlu.h"
#include "calpaca/eval/multiple_choice.h"
#include "calpaca/eval/report.h"
#include "calpaca/generate/chat_template.h"
#include "common.h"

namespace calpaca::cli {

namespace {
struct McOpts {
    bool cmmlu = false;
    ModelOptions mo;
    std::string data, split = "val", mapping, out, tmpl, system, subjects, subject_name = "key";
    int shots = 5;
    bool with_prompt = false, constrained = false, generate = false, cot = false, no_reuse = false, verbose = false;
    float temp = 0.2f, repeat_penalty = 1.1f;
    int max_new = 20;
    int64_t seed = 0;
    size_t limit = 0;
};

std::vector<std::string> split_list(const std::string& s) {
    std::vector<std::string> out;
    size_t pos = 0;
    while (pos <= s.size()) {
        size_t c = s.find(',', pos);
        if (c == std::string::npos) c = s.size();
        if (c > pos) out.push_back(s.substr(pos, c - pos));
        pos = c + 1;
    }
    return out;
}

CLI::App* add_mc(CLI::App* parent, McOpts& o) {
    const char* name = o.cmmlu ? "cmmlu" : "ceval";
    auto* app = parent->add_subcommand(name, o.cmmlu ? "CMMLU: 67 subjects, 5 groups (incl. China specific)"
                                                     : "C-Eval: 52 subjects, 4 groups (val or test split)");
    o.mo.add(app);
    app->add_option("--data", o.data,
                    o.cmmlu ? "CMMLU folder holding dev/ and test/ ({subject}.csv)"
                            : "C-Eval folder holding dev/, val/, test/ ({subject}_{split}.csv)")
        ->required();
    if (!o.cmmlu) app->add_option("--split", o.split, "val (scored) or test (submission only)")->check(CLI::IsMember({"val", "test"}));
    app->add_option("--mapping", o.mapping, "subject mapping JSON (default: DATA/subject_mapping.json)");
    app->add_option("-o,--output-dir", o.out, "where submission.json, summary.json, scores.csv, run.json and the per-subject CSVs go")
        ->required();
    app->add_option("--shots", o.shots, "few-shot dev examples per prompt: 0 = zero-shot, -1 = all (default 5)");
    app->add_flag("--with-prompt", o.with_prompt, "wrap prompts in the chat template (alpaca: v1 format; alpaca-2: v2 format)");
    app->add_option("--template", o.tmpl, "alpaca or alpaca-2 (default: from the model)");
    app->add_option("--system", o.system, "system prompt of the alpaca-2 format (default: the original runner's)");
    auto* c = app->add_flag("--constrained", o.constrained,
                            std::string("answer = argmax of the summed logits of ▁X and X") + (o.cmmlu ? "" : " (default)"));
    auto* g = app->add_flag("--generate", o.generate,
                            std::string("answer = regex cascade over up to --max-new-tokens sampled tokens") + (o.cmmlu ? " (default)" : ""));
    c->excludes(g);
    app->add_flag("--cot", o.cot, "chain-of-thought prompts (C-Eval dev explanations)");
    app->add_option("--subjects", o.subjects, "comma-separated subject keys (default: all)");
    app->add_option("--subject-name", o.subject_name, "subject in the prompt header: key (the original's) or zh")
        ->check(CLI::IsMember({"key", "zh"}));
    app->add_option("--temp", o.temp, "temperature (default 0.2)");
    app->add_option("--repeat-penalty", o.repeat_penalty, "repetition penalty over the prompt (default 1.1)");
    app->add_option("-n,--max-new-tokens", o.max_new, "tokens generated per question with --generate (default 20)");
    app->add_option("--seed", o.seed, "seed for sampling and the random fallback (default 0)");
    app->add_option("--limit", o.limit, "only the first N questions of each subject");
    app->add_flag("--no-prefix-reuse", o.no_reuse, "re-evaluate every prompt from scratch (for speed comparisons)");
    app->add_flag("--verbose", o.verbose, "print each question's answer and response on stderr");
    if (o.cmmlu)
        app->footer(
            "Examples:\n"
            "  calpaca eval cmmlu -m alpaca-2-7b.gguf --data data/cmmlu -o out/cmmlu\n"
            "  calpaca eval cmmlu -m alpaca-2-7b.gguf --data data/cmmlu --constrained --shots 0 --with-prompt -o out/cmmlu-0\n"
            "  calpaca eval cmmlu -m model.gguf --data data/cmmlu --subjects agronomy,ancient_chinese --limit 10 -o /tmp/c");
    else
        app->footer(
            "Examples:\n"
            "  calpaca eval ceval -m chinese-llama-2-7b.gguf --data data/ceval -o out/ceval-5shot\n"
            "  calpaca eval ceval -m alpaca-2-7b.gguf --data data/ceval --shots 0 --with-prompt -o out/ceval-0shot\n"
            "  calpaca eval ceval -m model.gguf --data data/ceval --split test -o out/ceval-test   # submission.json\n"
            "  calpaca eval ceval -m model.gguf --data data/ceval --generate --cot --subjects logic -o /tmp/logic");
    return app;
}

PromptStyle style_for(const std::string& name) {
    if (name == "alpaca") return PromptStyle::Alpaca;
    if (name == "alpaca-2" || name == "alpaca-2-long") return PromptStyle::Alpaca2;
    fail("--template: the evaluation prompts exist for alpaca (v1) and alpaca-2 (v2), not '{}'", name);
}

std::string fmt_eta(double s) {
    if (s >= 3600) return fmt::format("{:.0f}h{:02.0f}m", std::floor(s / 3600), std::fmod(s, 3600) / 60);
    if (s >= 60) return fmt::format("{:.0f}m{:02.0f}s", std::floor(s / 60), std::fmod(s, 60));
    return fmt::format("{:.0f}s", s);
}

int run_mc(const McOpts& o) {
    namespace fs = std::filesystem;
    const char* bench = o.cmmlu ? "cmmlu" : "ceval";
    if (o.shots < -1) fail("--shots must be >= -1, got {}", o.shots);
    if (o.max_new < 1) fail("--max-new-tokens must be >= 1, got {}", o.max_new);
    if (!o.with_prompt && (!o.tmpl.empty() || !o.system.empty())) fail("--template and --system need --with-prompt");
    const bool constrained = o.constrained || (!o.generate && !o.cmmlu);

    EvalOptions eo;
    eo.constrained = constrained;
    eo.prompt.shots = o.shots;
    eo.prompt.cot = o.cot;
    eo.prompt.subject_name_zh = o.subject_name == "zh";
    eo.sampling.temperature = o.temp;
    eo.sampling.repetition_penalty = o.repeat_penalty;
    eo.sampling.validate();
    if (!(o.temp > 0)) fail("--temp must be > 0 (the original samples; constrained scores are divided by it), got {}", o.temp);
    eo.max_new_tokens = o.max_new;
    if (o.seed < 0) fail("--seed must be >= 0");
    eo.seed = static_cast<uint64_t>(o.seed);
    eo.limit = o.limit;
    if (o.cot && o.cmmlu) fail("--cot needs the C-Eval dev explanations; CMMLU has none");

    // data first: bad files fail before the model is loaded
    std::vector<McSubject> subjects;
    const bool need_dev = o.shots != 0;
    if (o.cmmlu) {
        CmmluData d;
        d.dir = o.data;
        d.mapping = o.mapping;
        d.subjects = split_list(o.subjects);
        d.need_dev = need_dev;
        subjects = load_cmmlu(d);
    } else {
        CevalData d;
        d.dir = o.data;
        d.split = o.split;
        d.mapping = o.mapping;
        d.subjects = split_list(o.subjects);
        d.need_dev = need_dev;
        subjects = load_ceval(d);
    }

    for (const auto& s : subjects)
        if (o.shots > 0 && static_cast<size_t>(o.shots) > s.dev.size())
            fail("{}: {} few-shot examples requested but the dev file has {} rows", s.dev_file, o.shots, s.dev.size());

    auto model = o.mo.load();
    const Tokenizer& tok = model->tokenizer();
    std::string tmpl_name;
    if (o.with_prompt) {
        tmpl_name = o.tmpl.empty() ? model->config().chat_template : o.tmpl;
        if (tmpl_name.empty()) tmpl_name = template_for_vocab_size(tok.size());
        if (tmpl_name.empty()) fail("cannot choose a prompt format for a {}-piece vocabulary; pass --template", tok.size());
        eo.prompt.style = style_for(tmpl_name);
        eo.prompt.system = !o.system.empty() ? o.system : o.cmmlu ? kCmmluSystemPrompt : kCevalSystemPrompt;
    }

    auto pool = o.mo.pool();
    Session session(*model, o.mo.session(), pool.get());
    // every prompt must fit: find out now rather than after hours of evaluation
    for (const auto& s : subjects) {
        const std::string history = few_shot_history(s, eo.prompt);
        const size_t n = o.limit ? std::min(o.limit, s.test.size()) : s.test.size();
        for (size_t i = 0; i < n; ++i) {
            const size_t len = tokenize_prompt(tok, build_prompt(history, s.test[i], eo.prompt)).size();
            const size_t need = len + (constrained ? 0 : static_cast<size_t>(o.max_new) - 1);
            if (need > static_cast<size_t>(session.n_ctx()))
                fail("{} question {}: the prompt needs {} tokens{} but the context holds {} (raise -c/--ctx-size or lower --shots)",
                     s.test_file, i + 1, len, constrained ? "" : fmt::format(" (+{} to generate)", o.max_new - 1),
                     session.n_ctx());
        }
    }
    SessionLogitsProvider provider(session, !o.no_reuse);

    size_t total = 0;
    for (const auto& s : subjects) total += o.limit ? std::min(o.limit, s.test.size()) : s.test.size();
    fs::create_directories(o.out);
    std::fprintf(stderr, "%s%s: %zu subjects, %zu questions, %d-shot, %s%s%s\n", bench,
                 o.cmmlu ? "" : (" " + o.split).c_str(), subjects.size(), total, o.shots,
                 constrained ? "constrained decoding" : "generation", o.with_prompt ? ", template " : "",
                 tmpl_name.c_str());

    const auto t0 = std::chrono::steady_clock::now();
    size_t done_before = 0;
    std::vector<SubjectResult> results;
    for (size_t si = 0; si < subjects.size(); ++si) {
        const McSubject& s = subjects[si];
        const size_t n = o.limit ? std::min(o.limit, s.test.size()) : s.test.size();
        Progress prog(fmt::format("[{}/{}] {}", si + 1, subjects.size(), s.key), n);
        auto r = evaluate_subject(provider, s, eo, [&](size_t d) {
            double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            size_t all = done_before + d;
            prog.update(d, fmt::format("| all {}/{} ETA {}", all, total, fmt_eta(el / all * (total - all))));
        });
        prog.finish();
        done_before += n;
        if (o.verbose)
            for (size_t i = 0; i < r.questions.size(); ++i)
                std::fprintf(stderr, "  %s #%zu: answer %s, predicted %s, response %s\n", s.key.c_str(), i,
                             s.test[i].answer.empty() ? "NA" : s.test[i].answer.c_str(), r.questions[i].predicted.c_str(),
                             nlohmann::json(r.questions[i].response).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
        std::fprintf(stderr, "[%zu/%zu] %-40s %3zu/%-4zu %6.2f%%  %.1fs\n", si + 1, subjects.size(), s.key.c_str(), r.correct,
                     r.num, r.score, r.seconds);
        write_file_atomic((fs::path(o.out) / (s.key + "_test.csv")).string(), subject_csv(s, r));
        results.push_back(std::move(r));
    }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    Summary sm = summarize(std::move(results), o.cmmlu ? cmmlu_groups() : ceval_groups());
    write_file_atomic((fs::path(o.out) / "submission.json").string(), submission_json(sm));
    write_file_atomic((fs::path(o.out) / "summary.json").string(), summary_json(sm));
    write_file_atomic((fs::path(o.out) / "scores.csv").string(), scores_csv(sm));

    std::error_code ec;
    nlohmann::ordered_json run = {
        {"benchmark", bench},
        {"split", o.cmmlu ? "test" : o.split},
        {"shots", o.shots},
        {"mode", constrained ? "constrained" : "generate"},
        {"with_prompt", o.with_prompt},
        {"template", tmpl_name},
        {"cot", o.cot},
        {"model", o.mo.model},
        {"model_bytes", static_cast<uint64_t>(fs::file_size(o.mo.model, ec))},
        {"subjects", sm.subjects.size()},
        {"questions", sm.all.num},
        {"accuracy", sm.all.num ? 100.0 * sm.all.score : 0.0},
        {"seconds", secs},
        {"questions_per_second", secs > 0 ? static_cast<double>(sm.all.num) / secs : 0.0},
        {"seconds_per_1000_questions", sm.all.num ? 1000.0 * secs / static_cast<double>(sm.all.num) : 0.0},
        {"prefix_reuse", !o.no_reuse},
        {"tokens_evaluated", provider.tokens_evaluated()},
        {"tokens_reused", provider.tokens_reused()},
        {"threads", pool->size()},
        {"seed", o.seed},
    };
    write_file_atomic((fs::path(o.out) / "run.json").string(), run.dump(2) + "\n");

    std::printf("%s %s, %d-shot, %s: %zu questions in %zu subjects\n", o.cmmlu ? "CMMLU" : "C-Eval",
                o.cmmlu ? "test" : o.split.c_str(), o.shots, constrained ? "constrained" : "generate", sm.all.num,
                sm.subjects.size());
    for (const auto& g : sm.groups)
        if (g.num) std::printf("  %-15s %6.2f%%  (%zu questions)\n", g.name.c_str(), 100 * g.score, g.num);
    std::printf("  %-15s %6.2f%%  (%zu questions)\n", "Average", 100 * sm.all.score, sm.all.num);
    std::printf("time %.1f s, %.2f questions/s, %.1f s per 1000 questions; %llu tokens evaluated, %llu reused from the cache\n",
                secs, secs > 0 ? sm.all.num / secs : 0.0, sm.all.num ? 1000 * secs / sm.all.num : 0.0,
                static_cast<unsigned long long>(provider.tokens_evaluated()),
                static_cast<unsigned long long>(provider.tokens_reused()));
    std::printf("wrote %s/{summary.json,submission.json,scores.csv,run.json} and %zu per-subject CSVs\n", o.out.c_str(),
                sm.subjects.size());
    return 0;
}

struct ReportOpts {
    std::vector<std::string> runs;
    std::string format = "md", out;
};
}  // namespace

static Command add_eval(CLI::App& root) {
    auto* app = root.add_subcommand("eval", "Benchmarks: C-Eval, CMMLU, and a report table of several runs");
    app->require_subcommand(1);
    auto ce = std::make_shared<McOpts>();
    auto cm = std::make_shared<McOpts>();
    cm->cmmlu = true;
    auto rep = std::make_shared<ReportOpts>();
    auto* ce_app = add_mc(app, *ce);
    auto* cm_app = add_mc(app, *cm);
    auto* rep_app = app->add_subcommand("report", "One Markdown/JSON table (size, PPL, C-Eval, CMMLU) from several runs");
    rep_app->add_option("runs", rep->runs, "[LABEL=]PATH: an eval output dir, run.json, summary.json or perplexity JSON")
        ->required();
    rep_app->add_option("--format", rep->format, "md (default) or json")->check(CLI::IsMember({"md", "json"}));
    rep_app->add_option("-o,--output", rep->out, "write the table here instead of stdout");
    rep_app->footer(
        "Examples:\n"
        "  calpaca eval report F16=out/f16-ceval0 F16=out/f16-ceval5 F16=out/f16-ppl.json Q4_0=out/q4-ceval0 Q4_0=out/q4-ceval5\n"
        "  calpaca eval report out/ceval out/cmmlu --format json -o report.json");
    app->footer(
        "Examples:\n"
        "  calpaca eval ceval -m model.gguf --data data/ceval -o out/ceval\n"
        "  calpaca eval cmmlu -m model.gguf --data data/cmmlu --constrained -o out/cmmlu\n"
        "  calpaca eval report out/ceval out/cmmlu");
    return {app, [=]() {
                if (ce_app->parsed()) return run_mc(*ce);
                if (cm_app->parsed()) return run_mc(*cm);
                if (rep_app->parsed()) {
                    Report r = build_report(rep->runs);
                    std::string text = rep->format == "json" ? report_json(r) : report_markdown(r);
                    if (rep->out.empty())
                        std::fwrite(text.data(), 1, text.size(), stdout);
                    else
                        write_file_atomic(rep->out, text);
                    return 0;
                }
                return 1;
            }};
}

static const Registration kRegistration("eval", add_eval);

}  // namespace calpaca::cli
