#include <cstdio>

#include "calpaca/base/error.h"
#include "calpaca/convert/resize_vocab.h"
#include "common.h"

namespace calpaca::cli {

static Command add_resize_vocab(CLI::App& root) {
    auto* app = root.add_subcommand("resize-vocab",
                                    "Grow a model's embeddings and output layer to an extended tokenizer");
    struct O {
        std::string model, out, init = "mean";
        ResizeVocabOptions r;
    };
    auto o = std::make_shared<O>();
    app->add_option("-m,--model", o->model, "model (GGUF)")->required();
    app->add_option("--vocab", o->r.vocab_path, "new tokenizer.model; must extend the model's vocabulary")->required();
    app->add_option("-o,--out", o->out, "output GGUF")->required();
    app->add_option("--init", o->init, "new rows: mean of the existing rows (default), zero, or random")
        ->check(CLI::IsMember({"mean", "zero", "random"}));
    app->add_option("--init-std", o->r.std, "standard deviation for --init random (default 0.02)");
    app->add_option("--seed", o->r.seed, "seed for --init random (default 1)");
    app->footer(
        "Examples:\n"
        "  # LLaMA (32000) → Chinese-LLaMA (49953) before pre-training:\n"
        "  calpaca resize-vocab -m llama-7b-f16.gguf --vocab chinese-llama/tokenizer.model -o llama-7b-zh-f16.gguf\n"
        "  # Chinese-LLaMA → Chinese-Alpaca (adds [PAD]) with a zero row:\n"
        "  calpaca resize-vocab -m chinese-llama.gguf --vocab chinese-alpaca/tokenizer.model --init zero -o out.gguf");
    return {app, [o]() {
                o->r.init = embedding_init_from_name(o->init);
                ResizeVocabResult r = resize_vocab(o->model, o->out, o->r);
                std::fprintf(stderr, "wrote %s: vocabulary %zu -> %zu (%zu new rows, init %s, %zu matri%s resized)\n",
                             o->out.c_str(), r.old_vocab, r.new_vocab, r.new_vocab - r.old_vocab, o->init.c_str(),
                             r.matrices_resized, r.matrices_resized == 1 ? "x" : "ces");
                return 0;
            }};
}

static const Registration kRegistration("resize-vocab", add_resize_vocab);

}  // namespace calpaca::cli
