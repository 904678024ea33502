#include "calpaca/tokenizer/merge.h"

#include <filesystem>
#include <map>

#include <nlohmann/json.hpp>

#include "calpaca/base/error.h"
#include "calpaca/base/fileio.h"
#include "calpaca/tokenizer/spm_model.h"

namespace calpaca {

namespace {

// A JSON string as Python's json.dumps(ensure_ascii=False) writes it.
std::string jstr(const std::string& s) {
    try {
        return nlohmann::json(s).dump();
    } catch (const nlohmann::json::exception&) {
        fail("special token '{}' is not valid UTF-8 and cannot be written to JSON", sanitize_utf8(s));
    }
}

// transformers' AddedToken fields (4.35.2, as LlamaTokenizer declares bos/eos/unk/pad)
std::string added_token(const std::string& content, const std::string& ind, bool special) {
    std::string s = "{\n";
    s += ind + "  \"content\": " + jstr(content) + ",\n";
    s += ind + "  \"lstrip\": false,\n";
    s += ind + "  \"normalized\": false,\n";
    s += ind + "  \"rstrip\": false,\n";
    s += ind + "  \"single_word\": false";
    if (special) s += ",\n" + ind + "  \"special\": true";
    s += "\n" + ind + "}";
    return s;
}

const std::string& piece_at(const Vocab& v, int32_t id, const char* what) {
    if (id < 0 || static_cast<size_t>(id) >= v.size()) fail("{}: the tokenizer has no {} token", v.source, what);
    return v.pieces[static_cast<size_t>(id)];
}

}  // namespace

std::string hf_tokenizer_config_json(const Vocab& v) {
    const std::string& unk = piece_at(v, v.unk_id, "unknown");
    const std::string& bos = piece_at(v, v.bos_id, "BOS");
    const std::string& eos = piece_at(v, v.eos_id, "EOS");
    std::map<std::string, std::string> decoder;  // Python's sort_keys: ids sorted as strings
    decoder.emplace(std::to_string(v.unk_id), unk);
    decoder.emplace(std::to_string(v.bos_id), bos);
    decoder.emplace(std::to_string(v.eos_id), eos);
    if (v.pad_id >= 0) decoder.emplace(std::to_string(v.pad_id), piece_at(v, v.pad_id, "pad"));
    std::string s = "{\n";
    s += std::string("  \"add_bos_token\": ") + (v.add_bos ? "true" : "false") + ",\n";
    s += std::string("  \"add_eos_token\": ") + (v.add_eos ? "true" : "false") + ",\n";
    s += "  \"added_tokens_decoder\": {\n";
    size_t i = 0;
    for (const auto& [id, content] : decoder) {
        s += "    " + jstr(id) + ": " + added_token(content, "    ", true);
        s += ++i < decoder.size() ? ",\n" : "\n";
    }
    s += "  },\n";
    s += "  \"bos_token\": " + jstr(bos) + ",\n";
    s += "  \"clean_up_tokenization_spaces\": false,\n";
    s += "  \"eos_token\": " + jstr(eos) + ",\n";
    s += "  \"legacy\": true,\n";
    // int(1e30), as transformers writes VERY_LARGE_INTEGER
    s += "  \"model_max_length\": 1000000000000000019884624838656,\n";
    s += "  \"pad_token\": " + (v.pad_id >= 0 ? jstr(v.pieces[static_cast<size_t>(v.pad_id)]) : std::string("null")) + ",\n";
    s += "  \"sp_model_kwargs\": {},\n";
    s += "  \"spaces_between_special_tokens\": false,\n";
    s += "  \"tokenizer_class\": \"LlamaTokenizer\",\n";
    s += "  \"unk_token\": " + jstr(unk) + ",\n";
    s += "  \"use_default_system_prompt\": false\n";
    s += "}\n";
    return s;
}

std::string hf_special_tokens_map_json(const Vocab& v) {
    std::string s = "{\n";
    s += "  \"bos_token\": " + added_token(piece_at(v, v.bos_id, "BOS"), "  ", false) + ",\n";
    s += "  \"eos_token\": " + added_token(piece_at(v, v.eos_id, "EOS"), "  ", false) + ",\n";
    if (v.pad_id >= 0) s += "  \"pad_token\": " + added_token(piece_at(v, v.pad_id, "pad"), "  ", false) + ",\n";
    s += "  \"unk_token\": " + added_token(piece_at(v, v.unk_id, "unknown"), "  ", false) + "\n";
    s += "}\n";
    return s;
}

TokenizerMergeResult merge_tokenizers(const TokenizerMergeOptions& opt) {
    namespace fs = std::filesystem;
    if (opt.base.empty()) fail("tokenizer merge: --base is required");
    if (opt.add.empty()) fail("tokenizer merge: --add is required");
    if (opt.out.empty()) fail("tokenizer merge: -o is required");

    spm::ModelProto base = load_model_proto(opt.base);
    const spm::ModelProto add = load_model_proto(opt.add);
    // The merged model is encoded as the base's model type; only BPE bases are LLaMA-like and
    // only BPE is what every consumer here (and the published tokenizers) expects.
    if (base.trainer_spec().model_type() != spm::TrainerSpec::BPE)
        fail("{}: --base must be a BPE model (LLaMA's tokenizer.model), this one is {}", opt.base,
             spm::TrainerSpec::ModelType_Name(base.trainer_spec().model_type()));
    // It must also be a model our tokenizer can run (identity normalizer etc.): checked here so a
    // bad base fails before anything is written.
    vocab_from_model_proto(base, opt.base);

    TokenizerMergeResult r;
    r.base_pieces = static_cast<size_t>(base.pieces_size());
    r.add_pieces = static_cast<size_t>(add.pieces_size());
    r.added = merge_model_protos(base, add);
    if (!opt.pad.empty()) {
        with_context("--add-pad", [&] { append_piece(base, opt.pad); });
        r.pad_id = base.pieces_size() - 1;
    }
    r.total = static_cast<size_t>(base.pieces_size());

    Vocab v = vocab_from_model_proto(base, opt.out);
    if (r.pad_id >= 0) v.pad_id = r.pad_id;
    const std::string bytes = serialize_model_proto(base);
    std::string config, special;
    if (opt.hf_files) {  // built before anything is written, so a failure leaves nothing behind
        config = hf_tokenizer_config_json(v);
        special = hf_special_tokens_map_json(v);
    }

    // like merge_tokenizers.py (os.makedirs), the output folder is created when missing
    const fs::path out_dir = fs::path(opt.out).parent_path();
    if (!out_dir.empty()) {
        std::error_code ec;
        fs::create_directories(out_dir, ec);
        if (ec) fail("{}: cannot create directory: {}", out_dir.string(), ec.message());
    }
    write_file_atomic(opt.out, bytes);
    r.written.push_back(opt.out);
    if (opt.hf_files) {
        fs::path dir = opt.hf_dir.empty() ? fs::path(opt.out).parent_path() : fs::path(opt.hf_dir);
        if (dir.empty()) dir = ".";
        std::error_code ec;
        if (!opt.hf_dir.empty()) {
            fs::create_directories(dir, ec);
            if (ec) fail("{}: cannot create directory: {}", dir.string(), ec.message());
        }
        if (!opt.hf_dir.empty()) {  // a complete HF tokenizer folder
            const std::string m = (dir / "tokenizer.model").string();
            std::error_code same_ec;
            if (!fs::exists(m, same_ec) || !fs::equivalent(m, opt.out, same_ec)) {
                write_file_atomic(m, bytes);
                r.written.push_back(m);
            }
        }
        const std::string c = (dir / "tokenizer_config.json").string();
        const std::string s = (dir / "special_tokens_map.json").string();
        write_file_atomic(c, config);
        r.written.push_back(c);
        write_file_atomic(s, special);
        r.written.push_back(s);
    }
    return r;
}

}  // namespace calpaca
