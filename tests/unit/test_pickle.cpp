// Restricted unpickler, torch zip reader and writer (formats/pickle.h, zip.h, torch_writer.h).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <random>

#include "calpaca/base/error.h"
#include "calpaca/base/fileio.h"
#include "calpaca/formats/pickle.h"
#include "calpaca/formats/tensor_source.h"
#include "calpaca/formats/torch_writer.h"
#include "calpaca/formats/zip.h"

namespace fs = std::filesystem;
using namespace calpaca;

namespace {

const std::string kMerge = std::string(CALPACA_TEST_DATA) + "/merge";

std::string expect_error(const std::function<void()>& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    }
    ADD_FAILURE() << "expected an Error";
    return "";
}

// A tiny pickle builder for hand-made state dicts.
struct P {
    std::string s = std::string("\x80\x02", 2);
    P& op(const std::string& x) { s += x; return *this; }
    P& str(const std::string& x) {
        s += 'X';
        uint32_t n = static_cast<uint32_t>(x.size());
        s.append(reinterpret_cast<const char*>(&n), 4);
        s += x;
        return *this;
    }
    P& i1(uint8_t v) { s += 'K'; s += static_cast<char>(v); return *this; }
    P& global(const std::string& m, const std::string& n) { s += 'c' + m + '\n' + n + '\n'; return *this; }
    // {name: _rebuild_tensor_v2(('storage', torch.FloatStorage, key, 'cpu', numel), off, shape, stride, False, OrderedDict())}
    P& tensor(const std::string& key, uint8_t numel, uint8_t off, std::vector<uint8_t> shape, std::vector<uint8_t> stride,
              const char* storage = "FloatStorage") {
        global("torch._utils", "_rebuild_tensor_v2").op("((").str("storage").global("torch", storage).str(key).str("cpu").i1(numel).op("tQ");
        i1(off).op("(");
        for (auto d : shape) i1(d);
        op("t(");
        for (auto d : stride) i1(d);
        op("t\x89").global("collections", "OrderedDict").op(")Rt").op("R");
        return *this;
    }
};

// Puts `pkl` and raw storages into a torch-style zip (stored entries).
std::string make_zip(const std::string& pkl, const std::vector<std::pair<std::string, std::string>>& storages) {
    std::string out, cd;
    uint16_t n = 0;
    auto u16 = [](std::string& s, uint16_t v) { s.append(reinterpret_cast<const char*>(&v), 2); };
    auto u32 = [](std::string& s, uint32_t v) { s.append(reinterpret_cast<const char*>(&v), 4); };
    auto add = [&](const std::string& name, const std::string& data) {
        uint32_t off = static_cast<uint32_t>(out.size()), crc = crc32_update(0, data.data(), data.size());
        u32(out, 0x04034b50); u16(out, 20); u16(out, 0); u16(out, 0); u16(out, 0); u16(out, 0);
        u32(out, crc); u32(out, static_cast<uint32_t>(data.size())); u32(out, static_cast<uint32_t>(data.size()));
        u16(out, static_cast<uint16_t>(name.size())); u16(out, 0);
        out += name + data;
        u32(cd, 0x02014b50); u16(cd, 20); u16(cd, 20); u16(cd, 0); u16(cd, 0); u16(cd, 0); u16(cd, 0);
        u32(cd, crc); u32(cd, static_cast<uint32_t>(data.size())); u32(cd, static_cast<uint32_t>(data.size()));
        u16(cd, static_cast<uint16_t>(name.size())); u16(cd, 0); u16(cd, 0); u16(cd, 0); u16(cd, 0); u32(cd, 0); u32(cd, off);
        cd += name;
        ++n;
    };
    add("archive/data.pkl", pkl);
    for (const auto& [k, v] : storages) add("archive/data/" + k, v);
    uint32_t cd_off = static_cast<uint32_t>(out.size());
    out += cd;
    u32(out, 0x06054b50); u16(out, 0); u16(out, 0); u16(out, n); u16(out, n);
    u32(out, static_cast<uint32_t>(cd.size())); u32(out, cd_off); u16(out, 0);
    return out;
}

std::string floats(std::vector<float> v) { return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4); }

}  // namespace

TEST(Zip, Crc32KnownValue) {
    EXPECT_EQ(crc32_update(0, "123456789", 9), 0xCBF43926u);
    std::string big(1000, 'x');
    uint32_t whole = crc32_update(0, big.data(), big.size());
    uint32_t parts = crc32_update(crc32_update(0, big.data(), 333), big.data() + 333, 667);
    EXPECT_EQ(whole, parts);
}

