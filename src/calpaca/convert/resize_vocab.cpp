#include "calpaca/convert/resize_vocab.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>
#include <vector>

#include <fmt/ranges.h>

#include "calpaca/base/error.h"
#include "calpaca/base/progress.h"
#include "calpaca/formats/gguf.h"
#include "calpaca/tensor/dtype.h"
#include "calpaca/tensor/kernels.h"
#include "calpaca/tokenizer/tokenizer.h"

namespace calpaca {

namespace {

bool is_float_type(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

void from_f32_row(DType t, const float* src, uint8_t* dst, size_t n) {
    for (size_t i = 0; i < n; ++i) {
        switch (t) {
            case DType::F32: std::memcpy(dst + 4 * i, &src[i], 4); break;
            case DType::F16: {
                const uint16_t h = fp32_to_fp16(src[i]);
                std::memcpy(dst + 2 * i, &h, 2);
                break;
            }
            case DType::BF16: {
                const uint16_t h = fp32_to_bf16(src[i]);
                std::memcpy(dst + 2 * i, &h, 2);
                break;
            }
            default: fail("internal: from_f32_row on {}", dtype_name(t));
        }
    }
}

const char* init_name(EmbeddingInit i) {
    switch (i) {
        case EmbeddingInit::Mean: return "mean";
        case EmbeddingInit::Zero: return "zero";
        case EmbeddingInit::Random: return "random";
    }
    return "?";
}

// The bytes of the rows [n_old, n_new) of one embedding-shaped matrix.
std::string new_rows(const GGUFFile& f, const GGUFTensorInfo& t, size_t n_new, const ResizeVocabOptions& o,
                     uint64_t stream) {
    const size_t n_embd = t.ne[0], n_old = t.ne[1];
    const size_t rb = row_bytes(t.type, n_embd);
    std::string out((n_new - n_old) * rb, '\0');
    if (o.init == EmbeddingInit::Zero) return out;  // all-zero bytes are 0.0 in every ggml type
    if (!is_float_type(t.type))
        fail("{}: tensor {} is {}: --init {} needs an F32, F16 or BF16 matrix (resize before quantizing, or use "
             "--init zero)",
             f.path(), t.name, dtype_name(t.type), init_name(o.init));
    std::vector<float> row(n_embd);
    if (o.init == EmbeddingInit::Mean) {
        std::vector<double> sum(n_embd, 0.0);
        const uint8_t* base = f.tensor_data(t);
        for (size_t r = 0; r < n_old; ++r) {
            to_f32(t.type, base + r * rb, row.data(), n_embd);
            for (size_t i = 0; i < n_embd; ++i) sum[i] += row[i];
        }
        for (size_t i = 0; i < n_embd; ++i) row[i] = static_cast<float>(sum[i] / static_cast<double>(n_old));
        for (size_t r = n_old; r < n_new; ++r)
            from_f32_row(t.type, row.data(), reinterpret_cast<uint8_t*>(out.data()) + (r - n_old) * rb, n_embd);
        return out;
    }
    std::mt19937_64 rng(o.seed * 1000003ULL + stream);
    std::normal_distribution<float> dist(0.0f, o.std);
    for (size_t r = n_old; r < n_new; ++r) {
        for (auto& x : row) x = dist(rng);
        from_f32_row(t.type, row.data(), reinterpret_cast<uint8_t*>(out.data()) + (r - n_old) * rb, n_embd);
    }
    return out;
}

}  // namespace

EmbeddingInit embedding_init_from_name(const std::string& name) {
    if (name == "mean") return EmbeddingInit::Mean;
    if (name == "zero") return EmbeddingInit::Zero;
    if (name == "random") return EmbeddingInit::Random;
    fail("--init must be mean, zero or random, got '{}'", name);
}

ResizeVocabResult resize_vocab(const std::string& model_path, const std::string& out_path,
                               const ResizeVocabOptions& o) {
    namespace fs = std::filesystem;
    if (o.vocab_path.empty()) fail("resize-vocab: --vocab (the new tokenizer.model) is required");
    if (!(o.std > 0) || !std::isfinite(o.std)) fail("--init-std must be a positive number, got {}", o.std);
    {
        std::error_code ec;
        if (fs::exists(out_path, ec) && fs::equivalent(out_path, model_path, ec))
            fail("{}: the output must be a different file from the input model", out_path);
    }
    auto f = GGUFFile::open(model_path);
    const Vocab old_vocab = load_vocab_gguf(*f);
    Vocab nv = load_vocab_spm(o.vocab_path);
    Tokenizer check(nv);  // the new vocabulary must be one the engine can run

    const size_t n_old = old_vocab.size(), n_new = nv.size();
    if (n_new < n_old)
        fail("{} has {} pieces, fewer than the {} of {}: it does not extend the model's vocabulary", o.vocab_path,
             n_new, n_old, model_path);
    for (size_t i = 0; i < n_old; ++i) {
        if (nv.pieces[i] != old_vocab.pieces[i])
            fail("{} does not extend the vocabulary of {}: piece {} is '{}' there but '{}' in the model", o.vocab_path,
                 model_path, i, sanitize_utf8(nv.pieces[i]), sanitize_utf8(old_vocab.pieces[i]));
        if (nv.types[i] != old_vocab.types[i])
            fail("{} does not extend the vocabulary of {}: piece {} '{}' has type {} there but {} in the model",
                 o.vocab_path, model_path, i, sanitize_utf8(nv.pieces[i]), token_type_name(nv.types[i]),
                 token_type_name(old_vocab.types[i]));
    }
    if (n_new == n_old)
        fail("{} has the same {} pieces as {}: nothing to resize", o.vocab_path, n_old, model_path);

    // The matrices with one row per token.
    std::vector<const GGUFTensorInfo*> resized;
    for (const char* name : {"token_embd.weight", "output.weight"}) {
        const GGUFTensorInfo* t = f->find_tensor(name);
        if (!t) {
            if (std::string(name) == "token_embd.weight") fail("{}: no tensor token_embd.weight", model_path);
            continue;  // tied embeddings: the head reuses token_embd
        }
        if (t->ne.size() != 2 || t->ne[1] != n_old)
            fail("{}: tensor {} has shape [{}], expected [n_embd, {}] (one row per token of its vocabulary)",
                 model_path, name, fmt::join(t->ne, ", "), n_old);
        resized.push_back(t);
    }

    GGUFWriter w(out_path, f->alignment());
    for (const auto& [key, value] : f->kv())
        if (key.rfind("tokenizer.ggml.", 0) != 0) w.set(key, value);
    write_vocab_gguf(nv, w);
    if (f->has("llama.vocab_size")) w.set("llama.vocab_size", GGUFValue::of_u32(static_cast<uint32_t>(n_new)));
    uint64_t total = 0;
    for (const auto& t : f->tensors()) {
        std::vector<uint64_t> ne = t.ne;
        bool grow = false;
        for (const auto* r : resized) grow |= r == &t;
        if (grow) ne[1] = n_new;
        w.add_tensor(t.name, t.type, ne);
        total += t.n_bytes();
    }
    w.begin();
    Progress prog("resize-vocab", total, o.progress);
    uint64_t done = 0;
    uint64_t stream = 0;
    for (const auto& t : f->tensors()) {
        const uint8_t* data = f->tensor_data(t);
        const uint64_t n = t.n_bytes();
        constexpr uint64_t kChunk = 64ull << 20;
        for (uint64_t off = 0; off < n; off += kChunk) {
            const uint64_t len = std::min(kChunk, n - off);
            w.write_tensor_data(data + off, len);
            prog.update(done + off + len, t.name);
        }
        done += n;
        for (const auto* r : resized)
            if (r == &t) {
                const std::string extra = new_rows(*f, t, n_new, o, stream++);
                w.write_tensor_data(extra.data(), extra.size());
            }
    }
    w.finish();
    prog.finish();

    ResizeVocabResult res;
    res.old_vocab = n_old;
    res.new_vocab = n_new;
    res.matrices_resized = resized.size();
    return res;
}

}  // namespace calpaca
