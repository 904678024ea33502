// Helpers shared by the unit tests: the message of a calpaca::Error, one-line error checks, and a
// scratch directory removed at the end of the test.
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "calpaca/base/error.h"

namespace calpaca::test {

// The message of the Error fn throws; fails the test when nothing (or something else) is thrown.
template <typename F>
std::string error_of(F&& fn) {
    try {
        fn();
    } catch (const Error& e) {
        return e.what();
    }
    ADD_FAILURE() << "no calpaca::Error thrown";
    return "(no error)";
}

// msg contains needle and is a single line.
inline void expect_one_line(const std::string& msg, const std::string& needle) {
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
}

// A fresh directory <tmp>/calpaca-TAG-PID, removed with everything in it when the object goes.
struct TempDir {
    std::filesystem::path p;
    explicit TempDir(const std::string& tag)
        : p(std::filesystem::temp_directory_path() / ("calpaca-" + tag + "-" + std::to_string(::getpid()))) {
        std::filesystem::remove_all(p);
        std::filesystem::create_directories(p);
    }
    ~TempDir() { std::filesystem::remove_all(p); }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    std::string operator/(const std::string& f) const { return (p / f).string(); }
};

}  // namespace calpaca::test
