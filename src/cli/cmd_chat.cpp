#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <iostream>

#include "calpaca/base/error.h"
#include "calpaca/base/utf8.h"
#include "calpaca/generate/chat_template.h"
#include "calpaca/generate/generator.h"
#include "common.h"

namespace calpaca::cli {

namespace {
std::atomic<bool> g_generating{false};
std::atomic<bool> g_cancel{false};

void on_sigint(int) {
    if (g_generating.load()) {
        g_cancel.store(true);  // stop the current answer, stay in the chat
    } else {
        const char msg[] = "\n";
        (void)!::write(1, msg, 1);
        std::_Exit(0);  // at the prompt: leave
    }
}

struct ChatOpts {
    ModelOptions mo;
    SamplingOptions so;
    std::string tmpl, system;
};
}  // namespace

static Command add_chat(CLI::App& root) {
    auto* app = root.add_subcommand("chat", "Interactive multi-turn chat (Alpaca / Alpaca-2 templates)");
    auto o = std::make_shared<ChatOpts>();
    o->mo.add(app);
    o->so.add(app);
    std::string names;
    for (const auto& n : chat_template_names()) names += (names.empty() ? "" : ", ") + n;
    app->add_option("--template", o->tmpl, "chat template: " + names + " (default: from the model file / vocab size)");
    app->add_option("--system", o->system, "system prompt (default: the template's)");
    app->footer(
        "Commands inside the chat: /reset (forget the conversation), /exit. Ctrl-C stops the current answer.\n"
        "When stdin is not a terminal, each input line is one user turn (scriptable).\n"
        "Examples:\n"
        "  calpaca chat -m models/calpaca-demo.gguf\n"
        "  calpaca chat -m alpaca-2-7b-q4_k.gguf --system '你是一个翻译助手。' --temp 0.5\n"
        "  printf '你好\\n介绍一下北京\\n' | calpaca chat -m model.gguf --temp 0 -n 64");
    return {app, [o]() {
                SamplingParams sp = o->so.params();
                auto model = o->mo.load();
                const Tokenizer& tok = model->tokenizer();
                std::string name = o->tmpl.empty() ? model->config().chat_template : o->tmpl;
                if (name.empty()) name = template_for_vocab_size(tok.size());
                if (name.empty())
                    fail("cannot choose a chat template for a {}-piece vocabulary (49954 → alpaca, 55296 → alpaca-2); "
                         "pass --template",
                         tok.size());
                auto tmpl = make_chat_template(name);
                const std::string system = o->system.empty() ? tmpl->default_system() : o->system;
                auto pool = o->mo.pool();
                Session session(*model, o->mo.session(), pool.get());
                std::vector<int32_t> cached;
                std::vector<ChatMessage> history;
                const bool tty = ::isatty(0) && ::isatty(1);
                struct sigaction sa {};
                sa.sa_handler = on_sigint;
                sigemptyset(&sa.sa_mask);
                sigaction(SIGINT, &sa, nullptr);
                if (tty)
                    std::fprintf(stderr, "calpaca chat — model %s, template %s. /reset clears, /exit quits, Ctrl-C stops an answer.\n",
                                 model->path().c_str(), tmpl->name().c_str());
                GenerateParams gp;
                gp.max_new_tokens = o->so.max_new;
                gp.stop = o->so.stop;
                gp.strip_leading_space = true;
                const int64_t n_ctx = session.n_ctx();
                // Room for the answer: max_new_tokens, but leave at least half the context for the prompt.
                const size_t reserve = static_cast<size_t>(std::min<int64_t>(o->so.max_new, n_ctx / 2));
                Sampler sampler(sp, tok.size());  // one RNG stream for the whole conversation
                std::string line;
                for (;;) {
                    if (tty) {
                        std::fputs("\n> ", stdout);
                        std::fflush(stdout);
                    }
                    if (!std::getline(std::cin, line)) break;
                    if (!line.empty() && line.back() == '\r') line.pop_back();
                    if (line == "/exit" || line == "/quit") break;
                    if (line == "/reset") {
                        history.clear();
                        if (tty) std::fputs("(conversation cleared)\n", stdout);
                        continue;
                    }
                    if (line.empty()) continue;
                    size_t bad = utf8::find_invalid(line);
                    if (bad != std::string::npos) {
                        std::fprintf(stderr, "calpaca: error: input is not valid UTF-8 (byte %zu); line ignored\n", bad);
                        continue;
                    }
                    std::vector<ChatMessage> msgs;
                    msgs.push_back({"system", system});
                    msgs.insert(msgs.end(), history.begin(), history.end());
                    msgs.push_back({"user", line});
                    std::vector<int32_t> ids;
                    try {
                        msgs = truncate_history(*tmpl, msgs, tok.bos(), tok.eos(), static_cast<size_t>(n_ctx) - reserve,
                                                [&](const std::vector<PromptPart>& p) { return tokenize_parts(tok, p).size(); });
                        ids = tokenize_parts(tok, tmpl->render(msgs, tok.bos(), tok.eos()));
                    } catch (const Error& e) {
                        std::fprintf(stderr, "calpaca: error: %s (message too long for the context of %lld tokens)\n",
                                     e.what(), (long long)n_ctx);
                        continue;
                    }
                    g_cancel.store(false);
                    g_generating.store(true);
                    GenerateParams turn = gp;
                    turn.max_new_tokens = static_cast<int>(std::min<int64_t>(gp.max_new_tokens, n_ctx - static_cast<int64_t>(ids.size())));
                    GenerateResult r = generate(session, cached, ids, sampler, turn, [](const std::string& s) {
                        std::fwrite(s.data(), 1, s.size(), stdout);
                        std::fflush(stdout);
                        return true;
                    }, &g_cancel);
                    g_generating.store(false);
                    std::fputc('\n', stdout);
                    std::fflush(stdout);
                    if (r.finish_reason == "cancelled" && tty) std::fputs("(stopped)\n", stderr);
                    // drop the old turns that truncation removed, then record this turn
                    history.assign(msgs.begin() + 1, msgs.end());
                    std::string reply = r.text;
                    size_t b = reply.find_first_not_of(" \n"), e = reply.find_last_not_of(" \n");
                    reply = b == std::string::npos ? "" : reply.substr(b, e - b + 1);
                    history.push_back({"assistant", reply});
                }
                return 0;
            }};
}

static const Registration kRegistration("chat", add_chat);

}  // namespace calpaca::cli
