// One error type for the whole library. It carries a message that already names the
// file / field / parameter at fault; the CLI prints it on one line and exits 1.
#pragma once
#include <fmt/format.h>
#include <stdexcept>
#include <string>

namespace calpaca {

class Error : public std::runtime_error {
public:
    explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
    throw Error(fmt::format(f, std::forward<Args>(args)...));
}

// Prefix an error raised while working on `context` (e.g. a file name).
template <typename F>
auto with_context(const std::string& context, F&& fn) -> decltype(fn()) {
    try {
        return fn();
    } catch (const Error& e) {
        throw Error(context + ": " + e.what());
    }
}

}  // namespace calpaca
