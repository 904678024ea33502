// CSV parsing and the C-Eval / CMMLU loaders: real fixture files parse; every malformed input is
// a one-line Error naming the file and the row.
#include <gtest/gtest.h>

#include <filesystem>
#include <unistd.h>

#include <fstream>
#include <functional>
#include <map>
#include <string>

#include "calpaca/base/error.h"
#include "calpaca/eval/ceval.h"
#include "calpaca/eval/cmmlu.h"
#include "calpaca/eval/csv.h"

using namespace calpaca;
namespace fs = std::filesystem;

namespace {
const std::string kFix = std::string(CALPACA_TEST_DATA) + "/eval";

std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    }
    return "<no error>";
}

void expect_one_line_error(const std::function<void()>& f, const std::string& needle) {
    std::string e = error_of(f);
    EXPECT_NE(e.find(needle), std::string::npos) << e;
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
}

void write(const fs::path& p, const std::string& s) {
    fs::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << s;
}

// A scratch copy of the C-Eval fixture that a test may break.
fs::path scratch_ceval(const std::string& name) {
    fs::path d = fs::temp_directory_path() / ("calpaca-eval-" + name + "-" + std::to_string(::getpid()));
    fs::remove_all(d);
    fs::copy(kFix + "/ceval", d, fs::copy_options::recursive);
    return d;
}
}  // namespace

TEST(EvalCsv, QuotesNewlinesAndLineEndings) {
    auto t = parse_csv("a,b,c\r\n1,\"x,\"\"y\"\"\nz\",3\r\n\n4,,\"\"\r5,6,7", "t.csv");
    ASSERT_EQ(t.header, (std::vector<std::string>{"a", "b", "c"}));
    ASSERT_EQ(t.rows.size(), 3u);
    EXPECT_EQ(t.rows[0][1], "x,\"y\"\nz");
    EXPECT_EQ(t.rows[1], (std::vector<std::string>{"4", "", ""}));
    EXPECT_EQ(t.rows[2], (std::vector<std::string>{"5", "6", "7"}));
    EXPECT_EQ(t.row_lines[0], 2u);
    EXPECT_EQ(t.row_lines[1], 5u);  // the quoted newline and the blank line count
    EXPECT_EQ(t.row_lines[2], 6u);
    EXPECT_EQ(t.where(1), "t.csv: row 2 (line 5)");
    // byte-order mark and a final newline
    auto u = parse_csv("\xEF\xBB\xBFq,a\nx,y\n", "u.csv");
    EXPECT_EQ(u.header[0], "q");
    EXPECT_EQ(u.rows.size(), 1u);
}

TEST(EvalCsv, MalformedInputNamesFileAndRow) {
    expect_one_line_error([] { parse_csv("a,b\n1,2\n3\n", "f.csv"); }, "f.csv: row 2 (line 3): expected 2 fields as in the header, found 1");
    expect_one_line_error([] { parse_csv("a,b\n1,2,3\n", "f.csv"); }, "f.csv: row 1 (line 2): expected 2 fields");
    expect_one_line_error([] { parse_csv("a,b\n1,\"2\n3\n", "f.csv"); }, "f.csv: row 1 (line 2): quoted field never closed");
    expect_one_line_error([] { parse_csv("a,b\n1,2\"x\n", "f.csv"); }, "f.csv: row 1 (line 2): stray quote");
    expect_one_line_error([] { parse_csv("a,b\n1,\"2\"x\n", "f.csv"); }, "f.csv: row 1 (line 2): unexpected text after a closing quote");
    expect_one_line_error([] { parse_csv("a,b\n1,\xff\n", "f.csv"); }, "f.csv: invalid UTF-8 at byte 6 (line 2)");
    expect_one_line_error([] { parse_csv("", "f.csv"); }, "f.csv: empty file");
}

