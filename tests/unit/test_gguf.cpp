#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <random>

#include "calpaca/base/error.h"
#include "calpaca/base/fileio.h"
#include "calpaca/formats/gguf.h"

using namespace calpaca;
namespace fs = std::filesystem;

namespace {

std::string tmp_path(const std::string& name) {
    return (fs::temp_directory_path() / ("calpaca-test-" + std::to_string(::getpid()) + "-" + name)).string();
}

// Writes a file with every metadata value type (incl. nested arrays) and three tensors.
std::string write_sample(std::vector<float>& t0, std::vector<uint16_t>& t1, uint64_t alignment = 32) {
    std::string path = tmp_path("sample-" + std::to_string(alignment) + ".gguf");
    GGUFWriter w(path, alignment);
    GGUFValue v;
    v.type = GGUFType::UINT8; v.u = 200; w.set("k.u8", v);
    v = {}; v.type = GGUFType::INT8; v.i = -100; w.set("k.i8", v);
    v = {}; v.type = GGUFType::UINT16; v.u = 60000; w.set("k.u16", v);
    v = {}; v.type = GGUFType::INT16; v.i = -30000; w.set("k.i16", v);
    w.set("k.u32", GGUFValue::of_u32(4000000000u));
    w.set("k.i32", GGUFValue::of_i32(-2000000000));
    w.set("k.f32", GGUFValue::of_f32(1.5f));
    w.set("k.bool", GGUFValue::of_bool(true));
    w.set("k.str", GGUFValue::of_str("白日依山尽"));
    w.set("k.u64", GGUFValue::of_u64(1ull << 60));
    v = {}; v.type = GGUFType::INT64; v.i = -(1ll << 60); w.set("k.i64", v);
    v = {}; v.type = GGUFType::FLOAT64; v.f = 3.141592653589793; w.set("k.f64", v);
    w.set("k.strs", GGUFValue::of_strs({"a", "", "▁b"}));
    w.set("k.f32s", GGUFValue::of_f32s({1.0f, -2.5f}));
    w.set("k.nested", GGUFValue::of_array(GGUFType::ARRAY, {GGUFValue::of_i32s({1, 2}), GGUFValue::of_i32s({})}));
    w.set("k.empty", GGUFValue::of_array(GGUFType::STRING, {}));
    std::mt19937 rng(42);
    std::normal_distribution<float> nd;
    t0.resize(5 * 3);
    for (auto& x : t0) x = nd(rng);
    t1.resize(7);
    for (auto& x : t1) x = fp32_to_fp16(nd(rng));
    w.add_tensor("t0", DType::F32, {5, 3});
    w.add_tensor("t1", DType::F16, {7});
    w.add_tensor("t2", DType::Q8_0, {64, 2});
    w.begin();
    w.write_tensor_data(t0.data(), 4 * 7);  // streamed in two pieces
    w.write_tensor_data(t0.data() + 7, 4 * 8);
    w.write_tensor_data(t1.data(), t1.size() * 2);
    std::vector<uint8_t> q(2 * 2 * 34, 0x5a);
    w.write_tensor_data(q.data(), q.size());
    w.finish();
    return path;
}

}  // namespace

TEST(GGUF, RoundTripAllValueTypes) {
    for (uint64_t alignment : {32ull, 64ull, 1ull}) {
        std::vector<float> t0;
        std::vector<uint16_t> t1;
        std::string path = write_sample(t0, t1, alignment);
        auto f = GGUFFile::open(path);
        EXPECT_EQ(f->version(), 3u);
        EXPECT_EQ(f->alignment(), alignment);
        EXPECT_EQ(f->get("k.u8").u, 200u);
        EXPECT_EQ(f->get("k.u8").type, GGUFType::UINT8);
        EXPECT_EQ(f->get("k.i8").i, -100);
        EXPECT_EQ(f->get("k.u16").u, 60000u);
        EXPECT_EQ(f->get("k.i16").i, -30000);
        EXPECT_EQ(f->get("k.u32").as_u64("u32"), 4000000000u);
        EXPECT_EQ(f->get("k.i32").as_i64("i32"), -2000000000);
        EXPECT_FLOAT_EQ(static_cast<float>(f->get("k.f32").as_f64("f32")), 1.5f);
        EXPECT_TRUE(f->get("k.bool").as_bool("bool"));
        EXPECT_EQ(f->get("k.str").as_str("str"), "白日依山尽");
        EXPECT_EQ(f->get("k.u64").u, 1ull << 60);
        EXPECT_EQ(f->get("k.i64").i, -(1ll << 60));
        EXPECT_DOUBLE_EQ(f->get("k.f64").f, 3.141592653589793);
        EXPECT_EQ(f->get("k.strs").as_strs("strs"), (std::vector<std::string>{"a", "", "▁b"}));
        EXPECT_EQ(f->get("k.f32s").as_f32s("f32s"), (std::vector<float>{1.0f, -2.5f}));
        const auto& nested = f->get("k.nested");
        ASSERT_EQ(nested.elem_type, GGUFType::ARRAY);
        ASSERT_EQ(nested.items.size(), 2u);
        EXPECT_EQ(nested.items[0].as_i32s("n0"), (std::vector<int32_t>{1, 2}));
        EXPECT_TRUE(nested.items[1].items.empty());
        EXPECT_TRUE(f->get("k.empty").items.empty());
        // key order is preserved
        EXPECT_EQ(f->kv()[alignment == 32 ? 0 : 1].first, "k.u8");

        ASSERT_EQ(f->tensors().size(), 3u);
        const auto* a = f->find_tensor("t0");
        ASSERT_NE(a, nullptr);
        EXPECT_EQ(a->ne, (std::vector<uint64_t>{5, 3}));
        EXPECT_EQ(0, std::memcmp(f->tensor_data(*a), t0.data(), t0.size() * 4));
        const auto* b = f->find_tensor("t1");
        EXPECT_EQ(b->type, DType::F16);
        EXPECT_EQ(0, std::memcmp(f->tensor_data(*b), t1.data(), t1.size() * 2));
        const auto* c = f->find_tensor("t2");
        EXPECT_EQ(c->n_bytes(), 2u * 2 * 34);
        for (const auto& t : f->tensors()) {
            EXPECT_EQ(t.offset % alignment, 0u);
            EXPECT_EQ((f->data_offset() + t.offset) % alignment, 0u);
        }
        fs::remove(path);
    }
}

