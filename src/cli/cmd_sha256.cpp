#include <cstdio>
#include <filesystem>

#include "calpaca/base/error.h"
#include "calpaca/base/sha256.h"
#include "calpaca/convert/sha256_list.h"
#include "common.h"

namespace calpaca::cli {

static Command add_sha256(CLI::App& root) {
    auto* app = root.add_subcommand("sha256", "Print or check SHA-256 hashes of model files (sha256sum and SHA256.md lists)");
    struct O {
        std::string check;
        std::vector<std::string> files;
    };
    auto o = std::make_shared<O>();
    app->add_option("FILES", o->files, "files to hash or check");
    app->add_option("-c,--check", o->check,
                    "list to check against: sha256sum output or the original project's SHA256.md; without FILES, every "
                    "listed name that exists next to the list is checked");
    app->footer("Examples:\n  calpaca sha256 merged/consolidated.00.pth\n"
                "  calpaca sha256 --check SHA256.md chinese-alpaca-lora-7b/adapter_model.bin chinese-alpaca-lora-7b/tokenizer.model\n"
                "  calpaca sha256 --check SHA256SUMS");
    return {app, [o]() {
                if (o->check.empty()) {
                    if (o->files.empty()) fail("sha256: give FILES to hash, or --check LIST");
                    for (const auto& f : o->files) std::printf("%s  %s\n", sha256_file(f, true).c_str(), f.c_str());
                    return 0;
                }
                Sha256List list = read_sha256_list(o->check);
                std::vector<std::string> files = o->files;
                int missing = 0;
                if (files.empty()) {
                    namespace fs = std::filesystem;
                    const fs::path dir = fs::path(o->check).parent_path();
                    for (const auto& e : list.entries) {
                        if (e.name.empty()) continue;
                        fs::path p = dir / e.name;
                        if (fs::exists(p)) {
                            files.push_back(p.string());
                        } else {
                            std::printf("%s: MISSING (listed on line %d)\n", p.string().c_str(), e.line);
                            ++missing;
                        }
                    }
                }
                int bad = 0;
                for (const auto& f : files) {
                    HashCheck c = check_file_sha256(list, f, true);
                    std::printf("%s: %s (%s)\n", f.c_str(), hash_status_name(c.status), c.detail.c_str());
                    if (c.status != HashStatus::Ok) ++bad;
                }
                std::fflush(stdout);
                if (bad || missing)
                    std::fprintf(stderr, "calpaca: sha256: %d of %zu file(s) did not match%s\n", bad, files.size(),
                                 missing ? fmt::format(", {} listed file(s) missing", missing).c_str() : "");
                return bad || missing ? 1 : 0;
            }};
}

static const Registration kRegistration("sha256", add_sha256);

}  // namespace calpaca::cli
