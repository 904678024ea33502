// libFuzzer target: PyTorch checkpoints (zip directory + restricted unpickler + view
// validation) and bare pickles must turn any bytes into a parsed state dict or a
// calpaca::Error — never a crash, an out-of-bounds read, a leak or executed code.
#include <cstddef>
#include <cstdint>

#include "calpaca/base/error.h"
#include "calpaca/formats/pickle.h"
#include "calpaca/formats/torch_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        auto views = calpaca::parse_torch_checkpoint(data, size, "fuzz.bin");
        volatile uint8_t sink = 0;
        for (const auto& t : views) {  // the first and last addressable element must be readable
            const auto& v = t.view;
            uint64_t n = 1;
            int64_t last = 0;
            for (size_t d = 0; d < v.shape.size(); ++d) {
                n *= v.shape[d];
                if (v.shape[d]) last += static_cast<int64_t>(v.shape[d] - 1) * v.stride[d];
            }
            if (n == 0) continue;
            const size_t es = calpaca::dtype_info(v.type).type_size;
            sink = sink ^ v.base[0] ^ v.base[last * static_cast<int64_t>(es) + static_cast<int64_t>(es) - 1];
        }
    } catch (const calpaca::Error&) {
    }
    try {
        auto sd = calpaca::unpickle_torch_state_dict(data, size, "fuzz.pkl");
        (void)sd;
    } catch (const calpaca::Error&) {
    }
    return 0;
}
