// Perplexity against transformers: tests/golden/perplexity/sharp.json holds the per-token NLLs of
// llama.cpp's perplexity method computed by HF LlamaForCausalLM on the `sharp` golden model
// (tools/reference/make_perplexity_fixture.py). Our converter + engine + perplexity() must agree.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "calpaca/base/fileio.h"
#include "calpaca/base/threadpool.h"
#include "calpaca/convert/hf_to_gguf.h"
#include "calpaca/eval/perplexity.h"
#include "calpaca/model/model.h"

namespace fs = std::filesystem;
using namespace calpaca;

TEST(GoldenPerplexity, SharpModelMatchesTransformers) {
    const auto fx = nlohmann::json::parse(read_file(std::string(CALPACA_GOLDEN_DIR) + "/perplexity/sharp.json"));
    const fs::path tmp = fs::temp_directory_path() / ("calpaca-golden-ppl-" + std::to_string(::getpid()));
    fs::create_directories(tmp);
    const std::string gguf = (tmp / "sharp-f32.gguf").string();
    ConvertOptions co;
    co.outtype = DType::F32;  // the HF weights are f16 values: F32 holds them exactly
    co.vocab_path = std::string(CALPACA_TEST_DATA) + "/tokenizers/chinese-llama-2/tokenizer.model";
    co.progress = false;
    convert_hf_to_gguf(std::string(CALPACA_GOLDEN_DIR) + "/sharp", gguf, co);
    auto model = Model::load(gguf);

    const auto ids = fx["ids"].get<std::vector<int32_t>>();
    ASSERT_EQ(perplexity_tokenize(*model, fx["text"].get<std::string>()), ids);  // BOS + sentencepiece ids
    const auto want = fx["nll"].get<std::vector<double>>();
    const double want_ppl = fx["ppl"].get<double>(), want_se = fx["ppl_stderr"].get<double>();

    struct Variant {
        const char* label;
        bool reference;
        DType kv;
        double nll_tol, ppl_rel_tol;
    };
    ThreadPool pool(2);
    for (const Variant& v : {Variant{"reference/f32-kv", true, DType::F32, 5e-5, 5e-5},
                             Variant{"threaded/f32-kv", false, DType::F32, 5e-5, 5e-5},
                             Variant{"threaded/f16-kv", false, DType::F16, 5e-3, 2e-3}}) {
        SCOPED_TRACE(v.label);
        PerplexityOptions o;
        o.n_ctx = fx["n_ctx"].get<int64_t>();
        o.reference = v.reference;
        o.kv_type = v.kv;
        const PerplexityResult r = perplexity_of_text(*model, fx["text"].get<std::string>(), o, &pool);
        ASSERT_EQ(r.n_chunks, fx["n_chunks"].get<int64_t>());
        ASSERT_EQ(r.nll.size(), want.size());
        double worst = 0;
        for (size_t i = 0; i < want.size(); ++i) {
            worst = std::max(worst, std::fabs(r.nll[i] - want[i]));
            EXPECT_NEAR(r.nll[i], want[i], v.nll_tol) << "scored token " << i;
        }
        EXPECT_NEAR(r.ppl, want_ppl, v.ppl_rel_tol * want_ppl);
        EXPECT_NEAR(r.ppl_stderr, want_se, 2 * v.ppl_rel_tol * want_se);
        const auto running = fx["chunk_ppl"].get<std::vector<double>>();
        ASSERT_EQ(r.chunk_ppl.size(), running.size());
        for (size_t k = 0; k < running.size(); ++k) EXPECT_NEAR(r.chunk_ppl[k], running[k], v.ppl_rel_tol * running[k]);
        std::printf("[golden] perplexity %-18s PPL %.6g (transformers %.6g) +/- %.4g, max |dNLL| %.2g\n", v.label, r.ppl,
                    want_ppl, r.ppl_stderr, worst);
    }
    fs::remove_all(tmp);
}
