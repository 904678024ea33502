// CMMLU (67 subjects, 5 groups including "China specific") as the Chinese-LLaMA-Alpaca-2 runner
// reads it: DIR/{dev,test}/{subject}.csv with columns ",Question,A,B,C,D,Answer" (the first is an
// unnamed row index).
//
// Groups come from CMMLU's categories.py: each subject has sub-categories, each group lists
// sub-categories, and the runner assigns a subject to every group that lists one of its
// sub-categories, keeping the LAST in the order STEM, Humanities, Social Science, Other,
// China specific — so every subject tagged "china specific" (15 of them) lands in that group.
#pragma once
#include <string>
#include <vector>

#include "calpaca/eval/multiple_choice.h"

namespace calpaca {

// Group order of the original's summary.json: China specific, STEM, Social Science, Humanities, Other.
const std::vector<std::string>& cmmlu_groups();
inline constexpr const char* kCmmluSystemPrompt = "你是一个乐于助人的助手。";

// A JSON mapping in either form:
//   {"name_en2zh": {key: 中文名}, "subcategories": {key: [subcat...]}, "categories": {group: [subcat...]}}
//     (categories.py's three dicts; the group is resolved as described above), or
//   {key: [English name, Chinese name, group]} (C-Eval's form).
std::vector<SubjectInfo> load_cmmlu_mapping(const std::string& path);

struct CmmluData {
    std::string dir;              // holds dev/ and test/
    std::string mapping;          // default: DIR/subject_mapping.json
    std::vector<std::string> subjects;
    bool need_dev = true;
};
std::vector<McSubject> load_cmmlu(const CmmluData& d);

}  // namespace calpaca
