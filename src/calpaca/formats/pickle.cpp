#include "calpaca/formats/pickle.h"

#include <cstdio>
#include <cstring>
#include <iterator>
#include <unordered_map>

#include "calpaca/base/error.h"

namespace calpaca {

namespace {

enum class Kind : uint8_t { None, Bool, Int, Float, Str, Bytes, Tuple, List, Dict, Global, Storage, Tensor };

const char* kind_name(Kind k) {
    switch (k) {
        case Kind::None: return "None";
        case Kind::Bool: return "bool";
        case Kind::Int: return "int";
        case Kind::Float: return "float";
        case Kind::Str: return "str";
        case Kind::Bytes: return "bytes";
        case Kind::Tuple: return "tuple";
        case Kind::List: return "list";
        case Kind::Dict: return "dict";
        case Kind::Global: return "global";
        case Kind::Storage: return "storage";
        case Kind::Tensor: return "tensor";
    }
    return "?";
}

enum class Callable : uint8_t { OrderedDict, RebuildTensorV2, RebuildParameter, RebuildParameterWithState, StorageType };

struct StorageKind {
    const char* name;
    bool supported;
    DType type;
    uint32_t size;
};
const StorageKind kStorages[] = {
    {"FloatStorage", true, DType::F32, 4},  {"HalfStorage", true, DType::F16, 2},  {"BFloat16Storage", true, DType::BF16, 2},
    {"DoubleStorage", true, DType::F64, 8}, {"LongStorage", true, DType::I64, 8},  {"IntStorage", true, DType::I32, 4},
    {"ShortStorage", true, DType::I16, 2},  {"CharStorage", true, DType::I8, 1},   {"ByteStorage", false, DType::I8, 1},
    {"BoolStorage", false, DType::I8, 1},
};

struct Node {
    Kind kind = Kind::None;
    Callable callable = Callable::OrderedDict;  // Global
    int64_t i = 0;                              // Int, Bool; Global: storage kind index
    double f = 0;
    std::string s;                              // Str, Bytes
    std::vector<uint32_t> items;                // Tuple, List; Dict: key, value, key, value …
    TorchTensorRef tensor;                      // Storage (type fields) and Tensor
};

class Unpickler {
public:
    Unpickler(const uint8_t* data, size_t size, const std::string& name) : p_(data), end_(data + size), begin_(data), name_(name) {}

    TorchStateDict run();

private:
    [[noreturn]] void bad(const std::string& what) const {
        fail("{}: pickle offset {}: {}", name_, static_cast<size_t>(op_pos_ - begin_), what);
    }
    const uint8_t* take(size_t n) {
        if (static_cast<size_t>(end_ - p_) < n) bad("truncated (needs " + std::to_string(n) + " more bytes)");
        const uint8_t* r = p_;
        p_ += n;
        return r;
    }
    uint64_t le(size_t n) {
        const uint8_t* b = take(n);
        uint64_t v = 0;
        for (size_t k = 0; k < n; ++k) v |= static_cast<uint64_t>(b[k]) << (8 * k);
        return v;
    }
    std::string line() {  // text argument of GLOBAL: up to '\n'
        const uint8_t* nl = static_cast<const uint8_t*>(std::memchr(p_, '\n', static_cast<size_t>(end_ - p_)));
        if (!nl) bad("unterminated text argument");
        std::string s(reinterpret_cast<const char*>(p_), static_cast<size_t>(nl - p_));
        p_ = nl + 1;
        return s;
    }
    uint32_t add(Node n) {
        if (nodes_.size() >= kMaxNodes) bad("too many objects");
        nodes_.push_back(std::move(n));
        return static_cast<uint32_t>(nodes_.size() - 1);
    }
    uint32_t make(Kind k) {
        Node n;
        n.kind = k;
        return add(std::move(n));
    }
    void push(uint32_t v) {
        if (stack_.size() >= kMaxStack) bad("stack too deep");
        stack_.push_back(v);
    }
    uint32_t pop() {
        if (stack_.size() <= mark_floor()) bad("stack underflow");
        uint32_t v = stack_.back();
        stack_.pop_back();
        return v;
    }
    uint32_t top() {
        if (stack_.size() <= mark_floor()) bad("stack underflow");
        return stack_.back();
    }
    size_t mark_floor() const { return marks_.empty() ? 0 : marks_.back(); }
    std::vector<uint32_t> pop_mark() {
        if (marks_.empty()) bad("MARK expected");
        size_t m = marks_.back();
        marks_.pop_back();
        std::vector<uint32_t> items(stack_.begin() + static_cast<std::ptrdiff_t>(m), stack_.end());
        stack_.resize(m);
        return items;
    }
    Node& node(uint32_t i) { return nodes_[i]; }
    Node& expect(uint32_t i, Kind k, const char* what) {
        if (nodes_[i].kind != k) bad(std::string(what) + ": expected " + kind_name(k) + ", found " + kind_name(nodes_[i].kind));
        return nodes_[i];
    }
    void memo_put(uint64_t idx) {
        if (memo_.size() >= kMaxNodes && !memo_.count(idx)) bad("memo too large");
        memo_[idx] = top();
    }
    void memo_get(uint64_t idx) {
        auto it = memo_.find(idx);
        if (it == memo_.end()) bad("memo key " + std::to_string(idx) + " was never stored");
        push(it->second);
    }
    void global(const std::string& module, const std::string& qual);
    void reduce();
    void persistent_id();
    void set_items(uint32_t dict, const std::vector<uint32_t>& kv);
    std::vector<int64_t> int_tuple(uint32_t i, const char* what);

