// libFuzzer target: the safetensors reader must turn any bytes into a parsed file or a
// calpaca::Error — never a crash or an out-of-bounds read (built with ASan/UBSan).
#include <cstddef>
#include <cstdint>

#include "calpaca/base/error.h"
#include "calpaca/formats/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        auto f = calpaca::SafeTensorsFile::parse(data, size, "fuzz.safetensors");
        volatile uint8_t sink = 0;
        for (const auto& t : f->tensors())
            if (t.n_bytes) sink = sink ^ t.data[0] ^ t.data[t.n_bytes - 1];
        for (const auto& t : f->tensors()) (void)f->find(t.name);
    } catch (const calpaca::Error&) {
    }
    return 0;
}
