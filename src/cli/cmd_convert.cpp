#include <cstdio>

#include "calpaca/base/error.h"
#include "calpaca/convert/hf_to_gguf.h"
#include "common.h"

namespace calpaca::cli {

static Command add_convert(CLI::App& root) {
    auto* app = root.add_subcommand("convert", "Convert a Hugging Face LLaMA checkpoint directory (safetensors) to GGUF");
    struct O {
        std::string src, out, outtype = "f16", vocab, name;
    };
    auto o = std::make_shared<O>();
    app->add_option("SRC", o->src, "HF model directory (config.json, model.safetensors[.index.json], tokenizer.model)")->required();
    app->add_option("-o,--out", o->out, "output GGUF file")->required();
    app->add_option("--outtype", o->outtype, "f32, f16 (default) or bf16")->check(CLI::IsMember({"f32", "f16", "bf16"}));
    app->add_option("--vocab", o->vocab, "tokenizer.model (default: SRC/tokenizer.model)");
    app->add_option("--name", o->name, "general.name (default: directory name)");
    app->footer("Examples:\n  calpaca convert chinese-alpaca-2-7b-hf -o alpaca2-7b-f16.gguf\n"
                "  calpaca convert tiny-model --vocab tokenizer.model --outtype f32 -o tiny.gguf");
    return {app, [o]() {
                ConvertOptions c;
                dtype_from_name(o->outtype, c.outtype);
                c.vocab_path = o->vocab;
                c.name = o->name;
                size_t n = convert_hf_to_gguf(o->src, o->out, c);
                std::fprintf(stderr, "wrote %s: %zu tensors\n", o->out.c_str(), n);
                return 0;
            }};
}

static const Registration kRegistration("convert", add_convert);

}  // namespace calpaca::cli
