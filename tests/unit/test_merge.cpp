// merge-lora against the original algorithm (tools/reference/make_merge_fixtures.py: peft
// adapters, merged by merge_llama_with_chinese_lora_low_mem.py's formula), the merged models'
// logits against transformers, the hf / pth round trips, in-memory --lora, and the errors.
#include <gtest/gtest.h>

#include "../common/test_util.h"
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "../common/npy.h"
#include "calpaca/base/error.h"
#include "calpaca/base/fileio.h"
#include "calpaca/base/threadpool.h"
#include "calpaca/convert/hf_to_gguf.h"
#include "calpaca/convert/lora_delta.h"
#include "calpaca/convert/lora_runtime.h"
#include "calpaca/convert/merge_lora.h"
#include "calpaca/formats/gguf.h"
#include "calpaca/formats/tensor_source.h"
#include "calpaca/model/model.h"
#include "calpaca/model/session.h"

namespace fs = std::filesystem;
using namespace calpaca;
using namespace calpaca::test;

namespace {

const std::string kMerge = std::string(CALPACA_TEST_DATA) + "/merge";
const std::string kTok = std::string(CALPACA_TEST_DATA) + "/tokenizers";

// The message of the Error f throws (fails the test when none is thrown).
std::string expect_error(const std::function<void()>& f) { return error_of(f); }


MergeResult merge(const std::string& base, std::vector<std::string> loras, TensorSink& sink, DType out = DType::F16,
                  const std::string& vocab = "") {
    MergeOptions o;
    for (auto& l : loras) l = kMerge + "/" + l;
    o.lora_dirs = loras;
    o.outtype = out;
    o.vocab_path = vocab;
    o.progress = false;
    o.block_floats = 200;  // tiny row blocks: exercises the block loop (q/k blocks stay whole heads)
    return run_merge(base, sink, o);
}

// f16 ulp distance (same sign assumed away by comparing ordered integers)
int ulps16(float a, float b) {
    auto ord = [](float x) {
        int v = fp32_to_fp16(x);
        return v & 0x8000 ? -(v & 0x7fff) : v;
    };
    return std::abs(ord(a) - ord(b));
}

void expect_same_as_reference(const std::string& merged_dir, const std::string& ref, int max_ulps) {
    TensorSource ours = TensorSource::open_file(merged_dir + "/model.safetensors");
    TensorSource want = TensorSource::open_file(kMerge + "/ref/" + ref);
    ASSERT_EQ(ours.tensors().size(), want.tensors().size());
    int worst = 0;
    for (const auto& t : want.tensors()) {
        ASSERT_NE(ours.find(t.name), nullptr) << t.name;
        ASSERT_EQ(ours.get(t.name).shape, t.shape) << t.name;
        std::vector<float> a = ours.read_f32(t.name), b = want.read_f32(t.name);
        for (size_t i = 0; i < a.size(); ++i) {
            if (t.type == DType::F32) ASSERT_EQ(a[i], b[i]) << t.name << "[" << i << "]";
            else worst = std::max(worst, ulps16(a[i], b[i]));
        }
    }
    EXPECT_LE(worst, max_ulps) << ref;
}

double rel_l2(const float* a, const float* b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; ++i) {
        num += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
        den += static_cast<double>(b[i]) * b[i];
    }
    return std::sqrt(num / den);
}

std::vector<float> logits_of(const std::string& gguf, const std::vector<int32_t>& ids, const std::string& vocab = "") {
    auto m = Model::load(gguf, vocab);
    SessionOptions so;
    so.kv_type = DType::F32;
    so.reference = true;
    so.n_ctx = 64;
    Session s(*m, so, nullptr);
    s.eval(ids, true);
    return std::vector<float>(s.logits().begin(), s.logits().begin() + static_cast<std::ptrdiff_t>(ids.size() * m->config().n_vocab));
}

