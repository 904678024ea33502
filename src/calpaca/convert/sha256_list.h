// SHA-256 lists: `sha256sum` output ("<hash>  <file>") and the original project's
// SHA256.md (Markdown tables / lists with a file name and a 64-hex hash on one line).
// Used by `calpaca sha256 --check` and by --verify-sha256 on convert / merge-lora (the
// original's FAQ: check the inputs' hashes before blaming the merge).
#pragma once
#include <string>
#include <vector>

namespace calpaca {

struct Sha256Entry {
    std::string hash;  // lowercase hex
    std::string name;  // file name as listed ("" if the line names none)
    int line = 0;
};

struct Sha256List {
    std::string path;
    std::vector<Sha256Entry> entries;
};

Sha256List read_sha256_list(const std::string& path);
Sha256List parse_sha256_list(const std::string& text, const std::string& path);

enum class HashStatus { Ok, Mismatch, NotListed };

struct HashCheck {
    std::string file, hash;
    HashStatus status = HashStatus::NotListed;
    std::string detail;  // "matches line 12 (tokenizer.model)" / "listed as … on line …"
};

// Hashes `file` and looks its hash up: Ok when the hash is listed (under any name);
// Mismatch when the file's name is listed with other hashes only; NotListed otherwise.
HashCheck check_file_sha256(const Sha256List& list, const std::string& file, bool progress);
// Same, for a hash already computed.
HashCheck check_hash(const Sha256List& list, const std::string& file, const std::string& hash);
const char* hash_status_name(HashStatus s);

// Checks every file against the list before a conversion: a FAILED file is an Error (naming
// it and the list); OK / NOT LISTED lines go to stderr.
void verify_inputs_sha256(const std::string& list_path, const std::vector<std::string>& files, bool progress);

}  // namespace calpaca
