// `quantize_gguf` end to end: the tensor type policy (llama.cpp's mixes and fallbacks), the
// bytes it writes (= the reference quantizer on the source rows), requantization refusal,
// and golden checks: logits of quantized models against the F32 model they came from —
// the `sharp` golden model (tests/golden, converted from its HF checkpoint to F32 here)
// for the 32-block types, and a small random model with 256-multiple rows for the K-quants.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <map>
#include <random>

#include "calpaca/base/error.h"
#include "calpaca/base/fileio.h"
#include "calpaca/base/threadpool.h"
#include "calpaca/convert/hf_to_gguf.h"
#include "calpaca/convert/quantize.h"
#include "calpaca/formats/gguf.h"
#include "calpaca/model/model.h"
#include "calpaca/model/session.h"
#include "calpaca/tensor/kernels.h"
#include "calpaca/tensor/packed.h"
#include "calpaca/tensor/quant.h"
#include "calpaca/tokenizer/tokenizer.h"

namespace fs = std::filesystem;
using namespace calpaca;

namespace {

fs::path scratch(const std::string& name) {
    fs::path p = fs::temp_directory_path() / ("calpaca-quant-" + name + "-" + std::to_string(::getpid()));
    fs::create_directories(p);
    return p;
}

QuantMix mix_of(const char* name) {
    QuantMix m;
    if (!parse_quant_mix(name, m)) throw Error(std::string("bad mix ") + name);
    return m;
}

// A small llama GGUF with a synthetic 300-piece vocabulary (control, 256 bytes, words),
// 256-multiple rows so that every K-quant applies, F32 weights ~ N(0, std).
void write_small_model(const std::string& path, int64_t E, int64_t L, int64_t H, int64_t HKV, int64_t F, float std,
                       uint32_t seed) {
    Vocab v;
    v.pieces = {"<unk>", "<s>", "</s>"};
    v.types = {TokenType::Unknown, TokenType::Control, TokenType::Control};
    for (int b = 0; b < 256; ++b) {
        v.pieces.push_back(fmt::format("<0x{:02X}>", b));
        v.types.push_back(TokenType::Byte);
    }
    for (int i = 0; v.pieces.size() < 300; ++i) {
        v.pieces.push_back("\xE2\x96\x81w" + std::to_string(i));
        v.types.push_back(TokenType::Normal);
    }
    v.scores.assign(v.pieces.size(), 0.0f);
    const int64_t V = static_cast<int64_t>(v.pieces.size()), KV = E / H * HKV;
    GGUFWriter w(path);
    w.set("general.architecture", GGUFValue::of_str("llama"));
    w.set("general.file_type", GGUFValue::of_u32(0));
    w.set("llama.context_length", GGUFValue::of_u32(256));
    w.set("llama.embedding_length", GGUFValue::of_u32(static_cast<uint32_t>(E)));
    w.set("llama.block_count", GGUFValue::of_u32(static_cast<uint32_t>(L)));
    w.set("llama.feed_forward_length", GGUFValue::of_u32(static_cast<uint32_t>(F)));
    w.set("llama.attention.head_count", GGUFValue::of_u32(static_cast<uint32_t>(H)));
    w.set("llama.attention.head_count_kv", GGUFValue::of_u32(static_cast<uint32_t>(HKV)));
    w.set("llama.rope.dimension_count", GGUFValue::of_u32(static_cast<uint32_t>(E / H)));
    w.set("llama.attention.layer_norm_rms_epsilon", GGUFValue::of_f32(1e-5f));
    w.set("llama.rope.freq_base", GGUFValue::of_f32(10000.0f));
    w.set("llama.vocab_size", GGUFValue::of_u32(static_cast<uint32_t>(V)));
    write_vocab_gguf(v, w);
    std::vector<std::pair<std::string, std::vector<uint64_t>>> ts;
    ts.push_back({"token_embd.weight", {uint64_t(E), uint64_t(V)}});
    for (int64_t l = 0; l < L; ++l) {
        const std::string p = "blk." + std::to_string(l) + ".";
        ts.push_back({p + "attn_norm.weight", {uint64_t(E)}});
        ts.push_back({p + "attn_q.weight", {uint64_t(E), uint64_t(E)}});
        ts.push_back({p + "attn_k.weight", {uint64_t(E), uint64_t(KV)}});
        ts.push_back({p + "attn_v.weight", {uint64_t(E), uint64_t(KV)}});
        ts.push_back({p + "attn_output.weight", {uint64_t(E), uint64_t(E)}});
        ts.push_back({p + "ffn_norm.weight", {uint64_t(E)}});
        ts.push_back({p + "ffn_gate.weight", {uint64_t(E), uint64_t(F)}});
        ts.push_back({p + "ffn_up.weight", {uint64_t(E), uint64_t(F)}});
        ts.push_back({p + "ffn_down.weight", {uint64_t(F), uint64_t(E)}});
    }
    ts.push_back({"output_norm.weight", {uint64_t(E)}});
    ts.push_back({"output.weight", {uint64_t(E), uint64_t(V)}});
    for (const auto& [name, ne] : ts) w.add_tensor(name, DType::F32, ne);
    w.begin();
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.0f, std);
    for (const auto& [name, ne] : ts) {
        size_t n = 1;
        for (auto d : ne) n *= d;
        std::vector<float> buf(n);
        for (auto& x : buf) x = ne.size() == 1 ? 1.0f : nd(rng);
        w.write_tensor_data(buf.data(), n * 4);
    }
    w.finish();
}

