#include "calpaca/convert/sha256_list.h"

#include <cctype>
#include <cstdio>
#include <filesystem>
#include <sstream>

#include "calpaca/base/error.h"
#include "calpaca/base/fileio.h"
#include "calpaca/base/sha256.h"

namespace calpaca {

namespace {

bool is_hex(char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; }
bool is_sep(char c) { return std::isspace(static_cast<unsigned char>(c)) || c == '|' || c == '`' || c == '*' || c == ',' || c == ':'; }

std::vector<std::string> tokens(const std::string& line) {
    std::vector<std::string> out;
    std::string cur;
    for (char c : line) {
        if (is_sep(c)) {
            if (!cur.empty()) out.push_back(cur);
            cur.clear();
        } else {
            cur.push_back(c);
        }
    }
    if (!cur.empty()) out.push_back(cur);
    return out;
}

bool is_hash(const std::string& t) {
    if (t.size() != 64) return false;
    for (char c : t)
        if (!is_hex(c)) return false;
    return true;
}

std::string lower(std::string s) {
    for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

}  // namespace

Sha256List parse_sha256_list(const std::string& text, const std::string& path) {
    Sha256List l;
    l.path = path;
    std::istringstream in(text);
    std::string line;
    int no = 0;
    while (std::getline(in, line)) {
        ++no;
        std::vector<std::string> t = tokens(line);
        std::vector<std::string> hashes, names;
        for (const auto& x : t) {
            if (is_hash(x)) hashes.push_back(lower(x));
            else if (x.find('.') != std::string::npos && x.find("://") == std::string::npos) names.push_back(x);
        }
        for (const auto& h : hashes) l.entries.push_back({h, names.empty() ? "" : names.back(), no});
    }
    if (l.entries.empty()) fail("{}: no SHA-256 hashes (64 hex digits) found", path);
    return l;
}

Sha256List read_sha256_list(const std::string& path) { return parse_sha256_list(read_file(path), path); }

const char* hash_status_name(HashStatus s) {
    switch (s) {
        case HashStatus::Ok: return "OK";
        case HashStatus::Mismatch: return "FAILED";
        case HashStatus::NotListed: return "NOT LISTED";
    }
    return "?";
}

HashCheck check_hash(const Sha256List& list, const std::string& file, const std::string& hash) {
    HashCheck c;
    c.file = file;
    c.hash = hash;
    const std::string base = std::filesystem::path(file).filename().string();
    std::string listed_lines;
    for (const auto& e : list.entries) {
        if (e.hash == hash) {
            c.status = HashStatus::Ok;
            c.detail = fmt::format("matches {} line {}{}", list.path, e.line, e.name.empty() ? "" : " (" + e.name + ")");
            return c;
        }
        const std::string ename = std::filesystem::path(e.name).filename().string();
        if (!ename.empty() && ename == base) listed_lines += (listed_lines.empty() ? "" : ", ") + std::to_string(e.line);
    }
    if (!listed_lines.empty()) {
        c.status = HashStatus::Mismatch;
        c.detail = fmt::format("{} is listed in {} (line {}) with a different hash: the file is corrupt, incomplete or a different "
                               "version",
                               base, list.path, listed_lines);
    } else {
        c.detail = fmt::format("neither the hash nor the name {} appears in {}", base, list.path);
    }
    return c;
}

HashCheck check_file_sha256(const Sha256List& list, const std::string& file, bool progress) {
    return check_hash(list, file, sha256_file(file, progress));
}

void verify_inputs_sha256(const std::string& list_path, const std::vector<std::string>& files, bool progress) {
    Sha256List list = read_sha256_list(list_path);
    for (const auto& f : files) {
        HashCheck c = check_file_sha256(list, f, progress);
        if (c.status == HashStatus::Mismatch) fail("--verify-sha256: {}: sha256 {}: {}", f, c.hash, c.detail);
        std::fprintf(stderr, "sha256 %s: %s (%s)\n", hash_status_name(c.status), f.c_str(), c.detail.c_str());
    }
}

}  // namespace calpaca
