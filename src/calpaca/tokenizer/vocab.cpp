// Vocab loading and saving: SentencePiece ModelProto files and GGUF tokenizer metadata.
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "calpaca/base/error.h"
#include "calpaca/base/fileio.h"
#include "calpaca/formats/gguf.h"
#include "calpaca/tokenizer/spm_model.h"
#include "calpaca/tokenizer/tokenizer.h"

namespace calpaca {

const char* token_type_name(TokenType t) {
    switch (t) {
        case TokenType::Normal: return "NORMAL";
        case TokenType::Unknown: return "UNKNOWN";
        case TokenType::Control: return "CONTROL";
        case TokenType::UserDefined: return "USER_DEFINED";
        case TokenType::Unused: return "UNUSED";
        case TokenType::Byte: return "BYTE";
    }
    return "?";
}

// ---------------------------------------------------------------------------------------
// ModelProto files

spm::ModelProto parse_model_proto(std::string_view bytes, const std::string& name) {
    spm::ModelProto m;
    if (bytes.size() > static_cast<size_t>(std::numeric_limits<int>::max()))
        fail("{}: file too large for a SentencePiece model ({} bytes)", name, bytes.size());
    if (!m.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())))
        fail("{}: not a SentencePiece model (protobuf parse failed, {} bytes)", name, bytes.size());
    // Random bytes occasionally parse as *some* protobuf; a real model has pieces.
    if (m.pieces_size() == 0)
        fail("{}: not a SentencePiece model (no pieces in the ModelProto, {} bytes)", name, bytes.size());
    return m;
}

spm::ModelProto load_model_proto(const std::string& path) {
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) fail("{}: tokenizer model not found", path);
    if (std::filesystem::is_directory(path, ec))
        fail("{}: is a directory (expected a tokenizer.model file)", path);
    return parse_model_proto(read_file(path), path);
}

std::string serialize_model_proto(const spm::ModelProto& m) {
    std::string out;
    if (!m.SerializeToString(&out)) fail("cannot serialize SentencePiece model (missing required fields?)");
    return out;
}

void save_model_proto(const spm::ModelProto& m, const std::string& path) {
    write_file_atomic(path, serialize_model_proto(m));
}

namespace {

// HF companions of tokenizer.model: special_tokens_map.json (pad token) and
// tokenizer_config.json (add_bos_token / add_eos_token). Absent files change nothing.
std::string json_token_string(const nlohmann::json& j) {
    if (j.is_string()) return j.get<std::string>();
    if (j.is_object() && j.contains("content") && j["content"].is_string()) return j["content"].get<std::string>();
    return {};
}

bool read_json_file(const std::filesystem::path& p, nlohmann::json& out) {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(p, ec)) return false;
    try {
        out = nlohmann::json::parse(read_file(p.string()));
    } catch (const nlohmann::json::exception& e) {
        fail("{}: invalid JSON: {}", p.string(), e.what());
    }
    return true;
}

}  // namespace

Vocab vocab_from_model_proto(const spm::ModelProto& m, const std::string& name) {
    const auto& ts = m.trainer_spec();
    const auto& ns = m.normalizer_spec();
    if (ts.model_type() != spm::TrainerSpec::BPE)
        fail("{}: SentencePiece model_type {} is not supported (only BPE, as in LLaMA tokenizers)", name,
             spm::TrainerSpec::ModelType_Name(ts.model_type()));
    if (!ns.precompiled_charsmap().empty())
        fail("{}: normalizer '{}' is not supported (only the identity normalizer of LLaMA tokenizers)", name,
             ns.name());
    if (!ns.normalization_rule_tsv().empty())
        fail("{}: custom normalization rules are not supported (only the identity normalizer)", name);
    if (ts.treat_whitespace_as_suffix()) fail("{}: treat_whitespace_as_suffix is not supported", name);
    if (!ns.escape_whitespaces()) fail("{}: escape_whitespaces=false is not supported", name);

    Vocab v;
    v.source = name;
    const int n = m.pieces_size();
    v.pieces.reserve(n);
    v.scores.reserve(n);
    v.types.reserve(n);
    for (int i = 0; i < n; ++i) {
        const auto& p = m.pieces(i);
        v.pieces.push_back(p.piece());
        v.scores.push_back(p.score());
        v.types.push_back(static_cast<TokenType>(p.type()));
    }
    // sentencepiece takes the UNKNOWN-typed piece as unk, and bos/eos/pad by piece string.
    v.unk_id = -1;
    for (int i = 0; i < n; ++i)
        if (v.types[i] == TokenType::Unknown) {
            if (v.unk_id >= 0) fail("{}: more than one UNKNOWN piece (ids {} and {})", name, v.unk_id, i);
            v.unk_id = i;
        }
    if (v.unk_id < 0) fail("{}: no UNKNOWN piece (sentencepiece requires one)", name);
    auto find_piece = [&](const std::string& s) -> int32_t {
        for (int i = 0; i < n; ++i)
            if (v.pieces[i] == s) return i;
        return -1;
    };
    v.bos_id = ts.bos_id() >= 0 && ts.bos_id() < n ? ts.bos_id() : find_piece(ts.bos_piece());
    v.eos_id = ts.eos_id() >= 0 && ts.eos_id() < n ? ts.eos_id() : find_piece(ts.eos_piece());
    v.pad_id = ts.pad_id() >= 0 && ts.pad_id() < n ? ts.pad_id() : -1;
    v.byte_fallback = ts.byte_fallback();
    v.add_dummy_prefix = ns.add_dummy_prefix();
    v.remove_extra_whitespaces = ns.remove_extra_whitespaces();
    v.unk_surface = ts.unk_surface();
    v.add_bos = true;
    v.add_eos = false;
    return v;
}