std::vector<float> logits_of(const Model& m, const std::vector<int32_t>& ids, ThreadPool* pool) {
    SessionOptions so;
    so.n_ctx = 128;
    so.kv_type = DType::F32;
    Session s(m, so, pool);
    s.eval(ids, true);
    return s.logits();
}
std::vector<float> logits_of(const std::string& path, const std::vector<int32_t>& ids, ThreadPool* pool) {
    return logits_of(*Model::load(path), ids, pool);
}

double rel_l2(const std::vector<float>& a, const std::vector<float>& b) {
    double num = 0, den = 0;
    for (size_t i = 0; i < a.size(); ++i) {
        num += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
        den += static_cast<double>(b[i]) * b[i];
    }
    return std::sqrt(num / den);
}

}  // namespace

// ------------------------------------------------------------------ policy
TEST(QuantizePolicy, MixesFollowLlamaCpp) {
    // use_more_bits for 32 layers: first 4, last 4, and every third from layer 6
    std::vector<int> more;
    for (int i = 0; i < 32; ++i)
        if (use_more_bits(i, 32)) more.push_back(i);
    EXPECT_EQ(more, (std::vector<int>{0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31}));

    const QuantMix km = mix_of("q4_k_m"), q40 = mix_of("Q4_0"), q80 = mix_of("Q8_0"), f16 = mix_of("f16");
    EXPECT_EQ(km.file_type, 15u);
    EXPECT_EQ(mix_of("Q5_K_M").file_type, 17u);
    std::string note;
    EXPECT_EQ(choose_tensor_type(km, "blk.0.attn_v.weight", 4096, 0, 32, false, false, &note), DType::Q6_K);
    EXPECT_EQ(choose_tensor_type(km, "blk.4.attn_v.weight", 4096, 4, 32, false, false, &note), DType::Q4_K);
    EXPECT_EQ(choose_tensor_type(km, "blk.6.ffn_down.weight", 11008, 6, 32, false, false, &note), DType::Q6_K);
    EXPECT_EQ(choose_tensor_type(km, "blk.7.ffn_down.weight", 11008, 7, 32, false, false, &note), DType::Q4_K);
    EXPECT_EQ(choose_tensor_type(km, "blk.0.attn_q.weight", 4096, 0, 0, false, false, &note), DType::Q4_K);
    EXPECT_EQ(choose_tensor_type(mix_of("Q5_K_M"), "blk.31.attn_v.weight", 4096, 31, 32, false, false, &note), DType::Q6_K);
    // head: Q6_K for every quantized type but Q8_0; the tied embedding is the head; --pure keeps the type
    EXPECT_EQ(choose_tensor_type(q40, "output.weight", 4096, 0, 0, false, false, &note), DType::Q6_K);
    EXPECT_EQ(choose_tensor_type(q40, "token_embd.weight", 4096, 0, 0, false, false, &note), DType::Q4_0);
    EXPECT_EQ(choose_tensor_type(q40, "token_embd.weight", 4096, 0, 0, true, false, &note), DType::Q6_K);
    EXPECT_EQ(choose_tensor_type(q80, "output.weight", 4096, 0, 0, false, false, &note), DType::Q8_0);
    EXPECT_EQ(choose_tensor_type(q40, "output.weight", 4096, 0, 0, false, true, &note), DType::Q4_0);
    EXPECT_EQ(choose_tensor_type(f16, "output.weight", 4096, 0, 0, false, false, &note), DType::F16);
    // fallbacks for rows the blocks do not divide
    EXPECT_EQ(choose_tensor_type(mix_of("Q4_K"), "blk.0.attn_q.weight", 96, 0, 0, false, false, &note), DType::Q5_0);
    EXPECT_NE(note.find("96"), std::string::npos);
    EXPECT_EQ(choose_tensor_type(mix_of("Q5_K"), "x.weight", 96, 0, 0, false, false, &note), DType::Q5_1);
    EXPECT_EQ(choose_tensor_type(mix_of("Q6_K"), "x.weight", 96, 0, 0, false, false, &note), DType::Q8_0);
    EXPECT_EQ(choose_tensor_type(mix_of("Q2_K"), "x.weight", 96, 0, 0, false, false, &note), DType::Q4_0);
    EXPECT_EQ(choose_tensor_type(mix_of("Q3_K"), "x.weight", 88, 0, 0, false, false, &note), DType::F16);
    EXPECT_EQ(choose_tensor_type(q40, "x.weight", 88, 0, 0, false, false, &note), DType::F16);
    EXPECT_EQ(choose_tensor_type(q40, "output.weight", 88, 0, 0, false, false, &note), DType::F16);
    EXPECT_EQ(choose_tensor_type(q40, "x.weight", 64, 0, 0, false, false, &note), DType::Q4_0);
    EXPECT_TRUE(note.empty());
    QuantMix bad;
    EXPECT_FALSE(parse_quant_mix("Q4_K_S", bad));
    EXPECT_FALSE(parse_quant_mix("IQ4_NL", bad));
}

