#include <cstdio>

#include "calpaca/base/error.h"
#include "calpaca/base/sha256.h"
#include "calpaca/convert/merge_lora.h"
#include "calpaca/convert/sha256_list.h"
#include "calpaca/convert/sink.h"
#include "common.h"

namespace calpaca::cli {

static Command add_convert(CLI::App& root) {
    auto* app = root.add_subcommand("convert", "Convert a Hugging Face, Meta (.pth) or GGUF checkpoint to a llama GGUF file");
    struct O {
        std::string src, out, outtype = "f16", vocab, name, tmpl, verify;
        int64_t ctx = 0;
        int threads = 0;
        bool no_hash = false;
    };
    auto o = std::make_shared<O>();
    app->add_option("SRC", o->src,
                    "model: HF directory (config.json + model.safetensors / pytorch_model.bin, single or sharded), Meta "
                    "directory (params.json + consolidated.NN.pth) or a GGUF file")
        ->required();
    app->add_option("-o,--out", o->out, "output GGUF file")->required();
    app->add_option("--outtype", o->outtype, "f32, f16 (default), bf16, or a quantized type: q8_0, q4_0, q4_1, q5_0, q5_1, q2_k … q6_k");
    app->add_option("--vocab", o->vocab, "tokenizer.model (default: SRC/tokenizer.model, or SRC/../tokenizer.model for Meta)");
    app->add_option("--name", o->name, "general.name (default: directory name)");
    app->add_option("--template", o->tmpl, "chat template stored in the file (default: by vocabulary size; 'none' for none)");
    app->add_option("--ctx", o->ctx, "context length (default: config.json; Meta: 2048 for LLaMA-1, 4096 for Llama-2)");
    app->add_option("--verify-sha256", o->verify, "check the input files against a SHA256.md / sha256sum list first");
    app->add_flag("--no-hash", o->no_hash, "do not print the output's SHA-256");
    app->add_option("-t,--threads", o->threads, "threads (default: physical cores)");
    app->footer("Examples:\n  calpaca convert chinese-alpaca-2-7b-hf -o alpaca2-7b-f16.gguf\n"
                "  calpaca convert zh-models/7B --vocab zh-models/tokenizer.model --outtype q8_0 -o zh-7b-q8_0.gguf\n"
                "  calpaca convert tiny-model --outtype f32 --verify-sha256 SHA256.md -o tiny.gguf");
    return {app, [o]() {
                MergeOptions m;
                if (!dtype_from_name(o->outtype, m.outtype)) fail("--outtype '{}': unknown type", o->outtype);
                gguf_file_type(m.outtype);
                m.vocab_path = o->vocab;
                m.name = o->name;
                m.chat_template = o->tmpl;
                m.checkpoint.n_ctx = o->ctx;
                if (o->threads < 0) fail("--threads must be positive, got {}", o->threads);
                ThreadPool pool(o->threads > 0 ? o->threads : default_thread_count());
                m.pool = &pool;
                if (!o->verify.empty()) verify_inputs_sha256(o->verify, merge_input_files(o->src, {}), true);
                auto sink = make_gguf_sink(o->out, &pool);
                MergeResult r = run_merge(o->src, *sink, m);
                std::fprintf(stderr, "wrote %s: %zu tensors, vocabulary %lld, %.1f MB in %.1f s\n", o->out.c_str(), r.n_tensors,
                             static_cast<long long>(r.n_vocab), r.bytes_out / 1e6, r.seconds);
                if (!o->no_hash)
                    for (const auto& f : r.files) std::printf("%s  %s\n", sha256_file(f, true).c_str(), f.c_str());
                return 0;
            }};
}

static const Registration kRegistration("convert", add_convert);

}  // namespace calpaca::cli