std::vector<int32_t> fixture_ids(const std::string& cases) {
    return nlohmann::json::parse(read_file(cases))["ids"].get<std::vector<int32_t>>();
}

std::string tensor_bytes(const std::string& gguf) {
    auto f = GGUFFile::open(gguf);
    std::string all;
    for (const auto& t : f->tensors()) all.append(reinterpret_cast<const char*>(f->tensor_data(t)), t.n_bytes());
    return all;
}

}  // namespace

TEST(LoraDelta, FastEqualsReferenceOnRandomData) {
    std::mt19937 rng(11);
    std::normal_distribution<float> nd(0, 0.3f);
    ThreadPool pool(3);
    for (bool fifo : {false, true})
        for (DType st : {DType::F32, DType::F16, DType::BF16}) {
            LoraFactors f;
            f.rank = 5;
            f.n_in = 37;
            f.n_out = 23;
            f.fan_in_fan_out = fifo;
            f.scaling = 2.5f;
            std::vector<float> A(f.rank * f.n_in), B(f.n_out * f.rank);
            for (auto& x : A) x = nd(rng);
            for (auto& x : B) x = nd(rng);
            f.A = A.data();
            f.B = B.data();
            const int64_t rows = fifo ? f.n_in : f.n_out, cols = fifo ? f.n_out : f.n_in;
            std::vector<float> W(rows * cols);
            for (auto& x : W) x = nd(rng);
            round_to_storage(W.data(), W.size(), st);
            std::vector<float> w1(W.begin() + 3 * cols, W.begin() + 17 * cols), w2 = w1;
            add_lora_delta_rows_ref(f, 3, 17, w1.data(), st);
            add_lora_delta_rows(f, 3, 17, w2.data(), st, &pool);
            EXPECT_EQ(w1, w2) << "fifo " << fifo << " " << dtype_name(st);
            // and the formula itself, in double: |W + s·BA - result| within the storage rounding
            for (int64_t r = 3; r < 17; ++r)
                for (int64_t c = 0; c < cols; ++c) {
                    double d = 0;
                    for (int64_t k = 0; k < f.rank; ++k)
                        d += fifo ? double(B[c * f.rank + k]) * A[k * f.n_in + r] : double(B[r * f.rank + k]) * A[k * f.n_in + c];
                    double want = W[r * cols + c] + d * f.scaling;
                    double tol = st == DType::F32 ? 1e-5 : st == DType::F16 ? 2e-3 * std::max(1.0, std::fabs(want)) : 1.6e-2 * std::max(1.0, std::fabs(want));
                    EXPECT_NEAR(w1[(r - 3) * cols + c], want, tol);
                }
        }
}

TEST(LoraDelta, QKPermutationsInvertEachOtherAndMatchTheConverter) {
    std::vector<float> w(24 * 5), a(w.size()), scratch;
    for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>(i);
    permute_qk_rows_hf_to_gguf(w.data(), a.data(), 24, 5, 3);  // 3 heads of 8
    std::vector<float> b = w;
    qk_rows_hf_to_interleaved(b.data(), 24, 5, 8, scratch);
    EXPECT_EQ(a, b);
    qk_rows_interleaved_to_hf(b.data(), 24, 5, 8, scratch);
    EXPECT_EQ(b, w);
    EXPECT_THROW(qk_rows_hf_to_interleaved(b.data(), 20, 5, 8, scratch), Error);
}