// ------------------------------------------------------------------ the tool's output
TEST(QuantizeGguf, WritesReferenceBytesAndLoads) {
    const fs::path dir = scratch("bytes");
    const std::string f32 = (dir / "f32.gguf").string(), q = (dir / "q.gguf").string();
    write_small_model(f32, 256, 2, 4, 2, 512, 0.3f, 5);
    QuantizeOptions opt;
    opt.threads = 2;
    opt.progress = false;
    const auto rep = quantize_gguf(f32, q, mix_of("Q4_K_M"), opt);
    auto src = GGUFFile::open(f32), out = GGUFFile::open(q);
    EXPECT_EQ(out->get("general.file_type").as_u64("ft"), 15u);
    EXPECT_EQ(out->get("general.quantization_version").as_u64("qv"), 2u);
    EXPECT_EQ(out->get("llama.block_count").as_u64("bc"), 2u);  // metadata copied
    EXPECT_EQ(rep.n_tensors, src->tensors().size());
    EXPECT_TRUE(rep.fallbacks.empty());
    ASSERT_EQ(out->tensors().size(), src->tensors().size());
    std::map<std::string, std::string> want_types = {
        {"token_embd.weight", "Q4_K"},      {"output.weight", "Q6_K"},        {"output_norm.weight", "F32"},
        {"blk.0.attn_v.weight", "Q4_K"},    {"blk.1.attn_v.weight", "Q6_K"},  // use_more_bits(1, 2): last eighth
        {"blk.1.ffn_down.weight", "Q6_K"},  {"blk.0.ffn_down.weight", "Q4_K"}, {"blk.0.attn_q.weight", "Q4_K"},
        {"blk.1.attn_norm.weight", "F32"},
    };
    for (const auto& t : out->tensors()) {
        const GGUFTensorInfo* s = src->find_tensor(t.name);
        ASSERT_NE(s, nullptr);
        EXPECT_EQ(t.ne, s->ne);
        if (want_types.count(t.name)) {
            EXPECT_STREQ(dtype_name(t.type), want_types[t.name].c_str()) << t.name;
        }
        // every byte equals the reference quantizer applied to the source rows
        std::vector<uint8_t> want(t.n_bytes());
        if (t.type == DType::F32)
            std::memcpy(want.data(), src->tensor_data(*s), want.size());
        else
            quantize_row_ref(t.type, reinterpret_cast<const float*>(src->tensor_data(*s)), want.data(),
                             static_cast<int64_t>(s->n_elements()));
        ASSERT_EQ(std::memcmp(want.data(), out->tensor_data(t), want.size()), 0) << t.name;
    }
    EXPECT_NEAR(rep.bits_per_weight(), 8.0 * static_cast<double>(rep.bytes_out) / static_cast<double>(rep.n_elements), 1e-9);
    auto m = Model::load(q);
    EXPECT_EQ(m->layers[0].wq.type, DType::Q4_K);
    // the embedding lookup dequantizes the row
    std::vector<float> row(256), want(256);
    m->embed(7, row.data());
    dequantize_row(DType::Q4_K, m->tok_embd.row(7), want.data(), 256);
    EXPECT_EQ(row, want);
    fs::remove_all(dir);
}

