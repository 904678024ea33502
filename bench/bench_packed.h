// Shared by the kernel benchmarks (bench_kernels.cpp, bench_quant.cpp): give a weight view a
// packed copy (tensor/packed.h), as Model::pack_weights does at load.
#pragma once
#include <benchmark/benchmark.h>

#include <cstdint>
#include <vector>

#include "calpaca/tensor/kernels.h"
#include "calpaca/tensor/packed.h"

namespace calpaca {

// Packs m's weights into storage and points m.packed at it; false (the benchmark skipped with
// an error) where this build has no packed kernel for the type or shape.
inline bool attach_packed(benchmark::State& st, MatrixView& m, std::vector<uint8_t>& storage) {
    if (!packable(m.type, m.rows, m.cols)) {
        st.SkipWithError("no packed kernel for this type in this build");
        return false;
    }
    storage.resize(packed_bytes(m.type, m.rows, m.cols));
    pack_weights(m.type, m.data, m.cols, 0, m.rows / kPackRows, storage.data());
    m.packed = storage.data();
    return true;
}

}  // namespace calpaca