size_t merge_model_protos(spm::ModelProto& base, const spm::ModelProto& extra) {
    std::unordered_map<std::string, int> have;
    have.reserve(base.pieces_size() * 2);
    for (int i = 0; i < base.pieces_size(); ++i) have.emplace(base.pieces(i).piece(), i);
    size_t added = 0;
    for (const auto& p : extra.pieces()) {
        // As in merge_tokenizers.py the set is not updated inside the loop; a duplicate inside
        // `extra` would be appended twice (sentencepiece models have none).
        if (have.count(p.piece())) continue;
        auto* np = base.add_pieces();
        np->set_piece(p.piece());
        np->set_score(0.0f);
        ++added;
    }
    return added;
}

void append_piece(spm::ModelProto& m, const std::string& piece, float score) {
    for (const auto& p : m.pieces())
        if (p.piece() == piece) fail("piece '{}' is already in the tokenizer", piece);
    auto* np = m.add_pieces();
    np->set_piece(piece);
    np->set_score(score);
}

Vocab parse_vocab_spm(std::string_view bytes, const std::string& name) {
    return vocab_from_model_proto(parse_model_proto(bytes, name), name);
}

Vocab load_vocab_spm(const std::string& path) {
    Vocab v = vocab_from_model_proto(load_model_proto(path), path);
    const std::filesystem::path dir = std::filesystem::path(path).parent_path();
    auto id_of = [&](const std::string& s) -> int32_t {
        for (size_t i = 0; i < v.pieces.size(); ++i)
            if (v.pieces[i] == s) return static_cast<int32_t>(i);
        return -1;
    };
    nlohmann::json j;
    bool pad_from_json = false;
    if (v.pad_id < 0 && read_json_file(dir / "special_tokens_map.json", j) && j.is_object() &&
        j.contains("pad_token")) {
        const std::string pad = json_token_string(j["pad_token"]);
        if (!pad.empty()) {
            v.pad_id = id_of(pad);
            pad_from_json = v.pad_id >= 0;
        }
    }
    if (v.pad_id < 0 && !pad_from_json) {
        // Chinese-LLaMA-2 has "<pad>" (id 32000), Chinese-Alpaca v1 "[PAD]" (id 49953), both
        // declared as pad in their HF special_tokens_map.json.
        v.pad_id = id_of("<pad>");
        if (v.pad_id < 0) v.pad_id = id_of("[PAD]");
    }
    if (read_json_file(dir / "tokenizer_config.json", j) && j.is_object()) {
        if (j.contains("add_bos_token") && j["add_bos_token"].is_boolean()) v.add_bos = j["add_bos_token"].get<bool>();
        if (j.contains("add_eos_token") && j["add_eos_token"].is_boolean()) v.add_eos = j["add_eos_token"].get<bool>();
    }
    return v;
}

// ---------------------------------------------------------------------------------------
// GGUF (llama.cpp's tokenizer.ggml.* keys)