TEST(QuantizeGguf, RequantizeIsRefusedUnlessAllowed) {
    const fs::path dir = scratch("requant");
    const std::string f32 = (dir / "f32.gguf").string(), q8 = (dir / "q8.gguf").string(), q4 = (dir / "q4.gguf").string();
    write_small_model(f32, 256, 1, 4, 4, 256, 0.3f, 6);
    QuantizeOptions opt;
    opt.progress = false;
    quantize_gguf(f32, q8, mix_of("Q8_0"), opt);
    try {
        quantize_gguf(q8, q4, mix_of("Q4_0"), opt);
        FAIL() << "requantization was not refused";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("--allow-requantize"), std::string::npos) << e.what();
    }
    EXPECT_FALSE(fs::exists(q4));  // nothing left behind
    opt.allow_requantize = true;
    quantize_gguf(q8, q4, mix_of("Q4_0"), opt);
    auto out = GGUFFile::open(q4);
    EXPECT_EQ(out->find_tensor("blk.0.attn_q.weight")->type, DType::Q4_0);
    EXPECT_EQ(out->find_tensor("output.weight")->type, DType::Q6_K);
    // unknown type names are rejected by the parser; a missing input names the file
    EXPECT_THROW(quantize_gguf((dir / "missing.gguf").string(), q4, mix_of("Q4_0"), opt), Error);
    fs::remove_all(dir);
}