TEST(Merge, EqualsTheOriginalAlgorithmBitForBit) {
    TempDir t("merge-ref");
    {
        auto s = make_hf_sink(t / "plus", 1ull << 40, nullptr);
        MergeResult r = merge(kMerge + "/base-st-f16", {"lora-plus"}, *s);
        EXPECT_EQ(r.n_vocab, 600);
        expect_same_as_reference(t / "plus", "plus-f16.safetensors", 0);
    }
    {
        // two adapters in order (LLaMA-Plus then Alpaca-Plus), base from sharded .bin files
        auto s = make_hf_sink(t / "pa", 1ull << 40, nullptr);
        MergeResult r = merge(kMerge + "/base-bin-f16-sharded", {"lora-plus", "lora-alpaca"}, *s);
        EXPECT_EQ(r.n_vocab, 601);
        expect_same_as_reference(t / "pa", "plus-alpaca-f16.safetensors", 0);
        auto cfg = nlohmann::json::parse(read_file(t / "pa/config.json"));
        EXPECT_EQ(cfg["vocab_size"], 601);
        EXPECT_EQ(cfg["torch_dtype"], "float16");
        EXPECT_EQ(read_file(t / "pa/tokenizer.model"), read_file(kMerge + "/lora-alpaca/tokenizer.model"));  // last adapter's
        EXPECT_TRUE(fs::exists(t / "pa/generation_config.json"));
        EXPECT_TRUE(fs::exists(t / "pa/special_tokens_map.json"));
    }
    {
        // f32 base, q/v-only adapter in safetensors form: exact in f32
        auto s = make_hf_sink(t / "qv", 1ull << 40, nullptr);
        merge(kMerge + "/base-bin-f32", {"lora-qv"}, *s, DType::F32);
        expect_same_as_reference(t / "qv", "qv-f32.safetensors", 0);
    }
    {
        // a GGUF base (q/k interleaved): the same result after the layout round trip
        ConvertOptions co;
        co.progress = false;
        convert_hf_to_gguf(kMerge + "/base-st-f16", t / "base.gguf", co);
        auto s = make_hf_sink(t / "pa-from-gguf", 1ull << 40, nullptr);
        merge(t / "base.gguf", {"lora-plus", "lora-alpaca"}, *s);
        expect_same_as_reference(t / "pa-from-gguf", "plus-alpaca-f16.safetensors", 0);
    }
}

TEST(Merge, GGUFOutputGivesTheReferenceLogits) {
    TempDir t("merge-logits");
    const auto ids = fixture_ids(kMerge + "/cases.json");
    auto ref = test::read_npy_f32(kMerge + "/ref/plus-alpaca-logits.npy");
    auto s = make_gguf_sink(t / "pa.gguf", nullptr);
    merge(kMerge + "/base-bin-f16-sharded", {"lora-plus", "lora-alpaca"}, *s);
    std::vector<float> lg = logits_of(t / "pa.gguf", ids);
    ASSERT_EQ(lg.size(), ref.data.size());
    double e = rel_l2(lg.data(), ref.data.data(), lg.size());
    std::printf("[merge] plus+alpaca merged GGUF (f16) vs transformers logits: rel L2 %.3g\n", e);
    EXPECT_LE(e, 1e-5);
    auto f = GGUFFile::open(t / "pa.gguf");
    EXPECT_FALSE(f->has("calpaca.chat_template"));  // 601 is not a known chat vocabulary

    // converted bases (every layout) give the base logits
    auto base_ref = test::read_npy_f32(kMerge + "/base-logits.npy");
    for (const char* b : {"base-st-f16", "base-bin-f32", "base-meta"}) {
        ConvertOptions co;
        co.progress = false;
        co.outtype = DType::F32;
        convert_hf_to_gguf(kMerge + "/" + b, t / "b.gguf", co);
        std::vector<float> bl = logits_of(t / "b.gguf", ids);
        double eb = rel_l2(bl.data(), base_ref.data.data(), bl.size());
        std::printf("[merge] converted %-12s vs transformers logits: rel L2 %.3g\n", b, eb);
        EXPECT_LE(eb, 1e-5) << b;
        fs::remove(t / "b.gguf");
    }
}

