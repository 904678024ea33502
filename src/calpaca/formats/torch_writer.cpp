#include "calpaca/formats/torch_writer.h"

#include <filesystem>

#include "calpaca/base/error.h"
#include "calpaca/base/fileio.h"
#include "calpaca/formats/zip.h"

namespace calpaca {

namespace {

struct Entry {
    std::string name;
    uint64_t header_offset = 0, size = 0;
    uint32_t crc = 0;
};

struct TensorRec {
    std::string name;
    DType type;
    std::vector<uint64_t> shape;
    std::string key;
    uint64_t numel;
};

void le16(std::string& s, uint16_t v) {
    s.push_back(static_cast<char>(v & 0xFF));
    s.push_back(static_cast<char>(v >> 8));
}
void le32(std::string& s, uint32_t v) {
    le16(s, static_cast<uint16_t>(v));
    le16(s, static_cast<uint16_t>(v >> 16));
}
void le64(std::string& s, uint64_t v) {
    le32(s, static_cast<uint32_t>(v));
    le32(s, static_cast<uint32_t>(v >> 32));
}

const char* storage_name(DType t) {
    switch (t) {
        case DType::F32: return "FloatStorage";
        case DType::F16: return "HalfStorage";
        case DType::BF16: return "BFloat16Storage";
        default: fail("PyTorch output supports F32, F16 and BF16 tensors, not {}", dtype_name(t));
    }
}

// pickle protocol 2 helpers
struct Pickler {
    std::string out;
    uint32_t memo = 0;
    void op(char c) { out.push_back(c); }
    void put() {  // BINPUT / LONG_BINPUT
        if (memo < 256) {
            op('q');
            out.push_back(static_cast<char>(memo));
        } else {
            op('r');
            le32(out, memo);
        }
        ++memo;
    }
    void str(const std::string& s) {
        op('X');
        le32(out, static_cast<uint32_t>(s.size()));
        out += s;
        put();
    }
    void integer(uint64_t v) {
        if (v < 256) {
            op('K');
            out.push_back(static_cast<char>(v));
        } else if (v < 65536) {
            op('M');
            le16(out, static_cast<uint16_t>(v));
        } else if (v < 0x80000000ull) {
            op('J');
            le32(out, static_cast<uint32_t>(v));
        } else {  // LONG1, little-endian two's complement, 8 bytes + sign byte
            op('\x8a');
            out.push_back(9);
            le64(out, v);
            out.push_back(0);
        }
    }
    void global(const char* module, const char* name) {
        op('c');
        out += module;
        out += '\n';
        out += name;
        out += '\n';
        put();
    }
    void int_tuple(const std::vector<uint64_t>& v) {
        if (v.empty()) {
            op(')');
            return;
        }
        op('(');
        for (auto x : v) integer(x);
        op('t');
        put();
    }
};

}  // namespace

struct TorchZipWriter::Impl {
    std::string path, stem;
    std::unique_ptr<AtomicFile> file;
    std::vector<Entry> entries;
    std::vector<TensorRec> tensors;
    bool open_entry = false;
    uint64_t expect = 0;
    Entry cur;

