// Shared pieces of the CLI: subcommand registration, model/sampling options.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "calpaca/base/threadpool.h"
#include "calpaca/generate/sampler.h"
#include "calpaca/model/model.h"
#include "calpaca/model/session.h"

namespace calpaca::cli {

// Each subcommand lives in its own cmd_*.cpp and registers itself with a static
// `Registration` object: adding a subcommand never touches main.cpp.
using Runner = std::function<int()>;
struct Command {
    CLI::App* app;
    Runner run;
};
using CommandFactory = Command (*)(CLI::App& root);

struct Registration {
    Registration(const char* name, CommandFactory f);
};
// (name, factory) pairs, sorted by name.
std::vector<std::pair<std::string, CommandFactory>> registered_commands();

struct ModelOptions {
    std::string model;
    std::string vocab;
    std::vector<std::string> lora;  // --lora: PEFT adapters merged in memory at load time
    int threads = 0;
    int64_t ctx = 0;
    std::string kv_type = "f16";
    bool reference = false;
    void add(CLI::App* app, bool required = true);
    std::unique_ptr<Model> load(ThreadPool* pool = nullptr) const;
    SessionOptions session() const;
    std::unique_ptr<ThreadPool> pool() const;
};

struct SamplingOptions {
    SamplingParams p;
    int max_new = 512;
    std::vector<std::string> stop;
    int64_t seed = -1;
    void add(CLI::App* app);
    SamplingParams params() const;
};

// Reads a whole file or stdin ("-"), naming the file on error.
std::string read_text_arg(const std::string& path);

}  // namespace calpaca::cli
