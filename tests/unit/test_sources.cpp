// Checkpoint sources: HF dirs in every layout, Meta shards, GGUF, PEFT adapters, and the
// errors for missing shards, bad headers and incomplete adapter configs.
#include <gtest/gtest.h>

#include "../common/test_util.h"
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <functional>

#include "calpaca/base/error.h"
#include "calpaca/base/fileio.h"
#include "calpaca/convert/checkpoint.h"
#include "calpaca/convert/hf_to_gguf.h"
#include "calpaca/convert/lora_delta.h"
#include "calpaca/formats/hf_dir.h"
#include "calpaca/formats/peft_adapter.h"
#include "calpaca/formats/safetensors.h"

namespace fs = std::filesystem;
using namespace calpaca;
using calpaca::test::error_of;

namespace {

const std::string kMerge = std::string(CALPACA_TEST_DATA) + "/merge";

// The message of the Error f throws (fails the test when none is thrown).
std::string expect_error(const std::function<void()>& f) { return error_of(f); }

// A scratch directory that can also copy a fixture folder into itself.
struct TempDir : calpaca::test::TempDir {
    using calpaca::test::TempDir::TempDir;
    fs::path copy_of(const std::string& fixture) const {
        fs::path d = p / fs::path(fixture).filename();
        fs::copy(kMerge + "/" + fixture, d, fs::copy_options::recursive);
        return d;
    }
};

}  // namespace

TEST(Sources, EveryBaseLayoutHoldsTheSameWeights) {
    LlamaCheckpoint ref = open_llama_checkpoint(kMerge + "/base-bin-f32");
    EXPECT_EQ(ref.kind, LlamaCheckpoint::Kind::HF);
    EXPECT_EQ(ref.hp.n_vocab, 512);
    EXPECT_EQ(ref.hp.n_head_kv, 2);
    EXPECT_EQ(ref.tensors.tensors().size(), 21u);
    std::vector<float> scratch;
    for (const char* name : {"base-st-f16", "base-st-bf16-sharded", "base-bin-f16-sharded", "base-meta"}) {
        SCOPED_TRACE(name);
        LlamaCheckpoint ck = open_llama_checkpoint(kMerge + "/" + name);
        EXPECT_EQ(ck.hp.n_embd, 32);
        EXPECT_EQ(ck.hp.n_ff, 88);
        EXPECT_EQ(ck.hp.n_layer, 2);
        EXPECT_EQ(ck.hp.n_head, 4);
        EXPECT_EQ(ck.hp.n_head_kv, 2);
        EXPECT_EQ(ck.hp.n_vocab, 512);
        ASSERT_EQ(ck.tensors.tensors().size(), ref.tensors.tensors().size());
        for (const auto& t : ref.tensors.tensors()) {
            ASSERT_NE(ck.tensors.find(t.name), nullptr) << t.name;
            EXPECT_EQ(ck.tensors.get(t.name).shape, t.shape) << t.name;
            std::vector<float> v = ck.tensors.read_f32(t.name);
            if (ck.layout == QKLayout::Interleaved && (t.name.find("q_proj") != std::string::npos || t.name.find("k_proj") != std::string::npos))
                qk_rows_interleaved_to_hf(v.data(), static_cast<int64_t>(t.shape[0]), static_cast<int64_t>(t.shape[1]), 8, scratch);
            EXPECT_EQ(v, ref.tensors.read_f32(t.name)) << t.name;
        }
    }
    LlamaCheckpoint meta = open_llama_checkpoint(kMerge + "/base-meta");
    EXPECT_EQ(meta.kind, LlamaCheckpoint::Kind::Meta);
    EXPECT_EQ(meta.layout, QKLayout::Interleaved);
    EXPECT_EQ(meta.hp.n_ctx, 2048);  // params.json has none: LLaMA-1's (norm_eps 1e-6)
}

TEST(Sources, ReadRowsOfConcatenatedMetaTensors) {
    // tok_embeddings is split by columns, output by rows across consolidated.00/01
    LlamaCheckpoint meta = open_llama_checkpoint(kMerge + "/base-meta");
    LlamaCheckpoint ref = open_llama_checkpoint(kMerge + "/base-st-f16");
    for (const char* n : {"model.embed_tokens.weight", "lm_head.weight", "model.layers.1.mlp.down_proj.weight"}) {
        std::vector<float> all = ref.tensors.read_f32(n);
        const uint64_t cols = ref.tensors.get(n).row_elements();
        std::vector<float> rows(5 * cols);
        meta.tensors.read_rows_f32(n, 3, 8, rows.data());
        EXPECT_TRUE(std::equal(rows.begin(), rows.end(), all.begin() + 3 * cols)) << n;
    }
}

