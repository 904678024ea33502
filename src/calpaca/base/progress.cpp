#include "calpaca/base/progress.h"

#include <unistd.h>

#include <cstdio>

namespace calpaca {

bool Progress::stderr_is_terminal() { return ::isatty(2) == 1; }

Progress::Progress(std::string label, uint64_t total, bool enabled)
    : label_(std::move(label)), total_(total), enabled_(enabled && stderr_is_terminal()) {
    start_ = last_ = std::chrono::steady_clock::now();
}

Progress::~Progress() { finish(); }

void Progress::update(uint64_t done, const std::string& note) {
    if (!enabled_ || finished_) return;
    auto now = std::chrono::steady_clock::now();
    if (done < total_ && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    double frac = total_ ? static_cast<double>(done) / static_cast<double>(total_) : 1.0;
    int width = 30, filled = static_cast<int>(frac * width);
    std::string bar(filled, '#');
    bar.resize(width, '.');
    double secs = std::chrono::duration<double>(now - start_).count();
    double eta = frac > 0 ? secs / frac - secs : 0;
    std::fprintf(stderr, "\r%s [%s] %5.1f%% %llu/%llu  %.0fs elapsed, ETA %.0fs %s\033[K", label_.c_str(), bar.c_str(),
                 frac * 100, static_cast<unsigned long long>(done), static_cast<unsigned long long>(total_), secs, eta,
                 note.c_str());
    std::fflush(stderr);
}

void Progress::finish() {
    if (!enabled_ || finished_) return;
    finished_ = true;
    std::fprintf(stderr, "\n");
}

}  // namespace calpaca
