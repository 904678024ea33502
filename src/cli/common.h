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

// Each subcommand file defines one of these; main.cpp calls them all.
using Runner = std::function<int()>;
struct Command {
    CLI::App* app;
    Runner run;
};

Command add_info(CLI::App& root);
Command add_tokenize(CLI::App& root);
Command add_logits(CLI::App& root);
Command add_generate(CLI::App& root);
Command add_chat(CLI::App& root);
Command add_convert(CLI::App& root);
Command add_make_random(CLI::App& root);

struct ModelOptions {
    std::string model;
    std::string vocab;
    int threads = 0;
    int64_t ctx = 0;
    std::string kv_type = "f16";
    bool reference = false;
    void add(CLI::App* app, bool required = true);
    std::unique_ptr<Model> load() const;
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