TEST(Sources, MissingShardsAreNamed) {
    TempDir t("shards");
    fs::path d = t.copy_of("base-bin-f16-sharded");
    fs::remove(d / "pytorch_model-00002-of-00003.bin");
    std::string e = expect_error([&] { open_llama_checkpoint(d.string()); });
    EXPECT_NE(e.find("missing shard pytorch_model-00002-of-00003.bin (listed in pytorch_model.bin.index.json)"), std::string::npos) << e;
    fs::remove(d / "pytorch_model.bin.index.json");  // no index: the -of-00003 names say how many
    e = expect_error([&] { open_llama_checkpoint(d.string()); });
    EXPECT_NE(e.find("missing shard pytorch_model-00002-of-00003.bin"), std::string::npos) << e;

    fs::path m = t.copy_of("base-meta");
    fs::remove(m / "consolidated.00.pth");
    e = expect_error([&] { open_llama_checkpoint(m.string()); });
    EXPECT_NE(e.find("missing shard consolidated.00.pth"), std::string::npos) << e;

    fs::path s = t.copy_of("base-st-bf16-sharded");
    auto j = read_json_file((s / "model.safetensors.index.json").string());
    j["weight_map"]["model.extra.weight"] = "model-00001-of-00003.safetensors";
    write_file_atomic((s / "model.safetensors.index.json").string(), j.dump());
    e = expect_error([&] { open_llama_checkpoint(s.string()); });
    EXPECT_NE(e.find("'model.extra.weight' is listed in model.safetensors.index.json"), std::string::npos) << e;
}

TEST(Sources, BadSafetensorsHeaders) {
    std::string good = read_file(kMerge + "/base-st-f16/model.safetensors");
    uint64_t hl;
    std::memcpy(&hl, good.data(), 8);
    // truncated inside the header
    std::string cut = good.substr(0, 8 + hl / 2);
    std::string e = expect_error([&] { SafeTensorsFile::parse(reinterpret_cast<const uint8_t*>(cut.data()), cut.size(), "cut.safetensors"); });
    EXPECT_NE(e.find("cut.safetensors: header length"), std::string::npos) << e;
    // truncated data
    cut = good.substr(0, good.size() - 10);
    e = expect_error([&] { SafeTensorsFile::parse(reinterpret_cast<const uint8_t*>(cut.data()), cut.size(), "cut.safetensors"); });
    EXPECT_NE(e.find("outside the"), std::string::npos) << e;
    // unknown dtype
    std::string u = good;
    size_t p = u.find("\"F16\"");
    ASSERT_NE(p, std::string::npos);
    u.replace(p, 5, "\"C64\"");
    e = expect_error([&] { SafeTensorsFile::parse(reinterpret_cast<const uint8_t*>(u.data()), u.size(), "u.safetensors"); });
    EXPECT_NE(e.find("unknown dtype \"C64\""), std::string::npos) << e;
}

TEST(Sources, PeftAdapters) {
    PeftAdapter plus = open_peft_adapter(kMerge + "/lora-plus");
    EXPECT_EQ(plus.r, 8);
    EXPECT_EQ(plus.lora_alpha, 32);
    EXPECT_EQ(plus.scaling, 4.0);
    EXPECT_FALSE(plus.fan_in_fan_out);
    EXPECT_EQ(plus.lora_a.size(), 14u);  // 7 projections x 2 layers
    EXPECT_EQ(plus.replace.size(), 2u);
    EXPECT_EQ(plus.replace.at("model.embed_tokens.weight"), "base_model.model.model.embed_tokens.weight");
    EXPECT_EQ(plus.tensors.get(plus.replace.at("lm_head.weight")).shape, (std::vector<uint64_t>{600, 32}));
    EXPECT_FALSE(plus.tokenizer_model.empty());
    PeftAdapter qv = open_peft_adapter(kMerge + "/lora-qv");  // adapter_model.safetensors
    EXPECT_EQ(qv.lora_a.size(), 4u);
    EXPECT_TRUE(qv.replace.empty());
    EXPECT_EQ(qv.scaling, 4.0);

    TempDir t("peft");
    for (const char* field : {"r", "lora_alpha"}) {
        fs::path d = t.p / field;
        fs::copy(kMerge + "/lora-qv", d, fs::copy_options::recursive);
        auto j = read_json_file((d / "adapter_config.json").string());
        j.erase(field);
        write_file_atomic((d / "adapter_config.json").string(), j.dump());
        std::string e = expect_error([&] { open_peft_adapter(d.string()); });
        EXPECT_NE(e.find(std::string("'") + field + "'"), std::string::npos) << e;
        EXPECT_NE(e.find("adapter_config.json"), std::string::npos) << e;
    }
    EXPECT_NE(expect_error([&] { open_peft_adapter(kMerge + "/base-st-f16"); }).find("not a PEFT adapter"), std::string::npos);
}

TEST(Sources, GGUFIsACheckpointToo) {
    TempDir t("ggufsrc");
    const std::string g = (t.p / "m.gguf").string();
    ConvertOptions co;
    co.outtype = DType::F32;
    co.progress = false;
    convert_hf_to_gguf(kMerge + "/base-st-f16", g, co);
    LlamaCheckpoint ck = open_llama_checkpoint(g);
    LlamaCheckpoint ref = open_llama_checkpoint(kMerge + "/base-st-f16");
    EXPECT_EQ(ck.kind, LlamaCheckpoint::Kind::GGUF);
    EXPECT_EQ(ck.layout, QKLayout::Interleaved);
    ASSERT_TRUE(ck.vocab);
    EXPECT_EQ(ck.vocab->size(), 512u);
    std::vector<float> scratch;
    for (const auto& info : ref.tensors.tensors()) {
        std::vector<float> v = ck.tensors.read_f32(info.name);
        if (info.name.find("q_proj") != std::string::npos || info.name.find("k_proj") != std::string::npos)
            qk_rows_interleaved_to_hf(v.data(), static_cast<int64_t>(info.shape[0]), 32, 8, scratch);
        EXPECT_EQ(v, ref.tensors.read_f32(info.name)) << info.name;
    }
}