// ------------------------------------------------------------------ golden logits
// K-quants (and every other type) on a random model whose rows are multiples of 256: logits
// of the quantized model vs the F32 model on a 24-token sequence, every matrix of the type
// (--pure). Bounds: relative L2 logit error ‖L_q - L_f32‖ / ‖L_f32‖, about 1.5x the values
// measured when this was written (docs/quantization.md); the error compounds over the ~7
// chained matmuls, each adding weight and 8-bit activation rounding.
TEST(QuantizeGolden, RandomModelLogitsPerType) {
    const fs::path dir = scratch("golden-rand");
    const std::string f32 = (dir / "f32.gguf").string();
    write_small_model(f32, 256, 2, 4, 2, 512, 0.0625f, 7);  // std 1/sqrt(dim): gain ~1 per layer
    ThreadPool pool(2);
    std::vector<int32_t> ids = {1};
    std::mt19937 rng(3);
    for (int i = 0; i < 23; ++i) ids.push_back(3 + static_cast<int32_t>(rng() % 297));
    const auto ref = logits_of(f32, ids, &pool);
    const std::pair<const char*, double> bounds[] = {
        {"Q8_0", 0.04}, {"Q6_K", 0.12}, {"Q5_K", 0.23}, {"Q5_1", 0.24}, {"Q5_0", 0.28}, {"Q4_K", 0.45},
        {"Q4_1", 0.50}, {"Q4_0", 0.55}, {"Q3_K", 0.90}, {"Q2_K", 1.50}, {"F16", 0.002}, {"BF16", 0.015},
    };
    std::map<std::string, double> err;
    QuantizeOptions opt;
    opt.threads = 2;
    opt.progress = false;
    opt.pure = true;
    for (const auto& [name, bound] : bounds) {
        const std::string q = (dir / (std::string(name) + ".gguf")).string();
        quantize_gguf(f32, q, mix_of(name), opt);
        const double e = rel_l2(logits_of(q, ids, &pool), ref);
        std::printf("[ golden ] random 256-dim model %-5s rel logit error %.4f (bound %.3f)\n", name, e, bound);
        err[name] = e;
        EXPECT_LE(e, bound) << name;
        EXPECT_GT(e, 0.0) << name;
        fs::remove(q);
    }
    // more bits, less error
    EXPECT_LT(err["Q8_0"], err["Q6_K"]);
    EXPECT_LT(err["Q6_K"], err["Q5_K"]);
    EXPECT_LT(err["Q5_K"], err["Q4_K"]);
    EXPECT_LT(err["Q4_K"], err["Q3_K"]);
    EXPECT_LT(err["Q3_K"], err["Q2_K"]);
    EXPECT_LT(err["Q5_0"], err["Q4_0"]);
    EXPECT_LT(err["Q5_1"], err["Q4_1"]);
    EXPECT_LT(err["F16"], err["Q8_0"]);
    fs::remove_all(dir);
}

// Model::pack_weights (tensor/packed.h): the packed F16 / Q4_0 / Q8_0 / Q4_K / Q6_K matrices give the
// logits of the row layout up to f32 summation order, for a prompt (prefill tiles) and a decode
// step. (The 8-bit quantization of every matmul's input absorbs most last-bit differences:
// measured 0.) Packing in slices of one group gives the same bits as whole matrices. A wrong
// packed matrix does change the logits: the check at the end swaps one.
TEST(QuantizeGolden, PackedWeightsGiveTheSameLogits) {
    const fs::path dir = scratch("packed");
    const std::string f32 = (dir / "f32.gguf").string();
    write_small_model(f32, 256, 2, 4, 2, 512, 0.0625f, 9);
    ThreadPool pool(2);
    std::vector<int32_t> ids = {1};
    std::mt19937 rng(4);
    for (int i = 0; i < 20; ++i) ids.push_back(3 + static_cast<int32_t>(rng() % 297));
    QuantizeOptions opt;
    opt.threads = 2;
    opt.progress = false;
    opt.pure = true;
    for (const char* name : {"Q4_0", "Q8_0", "Q4_K", "Q6_K", "F16"}) {
        SCOPED_TRACE(name);
        const std::string q = (dir / (std::string(name) + ".gguf")).string();
        quantize_gguf(f32, q, mix_of(name), opt);
        auto plain = Model::load(q);
        auto packed = Model::load(q);
        packed->pack_weights(&pool);
        auto sliced = Model::load(q);
        sliced->pack_weights(&pool, 1);  // one group per slice
        if (packed_kernels_available()) {
            ASSERT_NE(packed->layers[1].w_down.packed, nullptr);
            ASSERT_NE(packed->layers[0].wk.packed, nullptr);
            ASSERT_NE(packed->output.packed, nullptr);  // 300 rows: 37 groups packed, 4 rows in the row layout
        }
        EXPECT_EQ(plain->layers[1].w_down.packed, nullptr);
        for (size_t n : {ids.size(), size_t(1)}) {
            const std::vector<int32_t> prompt(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(n));
            const auto a = logits_of(*plain, prompt, &pool), b = logits_of(*packed, prompt, &pool);
            const double e = rel_l2(b, a);
            std::printf("[ golden ] %s packed vs row layout, %zu tokens: rel logit difference %.2e\n", name, n, e);
            EXPECT_LT(e, 1e-5);
            EXPECT_EQ(logits_of(*sliced, prompt, &pool), b) << "slices changed the packed copy";
        }
        if (packed_kernels_available()) {
            const auto good = logits_of(*packed, ids, &pool);
            packed->layers[1].w_down.packed = packed->layers[1].w_up.packed;  // same shape, wrong weights
            EXPECT_GT(rel_l2(logits_of(*packed, ids, &pool), good), 0.01);
        }
    }
    fs::remove_all(dir);
}

