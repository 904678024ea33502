// calpaca: one binary, one subcommand per task. Errors are printed on one line
// ("calpaca: error: ...") with exit code 1.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>

#include "calpaca/base/error.h"
#include "common.h"

int main(int argc, char** argv) {
    using namespace calpaca::cli;
    CLI::App app{"calpaca — Chinese-LLaMA/Alpaca toolchain in C++ (run, convert, tokenize)"};
    app.require_subcommand(1);
    app.set_version_flag("--version", "calpaca 0.1.0");
    app.footer(
        "Examples:\n"
        "  calpaca chat -m models/calpaca-demo.gguf\n"
        "  calpaca generate -m model.gguf -p '白日依山尽，' -n 32\n"
        "  calpaca tokenize --vocab tokenizer.model '你好，世界'\n"
        "  calpaca info model.gguf\n"
        "Run 'calpaca SUBCOMMAND --help' for each subcommand's options.");
    std::vector<Command> cmds;
    for (const auto& [name, factory] : registered_commands()) cmds.push_back(factory(app));
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }
    try {
        for (auto& c : cmds)
            if (c.app->parsed()) return c.run();
    } catch (const calpaca::Error& e) {
        std::fprintf(stderr, "calpaca: error: %s\n", e.what());
        return 1;
    } catch (const std::bad_alloc&) {
        std::fprintf(stderr, "calpaca: error: out of memory\n");
        return 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "calpaca: error: %s\n", e.what());
        return 1;
    }
    return 1;
}
