#include <cstdio>

#include "calpaca/base/error.h"
#include "calpaca/base/threadpool.h"
#include "calpaca/convert/quantize.h"
#include "calpaca/tensor/quant_dot.h"
#include "common.h"

namespace calpaca::cli {

namespace {

std::string human_bytes(uint64_t b) {
    const double v = static_cast<double>(b);
    if (b >= (1ull << 30)) return fmt::format("{:.2f} GiB", v / static_cast<double>(1ull << 30));
    if (b >= (1ull << 20)) return fmt::format("{:.2f} MiB", v / static_cast<double>(1ull << 20));
    return fmt::format("{:.1f} KiB", v / 1024);
}

}  // namespace

static Command add_quantize(CLI::App& root) {
    auto* app = root.add_subcommand("quantize", "Quantize a GGUF model's weight matrices (ggml block formats, llama.cpp-compatible)");
    struct O {
        std::string in, out, type;
        int threads = 0;
        bool allow_requantize = false, pure = false, list = false;
    };
    auto o = std::make_shared<O>();
    app->add_option("IN", o->in, "input GGUF (F32, F16 or BF16 weights)")->required();
    app->add_option("OUT", o->out, "output GGUF (written to a temporary name, renamed when complete)")->required();
    app->add_option("TYPE", o->type, "one of " + quant_mix_names() + " (case-insensitive)")->required();
    app->add_option("-t,--threads", o->threads, "threads (default: physical cores)");
    app->add_flag("--allow-requantize", o->allow_requantize,
                  "accept an input that is already quantized (dequantized, then re-quantized: quality suffers)");
    app->add_flag("--pure", o->pure, "give every matrix TYPE (no Q6_K output head, as llama-quantize --pure)");
    app->add_flag("--list-tensors", o->list, "print each tensor's output type");
    app->footer(
        "Types: Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K Q4_K Q5_K Q6_K give every weight matrix that type except the\n"
        "output head (Q6_K, as llama.cpp does); Q4_K_M / Q5_K_M also give attn_v and ffn_down Q6_K in the first\n"
        "and last eighth of the layers and every third layer between; F16 / BF16 / F32 convert. Rows whose length\n"
        "the type's blocks do not divide fall back (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, Q2_K/Q3_K -> Q4_0, else F16).\n"
        "See docs/quantization.md.\n\n"
        "Examples:\n  calpaca quantize alpaca2-7b-f16.gguf alpaca2-7b-q4_k_m.gguf Q4_K_M\n"
        "  calpaca quantize model-f16.gguf model-q8_0.gguf q8_0 -t 8\n"
        "  calpaca quantize model-q8_0.gguf model-q4_0.gguf Q4_0 --allow-requantize");
    return {app, [o]() {
                QuantMix mix;
                if (!parse_quant_mix(o->type, mix))
                    fail("unknown quantization type '{}' (expected one of {})", o->type, quant_mix_names());
                if (o->threads < 0) fail("--threads must be positive, got {}", o->threads);
                QuantizeOptions opt;
                opt.threads = o->threads;
                opt.allow_requantize = o->allow_requantize;
                opt.pure = o->pure;
                const QuantizeReport r = quantize_gguf(o->in, o->out, mix, opt);
                if (o->list)
                    for (const auto& [name, type] : r.tensor_types) std::printf("%-40s %s\n", name.c_str(), type.c_str());
                for (const auto& f : r.fallbacks) std::fprintf(stderr, "fallback: %s\n", f.c_str());
                std::string types;
                for (const auto& [name, n] : r.out_types) types += fmt::format("{}{} {}", types.empty() ? "" : ", ", name, n);
                std::fprintf(stderr, "quantized %s -> %s (%s): %zu tensors (%zu converted, %zu copied; %s)\n", o->in.c_str(),
                             o->out.c_str(), r.mix.c_str(), r.n_tensors, r.n_converted, r.n_copied, types.c_str());
                std::fprintf(stderr,
                             "size: %s -> %s (file %s -> %s), %.3f bits/weight over %.3f M weights; %.1f s with %d threads\n",
                             human_bytes(r.bytes_in).c_str(), human_bytes(r.bytes_out).c_str(), human_bytes(r.file_in).c_str(),
                             human_bytes(r.file_out).c_str(), r.bits_per_weight(), static_cast<double>(r.n_elements) / 1e6,
                             r.seconds, r.threads);
                return 0;
            }};
}

static const Registration kRegistration("quantize", add_quantize);

}  // namespace calpaca::cli
