// C-Eval (52 subjects, 4 groups) as the Chinese-LLaMA-Alpaca runners read it:
// DIR/{dev,val,test}/{subject}_{split}.csv with columns id,question,A,B,C,D,answer[,explanation]
// (test has no answer column), and subject_mapping.json {key: [English name, Chinese name, group]}.
#pragma once
#include <string>
#include <vector>

#include "calpaca/eval/multiple_choice.h"

namespace calpaca {

// Group order of the original's summary.json.
const std::vector<std::string>& ceval_groups();  // STEM, Social Science, Humanities, Other
// The v2 runner's system prompt (--with_prompt).
inline constexpr const char* kCevalSystemPrompt = "You are a helpful assistant. 你是一个乐于助人的助手。";

// subject_mapping.json, in file order. Errors name the file and the key.
std::vector<SubjectInfo> load_ceval_mapping(const std::string& path);

struct CevalData {
    std::string dir;              // holds dev/, val/, test/
    std::string split = "val";    // val | test
    std::string mapping;          // default: DIR/subject_mapping.json
    std::vector<std::string> subjects;  // empty = all
    bool need_dev = true;
};
std::vector<McSubject> load_ceval(const CevalData& d);

}  // namespace calpaca