TEST(Pickle, ReadsTorchSaveOutput) {
    // written by transformers' save_pretrained (torch.save) in make_merge_fixtures.py
    TensorSource bin = TensorSource::open_file(kMerge + "/base-bin-f32/pytorch_model.bin");
    TensorSource st = TensorSource::open_file(kMerge + "/base-st-f16/model.safetensors");
    ASSERT_EQ(bin.tensors().size(), st.tensors().size());
    for (const auto& t : st.tensors()) {
        const TensorInfo* b = bin.find(t.name);
        ASSERT_NE(b, nullptr) << t.name;
        EXPECT_EQ(b->type, DType::F32);
        EXPECT_EQ(b->shape, t.shape);
        EXPECT_EQ(bin.read_f32(t.name), st.read_f32(t.name)) << t.name;  // the fixture's values are exact in f16
    }
}

TEST(Pickle, StridedAndOffsetViewsOfOneStorage) {
    // storage [0..11]; a = 2x3 at offset 0; b = its transpose (3x2, stride (1,3)); c = 2x2 at offset 6, stride (3, 1)
    P p;
    p.op("}(").str("a").tensor("0", 12, 0, {2, 3}, {3, 1}).str("b").tensor("0", 12, 0, {3, 2}, {1, 3});
    p.str("c").tensor("0", 12, 6, {2, 2}, {3, 1}).op("u.");
    std::vector<float> v(12);
    for (int i = 0; i < 12; ++i) v[i] = static_cast<float>(i);
    std::string zip = make_zip(p.s, {{"0", floats(v)}});
    TensorSource s = parse_torch_buffer(reinterpret_cast<const uint8_t*>(zip.data()), zip.size(), "strided.bin");
    EXPECT_EQ(s.read_f32("a"), (std::vector<float>{0, 1, 2, 3, 4, 5}));
    EXPECT_EQ(s.read_f32("b"), (std::vector<float>{0, 3, 1, 4, 2, 5}));
    EXPECT_EQ(s.read_f32("c"), (std::vector<float>{6, 7, 9, 10}));
    std::vector<float> rows(2);
    s.read_rows_f32("b", 2, 3, rows.data());
    EXPECT_EQ(rows, (std::vector<float>{2, 5}));
}

TEST(Pickle, RefusesForeignGlobalsWithoutRunningThem) {
    const std::string marker = "/tmp/calpaca-evil-pickle-ran";
    fs::remove(marker);
    std::string e = expect_error([&] { TensorSource::open_file(kMerge + "/bad/evil.bin"); });
    EXPECT_NE(e.find("refusing pickle global 'posix.system'"), std::string::npos) << e;
    EXPECT_NE(e.find("evil.bin"), std::string::npos) << e;
    EXPECT_FALSE(fs::exists(marker));
    // the same through STACK_GLOBAL and other names
    for (const auto& [m, n] : std::vector<std::pair<std::string, std::string>>{{"builtins", "eval"}, {"torch", "load"},
                                                                                {"torch._utils", "_rebuild_qtensor"}}) {
        P p;
        p.str(m).str(n).op("\x93").op(".");
        e = expect_error([&] { unpickle_torch_state_dict(reinterpret_cast<const uint8_t*>(p.s.data()), p.s.size(), "x.pkl"); });
        EXPECT_NE(e.find("refusing pickle global '" + m + "." + n + "'"), std::string::npos) << e;
    }
}

TEST(Pickle, MalformedPicklesAreErrors) {
    auto bad = [](const std::string& s) {
        return expect_error([&] { unpickle_torch_state_dict(reinterpret_cast<const uint8_t*>(s.data()), s.size(), "bad.pkl"); });
    };
    EXPECT_NE(bad(std::string("\x80\x02}", 3)).find("truncated"), std::string::npos);
    EXPECT_NE(bad(std::string("\x80\x02h\x05.", 5)).find("memo key 5"), std::string::npos);
    EXPECT_NE(bad(std::string("\x80\x02\x81.", 4)).find("opcode 0x81"), std::string::npos);      // NEWOBJ
    EXPECT_NE(bad(std::string("\x80\x02].", 4)).find("expected a state dict"), std::string::npos);
    EXPECT_NE(bad(std::string("\x80\x02s.", 4)).find("underflow"), std::string::npos);
    EXPECT_NE(bad(std::string("\x80\x02" "ccollections\nOrderedDict\n(K\x01tR.")).find("no arguments"), std::string::npos);
    // storage too small for the view
    P p;
    p.op("}(").str("a").tensor("0", 4, 2, {2, 2}, {2, 1}).op("u.");
    std::string zip = make_zip(p.s, {{"0", floats({1, 2, 3, 4})}});
    std::string e = expect_error([&] { parse_torch_buffer(reinterpret_cast<const uint8_t*>(zip.data()), zip.size(), "small.bin"); });
    EXPECT_NE(e.find("reaches element 5 of a 4-element storage"), std::string::npos) << e;
    // storage entry missing / shorter than declared
    zip = make_zip(p.s, {});
    EXPECT_NE(expect_error([&] { parse_torch_buffer(reinterpret_cast<const uint8_t*>(zip.data()), zip.size(), "m.bin"); })
                  .find("storage entry 'archive/data/0' is missing"),
              std::string::npos);
    // unsupported storage types are named
    P q;
    q.op("}(").str("a").tensor("0", 4, 0, {4}, {1}, "ByteStorage").op("u.");
    zip = make_zip(q.s, {{"0", "abcd"}});
    EXPECT_NE(expect_error([&] { parse_torch_buffer(reinterpret_cast<const uint8_t*>(zip.data()), zip.size(), "u8.bin"); })
                  .find("ByteStorage"),
              std::string::npos);
}

