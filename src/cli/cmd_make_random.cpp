#include <cstdio>

#include "calpaca/base/error.h"
#include "calpaca/convert/random_model.h"
#include "common.h"

namespace calpaca::cli {

static Command add_make_random(CLI::App& root) {
    auto* app = root.add_subcommand("make-random-model",
                                    "Write a random-weight llama GGUF of a given shape (demo, tests, benchmarks)");
    auto s = std::make_shared<RandomModelSpec>();
    auto out = std::make_shared<std::string>();
    auto type = std::make_shared<std::string>("f16");
    app->add_option("--vocab", s->vocab_path, "tokenizer.model (sets the vocabulary)")->required();
    app->add_option("-o,--out", *out, "output GGUF")->required();
    app->add_option("--dim", s->n_embd, "embedding size (default 64)");
    app->add_option("--layers", s->n_layer, "layers (default 2)");
    app->add_option("--heads", s->n_head, "attention heads (default 4)");
    app->add_option("--kv-heads", s->n_head_kv, "KV heads (default 4; fewer = GQA)");
    app->add_option("--ff", s->n_ff, "feed-forward size (default 172)");
    app->add_option("--ctx", s->n_ctx, "context length (default 2048)");
    app->add_option("--std", s->std, "weight standard deviation (default 0.02)");
    app->add_option("--type", *type, "matrix type: f32, f16 (default), bf16")->check(CLI::IsMember({"f32", "f16", "bf16"}));
    app->add_option("--seed", s->seed, "seed (default 1)");
    app->add_flag("--tie-embeddings", s->tie_embeddings, "omit output.weight (the head reuses token_embd)");
    app->add_option("--name", s->name, "general.name");
    app->add_option("--template", s->chat_template, "chat template stored in the file (calpaca.chat_template)");
    app->add_option("--description", s->description, "general.description");
    app->footer(
        "Examples:\n"
        "  calpaca make-random-model --vocab tokenizer.model -o tiny.gguf\n"
        "  # 7B shape with the Chinese-LLaMA vocabulary (13 GB):\n"
        "  calpaca make-random-model --vocab chinese-llama/tokenizer.model --dim 4096 --layers 32 --heads 32 \\\n"
        "      --ff 11008 -o rand-7b-f16.gguf");
    return {app, [=]() {
                dtype_from_name(*type, s->type);
                write_random_model(*s, *out);
                std::fprintf(stderr, "wrote %s\n", out->c_str());
                return 0;
            }};
}

static const Registration kRegistration("make-random-model", add_make_random);

}  // namespace calpaca::cli
