// libFuzzer target: the C-Eval/CMMLU CSV reader must turn any byte string into either a table
// whose rows all have the header's width or a one-line calpaca::Error — never a crash or hang;
// and what append_csv_row writes must read back as the same fields.
#include <cstddef>
#include <cstdint>
#include <string>

#include "calpaca/base/error.h"
#include "calpaca/eval/csv.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string text(reinterpret_cast<const char*>(data), size);
    try {
        calpaca::CsvTable t = calpaca::parse_csv(text, "fuzz.csv");
        if (t.rows.size() != t.row_lines.size()) __builtin_trap();
        std::string out;
        calpaca::append_csv_row(out, t.header);
        for (const auto& r : t.rows) {
            if (r.size() != t.header.size()) __builtin_trap();
            calpaca::append_csv_row(out, r);
        }
        // (a leading byte-order mark is dropped on reading, so give the copy one to drop)
        calpaca::CsvTable back = calpaca::parse_csv("\xEF\xBB\xBF" + out, "back.csv");
        if (back.header != t.header) __builtin_trap();
        if (back.rows != t.rows) __builtin_trap();
    } catch (const calpaca::Error& e) {
        if (std::string(e.what()).find('\n') != std::string::npos) __builtin_trap();
    }
    return 0;
}
