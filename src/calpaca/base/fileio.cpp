#include "calpaca/base/fileio.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "calpaca/base/error.h"

namespace calpaca {

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail("{}: cannot open: {}", path, std::strerror(errno));
    std::ostringstream ss;
    ss << in.rdbuf();
    if (in.bad()) fail("{}: read error", path);
    return ss.str();
}

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
    tmp_ = path_ + ".tmp-" + std::to_string(::getpid());
    f_ = std::fopen(tmp_.c_str(), "wb");
    if (!f_) fail("{}: cannot create: {}", tmp_, std::strerror(errno));
}

AtomicFile::~AtomicFile() {
    if (f_) {
        std::fclose(f_);
        std::remove(tmp_.c_str());
    }
}

void AtomicFile::write(const void* data, size_t n) {
    if (!f_) fail("{}: write after commit", path_);
    if (n && std::fwrite(data, 1, n, f_) != n) fail("{}: write failed: {}", tmp_, std::strerror(errno));
    offset_ += n;
}

void AtomicFile::commit() {
    if (!f_) return;
    if (std::fflush(f_) != 0) fail("{}: flush failed: {}", tmp_, std::strerror(errno));
    ::fsync(::fileno(f_));
    std::fclose(f_);
    f_ = nullptr;
    if (std::rename(tmp_.c_str(), path_.c_str()) != 0) {
        int e = errno;
        std::remove(tmp_.c_str());
        fail("{}: cannot rename {} into place: {}", path_, tmp_, std::strerror(e));
    }
}

void write_file_atomic(const std::string& path, const std::string& content) {
    AtomicFile f(path);
    f.write(content);
    f.commit();
}

}  // namespace calpaca
