// libFuzzer target: the GGUF reader must turn any byte string into either a parsed file
// or a calpaca::Error — never a crash, hang, or out-of-bounds read (built with ASan/UBSan).
#include <cstddef>
#include <cstdint>

#include "calpaca/base/error.h"
#include "calpaca/formats/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        auto f = calpaca::GGUFFile::parse(data, size, "fuzz.gguf");
        // touch everything the reader promises is in bounds
        volatile uint8_t sink = 0;
        for (const auto& t : f->tensors()) {
            const uint8_t* p = f->tensor_data(t);
            uint64_t n = t.n_bytes();
            sink = sink ^ p[0] ^ p[n - 1];
        }
        for (const auto& kv : f->kv()) (void)kv.second.to_display();
    } catch (const calpaca::Error&) {
    }
    return 0;
}