TEST(GGUF, EveryTruncationIsAnErrorNotACrash) {
    std::vector<float> t0;
    std::vector<uint16_t> t1;
    std::string path = write_sample(t0, t1);
    std::string bytes = read_file(path);
    fs::remove(path);
    for (size_t n = 0; n < bytes.size(); n += (n < 600 ? 1 : 7)) {
        try {
            auto f = GGUFFile::parse(reinterpret_cast<const uint8_t*>(bytes.data()), n, "cut.gguf");
            ADD_FAILURE() << "truncation at " << n << " accepted";
        } catch (const Error& e) {
            EXPECT_NE(std::string(e.what()).find("cut.gguf"), std::string::npos);
        }
    }
}

TEST(GGUF, CorruptFieldsAreNamed) {
    std::vector<float> t0;
    std::vector<uint16_t> t1;
    std::string path = write_sample(t0, t1);
    std::string good = read_file(path);
    fs::remove(path);
    auto expect_error = [&](std::string b, const std::string& needle) {
        try {
            GGUFFile::parse(reinterpret_cast<const uint8_t*>(b.data()), b.size(), "bad.gguf");
            ADD_FAILURE() << "accepted; wanted error containing '" << needle << "'";
        } catch (const Error& e) {
            EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
        }
    };
    std::string b = good;
    b[0] = 'X';
    expect_error(b, "bad magic");
    b = good;
    b[4] = 9;
    expect_error(b, "version 9");
    b = good;
    uint64_t huge = 1ull << 40;
    std::memcpy(&b[16], &huge, 8);  // n_kv
    expect_error(b, "metadata count");
    b = good;
    std::memcpy(&b[8], &huge, 8);  // n_tensors
    expect_error(b, "tensor count");
    // a metadata value type out of range: first key is "k.u8" (8-byte len + 4 bytes), type at 24+12
    b = good;
    uint32_t badtype = 77;
    std::memcpy(&b[24 + 8 + 4], &badtype, 4);
    expect_error(b, "invalid value type 77");
    expect_error(std::string("GG"), "too short");
}

TEST(GGUF, SetReplacesKeyAndTensorDataCountIsChecked) {
    std::string path = tmp_path("short.gguf");
    {
        GGUFWriter w(path);
        w.set("a", GGUFValue::of_u32(1));
        w.set("a", GGUFValue::of_u32(2));
        w.add_tensor("x", DType::F32, {4});
        w.begin();
        float x[2] = {1, 2};
        w.write_tensor_data(x, sizeof x);
        EXPECT_THROW(w.finish(), Error);  // only half the tensor written
    }
    EXPECT_FALSE(fs::exists(path));  // nothing left under the real name
    {
        GGUFWriter w(path);
        w.set("a", GGUFValue::of_u32(1));
        w.set("a", GGUFValue::of_u32(2));
        w.finish();
    }
    auto f = GGUFFile::open(path);
    EXPECT_EQ(f->kv().size(), 1u);
    EXPECT_EQ(f->get("a").u, 2u);
    EXPECT_THROW(f->get("missing"), Error);
    fs::remove(path);
}

TEST(GGUF, ReadsLlamaCppVocabFile) {
    auto f = GGUFFile::open(std::string(CALPACA_TEST_DATA) + "/llama-cpp-vocab/ggml-vocab-llama-spm.gguf");
    EXPECT_EQ(f->get("general.architecture").as_str("arch"), "llama");
    EXPECT_EQ(f->get("tokenizer.ggml.tokens").items.size(), 32000u);
    EXPECT_EQ(f->tensors().size(), 0u);
    EXPECT_EQ(f->kv().size(), 22u);
}
