#include <cstdio>

#include "calpaca/base/error.h"
#include "calpaca/base/sha256.h"
#include "calpaca/convert/merge_lora.h"
#include "calpaca/convert/sha256_list.h"
#include "calpaca/convert/sink.h"
#include "common.h"

namespace calpaca::cli {

namespace {

uint64_t parse_size(const std::string& s) {
    size_t pos = 0;
    double v = 0;
    try {
        v = std::stod(s, &pos);
    } catch (const std::exception&) {
        fail("--shard-size '{}': expected a size such as 10GB, 500MB or 2000000000", s);
    }
    std::string unit = s.substr(pos);
    for (char& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    double mul = 1;
    if (unit == "" || unit == "B") mul = 1;
    else if (unit == "KB" || unit == "K") mul = 1e3;
    else if (unit == "MB" || unit == "M") mul = 1e6;
    else if (unit == "GB" || unit == "G") mul = 1e9;
    else if (unit == "KIB") mul = 1024.0;
    else if (unit == "MIB") mul = 1048576.0;
    else if (unit == "GIB") mul = 1073741824.0;
    else fail("--shard-size '{}': unknown unit '{}'", s, unit);
    if (!(v > 0)) fail("--shard-size '{}' must be positive", s);
    return static_cast<uint64_t>(v * mul);
}

}  // namespace

static Command add_merge_lora(CLI::App& root) {
    auto* app = root.add_subcommand("merge-lora",
                                    "Merge PEFT LoRA adapters (e.g. the Chinese-LLaMA/Alpaca patches) into a base model");
    struct O {
        std::string base, out, format = "gguf", outtype = "f16", vocab, name, tmpl, verify, shard = "10GB";
        std::vector<std::string> loras;
        int pth_shards = 0, threads = 0;
        bool no_hash = false;
    };
    auto o = std::make_shared<O>();
    app->add_option("--base", o->base, "base model: HF directory, Meta directory (params.json + consolidated.NN.pth) or GGUF file")
        ->required();
    app->add_option("--lora", o->loras, "adapter directories, applied in this order (comma-separated or repeated)")
        ->required()
        ->delimiter(',');
    app->add_option("-o,--out", o->out, "output: a GGUF file (--format gguf) or a directory (--format hf / pth)")->required();
    app->add_option("--format", o->format, "gguf (default), hf (safetensors shards + config + tokenizer) or pth (Meta layout)")
        ->check(CLI::IsMember({"gguf", "hf", "pth"}));
    app->add_option("--outtype", o->outtype, "f16 (default), f32, bf16; GGUF also q8_0, q4_0, q4_1, q5_0, q5_1, q2_k … q6_k");
    app->add_option("--vocab", o->vocab, "tokenizer.model to use (default: the last adapter's, else the base's)");
    app->add_option("--name", o->name, "model name stored in a GGUF (default: base + adapter names)");
    app->add_option("--template", o->tmpl, "chat template stored in a GGUF (default: by vocabulary size; 'none' for none)");
    app->add_option("--shard-size", o->shard, "--format hf: largest safetensors shard (default 10GB, as transformers)");
    app->add_option("--pth-shards", o->pth_shards, "--format pth: number of consolidated.NN.pth files (default: 1/2/4/8 for 7B/13B/33B/65B)");
    app->add_option("--verify-sha256", o->verify, "check the input files against a SHA256.md / sha256sum list first");
    app->add_flag("--no-hash", o->no_hash, "do not print the outputs' SHA-256");
    app->add_option("-t,--threads", o->threads, "threads (default: physical cores)");
    app->footer(
        "Examples:\n"
        "  calpaca merge-lora --base llama-7b-hf --lora chinese-llama-plus-lora-7b,chinese-alpaca-plus-lora-7b -o alpaca-plus-7b.gguf\n"
        "  calpaca merge-lora --base llama-7b-hf --lora chinese-alpaca-lora-7b --format hf -o chinese-alpaca-7b-hf\n"
        "  calpaca merge-lora --base llama-13b-hf --lora chinese-llama-lora-13b --format pth -o zh-models/13B\n"
        "  calpaca merge-lora --base llama-7b.gguf --lora chinese-alpaca-lora-7b --outtype q8_0 -o alpaca-7b-q8_0.gguf");
    return {app, [o]() {
                MergeOptions m;
                if (!dtype_from_name(o->outtype, m.outtype)) fail("--outtype '{}': unknown type", o->outtype);
                if (o->format == "gguf") gguf_file_type(m.outtype);
                else torch_dtype_name(m.outtype);
                m.lora_dirs = o->loras;
                m.vocab_path = o->vocab;
                m.name = o->name;
                m.chat_template = o->tmpl;
                if (o->threads < 0) fail("--threads must be positive, got {}", o->threads);
                ThreadPool pool(o->threads > 0 ? o->threads : default_thread_count());
                m.pool = &pool;
                if (!o->verify.empty()) verify_inputs_sha256(o->verify, merge_input_files(o->base, o->loras), true);
                std::unique_ptr<TensorSink> sink;
                if (o->format == "gguf") sink = make_gguf_sink(o->out, &pool);
                else if (o->format == "hf") sink = make_hf_sink(o->out, parse_size(o->shard), &pool);
                else sink = make_pth_sink(o->out, o->pth_shards, &pool);
                MergeResult r = run_merge(o->base, *sink, m);
                std::fprintf(stderr, "merged %zu adapter(s) into %s: %zu tensors, vocabulary %lld, %.1f MB read, %.1f MB written in %.1f s\n",
                             o->loras.size(), o->out.c_str(), r.n_tensors, static_cast<long long>(r.n_vocab), r.bytes_in / 1e6,
                             r.bytes_out / 1e6, r.seconds);
                if (!o->no_hash)
                    for (const auto& f : r.files) std::printf("%s  %s\n", sha256_file(f, true).c_str(), f.c_str());
                return 0;
            }};
}

static const Registration kRegistration("merge-lora", add_merge_lora);

}  // namespace calpaca::cli