Vocab load_vocab_gguf(const GGUFFile& f) {
    const std::string& name = f.path();
    return with_context(name, [&]() {
        Vocab v;
        v.source = name;
        const GGUFValue* model = f.find("tokenizer.ggml.model");
        if (!model) fail("no tokenizer in this file (missing metadata key tokenizer.ggml.model)");
        const std::string& kind = model->as_str("tokenizer.ggml.model");
        if (kind != "llama")
            fail("tokenizer.ggml.model is '{}': only SentencePiece ('llama') tokenizers are supported", kind);
        v.pieces = f.get("tokenizer.ggml.tokens").as_strs("tokenizer.ggml.tokens");
        const size_t n = v.pieces.size();
        if (n == 0) fail("tokenizer.ggml.tokens is empty");
        if (n > static_cast<size_t>(std::numeric_limits<int32_t>::max()))
            fail("tokenizer.ggml.tokens has too many entries ({})", n);
        if (const GGUFValue* s = f.find("tokenizer.ggml.scores")) {
            v.scores = s->as_f32s("tokenizer.ggml.scores");
            if (v.scores.size() != n)
                fail("tokenizer.ggml.scores has {} entries but tokenizer.ggml.tokens has {}", v.scores.size(), n);
        } else {
            v.scores.assign(n, 0.0f);
        }
        v.types.assign(n, TokenType::Normal);
        if (const GGUFValue* t = f.find("tokenizer.ggml.token_type")) {
            std::vector<int32_t> tt = t->as_i32s("tokenizer.ggml.token_type");
            if (tt.size() != n)
                fail("tokenizer.ggml.token_type has {} entries but tokenizer.ggml.tokens has {}", tt.size(), n);
            for (size_t i = 0; i < n; ++i) {
                if (tt[i] < 1 || tt[i] > 6)
                    fail("tokenizer.ggml.token_type[{}] = {} is not a valid token type (1..6)", i, tt[i]);
                v.types[i] = static_cast<TokenType>(tt[i]);
            }
        }
        auto id_key = [&](const char* key, int32_t def) -> int32_t {
            const GGUFValue* x = f.find(key);
            if (!x) return def;
            int64_t id = x->as_i64(key);
            if (id == -1 || id == 0xFFFFFFFFLL) return -1;
            if (id < 0 || static_cast<uint64_t>(id) >= n)
                fail("{} = {} is out of range for a vocabulary of {} tokens", key, id, n);
            return static_cast<int32_t>(id);
        };
        v.bos_id = id_key("tokenizer.ggml.bos_token_id", 1);
        v.eos_id = id_key("tokenizer.ggml.eos_token_id", 2);
        v.unk_id = id_key("tokenizer.ggml.unknown_token_id", 0);
        v.pad_id = id_key("tokenizer.ggml.padding_token_id", -1);
        if (const GGUFValue* x = f.find("tokenizer.ggml.add_bos_token")) v.add_bos = x->as_bool("tokenizer.ggml.add_bos_token");
        if (const GGUFValue* x = f.find("tokenizer.ggml.add_eos_token")) v.add_eos = x->as_bool("tokenizer.ggml.add_eos_token");
        if (const GGUFValue* x = f.find("tokenizer.ggml.add_space_prefix"))
            v.add_dummy_prefix = x->as_bool("tokenizer.ggml.add_space_prefix");
        if (const GGUFValue* x = f.find("tokenizer.ggml.remove_extra_whitespaces"))
            v.remove_extra_whitespaces = x->as_bool("tokenizer.ggml.remove_extra_whitespaces");
        // GGUF has no byte_fallback flag: llama.cpp falls back to bytes when the 256 byte
        // tokens are there, and so do we.
        int n_bytes = 0;
        for (size_t i = 0; i < n; ++i)
            if (v.types[i] == TokenType::Byte) ++n_bytes;
        v.byte_fallback = n_bytes > 0;
        return v;
    });
}

void write_vocab_gguf(const Vocab& v, GGUFWriter& w) {
    const size_t n = v.size();
    if (v.scores.size() != n || v.types.size() != n)
        fail("{}: vocab has {} pieces but {} scores and {} types", v.source, n, v.scores.size(), v.types.size());
    w.set("tokenizer.ggml.model", GGUFValue::of_str("llama"));
    w.set("tokenizer.ggml.tokens", GGUFValue::of_strs(v.pieces));
    w.set("tokenizer.ggml.scores", GGUFValue::of_f32s(v.scores));
    std::vector<int32_t> types(n);
    for (size_t i = 0; i < n; ++i) types[i] = static_cast<int32_t>(v.types[i]);
    w.set("tokenizer.ggml.token_type", GGUFValue::of_i32s(types));
    auto put_id = [&](const char* key, int32_t id) {
        if (id < 0) return;
        if (static_cast<size_t>(id) >= n) fail("{}: {} = {} is out of range ({} tokens)", v.source, key, id, n);
        w.set(key, GGUFValue::of_u32(static_cast<uint32_t>(id)));
    };
    put_id("tokenizer.ggml.bos_token_id", v.bos_id);
    put_id("tokenizer.ggml.eos_token_id", v.eos_id);
    put_id("tokenizer.ggml.unknown_token_id", v.unk_id);
    put_id("tokenizer.ggml.padding_token_id", v.pad_id);
    w.set("tokenizer.ggml.add_bos_token", GGUFValue::of_bool(v.add_bos));
    w.set("tokenizer.ggml.add_eos_token", GGUFValue::of_bool(v.add_eos));
    w.set("tokenizer.ggml.add_space_prefix", GGUFValue::of_bool(v.add_dummy_prefix));
    if (v.remove_extra_whitespaces) w.set("tokenizer.ggml.remove_extra_whitespaces", GGUFValue::of_bool(true));
}

}  // namespace calpaca