// The `sharp` golden model (HF checkpoint → F32 GGUF by our converter), quantized with the
// default policy; its rows are 32 and 88 long, so the 32-block types apply to the attention
// and gate/up matrices, ffn_down falls back to F16 and the head is Q8_0 (llama.cpp's rule for
// a head whose rows the K blocks do not divide). Compared on the fixture's three prompts.
TEST(QuantizeGolden, SharpModelLogitsPerType) {
    const fs::path golden = fs::path(CALPACA_GOLDEN_DIR) / "sharp";
    const auto cases = nlohmann::json::parse(read_file((golden / "cases.json").string()));
    const fs::path dir = scratch("golden-sharp");
    const std::string f32 = (dir / "f32.gguf").string();
    ConvertOptions co;
    co.outtype = DType::F32;
    co.vocab_path = std::string(CALPACA_TEST_DATA) + "/tokenizers/" + cases["tokenizer"].get<std::string>() + "/tokenizer.model";
    co.progress = false;
    convert_hf_to_gguf(golden.string(), f32, co);
    ThreadPool pool(2);
    std::vector<std::vector<float>> ref;
    {
        auto m = Model::load(f32);
        for (const auto& c : cases["cases"]) ref.push_back(logits_of(*m, c["ids"].get<std::vector<int32_t>>(), &pool));
    }
    const std::pair<const char*, double> bounds[] = {
        {"Q8_0", 0.022}, {"Q5_1", 0.11}, {"Q5_0", 0.12}, {"Q4_1", 0.21}, {"Q4_0", 0.23},
    };
    QuantizeOptions opt;
    opt.threads = 2;
    opt.progress = false;
    for (const auto& [name, bound] : bounds) {
        const std::string q = (dir / (std::string(name) + ".gguf")).string();
        const auto rep = quantize_gguf(f32, q, mix_of(name), opt);
        // the two ffn_down matrices (88 columns) → F16, and (but for Q8_0) the head: Q6_K → Q8_0
        EXPECT_EQ(rep.fallbacks.size(), std::string(name) == "Q8_0" ? 2u : 3u) << name;
        auto out = GGUFFile::open(q);
        EXPECT_EQ(out->find_tensor("blk.0.ffn_down.weight")->type, DType::F16);
        EXPECT_EQ(out->find_tensor("output.weight")->type, DType::Q8_0);
        EXPECT_STREQ(dtype_name(out->find_tensor("blk.1.attn_q.weight")->type), name);
        double worst = 0;
        size_t k = 0;
        auto m = Model::load(q);
        for (const auto& c : cases["cases"])
            worst = std::max(worst, rel_l2(logits_of(*m, c["ids"].get<std::vector<int32_t>>(), &pool), ref[k++]));
        std::printf("[ golden ] sharp %-5s worst rel logit error %.4f (bound %.3f)\n", name, worst, bound);
        EXPECT_LE(worst, bound) << name;
        fs::remove(q);
    }
    fs::remove_all(dir);
}