    static constexpr size_t kMaxNodes = 1u << 24, kMaxStack = 1u << 20;
    const uint8_t* p_;
    const uint8_t* end_;
    const uint8_t* begin_;
    const uint8_t* op_pos_ = nullptr;
    const std::string& name_;
    std::vector<Node> nodes_;
    std::vector<uint32_t> stack_;
    std::vector<size_t> marks_;
    std::unordered_map<uint64_t, uint32_t> memo_;
};

void Unpickler::global(const std::string& module, const std::string& qual) {
    Node g;
    g.kind = Kind::Global;
    g.s = module + "." + qual;
    if (module == "collections" && qual == "OrderedDict") {
        g.callable = Callable::OrderedDict;
    } else if (module == "torch._utils" && qual == "_rebuild_tensor_v2") {
        g.callable = Callable::RebuildTensorV2;
    } else if (module == "torch._utils" && qual == "_rebuild_parameter") {
        g.callable = Callable::RebuildParameter;
    } else if (module == "torch._utils" && qual == "_rebuild_parameter_with_state") {
        g.callable = Callable::RebuildParameterWithState;
    } else {
        bool found = false;
        if (module == "torch")
            for (size_t k = 0; k < std::size(kStorages); ++k)
                if (qual == kStorages[k].name) {
                    g.callable = Callable::StorageType;
                    g.i = static_cast<int64_t>(k);
                    found = true;
                }
        if (!found)
            bad("refusing pickle global '" + module + "." + qual +
                "': only PyTorch tensor and state-dict globals are allowed (the file may try to run code)");
    }
    push(add(std::move(g)));
}

std::vector<int64_t> Unpickler::int_tuple(uint32_t i, const char* what) {
    const Node& t = expect(i, Kind::Tuple, what);
    if (t.items.size() > 16) bad(std::string(what) + ": more than 16 dimensions");
    std::vector<int64_t> v;
    for (uint32_t x : t.items) v.push_back(expect(x, Kind::Int, what).i);
    return v;
}

void Unpickler::persistent_id() {
    // ('storage', torch.XStorage, key, location, numel)
    uint32_t pid = pop();
    const Node& t = expect(pid, Kind::Tuple, "persistent id");
    if (t.items.size() != 5) bad("persistent id: expected ('storage', type, key, location, numel)");
    if (nodes_[t.items[0]].kind != Kind::Str || nodes_[t.items[0]].s != "storage") bad("persistent id: first item must be 'storage'");
    const Node& ty = expect(t.items[1], Kind::Global, "persistent id storage type");
    if (ty.callable != Callable::StorageType) bad("persistent id: '" + ty.s + "' is not a storage type");
    const Node& key = expect(t.items[2], Kind::Str, "persistent id key");
    expect(t.items[3], Kind::Str, "persistent id location");
    const Node& numel = expect(t.items[4], Kind::Int, "persistent id numel");
    if (numel.i < 0) bad("persistent id: negative storage size");
    if (key.s.empty() || key.s.size() > 64 || key.s.find('/') != std::string::npos || key.s.find("..") != std::string::npos)
        bad("persistent id: storage key '" + key.s + "' is not a plain name");
    Node s;
    s.kind = Kind::Storage;
    const StorageKind& k = kStorages[ty.i];
    s.tensor.storage_key = key.s;
    s.tensor.storage_type = k.name;
    s.tensor.dtype_supported = k.supported;
    s.tensor.type = k.type;
    s.tensor.elem_size = k.size;
    s.tensor.storage_numel = static_cast<uint64_t>(numel.i);
    push(add(std::move(s)));
}

void Unpickler::reduce() {
    uint32_t args_i = pop();
    uint32_t fn_i = pop();
    const Node& fn = expect(fn_i, Kind::Global, "REDUCE callable");
    const Node& args = expect(args_i, Kind::Tuple, "REDUCE arguments");
    const std::vector<uint32_t> a = args.items;
    switch (fn.callable) {
        case Callable::OrderedDict: {
            if (!a.empty()) bad("OrderedDict(): expected no arguments");
            push(make(Kind::Dict));
            return;
        }
        case Callable::RebuildTensorV2: {
            // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
            if (a.size() != 6 && a.size() != 7) bad("_rebuild_tensor_v2: expected 6 or 7 arguments, found " + std::to_string(a.size()));
            Node t;
            t.kind = Kind::Tensor;
            t.tensor = expect(a[0], Kind::Storage, "_rebuild_tensor_v2 storage").tensor;
            int64_t off = expect(a[1], Kind::Int, "_rebuild_tensor_v2 offset").i;
            if (off < 0) bad("_rebuild_tensor_v2: negative storage offset");
            t.tensor.offset = static_cast<uint64_t>(off);
            std::vector<int64_t> shape = int_tuple(a[2], "_rebuild_tensor_v2 size");
            t.tensor.stride = int_tuple(a[3], "_rebuild_tensor_v2 stride");
            if (shape.size() != t.tensor.stride.size()) bad("_rebuild_tensor_v2: size and stride have different lengths");
            for (size_t k = 0; k < shape.size(); ++k) {
                if (shape[k] < 0 || t.tensor.stride[k] < 0) bad("_rebuild_tensor_v2: negative size or stride");
                t.tensor.shape.push_back(static_cast<uint64_t>(shape[k]));
            }
            push(add(std::move(t)));
            return;
        }
        case Callable::RebuildParameter:
        case Callable::RebuildParameterWithState: {
            size_t want = fn.callable == Callable::RebuildParameter ? 3 : 4;
            if (a.size() != want) bad(fn.s + ": expected " + std::to_string(want) + " arguments");
            expect(a[0], Kind::Tensor, "parameter data");
            push(a[0]);
            return;
        }
        case Callable::StorageType:
            bad("'" + fn.s + "' cannot be called");
    }
}

void Unpickler::set_items(uint32_t dict, const std::vector<uint32_t>& kv) {
    if (kv.size() % 2) bad("SETITEMS: odd number of items");
    Node& d = expect(dict, Kind::Dict, "SETITEM target");
    d.items.insert(d.items.end(), kv.begin(), kv.end());
}

TorchStateDict Unpickler::run() {
    for (;;) {
        op_pos_ = p_;
        uint8_t op = *take(1);
        switch (op) {
            case 0x80: {  // PROTO
                uint64_t v = le(1);
                if (v < 2 || v > 5) bad("unsupported pickle protocol " + std::to_string(v));
                break;
            }
            case 0x95: le(8); break;  // FRAME (length is only a hint)
            case '.': {               // STOP
                if (stack_.size() != 1 || !marks_.empty()) bad("STOP with " + std::to_string(stack_.size()) + " objects on the stack");
                const Node& root = nodes_[stack_[0]];
                if (root.kind != Kind::Dict) bad(std::string("top-level object is a ") + kind_name(root.kind) + ", expected a state dict");
                TorchStateDict out;
                for (size_t k = 0; k + 1 < root.items.size(); k += 2) {
                    const Node& key = nodes_[root.items[k]];
                    const Node& val = nodes_[root.items[k + 1]];
                    if (key.kind != Kind::Str) bad("state dict key is a " + std::string(kind_name(key.kind)) + ", expected str");
                    if (val.kind != Kind::Tensor) {
                        ++out.skipped_non_tensors;
                        continue;
                    }
                    out.tensors.emplace_back(key.s, val.tensor);
                }
                return out;
            }
            case '(': marks_.push_back(stack_.size()); break;  // MARK
            case '0': pop(); break;                            // POP
            case '1': pop_mark(); break;                       // POP_MARK
            case '2': push(top()); break;                      // DUP
            case 'N': push(make(Kind::None)); break;
            case 0x88:
            case 0x89: {  // NEWTRUE / NEWFALSE
                uint32_t b = make(Kind::Bool);
                node(b).i = op == 0x88;
                push(b);
                break;
            }
            case 'J':
            case 'K':
            case 'M': {  // BININT, BININT1, BININT2
                uint32_t v = make(Kind::Int);
                if (op == 'J') node(v).i = static_cast<int32_t>(static_cast<uint32_t>(le(4)));
                else node(v).i = static_cast<int64_t>(le(op == 'K' ? 1 : 2));
                push(v);
                break;
            }
            case 0x8a: {  // LONG1
                uint64_t n = le(1);
                if (n > 8) bad("integer wider than 64 bits");
                uint64_t raw = n ? le(n) : 0;
                int64_t v = static_cast<int64_t>(raw);
                if (n && n < 8 && (raw >> (8 * n - 1)) & 1) v = static_cast<int64_t>(raw | (~uint64_t(0) << (8 * n)));
                uint32_t x = make(Kind::Int);
                node(x).i = v;
                push(x);
                break;
            }
            case 'G': {  // BINFLOAT (big-endian double)
                const uint8_t* b = take(8);
                uint64_t u = 0;
                for (int k = 0; k < 8; ++k) u = (u << 8) | b[k];
                uint32_t x = make(Kind::Float);
                std::memcpy(&node(x).f, &u, 8);
                push(x);
                break;
            }
            case 'X':
            case 0x8c:
            case 0x8d:
            case 'T':
            case 'U':
            case 'B':
            case 'C':
            case 0x8e: {  // BINUNICODE, SHORT_BINUNICODE, BINUNICODE8, BINSTRING, SHORT_BINSTRING, BINBYTES, SHORT_BINBYTES, BINBYTES8
                size_t lenb = (op == 0x8c || op == 'U' || op == 'C') ? 1 : (op == 0x8d || op == 0x8e) ? 8 : 4;
                uint64_t n = le(lenb);
                if (n > static_cast<uint64_t>(end_ - p_)) bad("string of " + std::to_string(n) + " bytes runs past the end");
                const uint8_t* b = take(static_cast<size_t>(n));
                bool is_bytes = op == 'B' || op == 'C' || op == 0x8e;
                uint32_t x = make(is_bytes ? Kind::Bytes : Kind::Str);
                node(x).s.assign(reinterpret_cast<const char*>(b), static_cast<size_t>(n));
                push(x);
                break;
            }
            case ')': push(make(Kind::Tuple)); break;  // EMPTY_TUPLE
            case 't': {                                // TUPLE
                auto items = pop_mark();
                uint32_t x = make(Kind::Tuple);
                node(x).items = std::move(items);
                push(x);
                break;
            }
            case 0x85:
            case 0x86:
            case 0x87: {  // TUPLE1..3
                size_t n = static_cast<size_t>(op - 0x84);
                if (stack_.size() < mark_floor() + n) bad("stack underflow");
                std::vector<uint32_t> items(stack_.end() - static_cast<std::ptrdiff_t>(n), stack_.end());
                stack_.resize(stack_.size() - n);
                uint32_t x = make(Kind::Tuple);
                node(x).items = std::move(items);
                push(x);
                break;
            }
            case ']': push(make(Kind::List)); break;  // EMPTY_LIST
            case 'l': {                               // LIST
                auto items = pop_mark();
                uint32_t x = make(Kind::List);
                node(x).items = std::move(items);
                push(x);
                break;
            }
            case 'a': {  // APPEND
                uint32_t v = pop();
                expect(top(), Kind::List, "APPEND target").items.push_back(v);
                break;
            }
            case 'e': {  // APPENDS
                auto items = pop_mark();
                Node& l = expect(top(), Kind::List, "APPENDS target");
                l.items.insert(l.items.end(), items.begin(), items.end());
                break;
            }
            case '}': push(make(Kind::Dict)); break;  // EMPTY_DICT
            case 'd': {                               // DICT
                auto items = pop_mark();
                uint32_t x = make(Kind::Dict);
                set_items(x, items);
                push(x);
                break;
            }
            case 's': {  // SETITEM
                uint32_t v = pop(), k = pop();
                set_items(top(), {k, v});
                break;
            }
            case 'u': {  // SETITEMS
                auto items = pop_mark();
                set_items(top(), items);
                break;
            }
            case 'q': memo_put(le(1)); break;     // BINPUT
            case 'r': memo_put(le(4)); break;     // LONG_BINPUT
            case 0x94: memo_put(memo_.size()); break;  // MEMOIZE
            case 'h': memo_get(le(1)); break;     // BINGET
            case 'j': memo_get(le(4)); break;     // LONG_BINGET
            case 'c': {                           // GLOBAL "module\nname\n"
                std::string module = line();
                std::string qual = line();
                global(module, qual);
                break;
            }
            case 0x93: {  // STACK_GLOBAL
                uint32_t q = pop(), m = pop();
                std::string qual = expect(q, Kind::Str, "STACK_GLOBAL name").s;
                std::string module = expect(m, Kind::Str, "STACK_GLOBAL module").s;
                global(module, qual);
                break;
            }
            case 'R': reduce(); break;
            case 'Q': persistent_id(); break;  // BINPERSID
            case 'b': {                        // BUILD: only OrderedDict's instance state (state_dict._metadata)
                pop();
                expect(top(), Kind::Dict, "BUILD target");
                break;
            }
            default: {
                char buf[8];
                std::snprintf(buf, sizeof buf, "0x%02x", op);
                bad(std::string("pickle opcode ") + buf + " is not allowed in a PyTorch state dict");
            }
        }
    }
}

}  // namespace

TorchStateDict unpickle_torch_state_dict(const uint8_t* data, size_t size, const std::string& name) {
    Unpickler u(data, size, name);
    return u.run();
}

}  // namespace calpaca
