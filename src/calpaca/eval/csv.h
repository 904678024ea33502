// CSV reading and writing for the C-Eval / CMMLU data files (RFC 4180 with the leniencies of
// pandas.read_csv, which the original runners use).
//
// Reading rules:
//   * UTF-8 only (a leading byte-order mark is dropped); invalid UTF-8 is an error.
//   * A record ends at "\n", "\r\n" or a lone "\r" outside quotes (pandas' C parser does the same).
//   * A field is either unquoted (no '"' allowed in it) or wholly quoted, with "" standing for
//     one quote; inside quotes any byte, line breaks included, is literal.
//   * Empty lines between records are skipped (pandas' skip_blank_lines).
//   * Every record must have exactly as many fields as the header.
// Every error is one line naming the file, the data row (1-based, header excluded) and the line
// where that row starts, e.g. "val/logic_val.csv: row 3 (line 4): expected 7 fields, found 6".
#pragma once
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace calpaca {

struct CsvTable {
    std::string source;                          // file name used in messages
    std::vector<std::string> header;
    std::vector<std::vector<std::string>> rows;  // each has header.size() fields
    std::vector<size_t> row_lines;               // 1-based line where each row starts

    // Index of the column named `name`, or -1.
    int column(std::string_view name) const;
    // Index of the column named `name`; Error naming the file and the header otherwise.
    size_t require_column(std::string_view name) const;
    // "FILE: row N (line L)" prefix for messages about row r (0-based).
    std::string where(size_t r) const;
};

CsvTable parse_csv(std::string_view text, const std::string& source);
CsvTable read_csv(const std::string& path);

// One field as Python's csv module (and so pandas.to_csv) writes it with QUOTE_MINIMAL: quoted
// when it contains ',', '"', '\r' or '\n' (quotes doubled), as-is otherwise.
std::string csv_field(std::string_view field);
// Appends the fields joined with ',' and a terminating "\n" (a row of one empty field is written
// as "\"\"" so that it does not read back as a blank line).
void append_csv_row(std::string& out, const std::vector<std::string>& fields);

}  // namespace calpaca
