#include "calpaca/generate/stop.h"

#include <algorithm>

namespace calpaca {

StopMatcher::StopMatcher(std::vector<std::string> stops) {
    for (auto& s : stops)
        if (!s.empty()) stops_.push_back(std::move(s));
    for (const auto& s : stops_) max_len_ = std::max(max_len_, s.size());
}

void StopMatcher::reset() {
    held_.clear();
    stop_index_ = -1;
}

StopMatcher::Result StopMatcher::push(std::string_view piece) {
    Result r;
    if (stopped()) {
        r.stopped = true;
        r.stop_index = stop_index_;
        return r;
    }
    if (stops_.empty()) {
        r.text.assign(piece);
        return r;
    }
    std::string buf = std::move(held_);
    held_.clear();
    buf.append(piece);

    // 1. A complete stop string anywhere? The earliest start wins. Text before `held_` was
    //    already proven unable to start a stop string, so searching `buf` from 0 is exact.
    size_t best = std::string::npos;
    int best_i = -1;
    for (size_t i = 0; i < stops_.size(); ++i) {
        size_t pos = buf.find(stops_[i]);
        if (pos < best) {
            best = pos;
            best_i = static_cast<int>(i);
        }
    }
    if (best_i >= 0) {
        stop_index_ = best_i;
        r.text = buf.substr(0, best);
        r.stopped = true;
        r.stop_index = best_i;
        return r;
    }

    // 2. Hold back the longest tail that is a proper prefix of some stop string (the earliest
    //    such start position h; only the last max_len_-1 bytes can qualify).
    size_t h = buf.size();
    size_t from = buf.size() > max_len_ - 1 ? buf.size() - (max_len_ - 1) : 0;
    for (size_t pos = from; pos < buf.size(); ++pos) {
        std::string_view tail(buf.data() + pos, buf.size() - pos);
        bool prefix = std::any_of(stops_.begin(), stops_.end(), [&](const std::string& s) {
            return s.size() > tail.size() && std::string_view(s).substr(0, tail.size()) == tail;
        });
        if (prefix) {
            h = pos;
            break;
        }
    }
    held_ = buf.substr(h);
    buf.resize(h);
    r.text = std::move(buf);
    return r;
}

std::string StopMatcher::flush() {
    if (stopped()) return {};
    std::string out = std::move(held_);
    held_.clear();
    return out;
}

}  // namespace calpaca
