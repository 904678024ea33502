// resize-vocab: old rows bit-identical, new rows as chosen, metadata updated, and the resized
// model computes the same logits over the old vocabulary (bit for bit) and still matches the
// transformers golden logits.
#include <gtest/gtest.h>
#include "../common/test_util.h"

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "../common/npy.h"
#include "calpaca/base/error.h"
#include "calpaca/base/fileio.h"
#include "calpaca/base/threadpool.h"
#include "calpaca/convert/hf_to_gguf.h"
#include "calpaca/convert/random_model.h"
#include "calpaca/convert/resize_vocab.h"
#include "calpaca/formats/gguf.h"
#include "calpaca/model/model.h"
#include "calpaca/model/session.h"
#include "calpaca/tensor/kernels.h"
#include "calpaca/tokenizer/tokenizer.h"

namespace fs = std::filesystem;
using namespace calpaca;
using namespace calpaca::test;

namespace {

const std::string kTok = std::string(CALPACA_TEST_DATA) + "/tokenizers/";
std::string tok_path(const std::string& name) { return kTok + name + "/tokenizer.model"; }


std::string random_model(const TempDir& d, const std::string& vocab, DType type, bool tied = false) {
    RandomModelSpec s;
    s.vocab_path = tok_path(vocab);
    s.n_embd = 32;
    s.n_layer = 2;
    s.n_head = 4;
    s.n_head_kv = 2;
    s.n_ff = 64;
    s.n_ctx = 64;
    s.std = 0.3f;  // sharp enough that a wrong row would move the logits
    s.type = type;
    s.tie_embeddings = tied;
    s.seed = 7;
    s.progress = false;
    const std::string out = d / (vocab + "-" + dtype_name(type) + (tied ? "-tied" : "") + ".gguf");
    write_random_model(s, out);
    return out;
}

std::vector<float> logits_of(const std::string& gguf, const std::vector<int32_t>& ids, ThreadPool* pool,
                             bool reference) {
    auto m = Model::load(gguf);
    SessionOptions so;
    so.n_ctx = 64;
    so.kv_type = DType::F32;
    so.reference = reference;
    Session s(*m, so, pool);
    s.eval(ids, true);
    return s.logits();
}

// Every old row (and every other tensor) byte-identical; returns the new rows of `name` as f32.
std::vector<float> check_rows_kept(const GGUFFile& a, const GGUFFile& b, const std::string& name, size_t n_old,
                                   size_t n_new) {
    const GGUFTensorInfo* ta = a.find_tensor(name);
    const GGUFTensorInfo* tb = b.find_tensor(name);
    EXPECT_TRUE(ta && tb);
    if (!ta || !tb) return {};
    EXPECT_EQ(ta->ne[1], n_old);
    EXPECT_EQ(tb->ne[1], n_new);
    EXPECT_EQ(ta->type, tb->type);
    EXPECT_EQ(0, std::memcmp(a.tensor_data(*ta), b.tensor_data(*tb), ta->n_bytes())) << name;
    const size_t E = ta->ne[0], rb = row_bytes(ta->type, E);
    std::vector<float> out((n_new - n_old) * E);
    for (size_t r = n_old; r < n_new; ++r) to_f32(tb->type, b.tensor_data(*tb) + r * rb, out.data() + (r - n_old) * E, E);
    return out;
}

TEST(ResizeVocab, LlamaToChineseLlamaKeepsOldRowsAndLogits) {
    TempDir d("llama");
    const std::string src = random_model(d, "llama", DType::F32);
    const std::string dst = d / "resized.gguf";
    ResizeVocabOptions o;
    o.vocab_path = tok_path("chinese-llama-v1");
    o.progress = false;
    const ResizeVocabResult r = resize_vocab(src, dst, o);
    EXPECT_EQ(r.old_vocab, 32000u);
    EXPECT_EQ(r.new_vocab, 49953u);
    EXPECT_EQ(r.matrices_resized, 2u);

    auto a = GGUFFile::open(src);
    auto b = GGUFFile::open(dst);
    // metadata: the new tokenizer, the new size, everything else as it was
    EXPECT_EQ(b->get("llama.vocab_size").as_u64("v"), 49953u);
    const Vocab nv = load_vocab_gguf(*b);
    const Vocab want = load_vocab_spm(o.vocab_path);
    EXPECT_EQ(nv.pieces, want.pieces);
    EXPECT_EQ(nv.scores, want.scores);
    EXPECT_EQ(b->get("general.name").as_str("n"), a->get("general.name").as_str("n"));
    EXPECT_EQ(b->get("llama.embedding_length").as_u64("e"), 32u);
    ASSERT_EQ(a->tensors().size(), b->tensors().size());
    for (const auto& t : a->tensors()) {
        if (t.name == "token_embd.weight" || t.name == "output.weight") continue;
        const GGUFTensorInfo* u = b->find_tensor(t.name);
        ASSERT_TRUE(u) << t.name;
        EXPECT_EQ(u->ne, t.ne);
        EXPECT_EQ(0, std::memcmp(a->tensor_data(t), b->tensor_data(*u), t.n_bytes())) << t.name;
    }
    // new rows: the mean of the old rows of the same matrix
    for (const char* name : {"token_embd.weight", "output.weight"}) {
        const auto rows = check_rows_kept(*a, *b, name, 32000, 49953);
        const GGUFTensorInfo* ta = a->find_tensor(name);
        std::vector<double> mean(32, 0.0);
        const float* w = reinterpret_cast<const float*>(a->tensor_data(*ta));
        for (size_t r = 0; r < 32000; ++r)
            for (size_t i = 0; i < 32; ++i) mean[i] += w[r * 32 + i];
        for (size_t r = 0; r < 49953 - 32000; r += 997)
            for (size_t i = 0; i < 32; ++i) ASSERT_EQ(rows[r * 32 + i], static_cast<float>(mean[i] / 32000)) << name;
    }

    // old-vocabulary prompt: logits over the old ids are bit-identical (same hidden state, same
    // lm_head rows), with the threaded and the reference kernels
    Tokenizer tok(load_vocab_spm(tok_path("llama")));
    std::vector<int32_t> ids = {1};
    for (int32_t id : tok.encode("The primary use of LLaMA is research, 白日依山尽")) ids.push_back(id);
    ThreadPool pool(2);
    for (bool ref : {false, true}) {
        SCOPED_TRACE(ref ? "reference" : "threaded");
        const auto la = logits_of(src, ids, &pool, ref);
        const auto lb = logits_of(dst, ids, &pool, ref);
        ASSERT_EQ(la.size(), ids.size() * 32000);
        ASSERT_EQ(lb.size(), ids.size() * 49953);
        for (size_t p = 0; p < ids.size(); ++p)
            ASSERT_EQ(0, std::memcmp(la.data() + p * 32000, lb.data() + p * 49953, 32000 * sizeof(float)))
                << "position " << p;
    }
}

TEST(ResizeVocab, ZeroAndRandomInitAndTiedEmbeddings) {
    TempDir d("init");
    const std::string src = random_model(d, "chinese-llama-v1", DType::F16, /*tied=*/true);
    ResizeVocabOptions o;
    o.vocab_path = tok_path("chinese-alpaca-v1");
    o.progress = false;
    o.init = EmbeddingInit::Zero;
    EXPECT_EQ(resize_vocab(src, d / "zero.gguf", o).matrices_resized, 1u);
    o.init = EmbeddingInit::Random;
    o.std = 0.5f;
    resize_vocab(src, d / "random.gguf", o);
    resize_vocab(src, d / "random2.gguf", o);
    auto a = GGUFFile::open(src);
    auto z = GGUFFile::open(d / "zero.gguf");
    auto r = GGUFFile::open(d / "random.gguf");
    EXPECT_EQ(z->find_tensor("output.weight"), nullptr);
    for (float x : check_rows_kept(*a, *z, "token_embd.weight", 49953, 49954)) EXPECT_EQ(x, 0.0f);
    const auto rows = check_rows_kept(*a, *r, "token_embd.weight", 49953, 49954);
    double ss = 0;
    for (float x : rows) ss += static_cast<double>(x) * x;
    EXPECT_GT(std::sqrt(ss / rows.size()), 0.2);  // 32 draws of N(0, 0.5)
    EXPECT_LT(std::sqrt(ss / rows.size()), 0.9);
    EXPECT_TRUE(read_file(d / "random.gguf") == read_file(d / "random2.gguf"));  // seeded
    // the pad token of the Chinese-Alpaca tokenizer is in the metadata
    EXPECT_EQ(load_vocab_gguf(*z).pad_id, 49953);
    EXPECT_EQ(Model::load(d / "zero.gguf")->config().n_vocab, 49954);
}

TEST(ResizeVocab, GoldenTinyV1StillMatchesTransformersAfterAddingPad) {
    // tests/golden/tiny-v1 (Chinese-LLaMA 49953 vocabulary) resized to Chinese-Alpaca's 49954: the
    // logits over the old ids still match the transformers reference and are bit-identical to
    // those of the unresized model.
    TempDir d("golden");
    const fs::path dir = fs::path(CALPACA_GOLDEN_DIR) / "tiny-v1";
    const auto cases = nlohmann::json::parse(read_file((dir / "cases.json").string()));
    ConvertOptions co;
    co.outtype = DType::F32;
    co.vocab_path = tok_path("chinese-llama-v1");
    co.progress = false;
    const std::string src = d / "tiny-v1.gguf", dst = d / "tiny-v1-alpaca.gguf";
    convert_hf_to_gguf(dir.string(), src, co);
    ResizeVocabOptions o;
    o.vocab_path = tok_path("chinese-alpaca-v1");
    o.progress = false;
    resize_vocab(src, dst, o);
    ThreadPool pool(2);
    const size_t V = 49953;
    for (const auto& c : cases["cases"]) {
        const auto ids = c["ids"].get<std::vector<int32_t>>();
        const auto ref = test::read_npy_f32((dir / c["logits"].get<std::string>()).string());
        ASSERT_EQ(ref.shape[1], V);
        const auto la = logits_of(src, ids, &pool, false);
        const auto lb = logits_of(dst, ids, &pool, false);
        for (size_t p = 0; p < ids.size(); ++p) {
            ASSERT_EQ(0, std::memcmp(la.data() + p * V, lb.data() + p * (V + 1), V * sizeof(float)));
            double num = 0, den = 0;
            for (size_t i = 0; i < V; ++i) {
                const double e = static_cast<double>(lb[p * (V + 1) + i]) - ref.data[p * V + i];
                num += e * e;
                den += static_cast<double>(ref.data[p * V + i]) * ref.data[p * V + i];
            }
            EXPECT_LE(std::sqrt(num / den), 1e-4) << c["prompt"].get<std::string>() << " position " << p;
        }
    }
}

TEST(ResizeVocab, BadInputsGiveOneLineErrors) {
    TempDir d("bad");
    const std::string v1 = random_model(d, "chinese-llama-v1", DType::F16, true);
    ResizeVocabOptions o;
    o.progress = false;
    // smaller
    o.vocab_path = tok_path("llama");
    expect_one_line(error_of([&] { resize_vocab(v1, d / "o.gguf", o); }), "fewer than the 49953");
    // larger but not an extension: Chinese-LLaMA-2 has "<pad>" where Chinese-LLaMA v1 has its first Chinese piece
    o.vocab_path = tok_path("chinese-llama-2");
    expect_one_line(error_of([&] { resize_vocab(v1, d / "o.gguf", o); }), "does not extend the vocabulary");
    expect_one_line(error_of([&] { resize_vocab(v1, d / "o.gguf", o); }), "piece 32000");
    // the same
    o.vocab_path = tok_path("chinese-llama-v1");
    expect_one_line(error_of([&] { resize_vocab(v1, d / "o.gguf", o); }), "nothing to resize");
    // not a SentencePiece file
    write_file_atomic(d / "junk.model", "\x01\x02junk");
    o.vocab_path = d / "junk.model";
    expect_one_line(error_of([&] { resize_vocab(v1, d / "o.gguf", o); }), "junk.model");
    // not a GGUF model
    o.vocab_path = tok_path("chinese-alpaca-v1");
    expect_one_line(error_of([&] { resize_vocab(d / "junk.model", d / "o.gguf", o); }), "junk.model");
    // output over the input
    expect_one_line(error_of([&] { resize_vocab(v1, v1, o); }), "different file");
    EXPECT_FALSE(fs::exists(d / "o.gguf"));
    EXPECT_THROW(embedding_init_from_name("ones"), Error);
}

TEST(ResizeVocab, QuantizedEmbeddingsAllowOnlyZeroRows) {
    // A GGUF with a Q8_0 token_embd (all bytes 1) and the LLaMA vocabulary: resize-vocab copies the
    // old blocks and, with --init zero, appends all-zero blocks (0.0 in every ggml block type).
    TempDir d("q8");
    const Vocab llama = load_vocab_spm(tok_path("llama"));
    const std::string src = d / "q8.gguf";
    const size_t rb = row_bytes(DType::Q8_0, 32);
    {
        GGUFWriter w(src);
        w.set("general.architecture", GGUFValue::of_str("llama"));
        write_vocab_gguf(llama, w);
        w.add_tensor("token_embd.weight", DType::Q8_0, {32, 32000});
        w.begin();
        const std::string bytes(rb * 32000, '\x01');
        w.write_tensor_data(bytes.data(), bytes.size());
        w.finish();
    }
    ResizeVocabOptions o;
    o.vocab_path = tok_path("chinese-llama-v1");
    o.progress = false;
    expect_one_line(error_of([&] { resize_vocab(src, d / "o.gguf", o); }), "Q8_0");
    o.init = EmbeddingInit::Zero;
    resize_vocab(src, d / "o.gguf", o);
    auto b = GGUFFile::open(d / "o.gguf");
    const GGUFTensorInfo* t = b->find_tensor("token_embd.weight");
    ASSERT_TRUE(t);
    EXPECT_EQ(t->ne[1], 49953u);
    const uint8_t* p = b->tensor_data(*t);
    for (size_t i = 0; i < rb * 32000; i += 4099) ASSERT_EQ(p[i], 1);
    for (size_t i = rb * 32000; i < rb * 49953; ++i) ASSERT_EQ(p[i], 0);
}

}  // namespace
