#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>

#include "calpaca/base/error.h"
#include "calpaca/base/fileio.h"
#include "calpaca/base/threadpool.h"
#include "calpaca/base/utf8.h"

using namespace calpaca;

TEST(Utf8, ValidationAndCompletePrefix) {
    EXPECT_TRUE(utf8::is_valid("abc 你好 😀"));
    EXPECT_EQ(utf8::find_invalid("ab\xff"), 2u);
    EXPECT_EQ(utf8::find_invalid("\xc0\x80"), 0u);            // overlong
    EXPECT_EQ(utf8::find_invalid("a\xed\xa0\x80"), 1u);        // surrogate
    EXPECT_EQ(utf8::find_invalid("\xf4\x90\x80\x80"), 0u);     // > U+10FFFF
    EXPECT_EQ(utf8::find_invalid("你\xe5\xa5"), 3u);           // truncated at end
    std::string s = "你好";
    EXPECT_EQ(utf8::complete_prefix(s), 6u);
    EXPECT_EQ(utf8::complete_prefix(s.substr(0, 5)), 3u);
    EXPECT_EQ(utf8::complete_prefix(s.substr(0, 4)), 3u);
    EXPECT_EQ(utf8::complete_prefix("a\xff"), 2u);  // invalid byte is final, not pending
    std::vector<std::string_view> chars;
    utf8::split_chars("a你😀", chars);
    ASSERT_EQ(chars.size(), 3u);
    EXPECT_EQ(chars[2], "😀");
}

TEST(ThreadPool, CoversEveryIndexOnce) {
    ThreadPool pool(3);
    for (size_t n : {0u, 1u, 2u, 3u, 10u, 1001u}) {
        std::vector<std::atomic<int>> hits(n);
        pool.parallel_for(n, [&](size_t b, size_t e) {
            for (size_t i = b; i < e; ++i) hits[i]++;
        });
        for (size_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1);
    }
    EXPECT_GE(default_thread_count(), 1);
}

TEST(ThreadPool, DynamicPiecesCoverEveryIndexOnce) {
    ThreadPool pool(3), one(1);
    for (size_t n : {0u, 1u, 5u, 16u, 17u, 1001u})
        for (size_t grain : {0u, 1u, 4u, 16u, 2000u}) {
            std::vector<std::atomic<int>> hits(n);
            std::atomic<int> bad{0};
            for (ThreadPool* p : {&pool, &one}) {
                p->parallel_dynamic(n, grain, [&](size_t b, size_t e) {
                    // pieces of at most `grain` on several threads; one thread may take [0, n) whole
                    if (b >= e || e > n || (p == &pool && grain > 0 && e - b > grain)) bad++;
                    for (size_t i = b; i < e; ++i) hits[i]++;
                });
            }
            ASSERT_EQ(bad.load(), 0) << "n " << n << " grain " << grain;
            for (size_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 2) << "n " << n << " grain " << grain;
        }
}

TEST(FileIO, AtomicFileLeavesNothingOnAbort) {
    auto p = (std::filesystem::temp_directory_path() / "calpaca-atomic-test").string();
    std::filesystem::remove(p);
    {
        AtomicFile f(p);
        f.write("partial");
    }
    EXPECT_FALSE(std::filesystem::exists(p));
    write_file_atomic(p, "done");
    EXPECT_EQ(read_file(p), "done");
    std::filesystem::remove(p);
    EXPECT_THROW(read_file("/nonexistent/x"), Error);
}
