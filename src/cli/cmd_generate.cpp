#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "calpaca/base/error.h"
#include "calpaca/base/fileio.h"
#include "calpaca/base/progress.h"
#include "calpaca/base/utf8.h"
#include "calpaca/generate/chat_template.h"
#include "calpaca/generate/generator.h"
#include "common.h"

namespace calpaca::cli {

namespace {
struct GenOpts {
    ModelOptions mo;
    SamplingOptions so;
    std::string prompt, prompt_file, input_file, output_file, tmpl, system;
    bool with_prompt = false, echo = false, parse_special = false;
};

std::string trim(const std::string& s) {
    size_t b = s.find_first_not_of(" \t\r\n"), e = s.find_last_not_of(" \t\r\n");
    return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

// Batch inputs: .jsonl lines ({"instruction","input"} or {"prompt"}) or plain lines (stripped, empty skipped).
std::vector<std::string> read_inputs(const std::string& path) {
    std::string text = read_file(path);
    std::vector<std::string> out;
    const bool jsonl = path.size() >= 6 && path.substr(path.size() - 6) == ".jsonl";
    size_t pos = 0, line_no = 0;
    while (pos <= text.size()) {
        size_t nl = text.find('\n', pos);
        if (nl == std::string::npos) nl = text.size();
        std::string line = text.substr(pos, nl - pos);
        pos = nl + 1;
        ++line_no;
        if (utf8::find_invalid(line) != std::string::npos) fail("{}: line {}: invalid UTF-8", path, line_no);
        if (trim(line).empty()) continue;
        if (jsonl) {
            nlohmann::json j;
            try {
                j = nlohmann::json::parse(line);
            } catch (const std::exception& e) {
                fail("{}: line {}: invalid JSON: {}", path, line_no, e.what());
            }
            if (j.is_object() && j.contains("instruction") && j["instruction"].is_string()) {
                std::string input = j.contains("input") && j["input"].is_string() ? j["input"].get<std::string>() : "";
                out.push_back(join_instruction_input(j["instruction"].get<std::string>(), input));
            } else if (j.is_object() && j.contains("prompt") && j["prompt"].is_string()) {
                out.push_back(j["prompt"].get<std::string>());
            } else if (j.is_string()) {
                out.push_back(j.get<std::string>());
            } else {
                fail("{}: line {}: expected {{\"instruction\": ..., \"input\": ...}} or {{\"prompt\": ...}}", path, line_no);
            }
        } else {
            out.push_back(trim(line));
        }
        if (pos > text.size()) break;
    }
    return out;
}
}  // namespace

static Command add_generate(CLI::App& root) {
    auto* app = root.add_subcommand("generate", "Complete a prompt (raw, or wrapped in a chat template), or run a batch file");
    auto o = std::make_shared<GenOpts>();
    o->mo.add(app);
    o->so.add(app);
    app->add_option("-p,--prompt", o->prompt, "prompt text");
    app->add_option("-f,--file", o->prompt_file, "read the prompt from FILE ('-' = stdin)");
    app->add_option("--input-file", o->input_file, "batch mode: .txt (one instruction per line) or .jsonl");
    app->add_option("--output-file", o->output_file, "batch mode: write [{\"Input\":…,\"Output\":…}] JSON here");
    app->add_flag("--with-prompt", o->with_prompt, "wrap each input in the model's chat template (like --with_prompt)");
    app->add_option("--template", o->tmpl, "template for --with-prompt (default: from the model)");
    app->add_option("--system", o->system, "system prompt for --with-prompt");
    app->add_flag("--echo", o->echo, "print the prompt before the completion");
    app->add_flag("--parse-special", o->parse_special, "treat literal <s>/</s> in the prompt as control tokens");
    app->footer(
        "Examples:\n"
        "  calpaca generate -m chinese-llama-2-7b.gguf -p '白日依山尽，' -n 64\n"
        "  calpaca generate -m alpaca-2.gguf --with-prompt -p '为什么要减少污染，保护环境？' --temp 0 \n"
        "  calpaca generate -m alpaca-2.gguf --with-prompt --input-file questions.txt --output-file predictions.json");
    return {app, [o]() {
                const bool batch = !o->input_file.empty();
                if (batch && o->output_file.empty()) fail("--input-file needs --output-file");
                if (!batch && !o->output_file.empty()) fail("--output-file needs --input-file");
                if (!batch && o->prompt.empty() == o->prompt_file.empty())
                    fail("generate: give exactly one of -p TEXT, -f FILE or --input-file FILE");
                SamplingParams sp = o->so.params();
                auto model = o->mo.load();
                const Tokenizer& tok = model->tokenizer();
                std::unique_ptr<ChatTemplate> tmpl;
                if (o->with_prompt) {
                    std::string name = o->tmpl.empty() ? model->config().chat_template : o->tmpl;
                    if (name.empty()) name = template_for_vocab_size(tok.size());
                    if (name.empty())
                        fail("cannot choose a chat template for a {}-piece vocabulary; pass --template", tok.size());
                    tmpl = make_chat_template(name);
                } else if (!o->tmpl.empty()) {
                    fail("--template needs --with-prompt");
                }
                auto build = [&](const std::string& text) -> std::vector<int32_t> {
                    size_t bad = utf8::find_invalid(text);
                    if (bad != std::string::npos) fail("prompt: invalid UTF-8 at byte {}", bad);
                    if (tmpl) {
                        std::vector<ChatMessage> msgs;
                        std::string sys = o->system.empty() ? tmpl->default_system() : o->system;
                        msgs.push_back({"system", sys});
                        msgs.push_back({"user", text});
                        return tokenize_parts(tok, tmpl->render(msgs, tok.bos(), tok.eos()));
                    }
                    Tokenizer::Options eo;
                    eo.add_bos = true;
                    eo.parse_special = o->parse_special;
                    return tok.encode(text, eo);
                };
                auto pool = o->mo.pool();
                Session session(*model, o->mo.session(), pool.get());
                std::vector<int32_t> cached;
                GenerateParams gp;
                gp.max_new_tokens = o->so.max_new;
                gp.stop = o->so.stop;
                if (!batch) {
                    std::string text = o->prompt_file.empty() ? o->prompt : read_text_arg(o->prompt_file);
                    auto ids = build(text);
                    if (static_cast<int64_t>(ids.size()) >= session.n_ctx())
                        fail("prompt is {} tokens but the context holds {} (use -c to enlarge it)", ids.size(), session.n_ctx());
                    if (o->echo) {
                        std::fwrite(text.data(), 1, text.size(), stdout);
                        std::fflush(stdout);
                    }
                    Sampler sampler(sp, tok.size());
                    gp.strip_leading_space = tmpl != nullptr;
                    auto r = generate(session, cached, ids, sampler, gp, [](const std::string& s) {
                        std::fwrite(s.data(), 1, s.size(), stdout);
                        std::fflush(stdout);
                        return true;
                    });
                    std::fputc('\n', stdout);
                    std::fprintf(stderr, "[%zu prompt tokens, %zu generated, finish: %s]\n", r.n_prompt, r.tokens.size(),
                                 r.finish_reason.c_str());
                    return 0;
                }
                auto inputs = read_inputs(o->input_file);
                nlohmann::json out = nlohmann::json::array();
                Progress prog("generate", inputs.size());
                gp.strip_leading_space = true;
                size_t k = 0;
                for (const auto& in : inputs) {
                    auto ids = build(in);
                    if (static_cast<int64_t>(ids.size()) >= session.n_ctx())
                        fail("{}: input {} is {} tokens but the context holds {}", o->input_file, k + 1, ids.size(),
                             session.n_ctx());
                    Sampler sampler(sp, tok.size());
                    auto r = generate(session, cached, ids, sampler, gp, nullptr);
                    std::string full_prompt = tmpl ? parts_to_string(tmpl->render({{"system", o->system.empty() ? tmpl->default_system() : o->system}, {"user", in}}, tok.bos(), tok.eos()), tok.bos(), tok.eos()) : in;
                    out.push_back({{"Input", full_prompt}, {"Output", trim(r.text)}});
                    prog.update(++k);
                }
                prog.finish();
                write_file_atomic(o->output_file, out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
                std::fprintf(stderr, "wrote %zu predictions to %s\n", inputs.size(), o->output_file.c_str());
                return 0;
            }};
}

static const Registration kRegistration("generate", add_generate);

}  // namespace calpaca::cli
