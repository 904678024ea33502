#include <cstdio>
#include <cstring>

#include "calpaca/base/error.h"
#include "calpaca/base/fileio.h"
#include "common.h"

namespace calpaca::cli {

namespace {
std::vector<int32_t> parse_ids(const std::string& s) {
    std::vector<int32_t> ids;
    size_t i = 0;
    while (i < s.size()) {
        size_t j = s.find_first_of(", ", i);
        if (j == std::string::npos) j = s.size();
        std::string tok = s.substr(i, j - i);
        if (!tok.empty()) {
            char* end = nullptr;
            long v = std::strtol(tok.c_str(), &end, 10);
            if (*end || v < 0 || v > INT32_MAX) fail("--ids: '{}' is not a token id", tok);
            ids.push_back(static_cast<int32_t>(v));
        }
        i = j + 1;
    }
    if (ids.empty()) fail("--ids: no token ids given");
    return ids;
}

// numpy .npy v1.0: magic, version, header length (u16), a Python-dict header padded with
// spaces to a multiple of 64 bytes and ending in '\n', then raw little-endian data.
void write_npy(const std::string& path, const float* data, size_t rows, size_t cols) {
    std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(rows) + ", " +
                         std::to_string(cols) + "), }";
    size_t total = 10 + header.size() + 1;
    header.append((64 - total % 64) % 64, ' ');
    header += '\n';
    AtomicFile f(path);
    f.write("\x93NUMPY\x01\x00", 8);
    uint16_t hl = static_cast<uint16_t>(header.size());
    f.write(&hl, 2);
    f.write(header);
    f.write(data, rows * cols * sizeof(float));
    f.commit();
}
}  // namespace

static Command add_logits(CLI::App& root) {
    auto* app = root.add_subcommand("logits", "Write the float32 logits of every position to a .npy file");
    auto mo = std::make_shared<ModelOptions>();
    auto ids = std::make_shared<std::string>();
    auto out = std::make_shared<std::string>();
    mo->add(app);
    app->add_option("--ids", *ids, "comma-separated token ids, e.g. 1,29871,30919")->required();
    app->add_option("--out", *out, "output .npy file ([n_tokens, n_vocab] float32)")->required();
    app->footer("Examples:\n  calpaca logits -m model.gguf --ids 1,32553,31900 --out logits.npy\n"
                "  python3 -c \"import numpy; print(numpy.load('logits.npy').shape)\"");
    return {app, [=]() {
                auto ids_v = parse_ids(*ids);
                auto model = mo->load();
                auto pool = mo->pool();
                Session s(*model, mo->session(), pool.get());
                s.eval(ids_v, true);
                write_npy(*out, s.logits().data(), ids_v.size(), static_cast<size_t>(model->config().n_vocab));
                std::fprintf(stderr, "wrote %s: [%zu, %lld] float32\n", out->c_str(), ids_v.size(),
                             (long long)model->config().n_vocab);
                return 0;
            }};
}

static const Registration kRegistration("logits", add_logits);

}  // namespace calpaca::cli
