#include "calpaca/formats/gguf.h"

#include <cstring>

#include "calpaca/base/error.h"
#include "calpaca/base/fileio.h"

namespace calpaca {

namespace {
constexpr uint32_t kMagic = 0x46554747;  // "GGUF" little-endian
constexpr int kMaxArrayDepth = 8;
constexpr uint32_t kMaxDims = 4;

// Bounds-checked little-endian cursor over the file bytes.
class Cursor {
public:
    Cursor(const uint8_t* d, size_t n) : d_(d), n_(n) {}
    size_t pos() const { return pos_; }
    size_t remaining() const { return n_ - pos_; }
    void need(uint64_t k, const char* what) {
        if (k > remaining())
            fail("truncated file: {} needs {} bytes at offset {}, only {} left", what, k, pos_, remaining());
    }
    template <typename T>
    T read(const char* what) {
        need(sizeof(T), what);
        T v;
        std::memcpy(&v, d_ + pos_, sizeof(T));
        pos_ += sizeof(T);
        return v;
    }
    std::string read_str(const char* what) {
        uint64_t len = read<uint64_t>(what);
        need(len, what);
        std::string s(reinterpret_cast<const char*>(d_ + pos_), len);
        pos_ += len;
        return s;
    }

private:
    const uint8_t* d_;
    size_t n_;
    size_t pos_ = 0;
};

size_t scalar_size(GGUFType t) {
    switch (t) {
        case GGUFType::UINT8: case GGUFType::INT8: case GGUFType::BOOL: return 1;
        case GGUFType::UINT16: case GGUFType::INT16: return 2;
        case GGUFType::UINT32: case GGUFType::INT32: case GGUFType::FLOAT32: return 4;
        case GGUFType::UINT64: case GGUFType::INT64: case GGUFType::FLOAT64: return 8;
        default: return 0;
    }
}

bool valid_type(uint32_t t) { return t <= 12; }

GGUFValue read_value(Cursor& c, GGUFType type, const std::string& key, int depth);

GGUFValue read_scalar(Cursor& c, GGUFType type, const std::string& key) {
    GGUFValue v;
    v.type = type;
    const char* what = "metadata value";
    switch (type) {
        case GGUFType::UINT8: v.u = c.read<uint8_t>(what); break;
        case GGUFType::INT8: v.i = c.read<int8_t>(what); break;
        case GGUFType::UINT16: v.u = c.read<uint16_t>(what); break;
        case GGUFType::INT16: v.i = c.read<int16_t>(what); break;
        case GGUFType::UINT32: v.u = c.read<uint32_t>(what); break;
        case GGUFType::INT32: v.i = c.read<int32_t>(what); break;
        case GGUFType::FLOAT32: v.f = c.read<float>(what); break;
        case GGUFType::UINT64: v.u = c.read<uint64_t>(what); break;
        case GGUFType::INT64: v.i = c.read<int64_t>(what); break;
        case GGUFType::FLOAT64: v.f = c.read<double>(what); break;
        case GGUFType::BOOL: {
            uint8_t b = c.read<uint8_t>(what);
            if (b > 1) fail("metadata key '{}': bool value {} is neither 0 nor 1", key, b);
            v.u = b;
            break;
        }
        case GGUFType::STRING: v.str = c.read_str("metadata string"); break;
        default: fail("metadata key '{}': unexpected value type {}", key, static_cast<uint32_t>(type));
    }
    return v;
}

GGUFValue read_value(Cursor& c, GGUFType type, const std::string& key, int depth) {
    if (type != GGUFType::ARRAY) return read_scalar(c, type, key);
    if (depth >= kMaxArrayDepth) fail("metadata key '{}': arrays nested deeper than {}", key, kMaxArrayDepth);
    uint32_t et = c.read<uint32_t>("array element type");
    if (!valid_type(et)) fail("metadata key '{}': invalid array element type {}", key, et);
    uint64_t n = c.read<uint64_t>("array length");
    GGUFType etype = static_cast<GGUFType>(et);
    // Every element takes at least one byte (strings: 8, arrays: 12), so a count larger
    // than the bytes left is certainly a lie: refuse it before allocating anything.
    uint64_t min_elem = etype == GGUFType::STRING ? 8 : etype == GGUFType::ARRAY ? 12 : scalar_size(etype);
    if (n > c.remaining() / min_elem)
        fail("metadata key '{}': array of {} elements does not fit in the {} bytes left", key, n, c.remaining());
    GGUFValue v;
    v.type = GGUFType::ARRAY;
    v.elem_type = etype;
    v.items.reserve(n);
    for (uint64_t i = 0; i < n; ++i) v.items.push_back(read_value(c, etype, key, depth + 1));
    return v;
}

}  // namespace

const char* gguf_type_name(GGUFType t) {
    static const char* names[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64"};
    uint32_t i = static_cast<uint32_t>(t);
    return i <= 12 ? names[i] : "?";
}

// ---------------------------------------------------------------- GGUFValue
GGUFValue GGUFValue::of_strs(const std::vector<std::string>& v) {
    std::vector<GGUFValue> items;
    items.reserve(v.size());
    for (const auto& s : v) items.push_back(of_str(s));
    return of_array(GGUFType::STRING, std::move(items));
}
GGUFValue GGUFValue::of_f32s(const std::vector<float>& v) {
    std::vector<GGUFValue> items;
    items.reserve(v.size());
    for (float f : v) items.push_back(of_f32(f));
    return of_array(GGUFType::FLOAT32, std::move(items));
}
GGUFValue GGUFValue::of_i32s(const std::vector<int32_t>& v) {
    std::vector<GGUFValue> items;
    items.reserve(v.size());
    for (int32_t x : v) items.push_back(of_i32(x));
    return of_array(GGUFType::INT32, std::move(items));
}

bool GGUFValue::is_integer() const {
    switch (type) {
        case GGUFType::UINT8: case GGUFType::INT8: case GGUFType::UINT16: case GGUFType::INT16:
        case GGUFType::UINT32: case GGUFType::INT32: case GGUFType::UINT64: case GGUFType::INT64: return true;
        default: return false;
    }
}
static bool is_signed(GGUFType t) {
    return t == GGUFType::INT8 || t == GGUFType::INT16 || t == GGUFType::INT32 || t == GGUFType::INT64;
}
bool GGUFValue::is_number() const { return is_integer() || type == GGUFType::FLOAT32 || type == GGUFType::FLOAT64; }

uint64_t GGUFValue::as_u64(const std::string& what) const {
    if (!is_integer()) fail("{}: expected an integer, found {}", what, gguf_type_name(type));
    if (is_signed(type)) {
        if (i < 0) fail("{}: expected a non-negative integer, found {}", what, i);
        return static_cast<uint64_t>(i);
    }
    return u;
}
int64_t GGUFValue::as_i64(const std::string& what) const {
    if (!is_integer()) fail("{}: expected an integer, found {}", what, gguf_type_name(type));
    if (is_signed(type)) return i;
    if (u > static_cast<uint64_t>(INT64_MAX)) fail("{}: integer {} out of range", what, u);
    return static_cast<int64_t>(u);
}
double GGUFValue::as_f64(const std::string& what) const {
    if (type == GGUFType::FLOAT32 || type == GGUFType::FLOAT64) return f;
    if (is_integer()) return is_signed(type) ? static_cast<double>(i) : static_cast<double>(u);
    fail("{}: expected a number, found {}", what, gguf_type_name(type));
}
bool GGUFValue::as_bool(const std::string& what) const {
    if (type != GGUFType::BOOL) fail("{}: expected a bool, found {}", what, gguf_type_name(type));
    return u != 0;
}
const std::string& GGUFValue::as_str(const std::string& what) const {
    if (type != GGUFType::STRING) fail("{}: expected a string, found {}", what, gguf_type_name(type));
    return str;
}
std::vector<std::string> GGUFValue::as_strs(const std::string& what) const {
    if (type != GGUFType::ARRAY || elem_type != GGUFType::STRING)
        fail("{}: expected an array of strings, found {}", what, gguf_type_name(type));
    std::vector<std::string> out;
    out.reserve(items.size());
    for (const auto& x : items) out.push_back(x.str);
    return out;
}
std::vector<float> GGUFValue::as_f32s(const std::string& what) const {
    if (type != GGUFType::ARRAY) fail("{}: expected an array of numbers, found {}", what, gguf_type_name(type));
    std::vector<float> out;
    out.reserve(items.size());
    for (const auto& x : items) out.push_back(static_cast<float>(x.as_f64(what)));
    return out;
}
std::vector<int32_t> GGUFValue::as_i32s(const std::string& what) const {
    if (type != GGUFType::ARRAY) fail("{}: expected an array of integers, found {}", what, gguf_type_name(type));
    std::vector<int32_t> out;
    out.reserve(items.size());
    for (const auto& x : items) {
        int64_t v = x.as_i64(what);
        if (v < INT32_MIN || v > INT32_MAX) fail("{}: value {} does not fit in int32", what, v);
        out.push_back(static_cast<int32_t>(v));
    }
    return out;
}

std::string GGUFValue::to_display(size_t max_items) const {
    switch (type) {
        case GGUFType::STRING: {
            std::string s = str.size() > 60 ? str.substr(0, 60) + "…" : str;
            std::string out = "\"";
            for (char c : s) {
                if (c == '\n') out += "\\n";
                else if (c == '"') out += "\\\"";
                else out += c;
            }
            return out + "\"";
        }
        case GGUFType::BOOL: return u ? "true" : "false";
        case GGUFType::FLOAT32: case GGUFType::FLOAT64: return fmt::format("{}", f);
        case GGUFType::ARRAY: {
            std::string out = fmt::format("{}[{}] [", gguf_type_name(elem_type), items.size());
            for (size_t k = 0; k < items.size() && k < max_items; ++k) out += (k ? ", " : "") + items[k].to_display(max_items);
            if (items.size() > max_items) out += ", …";
            return out + "]";
        }
        default: return is_signed(type) ? fmt::format("{}", i) : fmt::format("{}", u);
    }
}

// ---------------------------------------------------------------- tensor info
uint64_t GGUFTensorInfo::n_elements() const {
    uint64_t n = 1;
    for (uint64_t d : ne) n *= d;
    return n;
}
uint64_t GGUFTensorInfo::n_bytes() const { return row_bytes(type, n_elements()); }

// ---------------------------------------------------------------- reader
std::unique_ptr<GGUFFile> GGUFFile::open(const std::string& path) {
    std::unique_ptr<GGUFFile> f(new GGUFFile());
    f->map_ = MappedFile(path);
    f->name_ = path;
    f->data_ = f->map_.data();
    f->size_ = f->map_.size();
    with_context(path, [&] { f->parse_all(); });
    return f;
}

std::unique_ptr<GGUFFile> GGUFFile::parse(const uint8_t* data, size_t size, const std::string& name) {
    std::unique_ptr<GGUFFile> f(new GGUFFile());
    f->name_ = name;
    f->data_ = data;
    f->size_ = size;
    with_context(name, [&] { f->parse_all(); });
    return f;
}

void GGUFFile::parse_all() {
    Cursor c(data_, size_);
    if (size_ < 4) fail("not a GGUF file: {} bytes is too short for the header", size_);
    uint32_t magic = c.read<uint32_t>("magic");
    if (magic != kMagic) fail("not a GGUF file: bad magic (expected \"GGUF\")");
    version_ = c.read<uint32_t>("version");
    if (version_ != 2 && version_ != 3) fail("unsupported GGUF version {} (expected 3)", version_);
    uint64_t n_tensors = c.read<uint64_t>("tensor count");
    uint64_t n_kv = c.read<uint64_t>("metadata count");
    // each kv takes at least 8 (key length) + 4 (type) + 1 bytes, each tensor info 8+4+4+8
    if (n_kv > c.remaining() / 13) fail("metadata count {} does not fit in the file", n_kv);
    if (n_tensors > c.remaining() / 24) fail("tensor count {} does not fit in the file", n_tensors);

    for (uint64_t k = 0; k < n_kv; ++k) {
        std::string key = c.read_str("metadata key");
        uint32_t t = c.read<uint32_t>("metadata value type");
        if (!valid_type(t)) fail("metadata key '{}': invalid value type {}", key, t);
        GGUFValue v = read_value(c, static_cast<GGUFType>(t), key, 0);
        if (kv_index_.count(key)) fail("duplicate metadata key '{}'", key);
        kv_index_[key] = kv_.size();
        kv_.emplace_back(std::move(key), std::move(v));
    }
    if (const GGUFValue* a = find("general.alignment")) {
        uint64_t al = a->as_u64("general.alignment");
        if (al == 0 || (al & (al - 1)) != 0 || al > (1u << 20))
            fail("general.alignment {} is not a power of two in [1, 2^20]", al);
        alignment_ = al;
    }

    for (uint64_t k = 0; k < n_tensors; ++k) {
        GGUFTensorInfo t;
        t.name = c.read_str("tensor name");
        uint32_t nd = c.read<uint32_t>("tensor dimension count");
        if (nd == 0 || nd > kMaxDims) fail("tensor '{}': {} dimensions (expected 1..{})", t.name, nd, kMaxDims);
        uint64_t n = 1;
        for (uint32_t d = 0; d < nd; ++d) {
            uint64_t ne = c.read<uint64_t>("tensor dimension");
            if (ne == 0) fail("tensor '{}': dimension {} is 0", t.name, d);
            if (ne > (uint64_t(1) << 40) || n > (uint64_t(1) << 62) / ne)
                fail("tensor '{}': dimensions overflow", t.name);
            n *= ne;
            t.ne.push_back(ne);
        }
        uint32_t ty = c.read<uint32_t>("tensor type");
        const DTypeInfo* info = dtype_info(ty);
        if (!info) fail("tensor '{}': unknown tensor type {}", t.name, ty);
        t.type = static_cast<DType>(ty);
        if (t.ne[0] % info->block_size)
            fail("tensor '{}': row length {} is not a multiple of the {} block size {}", t.name, t.ne[0], info->name,
                 info->block_size);
        t.offset = c.read<uint64_t>("tensor offset");
        if (t.offset % alignment_) fail("tensor '{}': offset {} is not aligned to {}", t.name, t.offset, alignment_);
        if (tensor_index_.count(t.name)) fail("duplicate tensor name '{}'", t.name);
        tensor_index_[t.name] = tensors_.size();
        tensors_.push_back(std::move(t));
    }
    uint64_t pos = c.pos();
    data_offset_ = (pos + alignment_ - 1) / alignment_ * alignment_;
    if (!tensors_.empty() && data_offset_ > size_) fail("truncated file: data section starts past the end");
    uint64_t data_size = size_ > data_offset_ ? size_ - data_offset_ : 0;
    for (const auto& t : tensors_) {
        uint64_t nb = t.n_bytes();
        if (t.offset > data_size || nb > data_size - t.offset)
            fail("truncated file: tensor '{}' needs bytes {}..{} of the data section, which has only {}", t.name,
                 t.offset, t.offset + nb, data_size);
    }
}

const GGUFValue* GGUFFile::find(const std::string& key) const {
    auto it = kv_index_.find(key);
    return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

const GGUFValue& GGUFFile::get(const std::string& key) const {
    const GGUFValue* v = find(key);
    if (!v) fail("{}: missing metadata key '{}'", name_, key);
    return *v;
}

const GGUFTensorInfo* GGUFFile::find_tensor(const std::string& name) const {
    auto it = tensor_index_.find(name);
    return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

// ---------------------------------------------------------------- writer
struct GGUFWriter::Impl {
    std::string path;
    uint64_t alignment;
    std::vector<std::pair<std::string, GGUFValue>> kv;
    std::vector<GGUFTensorInfo> tensors;
    std::unique_ptr<AtomicFile> file;
    size_t cur = 0;            // tensor being written
    uint64_t cur_written = 0;  // bytes of it so far
    uint64_t data_start = 0;
    bool begun = false;

    void put(const void* p, size_t n) { file->write(p, n); }
    template <typename T>
    void put_le(T v) { put(&v, sizeof v); }
    void put_str(const std::string& s) {
        put_le<uint64_t>(s.size());
        put(s.data(), s.size());
    }
    void put_value(const GGUFValue& v) {
        switch (v.type) {
            case GGUFType::UINT8: put_le<uint8_t>(static_cast<uint8_t>(v.u)); break;
            case GGUFType::INT8: put_le<int8_t>(static_cast<int8_t>(v.i)); break;
            case GGUFType::UINT16: put_le<uint16_t>(static_cast<uint16_t>(v.u)); break;
            case GGUFType::INT16: put_le<int16_t>(static_cast<int16_t>(v.i)); break;
            case GGUFType::UINT32: put_le<uint32_t>(static_cast<uint32_t>(v.u)); break;
            case GGUFType::INT32: put_le<int32_t>(static_cast<int32_t>(v.i)); break;
            case GGUFType::FLOAT32: put_le<float>(static_cast<float>(v.f)); break;
            case GGUFType::BOOL: put_le<uint8_t>(v.u ? 1 : 0); break;
            case GGUFType::STRING: put_str(v.str); break;
            case GGUFType::UINT64: put_le<uint64_t>(v.u); break;
            case GGUFType::INT64: put_le<int64_t>(v.i); break;
            case GGUFType::FLOAT64: put_le<double>(v.f); break;
            case GGUFType::ARRAY:
                put_le<uint32_t>(static_cast<uint32_t>(v.elem_type));
                put_le<uint64_t>(v.items.size());
                for (const auto& x : v.items) {
                    if (x.type != v.elem_type) fail("{}: array element of type {} in an array of {}", path,
                                                    gguf_type_name(x.type), gguf_type_name(v.elem_type));
                    put_value(x);
                }
                break;
        }
    }
    void pad_to_alignment() {
        static const char zeros[64] = {};
        uint64_t off = file->offset();
        uint64_t pad = (alignment - off % alignment) % alignment;
        while (pad) {
            uint64_t k = pad < sizeof zeros ? pad : sizeof zeros;
            put(zeros, k);
            pad -= k;
        }
    }
};

GGUFWriter::GGUFWriter(std::string path, uint64_t alignment) : impl_(new Impl()) {
    impl_->path = std::move(path);
    impl_->alignment = alignment;
    if (alignment != 32) set("general.alignment", GGUFValue::of_u32(static_cast<uint32_t>(alignment)));
}

GGUFWriter::~GGUFWriter() = default;

void GGUFWriter::set(const std::string& key, GGUFValue v) {
    if (impl_->begun) fail("{}: metadata set after the header was written", impl_->path);
    for (auto& kv : impl_->kv)
        if (kv.first == key) {
            kv.second = std::move(v);
            return;
        }
    impl_->kv.emplace_back(key, std::move(v));
}

void GGUFWriter::add_tensor(const std::string& name, DType type, std::vector<uint64_t> ne) {
    if (impl_->begun) fail("{}: tensor added after the header was written", impl_->path);
    GGUFTensorInfo t;
    t.name = name;
    t.type = type;
    t.ne = std::move(ne);
    uint64_t off = 0;
    if (!impl_->tensors.empty()) {
        const auto& p = impl_->tensors.back();
        off = p.offset + p.n_bytes();
        off = (off + impl_->alignment - 1) / impl_->alignment * impl_->alignment;
    }
    t.offset = off;
    (void)t.n_bytes();  // validates block divisibility
    impl_->tensors.push_back(std::move(t));
}

void GGUFWriter::begin() {
    auto& I = *impl_;
    I.file = std::make_unique<AtomicFile>(I.path);
    I.put_le<uint32_t>(kMagic);
    I.put_le<uint32_t>(3);
    I.put_le<uint64_t>(I.tensors.size());
    I.put_le<uint64_t>(I.kv.size());
    for (const auto& [k, v] : I.kv) {
        I.put_str(k);
        I.put_le<uint32_t>(static_cast<uint32_t>(v.type));
        I.put_value(v);
    }
    for (const auto& t : I.tensors) {
        I.put_str(t.name);
        I.put_le<uint32_t>(static_cast<uint32_t>(t.ne.size()));
        for (uint64_t d : t.ne) I.put_le<uint64_t>(d);
        I.put_le<uint32_t>(static_cast<uint32_t>(t.type));
        I.put_le<uint64_t>(t.offset);
    }
    I.pad_to_alignment();
    I.data_start = I.file->offset();
    I.begun = true;
}

void GGUFWriter::write_tensor_data(const void* data, size_t n) {
    auto& I = *impl_;
    if (!I.begun) fail("{}: tensor data written before begin()", I.path);
    const uint8_t* p = static_cast<const uint8_t*>(data);
    while (n > 0) {
        if (I.cur >= I.tensors.size()) fail("{}: more tensor data written than declared", I.path);
        const auto& t = I.tensors[I.cur];
        if (I.cur_written == 0) I.pad_to_alignment();
        uint64_t left = t.n_bytes() - I.cur_written;
        uint64_t k = n < left ? n : left;
        I.put(p, k);
        p += k;
        n -= k;
        I.cur_written += k;
        if (I.cur_written == t.n_bytes()) {
            ++I.cur;
            I.cur_written = 0;
        }
    }
}

void GGUFWriter::finish() {
    auto& I = *impl_;
    if (!I.begun) begin();
    if (I.cur != I.tensors.size() || I.cur_written != 0)
        fail("{}: only {} of {} tensors were written", I.path, I.cur, I.tensors.size());
    I.file->commit();
}

}  // namespace calpaca
