#include "calpaca/train/dataset.h"

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "calpaca/base/error.h"
#include "calpaca/base/fileio.h"
#include "calpaca/generate/chat_template.h"
#include "calpaca/generate/generator.h"
#include "calpaca/tokenizer/tokenizer.h"

namespace calpaca {

uint64_t hash_bytes(const void* data, size_t n, uint64_t seed) {
    const auto* p = static_cast<const unsigned char*>(data);
    uint64_t h = 0xcbf29ce484222325ull ^ mix64(seed);
    for (size_t i = 0; i < n; ++i) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return mix64(h ^ n);
}

uint64_t tokenizer_fingerprint(const Tokenizer& tok) {
    const Vocab& v = tok.vocab();
    uint64_t h = hash_bytes(nullptr, 0, v.size());
    for (size_t i = 0; i < v.size(); ++i) {
        h = hash_bytes(v.pieces[i].data(), v.pieces[i].size(), h);
        h = hash_bytes(&v.scores[i], sizeof(float), h);
    }
    const int32_t ids[4] = {v.unk_id, v.bos_id, v.eos_id, v.pad_id};
    return hash_bytes(ids, sizeof ids, h);
}

std::vector<Example> build_pt_examples(const std::string& text, const Tokenizer& tok, const DataOptions& o) {
    if (o.block_size <= 1) fail("--block-size must be at least 2, got {}", o.block_size);
    std::vector<Example> out;
    std::vector<int32_t> batch;
    size_t lines_in_batch = 0;
    auto flush = [&] {
        if (lines_in_batch == 0) return;
        const size_t bs = static_cast<size_t>(o.block_size);
        size_t total = batch.size();
        if (total >= bs) total = total / bs * bs;
        for (size_t b = 0; b < total; b += bs) {
            Example e;
            e.ids.assign(batch.begin() + b, batch.begin() + std::min(total, b + bs));
            e.labels = e.ids;
            out.push_back(std::move(e));
        }
        batch.clear();
        lines_in_batch = 0;
    };
    size_t pos = 0;
    while (pos < text.size()) {
        size_t e = text.find('\n', pos);
        if (e == std::string::npos) e = text.size();
        std::string_view line(text.data() + pos, e - pos);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        batch.push_back(tok.bos());
        tok.encode_into(line, batch);
        if (o.add_eos) batch.push_back(tok.eos());
        if (++lines_in_batch == 1000) flush();
        pos = e + 1;
    }
    flush();
    return out;
}

namespace {

std::string field(const nlohmann::json& rec, const char* name, const std::string& where, bool required) {
    if (!rec.contains(name)) {
        if (!required) return {};
        fail("{}: missing field '{}'", where, name);
    }
    const auto& v = rec[name];
    if (v.is_null() && !required) return {};
    if (!v.is_string()) fail("{}: field '{}' must be a string", where, name);
    return v.get<std::string>();
}

}  // namespace

std::vector<Example> build_sft_examples(const std::string& json, const std::string& file_name, const Tokenizer& tok,
                                        const DataOptions& o) {
    if (o.max_seq_length <= 1) fail("--max-seq-length must be at least 2, got {}", o.max_seq_length);
    auto tmpl = make_chat_template(o.template_name);
    std::vector<nlohmann::json> records;
    size_t first = json.find_first_not_of(" \t\r\n\xEF\xBB\xBF");
    if (first == std::string::npos) fail("{}: no records (empty file)", file_name);
    if (json[first] == '[') {
        nlohmann::json j;
        try {
            j = nlohmann::json::parse(json);
        } catch (const nlohmann::json::exception& e) {
            fail("{}: malformed JSON: {}", file_name, e.what());
        }
        for (auto& r : j) records.push_back(std::move(r));
    } else {  // JSON lines
        size_t pos = 0, line_no = 0;
        while (pos < json.size()) {
            size_t e = json.find('\n', pos);
            if (e == std::string::npos) e = json.size();
            ++line_no;
            std::string line = json.substr(pos, e - pos);
            pos = e + 1;
            if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
            try {
                records.push_back(nlohmann::json::parse(line));
            } catch (const nlohmann::json::exception& ex) {
                fail("{}: line {}: malformed JSON: {}", file_name, line_no, ex.what());
            }
        }
    }
    std::vector<Example> out;
    const size_t max_len = static_cast<size_t>(o.max_seq_length);
    for (size_t i = 0; i < records.size(); ++i) {
        const auto& rec = records[i];
        const std::string where = fmt::format("{}: record {}", file_name, i + 1);
        if (!rec.is_object()) fail("{}: expected an object with instruction/input/output", where);
        const std::string instruction = field(rec, "instruction", where, true);
        const std::string input = field(rec, "input", where, false);
        const std::string output = field(rec, "output", where, true);
        std::vector<int32_t> src =
            tokenize_parts(tok, tmpl->render_single(join_instruction_input(instruction, input), tok.bos(), tok.eos()));
        std::vector<int32_t> tgt = tok.encode(output);
        tgt.push_back(tok.eos());
        Example e;
        e.ids = src;
        e.ids.insert(e.ids.end(), tgt.begin(), tgt.end());
        e.labels.assign(src.size(), kIgnoreIndex);
        e.labels.insert(e.labels.end(), tgt.begin(), tgt.end());
        if (e.ids.size() > max_len) {
            e.ids.resize(max_len);
            e.labels.resize(max_len);
        }
        out.push_back(std::move(e));
    }
    if (out.empty()) fail("{}: no records", file_name);
    return out;
}

namespace {

constexpr char kCacheMagic[8] = {'C', 'L', 'P', 'T', 'D', 'S', '1', '\0'};

std::string encode_cache(const std::vector<Example>& ex) {
    std::string s(kCacheMagic, 8);
    auto put = [&](const void* p, size_t n) { s.append(static_cast<const char*>(p), n); };
    const uint64_t n = ex.size();
    put(&n, 8);
    for (const Example& e : ex) {
        const uint64_t len = e.ids.size();
        put(&len, 8);
        put(e.ids.data(), len * 4);
        put(e.labels.data(), len * 4);
    }
    return s;
}

bool decode_cache(const std::string& s, std::vector<Example>& out) {
    size_t off = 8;
    auto get = [&](void* p, size_t n) {
        if (off + n > s.size()) return false;
        std::memcpy(p, s.data() + off, n);
        off += n;
        return true;
    };
    if (s.size() < 16 || std::memcmp(s.data(), kCacheMagic, 8) != 0) return false;
    uint64_t n;
    if (!get(&n, 8) || n > s.size()) return false;
    out.clear();
    for (uint64_t i = 0; i < n; ++i) {
        uint64_t len;
        if (!get(&len, 8) || len > s.size() / 8) return false;
        Example e;
        e.ids.resize(len);
        e.labels.resize(len);
        if (!get(e.ids.data(), len * 4) || !get(e.labels.data(), len * 4)) return false;
        out.push_back(std::move(e));
    }
    return off == s.size();
}

}  // namespace

std::vector<Example> load_dataset(const std::vector<std::string>& files, const Tokenizer& tok, const DataOptions& o,
                                  bool verbose) {
    if (files.empty()) fail("no data files given (--data)");
    std::vector<Example> all;
    for (const std::string& f : files) {
        const std::string content = read_file(f);
        uint64_t key = hash_bytes(content.data(), content.size(), tokenizer_fingerprint(tok));
        const std::string opts = o.kind == DataKind::PT
                                     ? fmt::format("pt {} {}", o.block_size, o.add_eos)
                                     : fmt::format("sft {} {}", o.max_seq_length, o.template_name);
        key = hash_bytes(opts.data(), opts.size(), key);
        const std::string cache =
            fmt::format("{}.calpaca-{}-{:016x}.cache", f, o.kind == DataKind::PT ? "pt" : "sft", key);
        std::vector<Example> ex;
        bool cached = false;
        if (o.use_cache && std::filesystem::exists(cache)) {
            try {
                cached = decode_cache(read_file(cache), ex);
            } catch (const Error&) {
                cached = false;
            }
            if (cached) {
                for (const Example& e : ex)  // a cache from another tokenizer would fail here
                    for (int32_t id : e.ids)
                        if (id < 0 || static_cast<size_t>(id) >= tok.size()) cached = false;
            }
            if (!cached && verbose) std::fprintf(stderr, "train: ignoring unreadable cache %s\n", cache.c_str());
        }
        if (!cached) {
            ex = o.kind == DataKind::PT ? build_pt_examples(content, tok, o) : build_sft_examples(content, f, tok, o);
            if (o.use_cache) {
                try {
                    write_file_atomic(cache, encode_cache(ex));
                } catch (const Error& e) {
                    if (verbose) std::fprintf(stderr, "train: cannot write the data cache (%s); continuing\n", e.what());
                }
            }
        }
        if (verbose)
            std::fprintf(stderr, "train: %s: %zu examples%s\n", f.c_str(), ex.size(), cached ? " (cached)" : "");
        all.insert(all.end(), std::make_move_iterator(ex.begin()), std::make_move_iterator(ex.end()));
    }
    if (all.empty()) fail("the data files hold no complete example (is --block-size larger than the text?)");
    return all;
}

}  // namespace calpaca