TEST(Zip, CompressedAndTruncatedArchivesAreErrors) {
    std::string e = expect_error([&] { TensorSource::open_file(kMerge + "/bad/compressed.bin").read_f32("lm_head.weight"); });
    EXPECT_NE(e.find("is compressed (zip method 8)"), std::string::npos) << e;
    std::string good = read_file(kMerge + "/base-bin-f32/pytorch_model.bin");
    for (size_t cut : {size_t(0), size_t(21), good.size() / 2, good.size() - 1}) {
        std::string t = good.substr(0, cut);
        EXPECT_THROW(parse_torch_buffer(reinterpret_cast<const uint8_t*>(t.data()), t.size(), "cut.bin"), Error) << cut;
    }
    // every truncation point of a small hand-made archive: an Error, never a crash
    P p;
    p.op("}(").str("a").tensor("0", 4, 0, {4}, {1}).op("u.");
    std::string zip = make_zip(p.s, {{"0", floats({1, 2, 3, 4})}});
    for (size_t cut = 0; cut < zip.size(); ++cut) {
        std::string t = zip.substr(0, cut);
        EXPECT_THROW(parse_torch_buffer(reinterpret_cast<const uint8_t*>(t.data()), t.size(), "cut.bin"), Error) << cut;
    }
}

TEST(TorchWriter, RoundTripsThroughOurReader) {
    const std::string path = (fs::temp_directory_path() / ("calpaca-tw-" + std::to_string(::getpid()) + ".pth")).string();
    std::mt19937 rng(3);
    std::normal_distribution<float> nd;
    std::vector<float> a(7 * 5), b(300);
    for (auto& x : a) x = nd(rng);
    for (auto& x : b) x = nd(rng);
    {
        TorchZipWriter w(path);
        w.begin_tensor("layers.0.attention.wq.weight", DType::F32, {7, 5});
        w.write(a.data(), 4 * 20);  // in two pieces
        w.write(a.data() + 20, 4 * 15);
        std::vector<uint16_t> h(b.size());
        for (size_t i = 0; i < b.size(); ++i) h[i] = fp32_to_fp16(b[i]);
        w.begin_tensor("norm.weight", DType::F16, {300});
        w.write(h.data(), h.size() * 2);
        w.finish();
    }
    TensorSource s = TensorSource::open_file(path);
    EXPECT_EQ(s.read_f32("layers.0.attention.wq.weight"), a);
    std::vector<float> nb = s.read_f32("norm.weight");
    for (size_t i = 0; i < b.size(); ++i) EXPECT_EQ(nb[i], fp16_to_fp32(fp32_to_fp16(b[i])));
    EXPECT_EQ(s.get("norm.weight").type, DType::F16);
    // every stored entry's CRC is right and its data 64-byte aligned
    std::string bytes = read_file(path);
    ZipReader z(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), path);
    for (const auto& e : z.entries()) {
        EXPECT_EQ(crc32_update(0, z.data(e), e.size), e.crc32) << e.name;
        if (e.name.find("/data/") != std::string::npos) {
            EXPECT_EQ(e.data_offset % 64, 0u) << e.name;
        }
    }
    fs::remove(path);
    // a writer destroyed before finish() leaves nothing behind
    {
        TorchZipWriter w(path);
        w.begin_tensor("x", DType::F32, {2});
        EXPECT_THROW(w.finish(), Error);  // 0 of 8 bytes
    }
    EXPECT_FALSE(fs::exists(path));
}
