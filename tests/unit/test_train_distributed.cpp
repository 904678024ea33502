// train/distributed: the single-process implementation, the MPI-launch detection, and the
// trainer's data-parallel path (sequences dealt round-robin, gradients and losses all-reduced)
// run with K in-process "ranks" (threads sharing a sum all-reduce) against one process with the
// same global batch. The MPI implementation itself is tested by tests/e2e/train_mpi.sh.
#include <gtest/gtest.h>

#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>
#include <vector>
#include <unistd.h>

#include "calpaca/base/error.h"
#include "calpaca/train/distributed.h"
#include "calpaca/train/trainer.h"
#include "train_fixture.h"

namespace calpaca {
namespace {

TEST(TrainDistributed, SingleProcessIsTheIdentity) {
    SingleProcess d;
    EXPECT_EQ(d.rank(), 0);
    EXPECT_EQ(d.size(), 1);
    EXPECT_EQ(d.local_size(), 1);
    EXPECT_TRUE(d.is_root());
    for (uint64_t i = 0; i < 7; ++i) EXPECT_TRUE(d.owns(i));
    float f[3] = {1.5f, -2.0f, 1e-30f};
    d.allreduce_sum(f, 3);
    EXPECT_EQ(f[0], 1.5f);
    EXPECT_EQ(f[1], -2.0f);
    EXPECT_EQ(f[2], 1e-30f);
    double g[2] = {0.25, 3.0};
    d.allreduce_sum(g, 2);
    EXPECT_EQ(g[0], 0.25);
    EXPECT_EQ(g[1], 3.0);
    d.allreduce_sum(static_cast<float*>(nullptr), 0);
    char bytes[4] = {'a', 'b', 'c', 'd'};
    d.broadcast(bytes, sizeof bytes, 0);
    EXPECT_EQ(std::memcmp(bytes, "abcd", 4), 0);
    EXPECT_THROW(d.broadcast(bytes, sizeof bytes, 1), Error);
    d.barrier();
    EXPECT_NO_THROW(check_same_on_all_ranks(d, 0x1234, "value"));
}

TEST(TrainDistributed, SingleProcessAbortExitsWithTheCode) {
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    EXPECT_EXIT(SingleProcess().abort(3), ::testing::ExitedWithCode(3), "");
}

// Sets or clears the launcher variables for the scope of a test, restoring them after.
class ScopedEnv {
public:
    ScopedEnv() {
        for (const char* v : kVars) {
            const char* s = std::getenv(v);
            saved_.emplace_back(s ? std::optional<std::string>(s) : std::nullopt);
            ::unsetenv(v);
        }
    }
    ~ScopedEnv() {
        for (size_t i = 0; i < saved_.size(); ++i) {
            if (saved_[i]) ::setenv(kVars[i], saved_[i]->c_str(), 1);
            else ::unsetenv(kVars[i]);
        }
    }
    static constexpr const char* kVars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"};

private:
    std::vector<std::optional<std::string>> saved_;
};

TEST(TrainDistributed, DetectsAnMpiLauncherFromTheEnvironment) {
    ScopedEnv env;
    EXPECT_FALSE(launched_by_mpi());
    EXPECT_EQ(distributed_from_environment()->size(), 1);  // no launcher: a single process, no MPI_Init
    for (const char* v : ScopedEnv::kVars) {
        ::setenv(v, "", 1);
        EXPECT_FALSE(launched_by_mpi()) << v << " empty";
        ::setenv(v, "2", 1);
        EXPECT_TRUE(launched_by_mpi()) << v;
        ::unsetenv(v);
    }
}

// K threads acting as ranks: each collective exchanges buffer pointers and every rank sums all
// ranks' buffers in rank order (so all receive the same result).
class ThreadGroup {
public:
    explicit ThreadGroup(int n) : n_(n), bar_(n), ptrs_(static_cast<size_t>(n)) {}
    template <typename T>
    void allreduce(int rank, T* data, size_t n) {
        ptrs_[static_cast<size_t>(rank)] = data;
        bar_.arrive_and_wait();
        std::vector<T> sum(n, T(0));
        for (int r = 0; r < n_; ++r)
            for (size_t i = 0; i < n; ++i) sum[i] += static_cast<const T*>(ptrs_[static_cast<size_t>(r)])[i];
        bar_.arrive_and_wait();
        std::copy(sum.begin(), sum.end(), data);
    }
    void broadcast(int rank, void* data, size_t bytes, int root) {
        ptrs_[static_cast<size_t>(rank)] = data;
        bar_.arrive_and_wait();
        if (rank != root && bytes) std::memcpy(data, ptrs_[static_cast<size_t>(root)], bytes);
        bar_.arrive_and_wait();
    }
    void barrier() { bar_.arrive_and_wait(); }
    int size() const { return n_; }

private:
    int n_;
    std::barrier<> bar_;
    std::vector<void*> ptrs_;
};

class ThreadRank final : public Distributed {
public:
    ThreadRank(ThreadGroup& g, int rank) : g_(g), rank_(rank) {}
    int rank() const override { return rank_; }
    int size() const override { return g_.size(); }
    int local_size() const override { return g_.size(); }
    void allreduce_sum(float* d, size_t n) override { g_.allreduce(rank_, d, n); }
    void allreduce_sum(double* d, size_t n) override { g_.allreduce(rank_, d, n); }
    void broadcast(void* d, size_t bytes, int root) override { g_.broadcast(rank_, d, bytes, root); }
    void barrier() override { g_.barrier(); }
    [[noreturn]] void abort(int code) override { std::_Exit(code); }

private:
    ThreadGroup& g_;
    int rank_;
};

struct RankedRun {
    std::vector<std::unique_ptr<TrainableParams>> params;  // one per rank
    std::vector<TrainResult> results;
    std::string out_dir;
};

TrainOptions small_run(const std::string& dir) {
    TrainOptions o;
    o.output_dir = dir;
    o.base_name = "fixture";
    o.steps = 4;
    o.lr = 1e-2;
    o.batch_size = 3;  // 6 sequences of 4 examples per step: micro-batches split over the ranks
    o.grad_accum = 2;
    o.warmup_steps = 1;
    o.save_every = 0;
    o.eval_every = 2;
    o.verbose = false;
    return o;
}

RankedRun run_ranks(const BaseWeights& base, int k, const std::string& dir) {
    const auto seqs = test::train_fixture_seqs();
    LoraSettings ls = test::train_fixture_lora();
    ls.dropout = 0.1f;  // dropout masks must follow the sequence's place in the global batch
    RankedRun run;
    run.out_dir = dir;
    run.results.resize(static_cast<size_t>(k));
    for (int r = 0; r < k; ++r) run.params.push_back(TrainableParams::create(base, ls, 5));
    // the other ranks start from other values: rank 0's are broadcast to them
    for (int r = 1; r < k; ++r)
        for (auto& p : run.params[static_cast<size_t>(r)]->params())
            for (float& w : p->w) w += 0.5f;
    const TrainOptions o = small_run(dir);
    if (k == 1) {
        run.results[0] = train(base, *run.params[0], seqs, seqs, o, nullptr, 99);
        return run;
    }
    ThreadGroup group(k);
    std::vector<std::thread> threads;
    for (int r = 0; r < k; ++r)
        threads.emplace_back([&, r] {
            ThreadRank d(group, r);
            try {
                run.results[static_cast<size_t>(r)] =
                    train(base, *run.params[static_cast<size_t>(r)], seqs, seqs, o, nullptr, 99, &d);
            } catch (const std::exception& e) {
                // the other ranks would wait for this one forever: fail loudly instead of hanging
                std::fprintf(stderr, "rank %d of %d failed: %s\n", r, k, e.what());
                std::abort();
            }
        });
    for (auto& t : threads) t.join();
    return run;
}

std::string scratch(const std::string& name) {
    const auto p = std::filesystem::temp_directory_path() / ("calpaca-dist-" + std::to_string(::getpid()) + "-" + name);
    std::filesystem::remove_all(p);
    return p.string();
}

TEST(TrainDistributed, RanksTogetherEqualOneProcessWithTheSameGlobalBatch) {
    const BaseWeights base = test::train_fixture_base();
    const RankedRun one = run_ranks(base, 1, scratch("one"));
    for (int k : {2, 3}) {  // 3: 6 sequences dealt 2 + 2 + 2, micro-batches of 3 split 2 + 1 and 1 + 2
        const RankedRun many = run_ranks(base, k, scratch("k" + std::to_string(k)));
        ASSERT_EQ(static_cast<int>(many.results.size()), k);
        for (int r = 0; r < k; ++r) {
            const TrainResult& res = many.results[static_cast<size_t>(r)];
            EXPECT_EQ(res.steps, 4);
            EXPECT_NEAR(res.final_loss, one.results[0].final_loss, 1e-6 * std::abs(one.results[0].final_loss)) << k;
            EXPECT_NEAR(res.eval_loss, one.results[0].eval_loss, 1e-6 * std::abs(one.results[0].eval_loss)) << k;
        }
        double worst = 0;
        const auto& ref = one.params[0]->params();
        for (int r = 0; r < k; ++r) {
            const auto& got = many.params[static_cast<size_t>(r)]->params();
            ASSERT_EQ(got.size(), ref.size());
            for (size_t i = 0; i < ref.size(); ++i) {
                float scale = 0, diff = 0;
                for (size_t j = 0; j < ref[i]->w.size(); ++j) {
                    scale = std::max(scale, std::abs(ref[i]->w[j]));
                    diff = std::max(diff, std::abs(ref[i]->w[j] - got[i]->w[j]));
                }
                worst = std::max(worst, static_cast<double>(diff / std::max(scale, 1e-30f)));
                // every rank holds the same weights, bit for bit
                EXPECT_EQ(got[i]->w, many.params[0]->params()[i]->w) << ref[i]->name << " rank " << r;
            }
        }
        std::printf("[distributed] %d ranks vs 1 process: worst parameter difference %.3g of the tensor's max\n", k,
                    worst);
        EXPECT_LT(worst, 1e-5) << k << " ranks";
        // rank 0 alone wrote the adapter and the log
        EXPECT_TRUE(std::filesystem::exists(many.out_dir + "/adapter_model.safetensors"));
        EXPECT_TRUE(std::filesystem::exists(many.out_dir + "/train_log.csv"));
        std::filesystem::remove_all(many.out_dir);
    }
    std::filesystem::remove_all(one.out_dir);
}

}  // namespace
}  // namespace calpaca
