#include "calpaca/train/distributed.h"

// the C API only: without these, OpenMPI and MPICH also pull in their deprecated C++ bindings
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "calpaca/base/error.h"

namespace calpaca {

void SingleProcess::broadcast(void*, size_t, int root) {
    if (root != 0) fail("broadcast: root rank {} does not exist in a single process", root);
}

void SingleProcess::abort(int code) {
    std::fflush(stdout);
    std::fflush(stderr);
    std::_Exit(code);
}

bool launched_by_mpi() {
    for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"})
        if (const char* s = std::getenv(v); s && *s) return true;
    return false;
}

namespace {

// MPI counts are int: larger buffers go in pieces.
constexpr size_t kMaxCount = size_t{1} << 28;

class Mpi final : public Distributed {
public:
    Mpi() {
        int initialized = 0;
        MPI_Initialized(&initialized);
        if (initialized) fail("MPI is already initialised in this process");
        int provided = 0;
        // Only the main thread calls MPI (the thread pool never does).
        if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
            fail("MPI_Init_thread failed");
        // From here on a failing MPI call aborts all processes (MPI_ERRORS_ARE_FATAL, the default).
        MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
        MPI_Comm_size(MPI_COMM_WORLD, &size_);
        MPI_Comm node;
        MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node);
        MPI_Comm_size(node, &local_size_);
        MPI_Comm_free(&node);
    }
    ~Mpi() override {
        int finalized = 0;
        MPI_Finalized(&finalized);
        if (!finalized) MPI_Finalize();
    }
    int rank() const override { return rank_; }
    int size() const override { return size_; }
    int local_size() const override { return local_size_; }
    void allreduce_sum(float* data, size_t n) override {
        for (size_t i = 0; i < n; i += kMaxCount)
            MPI_Allreduce(MPI_IN_PLACE, data + i, static_cast<int>(std::min(kMaxCount, n - i)), MPI_FLOAT, MPI_SUM,
                          MPI_COMM_WORLD);
    }
    void allreduce_sum(double* data, size_t n) override {
        for (size_t i = 0; i < n; i += kMaxCount)
            MPI_Allreduce(MPI_IN_PLACE, data + i, static_cast<int>(std::min(kMaxCount, n - i)), MPI_DOUBLE, MPI_SUM,
                          MPI_COMM_WORLD);
    }
    void broadcast(void* data, size_t bytes, int root) override {
        if (root < 0 || root >= size_) fail("broadcast: root rank {} does not exist ({} processes)", root, size_);
        auto* p = static_cast<char*>(data);
        for (size_t i = 0; i < bytes; i += kMaxCount)
            MPI_Bcast(p + i, static_cast<int>(std::min(kMaxCount, bytes - i)), MPI_BYTE, root, MPI_COMM_WORLD);
    }
    void barrier() override { MPI_Barrier(MPI_COMM_WORLD); }
    [[noreturn]] void abort(int code) override {
        std::fflush(stdout);
        std::fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, code);
        std::_Exit(code);  // MPI_Abort does not return; this only satisfies [[noreturn]]
    }

private:
    int rank_ = 0, size_ = 1, local_size_ = 1;
};

}  // namespace

std::unique_ptr<Distributed> distributed_from_environment() {
    if (launched_by_mpi()) return std::make_unique<Mpi>();
    return std::make_unique<SingleProcess>();
}

void check_same_on_all_ranks(Distributed& d, uint64_t value, const char* what) {
    uint64_t root_value = value;
    d.broadcast(&root_value, sizeof root_value, 0);
    double differs = root_value != value ? 1.0 : 0.0;
    d.allreduce_sum(&differs, 1);
    if (differs > 0)
        fail("{} differs between the MPI processes ({} of {} disagree with rank 0)", what, static_cast<int>(differs),
             d.size());
}

}  // namespace calpaca