TEST(EvalCsv, WriterQuotesLikePython) {
    EXPECT_EQ(csv_field("plain 文本"), "plain 文本");
    EXPECT_EQ(csv_field("a,b"), "\"a,b\"");
    EXPECT_EQ(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    EXPECT_EQ(csv_field("two\nlines"), "\"two\nlines\"");
    std::string out;
    append_csv_row(out, {"", "x,y", "1"});
    EXPECT_EQ(out, ",\"x,y\",1\n");
    // round trip
    auto t = parse_csv("h1,h2,h3\n" + out, "r.csv");
    EXPECT_EQ(t.rows[0], (std::vector<std::string>{"", "x,y", "1"}));
}

TEST(EvalLoad, CevalFixture) {
    CevalData d;
    d.dir = kFix + "/ceval";
    auto subjects = load_ceval(d);
    ASSERT_EQ(subjects.size(), 2u);  // mapping order: computer_network (STEM) before logic (Humanities)
    EXPECT_EQ(subjects[0].key, "computer_network");
    EXPECT_EQ(subjects[0].name_zh, "计算机网络");
    EXPECT_EQ(subjects[0].group, "STEM");
    EXPECT_EQ(subjects[1].key, "logic");
    EXPECT_EQ(subjects[1].group, "Humanities");
    ASSERT_EQ(subjects[0].test.size(), 4u);
    EXPECT_EQ(subjects[0].test[0].options[2], "3");
    EXPECT_EQ(subjects[0].test[0].answer, "C");
    ASSERT_EQ(subjects[0].dev.size(), 5u);
    EXPECT_NE(subjects[0].dev[0].explanation.find("资源子网"), std::string::npos);
    // the test split has no answers
    d.split = "test";
    auto test = load_ceval(d);
    ASSERT_EQ(test[0].test.size(), 2u);
    EXPECT_EQ(test[0].test[0].answer, "");
    // subject filter
    d.split = "val";
    d.subjects = {"logic"};
    EXPECT_EQ(load_ceval(d).size(), 1u);
    d.subjects = {"no_such_subject"};
    expect_one_line_error([&] { load_ceval(d); }, "unknown C-Eval subject 'no_such_subject' (known: computer_network,");
    d.subjects = {"physician"};  // in the mapping, but no file in the fixture
    expect_one_line_error([&] { load_ceval(d); }, "physician_val.csv: no file for subject 'physician'");
}

TEST(EvalLoad, CevalMappingHas52SubjectsIn4Groups) {
    auto m = load_ceval_mapping(kFix + "/ceval/subject_mapping.json");
    ASSERT_EQ(m.size(), 52u);
    std::map<std::string, int> n;
    for (const auto& s : m) ++n[s.group];
    EXPECT_EQ(n["STEM"], 20);
    EXPECT_EQ(n["Social Science"], 10);
    EXPECT_EQ(n["Humanities"], 11);
    EXPECT_EQ(n["Other"], 11);
}

TEST(EvalLoad, CmmluMappingHas67SubjectsIn5Groups) {
    auto m = load_cmmlu_mapping(kFix + "/cmmlu/subject_mapping.json");
    ASSERT_EQ(m.size(), 67u);
    std::map<std::string, int> n;
    std::map<std::string, std::string> g;
    for (const auto& s : m) {
        ++n[s.group];
        g[s.key] = s.group;
    }
    EXPECT_EQ(n["China specific"], 15);
    EXPECT_EQ(n["STEM"], 17);
    EXPECT_EQ(n["Social Science"], 13);
    EXPECT_EQ(n["Humanities"], 11);
    EXPECT_EQ(n["Other"], 11);
    EXPECT_EQ(g["ancient_chinese"], "China specific");  // linguistics + china specific: the last group wins
    EXPECT_EQ(g["agronomy"], "Other");
    EXPECT_EQ(g["college_law"], "Humanities");
    EXPECT_EQ(g["economics"], "Social Science");
}

TEST(EvalLoad, CmmluFixture) {
    CmmluData d;
    d.dir = kFix + "/cmmlu";
    auto s = load_cmmlu(d);
    ASSERT_EQ(s.size(), 2u);
    EXPECT_EQ(s[0].key, "agronomy");
    EXPECT_EQ(s[1].key, "ancient_chinese");
    EXPECT_EQ(s[1].group, "China specific");
    EXPECT_EQ(s[0].test_header[0], "");  // the unnamed index column
    EXPECT_EQ(s[0].test[0].answer, "B");
    EXPECT_EQ(s[0].dev.size(), 5u);
}

TEST(EvalLoad, BadRowsAndUnknownSubjectsAreOneLineErrors) {
    auto d = scratch_ceval("bad");
    CevalData cd;
    cd.dir = d.string();
    // a row with a missing field
    write(d / "val/logic_val.csv", "id,question,A,B,C,D,answer\n0,q,a,b,c,d,A\n1,q,a,b,c,D\n");
    expect_one_line_error([&] { load_ceval(cd); }, "logic_val.csv: row 2 (line 3): expected 7 fields as in the header, found 6");
    // an answer that is not a letter
    write(d / "val/logic_val.csv", "id,question,A,B,C,D,answer\n0,q,a,b,c,d,E\n");
    expect_one_line_error([&] { load_ceval(cd); }, "logic_val.csv: row 1 (line 2): answer 'E' is not one of A, B, C, D");
    // a missing column
    write(d / "val/logic_val.csv", "id,question,A,B,C,answer\n0,q,a,b,c,A\n");
    expect_one_line_error([&] { load_ceval(cd); }, "logic_val.csv: header has no column 'D'");
    write(d / "val/logic_val.csv", "id,question,A,B,C,D,answer\n0,q,a,b,c,d,A\n");
    EXPECT_NO_THROW(load_ceval(cd));
    // a subject file the mapping does not know
    write(d / "val/astrology_val.csv", "id,question,A,B,C,D,answer\n0,q,a,b,c,d,A\n");
    expect_one_line_error([&] { load_ceval(cd); }, "astrology_val.csv: subject 'astrology' is not in");
    fs::remove(d / "val/astrology_val.csv");
    // a malformed dev file, needed for shots
    write(d / "dev/logic_dev.csv", "id,question,A,B,C,D,answer,explanation\n0,q,a,b,c,d,A,\"unclosed\n");
    expect_one_line_error([&] { load_ceval(cd); }, "logic_dev.csv: row 1 (line 2): quoted field never closed");
    cd.need_dev = false;  // zero-shot does not read it
    EXPECT_NO_THROW(load_ceval(cd));
    // a missing dev file
    fs::remove(d / "dev/logic_dev.csv");
    cd.need_dev = true;
    expect_one_line_error([&] { load_ceval(cd); }, "logic_dev.csv: missing");
    // a bad mapping
    write(d / "subject_mapping.json", "{\"logic\": [\"Logic\", \"逻辑学\", \"Philosophy\"]}");
    expect_one_line_error([&] { load_ceval(cd); }, "subject_mapping.json: subject 'logic': group 'Philosophy' is not one of");
    write(d / "subject_mapping.json", "{\"logic\": ");
    expect_one_line_error([&] { load_ceval(cd); }, "subject_mapping.json: invalid JSON");
    cd.dir = (d / "nowhere").string();
    expect_one_line_error([&] { load_ceval(cd); }, "not a directory");
    fs::remove_all(d);
}