TEST(Merge, HfAndPthOutputsConvertBackToTheSameModel) {
    TempDir t("merge-rt");
    auto g = make_gguf_sink(t / "direct.gguf", nullptr);
    merge(kMerge + "/base-st-f16", {"lora-plus", "lora-alpaca"}, *g);
    // --format hf, sharded, then convert
    auto h = make_hf_sink(t / "hf", 30000, nullptr);
    merge(kMerge + "/base-st-f16", {"lora-plus", "lora-alpaca"}, *h);
    auto index = nlohmann::json::parse(read_file(t / "hf/model.safetensors.index.json"));
    std::set<std::string> shards;
    for (auto& [k, v] : index["weight_map"].items()) shards.insert(v.get<std::string>());
    EXPECT_GT(shards.size(), 2u);
    for (const auto& f : shards) EXPECT_TRUE(fs::exists(t / ("hf/" + f))) << f;
    ConvertOptions co;
    co.progress = false;
    convert_hf_to_gguf(t / "hf", t / "from-hf.gguf", co);
    EXPECT_EQ(tensor_bytes(t / "from-hf.gguf"), tensor_bytes(t / "direct.gguf"));
    // --format pth with 2 shards (601 output rows split 300 + 301, as the original's 13B split), then convert
    auto p = make_pth_sink(t / "pth", 2, nullptr);
    merge(kMerge + "/base-st-f16", {"lora-plus", "lora-alpaca"}, *p);
    TensorSource s1 = TensorSource::open_file(t / "pth/consolidated.01.pth");
    EXPECT_EQ(s1.get("output.weight").shape, (std::vector<uint64_t>{301, 32}));
    EXPECT_EQ(s1.get("tok_embeddings.weight").shape, (std::vector<uint64_t>{601, 16}));
    auto params = nlohmann::json::parse(read_file(t / "pth/params.json"));
    EXPECT_EQ(params["vocab_size"], -1);
    EXPECT_EQ(params["n_kv_heads"], 2);
    convert_hf_to_gguf(t / "pth", t / "from-pth.gguf", co);
    EXPECT_EQ(tensor_bytes(t / "from-pth.gguf"), tensor_bytes(t / "direct.gguf"));
}

TEST(Merge, RealVocabularySizes32000To49953) {
    TempDir t("merge-real");
    const std::string zh = kTok + "/chinese-llama-v1/tokenizer.model";
    auto cases = nlohmann::json::parse(read_file(kMerge + "/real-vocab/cases.json"));
    auto ids = cases["ids"].get<std::vector<int32_t>>();
    auto s = make_gguf_sink(t / "zh.gguf", nullptr);
    MergeResult r = merge(kMerge + "/real-vocab/base", {"real-vocab/lora"}, *s, DType::F16, zh);
    EXPECT_EQ(r.n_vocab, 49953);
    auto m = Model::load(t / "zh.gguf");
    EXPECT_EQ(m->config().n_vocab, 49953);
    Tokenizer::Options eo;
    eo.add_bos = true;
    EXPECT_EQ(m->tokenizer().encode(cases["prompt"].get<std::string>(), eo), ids);
    auto ref = test::read_npy_f32(kMerge + "/real-vocab/logits.npy");
    std::vector<float> lg = logits_of(t / "zh.gguf", ids);
    double e = rel_l2(lg.data(), ref.data.data(), lg.size());
    std::printf("[merge] 32000 base + 49953 adapter (f16) vs transformers logits: rel L2 %.3g\n", e);
    EXPECT_LE(e, 1e-5);

    // the Alpaca tokenizer (49954) with a 49953-row merge: named, with the hint
    auto s2 = make_gguf_sink(t / "bad.gguf", nullptr);
    std::string err = expect_error([&] {
        merge(kMerge + "/real-vocab/base", {"real-vocab/lora"}, *s2, DType::F16, kTok + "/chinese-alpaca-v1/tokenizer.model");
    });
    EXPECT_NE(err.find("has 49954 pieces but the merged model has 49953 embedding rows"), std::string::npos) << err;
    EXPECT_NE(err.find("not interchangeable"), std::string::npos) << err;
    EXPECT_FALSE(fs::exists(t / "bad.gguf"));
}

