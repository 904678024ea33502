#include <cstdio>

#include "calpaca/base/error.h"
#include "calpaca/formats/gguf.h"
#include "calpaca/model/config.h"
#include "common.h"

namespace calpaca::cli {

static Command add_info(CLI::App& root) {
    auto* app = root.add_subcommand("info", "Show a GGUF file's metadata, tensor table, parameter count and size");
    auto path = std::make_shared<std::string>();
    auto all = std::make_shared<bool>(false);
    app->add_option("MODEL", *path, "GGUF file")->required();
    app->add_flag("--all-tensors", *all, "list every tensor (default: the first 24)");
    app->footer("Examples:\n  calpaca info models/calpaca-demo.gguf\n  calpaca info --all-tensors model.gguf");
    return {app, [=]() {
                auto f = GGUFFile::open(*path);
                std::printf("file:        %s\n", path->c_str());
                std::printf("size:        %llu bytes (%.2f MiB)\n", static_cast<unsigned long long>(f->file_size()),
                            f->file_size() / 1048576.0);
                std::printf("gguf:        version %u, alignment %llu, %zu metadata keys, %zu tensors\n", f->version(),
                            static_cast<unsigned long long>(f->alignment()), f->kv().size(), f->tensors().size());
                std::printf("\nmetadata:\n");
                for (const auto& [k, v] : f->kv()) std::printf("  %-44s %s\n", k.c_str(), v.to_display().c_str());
                uint64_t params = 0, bytes = 0;
                for (const auto& t : f->tensors()) {
                    params += t.n_elements();
                    bytes += t.n_bytes();
                }
                std::printf("\ntensors:\n");
                size_t shown = 0;
                for (const auto& t : f->tensors()) {
                    if (!*all && shown++ >= 24) {
                        std::printf("  … %zu more (--all-tensors)\n", f->tensors().size() - 24);
                        break;
                    }
                    std::string dims;
                    for (size_t i = 0; i < t.ne.size(); ++i) dims += (i ? " x " : "") + std::to_string(t.ne[i]);
                    std::printf("  %-36s %-6s %-22s %12llu bytes\n", t.name.c_str(), dtype_name(t.type), dims.c_str(),
                                static_cast<unsigned long long>(t.n_bytes()));
                }
                std::printf("\nparameters:  %llu (%.3f B)\n", static_cast<unsigned long long>(params), params / 1e9);
                if (params) std::printf("bits/weight: %.3f\n", bytes * 8.0 / static_cast<double>(params));
                if (f->has("general.architecture") && !f->tensors().empty()) {
                    LlamaConfig c;
                    try {
                        c = LlamaConfig::from_gguf(*f);
                    } catch (const Error& e) {
                        std::printf("llama:       not a runnable model: %s\n", e.what());
                        return 0;
                    }
                    std::printf("llama:       vocab %lld, embd %lld, layers %lld, heads %lld (kv %lld), ff %lld, ctx %lld, "
                                "rope base %g, rope linear factor %g, rms eps %g\n",
                                (long long)c.n_vocab, (long long)c.n_embd, (long long)c.n_layer, (long long)c.n_head,
                                (long long)c.n_head_kv, (long long)c.n_ff, (long long)c.n_ctx_train, c.rope_theta,
                                c.rope_linear_factor, c.rms_eps);
                }
                return 0;
            }};
}

static const Registration kRegistration("info", add_info);

}  // namespace calpaca::cli
