// Data-parallel training across processes: the few collective operations the trainer needs
// (rank, size, sum all-reduce, broadcast, barrier, abort), with a single-process implementation
// (every operation is the identity) and one over MPI for `mpirun -np K calpaca train ...`.
//
// DESIGN: libmpi is linked (pkg-config `mpi-c`: Debian's OpenMPI, or MPICH through the same
// alternative) rather than loaded at run time with dlopen. MPI's handles (MPI_COMM_WORLD,
// MPI_FLOAT, MPI_SUM) are implementation-specific ABI — in OpenMPI addresses of exported
// objects, in MPICH integer constants — so a dlopen loader would have to hard-code one
// implementation's symbols without the compiler checking them; linking against mpi.h keeps
// every call type-checked and portable across implementations. The cost is a run-time
// dependency on libmpi (one Debian package, which CI installs anyway). MPI_Init is only called
// when the process was started by an MPI launcher (its environment variables are present), so
// without mpirun nothing of MPI runs and a plain `calpaca train` behaves exactly as before.
//
// How the trainer uses it (trainer.cpp): the sequences of each optimizer step are dealt out
// round-robin (sequence i of the step's global batch goes to rank i % size); each keeps the
// single-process loss scale 1 / (valid labels of its micro-batch × grad-accum), so the sum of
// the ranks' gradients, formed by allreduce_sum, is exactly the single-process gradient up to
// the float summation order; clipping and AdamW then run identically on every rank.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

namespace calpaca {

class Distributed {
public:
    virtual ~Distributed() = default;
    virtual int rank() const = 0;        // 0 .. size-1
    virtual int size() const = 0;        // number of processes
    virtual int local_size() const = 0;  // processes on this machine (to share its cores)
    // Element-wise sum over all ranks, in place; every rank receives the result.
    virtual void allreduce_sum(float* data, size_t n) = 0;
    virtual void allreduce_sum(double* data, size_t n) = 0;
    // Copies `bytes` bytes from rank `root` to every rank.
    virtual void broadcast(void* data, size_t bytes, int root) = 0;
    virtual void barrier() = 0;
    // Ends all processes with exit code `code` (MPI_Abort); never returns.
    [[noreturn]] virtual void abort(int code) = 0;

    bool is_root() const { return rank() == 0; }
    // Whether item `index` of a list dealt round-robin over the ranks belongs to this rank.
    bool owns(uint64_t index) const { return static_cast<int>(index % static_cast<uint64_t>(size())) == rank(); }
};

class SingleProcess final : public Distributed {
public:
    int rank() const override { return 0; }
    int size() const override { return 1; }
    int local_size() const override { return 1; }
    void allreduce_sum(float*, size_t) override {}
    void allreduce_sum(double*, size_t) override {}
    void broadcast(void* data, size_t bytes, int root) override;  // root must be 0
    void barrier() override {}
    [[noreturn]] void abort(int code) override;
};

// True when an MPI launcher started this process (OMPI_COMM_WORLD_SIZE, PMI_SIZE or PMIX_RANK set).
bool launched_by_mpi();

// The MPI implementation when launched_by_mpi() (MPI_Init here, MPI_Finalize in the destructor;
// at most one per process), otherwise a SingleProcess.
std::unique_ptr<Distributed> distributed_from_environment();

// Fails (an Error on every rank) unless `value` is the same on all ranks; `what` names it.
void check_same_on_all_ranks(Distributed& d, uint64_t value, const char* what);

}  // namespace calpaca