TEST(Merge, BadInputsAreOneLineErrors) {
    TempDir t("merge-bad");
    auto sink = [&](const std::string& n) { return make_gguf_sink(t / n, nullptr); };
    // an adapter for a bigger model (hidden 32) on a smaller base (hidden 16)
    auto s1 = sink("a.gguf");
    std::string e = expect_error([&] { merge(kMerge + "/real-vocab/base", {"lora-qv"}, *s1); });
    EXPECT_NE(e.find("shape mismatch for tensor 'model.layers.0.self_attn.q_proj.weight': the adapter's delta is 32x32 but the base weight is 16x16"),
              std::string::npos) << e;
    // adapters in the wrong order: the vocabulary would shrink 601 → 600
    auto s2 = sink("b.gguf");
    e = expect_error([&] { merge(kMerge + "/base-st-f16", {"lora-alpaca", "lora-plus"}, *s2); });
    EXPECT_NE(e.find("the vocabulary must not shrink"), std::string::npos) << e;
    // the base's tokenizer with a resized vocabulary
    auto s3 = sink("c.gguf");
    e = expect_error([&] { merge(kMerge + "/base-st-f16", {"lora-plus"}, *s3, DType::F16, kMerge + "/tok-512/tokenizer.model"); });
    EXPECT_NE(e.find("has 512 pieces but the merged model has 600 embedding rows"), std::string::npos) << e;
    for (const char* f : {"a.gguf", "b.gguf", "c.gguf"}) EXPECT_FALSE(fs::exists(t / f)) << f;
    EXPECT_TRUE(fs::is_empty(t.p));  // no temporary files left either
    // an existing, non-empty output directory is never overwritten
    fs::create_directories(t / "full");
    write_file_atomic(t / "full/x", "keep");
    e = expect_error([&] {
        auto s = make_hf_sink(t / "full", 1ull << 40, nullptr);
        merge(kMerge + "/base-st-f16", {"lora-plus"}, *s);
    });
    EXPECT_NE(e.find("exists and is not empty"), std::string::npos) << e;
    EXPECT_EQ(read_file(t / "full/x"), "keep");
}

TEST(Merge, InMemoryLoraEqualsTheMergedFile) {
    TempDir t("merge-mem");
    ConvertOptions co;
    co.progress = false;
    convert_hf_to_gguf(kMerge + "/base-st-f16", t / "base.gguf", co);
    auto s = make_gguf_sink(t / "merged.gguf", nullptr);
    merge(t / "base.gguf", {"lora-plus", "lora-alpaca"}, *s);
    const auto ids = fixture_ids(kMerge + "/cases.json");
    std::vector<float> want = logits_of(t / "merged.gguf", ids);

    ThreadPool pool(2);
    auto m = Model::load(t / "base.gguf");
    apply_lora_in_memory(*m, {kMerge + "/lora-plus", kMerge + "/lora-alpaca"}, "", &pool);
    EXPECT_EQ(m->config().n_vocab, 601);
    EXPECT_EQ(m->tokenizer().size(), 601u);
    SessionOptions so;
    so.kv_type = DType::F32;
    so.reference = true;
    so.n_ctx = 64;
    Session sess(*m, so, nullptr);
    sess.eval(ids, true);
    std::vector<float> got(sess.logits().begin(), sess.logits().begin() + static_cast<std::ptrdiff_t>(want.size()));
    EXPECT_EQ(got, want);  // same arithmetic, same f16 rounding: identical

    auto m2 = Model::load(t / "base.gguf");
    std::string e = expect_error([&] { apply_lora_in_memory(*m2, {kMerge + "/real-vocab/lora"}, "", &pool); });
    EXPECT_NE(e.find("does not fit a model of hidden size 32"), std::string::npos) << e;
}