    void write_local_header(const std::string& name) {
        cur = Entry{};
        cur.name = name;
        cur.header_offset = file->offset();
        std::string h;
        le32(h, 0x04034b50);
        le16(h, 45);      // version needed: ZIP64
        le16(h, 0x0008);  // sizes and CRC in the data descriptor
        le16(h, 0);       // stored
        le16(h, 0);       // time
        le16(h, 0x21);    // date 1980-01-01
        le32(h, 0);
        le32(h, 0xFFFFFFFFu);
        le32(h, 0xFFFFFFFFu);
        le16(h, static_cast<uint16_t>(name.size()));
        // extra: ZIP64 (sizes follow in the descriptor) + padding so the data is 64-byte aligned
        std::string extra;
        le16(extra, 1);
        le16(extra, 16);
        le64(extra, 0);
        le64(extra, 0);
        uint64_t data_at = cur.header_offset + 30 + name.size() + extra.size() + 4;
        uint64_t pad = (64 - data_at % 64) % 64;
        le16(extra, 0x4246);  // "FB", the padding record torch itself uses
        le16(extra, static_cast<uint16_t>(pad));
        extra.append(pad, 'Z');
        le16(h, static_cast<uint16_t>(extra.size()));
        h += name;
        h += extra;
        file->write(h);
        open_entry = true;
    }
    void data(const void* p, size_t n) {
        cur.crc = crc32_update(cur.crc, p, n);
        cur.size += n;
        file->write(p, n);
    }
    void close_entry() {
        std::string d;
        le32(d, 0x08074b50);
        le32(d, cur.crc);
        le64(d, cur.size);
        le64(d, cur.size);
        file->write(d);
        entries.push_back(cur);
        open_entry = false;
    }
    void whole_entry(const std::string& name, const std::string& bytes) {
        write_local_header(name);
        data(bytes.data(), bytes.size());
        close_entry();
    }
    void finish_tensor() {
        if (!open_entry) return;
        if (cur.size != expect)
            fail("{}: tensor '{}': {} bytes written, {} expected", path, tensors.back().name, cur.size, expect);
        close_entry();
    }
};

TorchZipWriter::TorchZipWriter(std::string path) : impl_(new Impl()) {
    impl_->path = std::move(path);
    impl_->stem = std::filesystem::path(impl_->path).stem().string();
    if (impl_->stem.empty()) impl_->stem = "archive";
    impl_->file = std::make_unique<AtomicFile>(impl_->path);
    impl_->whole_entry(impl_->stem + "/version", "3\n");
}

TorchZipWriter::~TorchZipWriter() = default;

const std::string& TorchZipWriter::path() const { return impl_->path; }

void TorchZipWriter::begin_tensor(const std::string& name, DType type, std::vector<uint64_t> shape) {
    auto& I = *impl_;
    I.finish_tensor();
    storage_name(type);
    uint64_t numel = 1;
    for (auto d : shape) numel *= d;
    std::string key = std::to_string(I.tensors.size());
    I.tensors.push_back({name, type, std::move(shape), key, numel});
    I.expect = numel * dtype_info(type).type_size;
    I.write_local_header(I.stem + "/data/" + key);
}

void TorchZipWriter::write(const void* data, size_t n) {
    auto& I = *impl_;
    if (!I.open_entry || I.cur.size + n > I.expect) fail("{}: more bytes written than the current tensor holds", I.path);
    I.data(data, n);
}

void TorchZipWriter::finish() {
    auto& I = *impl_;
    I.finish_tensor();
    // data.pkl: {name: _rebuild_tensor_v2(storage, 0, shape, stride, False, OrderedDict())}
    Pickler p;
    p.op('\x80');
    p.out.push_back(2);
    p.op('}');
    p.put();
    if (!I.tensors.empty()) p.op('(');
    size_t in_batch = 0;
    for (const auto& t : I.tensors) {
        p.str(t.name);
        p.global("torch._utils", "_rebuild_tensor_v2");
        p.op('(');
        p.op('(');
        p.str("storage");
        p.global("torch", storage_name(t.type));
        p.str(t.key);
        p.str("cpu");
        p.integer(t.numel);
        p.op('t');
        p.put();
        p.op('Q');  // BINPERSID
        p.integer(0);
        p.int_tuple(t.shape);
        std::vector<uint64_t> stride(t.shape.size(), 1);
        for (size_t d = t.shape.size(); d-- > 1;) stride[d - 1] = stride[d] * t.shape[d];
        p.int_tuple(stride);
        p.op('\x89');  // False
        p.global("collections", "OrderedDict");
        p.op(')');
        p.op('R');
        p.put();
        p.op('t');
        p.put();
        p.op('R');
        p.put();
        if (++in_batch == 1000) {  // pickle writes SETITEMS in batches of 1000
            p.op('u');
            p.op('(');
            in_batch = 0;
        }
    }
    if (!I.tensors.empty()) p.op('u');
    p.op('.');
    I.whole_entry(I.stem + "/data.pkl", p.out);
    I.whole_entry(I.stem + "/byteorder", "little");

    // central directory (ZIP64 fields for every entry: simple and valid)
    const uint64_t cd_start = I.file->offset();
    for (const auto& e : I.entries) {
        std::string c;
        le32(c, 0x02014b50);
        le16(c, 45);
        le16(c, 45);
        le16(c, 0x0008);
        le16(c, 0);
        le16(c, 0);
        le16(c, 0x21);
        le32(c, e.crc);
        le32(c, 0xFFFFFFFFu);
        le32(c, 0xFFFFFFFFu);
        le16(c, static_cast<uint16_t>(e.name.size()));
        le16(c, 28);  // extra: ZIP64 with size, compressed size, offset
        le16(c, 0);
        le16(c, 0);
        le16(c, 0);
        le32(c, 0);
        le32(c, 0xFFFFFFFFu);
        c += e.name;
        le16(c, 1);
        le16(c, 24);
        le64(c, e.size);
        le64(c, e.size);
        le64(c, e.header_offset);
        I.file->write(c);
    }
    const uint64_t cd_end = I.file->offset();
    std::string z;
    le32(z, 0x06064b50);  // ZIP64 end of central directory
    le64(z, 44);
    le16(z, 45);
    le16(z, 45);
    le32(z, 0);
    le32(z, 0);
    le64(z, I.entries.size());
    le64(z, I.entries.size());
    le64(z, cd_end - cd_start);
    le64(z, cd_start);
    le32(z, 0x07064b50);  // locator
    le32(z, 0);
    le64(z, cd_end);
    le32(z, 1);
    le32(z, 0x06054b50);  // classic end record, all fields deferred to ZIP64
    le16(z, 0);
    le16(z, 0);
    le16(z, 0xFFFF);
    le16(z, 0xFFFF);
    le32(z, 0xFFFFFFFFu);
    le32(z, 0xFFFFFFFFu);
    le16(z, 0);
    I.file->write(z);
    I.file->commit();
}

}  // namespace calpaca
