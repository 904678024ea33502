// Progress display for long operations: a one-line bar on stderr when stderr is a
// terminal, nothing otherwise (so logs and CI stay quiet).
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace calpaca {

class Progress {
public:
    Progress(std::string label, uint64_t total, bool enabled = true);
    ~Progress();
    void update(uint64_t done, const std::string& note = "");
    void finish();
    static bool stderr_is_terminal();

private:
    std::string label_;
    uint64_t total_;
    bool enabled_;
    bool finished_ = false;
    std::chrono::steady_clock::time_point start_, last_;
};

}  // namespace calpaca
