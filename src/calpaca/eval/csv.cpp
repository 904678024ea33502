#include "calpaca/eval/csv.h"

#include <fmt/format.h>

#include "calpaca/base/error.h"
#include "calpaca/base/fileio.h"
#include "calpaca/base/utf8.h"

namespace calpaca {

int CsvTable::column(std::string_view name) const {
    for (size_t i = 0; i < header.size(); ++i)
        if (header[i] == name) return static_cast<int>(i);
    return -1;
}

size_t CsvTable::require_column(std::string_view name) const {
    int c = column(name);
    if (c < 0) fail("{}: header has no column '{}' (columns: {})", source, name, fmt::join(header, ","));
    return static_cast<size_t>(c);
}

std::string CsvTable::where(size_t r) const {
    return fmt::format("{}: row {} (line {})", source, r + 1, r < row_lines.size() ? row_lines[r] : 0);
}

namespace {

// Splits text into records of fields. Reports errors with the record's ordinal (0 = header).
class Parser {
public:
    Parser(std::string_view t, const std::string& src) : t_(t), src_(src) {}

    // Reads the next non-blank record into `out`; false at the end of the text.
    bool next(std::vector<std::string>& out, size_t& start_line) {
        out.clear();
        // skip blank lines
        while (pos_ < t_.size() && (t_[pos_] == '\n' || t_[pos_] == '\r')) eat_newline();
        if (pos_ >= t_.size()) return false;
        start_line = line_;
        std::string field;
        for (;;) {
            field.clear();
            if (pos_ < t_.size() && t_[pos_] == '"') {
                const size_t qline = line_;
                ++pos_;
                for (;;) {
                    if (pos_ >= t_.size())
                        fail("{}: {} (line {}): quoted field never closed (opened on line {})", src_,
                             record_name(), start_line, qline);
                    char c = t_[pos_];
                    if (c == '"') {
                        if (pos_ + 1 < t_.size() && t_[pos_ + 1] == '"') {
                            field += '"';
                            pos_ += 2;
                            continue;
                        }
                        ++pos_;
                        break;
                    }
                    if (c == '\n') ++line_;
                    if (c == '\r' && !(pos_ + 1 < t_.size() && t_[pos_ + 1] == '\n')) ++line_;
                    field += c;
                    ++pos_;
                }
                if (pos_ < t_.size() && t_[pos_] != ',' && t_[pos_] != '\n' && t_[pos_] != '\r')
                    fail("{}: {} (line {}): unexpected text after a closing quote in field {}", src_, record_name(),
                         start_line, out.size() + 1);
            } else {
                while (pos_ < t_.size() && t_[pos_] != ',' && t_[pos_] != '\n' && t_[pos_] != '\r') {
                    if (t_[pos_] == '"')
                        fail("{}: {} (line {}): stray quote inside unquoted field {}", src_, record_name(),
                             start_line, out.size() + 1);
                    field += t_[pos_++];
                }
            }
            out.push_back(field);
            if (pos_ >= t_.size()) break;
            if (t_[pos_] == ',') {
                ++pos_;
                continue;
            }
            eat_newline();
            break;
        }
        ++record_;
        return true;
    }

private:
    void eat_newline() {
        if (t_[pos_] == '\r' && pos_ + 1 < t_.size() && t_[pos_ + 1] == '\n') ++pos_;
        ++pos_;
        ++line_;
    }
    std::string record_name() const { return record_ == 0 ? std::string("header") : fmt::format("row {}", record_); }

    std::string_view t_;
    const std::string& src_;
    size_t pos_ = 0, line_ = 1, record_ = 0;
};

}  // namespace

CsvTable parse_csv(std::string_view text, const std::string& source) {
    CsvTable t;
    t.source = source;
    if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);
    size_t bad = utf8::find_invalid(text);
    if (bad != std::string::npos) {
        size_t line = 1;
        for (size_t i = 0; i < bad; ++i) line += text[i] == '\n';
        fail("{}: invalid UTF-8 at byte {} (line {})", source, bad, line);
    }
    Parser p(text, t.source);
    size_t line = 0;
    if (!p.next(t.header, line)) fail("{}: empty file (expected a header line)", source);
    std::vector<std::string> rec;
    while (p.next(rec, line)) {
        if (rec.size() != t.header.size())
            fail("{}: row {} (line {}): expected {} fields as in the header, found {}", source, t.rows.size() + 1, line,
                 t.header.size(), rec.size());
        t.rows.push_back(rec);
        t.row_lines.push_back(line);
    }
    return t;
}

CsvTable read_csv(const std::string& path) { return parse_csv(read_file(path), path); }

std::string csv_field(std::string_view f) {
    if (f.find_first_of(",\"\r\n") == std::string_view::npos) return std::string(f);
    std::string s = "\"";
    for (char c : f) {
        if (c == '"') s += '"';
        s += c;
    }
    s += '"';
    return s;
}

void append_csv_row(std::string& out, const std::vector<std::string>& fields) {
    if (fields.size() == 1 && fields[0].empty()) {  // as Python's csv: a lone empty field is quoted
        out += "\"\"\n";
        return;
    }
    for (size_t i = 0; i < fields.size(); ++i) {
        if (i) out += ',';
        out += csv_field(fields[i]);
    }
    out += '\n';
}

}  // namespace calpaca
