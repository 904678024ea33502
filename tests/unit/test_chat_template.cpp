// Chat templates: byte-exact renders (strings written from seed-features §3), truncation, names.
#include <gtest/gtest.h>

#include "calpaca/base/error.h"
#include "calpaca/generate/chat_template.h"

using namespace calpaca;

namespace {

constexpr int32_t BOS = 1, EOS = 2;

const std::string kAlpacaSys =
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.";
const std::string kV2Sys = "You are a helpful assistant. 你是一个乐于助人的助手。";
const std::string kV2LongSys =
    "You are a helpful assistant. 你是一个乐于助人的助手。请你提供专业、有逻辑、内容真实、有价值的详细回复。";

PromptPart T(const std::string& s) { return PromptPart::Text(s); }
PromptPart S(int32_t id) { return PromptPart::Special(id); }
using Parts = std::vector<PromptPart>;

std::vector<PromptPart> render(const std::string& tmpl, const std::vector<ChatMessage>& msgs) {
    return make_chat_template(tmpl)->render(msgs, BOS, EOS);
}

std::string error_of(const std::function<void()>& fn) {
    try {
        fn();
    } catch (const Error& e) {
        return e.what();
    }
    return "(no error)";
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// alpaca (v1 training template + v1 OpenAI server multi-turn)

TEST(ChatTemplateAlpaca, SingleTurnEqualsTrainingTemplate) {
    auto t = make_chat_template("alpaca");
    EXPECT_EQ(t->name(), "alpaca");
    EXPECT_EQ(t->default_system(), kAlpacaSys);
    auto parts = t->render_single("为什么要减少污染，保护环境？", BOS, EOS);
    EXPECT_EQ(parts, (Parts{S(BOS), T("Below is an instruction that describes a task. Write a response that "
                                      "appropriately completes the request.\n\n### Instruction:\n"
                                      "为什么要减少污染，保护环境？\n\n### Response: ")}));
    // with an input: instruction + "\n" + input
    auto with_input = t->render_single(join_instruction_input("Translate to English.", "你好"), BOS, EOS);
    EXPECT_EQ(with_input[1].text, kAlpacaSys + "\n\n### Instruction:\nTranslate to English.\n你好\n\n### Response: ");
    EXPECT_EQ(join_instruction_input("x", ""), "x");
}

TEST(ChatTemplateAlpaca, MultiTurnAsOpenAIServer) {
    auto parts = render("alpaca", {{"user", "q1"}, {"assistant", "a1"}, {"user", "q2"}});
    EXPECT_EQ(parts, (Parts{S(BOS), T(kAlpacaSys + "\n\n### Instruction:\nq1\n\n### Response: a1\n\n"
                                                   "### Instruction:\nq2\n\n### Response: ")}));
}

TEST(ChatTemplateAlpaca, SystemOverrideLastWinsAndEmptyDrops) {
    auto parts = render("alpaca", {{"system", "first"}, {"user", "q"}, {"system", "You are a poet."}});
    EXPECT_EQ(parts, (Parts{S(BOS), T("You are a poet.\n\n### Instruction:\nq\n\n### Response: ")}));
    auto none = render("alpaca", {{"system", ""}, {"user", "q"}});
    EXPECT_EQ(none, (Parts{S(BOS), T("### Instruction:\nq\n\n### Response: ")}));
    auto t = make_chat_template("alpaca");
    EXPECT_EQ(t->render_single("q", BOS, EOS, std::string("S")), (Parts{S(BOS), T("S\n\n### Instruction:\nq\n\n### Response: ")}));
}

TEST(ChatTemplateAlpaca, EmptyAnswer) {
    auto parts = render("alpaca", {{"user", "q1"}, {"assistant", ""}, {"user", "q2"}});
    EXPECT_EQ(parts[1].text, kAlpacaSys + "\n\n### Instruction:\nq1\n\n### Response: \n\n### Instruction:\nq2\n\n### Response: ");
}

TEST(ChatTemplateAlpaca, UserTextIsNeverSpecial) {
    // "<s>" typed by a user stays text inside the text part; only the leading BOS is special.
    auto parts = render("alpaca", {{"user", "<s>hi</s>"}});
    ASSERT_EQ(parts.size(), 2u);
    EXPECT_EQ(parts[0], S(BOS));
    EXPECT_NE(parts[1].text.find("<s>hi</s>"), std::string::npos);
    EXPECT_FALSE(parts[1].is_special());
}

// ---------------------------------------------------------------------------------------------
// alpaca-llamacpp (inference_hf.py --with_prompt / llama.cpp -ins)

TEST(ChatTemplateAlpacaLlamacpp, SingleTurnExact) {
    auto parts = make_chat_template("alpaca-llamacpp")->render_single("为什么要减少污染，保护环境？", BOS, EOS);
    EXPECT_EQ(parts, (Parts{S(BOS), T("Below is an instruction that describes a task. Write a response that "
                                      "appropriately completes the request.\n\n### Instruction:\n\n"
                                      "为什么要减少污染，保护环境？\n\n### Response:\n\n")}));
}

TEST(ChatTemplateAlpacaLlamacpp, MultiTurnLikeInstructMode) {
    auto parts = render("alpaca-llamacpp", {{"user", "q1"}, {"assistant", "a1"}, {"user", "q2"}});
    // llama.cpp -ins: each new input is "\n\n### Instruction:\n\n" + q + "\n\n### Response:\n\n".
    EXPECT_EQ(parts, (Parts{S(BOS), T(kAlpacaSys + "\n\n### Instruction:\n\nq1\n\n### Response:\n\na1"
                                                   "\n\n### Instruction:\n\nq2\n\n### Response:\n\n")}));
}

// ---------------------------------------------------------------------------------------------
// alpaca-2 (Llama-2 chat)

TEST(ChatTemplateAlpaca2, SingleTurnDefaultSystem) {
    auto t = make_chat_template("alpaca-2");
    EXPECT_EQ(t->default_system(), kV2Sys);
    auto parts = t->render_single("为什么要减少污染，保护环境？", BOS, EOS);
    EXPECT_EQ(parts, (Parts{S(BOS), T("[INST] <<SYS>>\nYou are a helpful assistant. 你是一个乐于助人的助手。\n<</SYS>>\n\n"
                                      "为什么要减少污染，保护环境？ [/INST]")}));
}

TEST(ChatTemplateAlpaca2, EmptySystemHasNoSysBlock) {
    auto parts = make_chat_template("alpaca-2")->render_single("q", BOS, EOS, std::string());
    EXPECT_EQ(parts, (Parts{S(BOS), T("[INST] q [/INST]")}));
}

TEST(ChatTemplateAlpaca2, MultiTurnWithEosBosIds) {
    auto parts = render("alpaca-2", {{"user", "q1"}, {"assistant", "a1"}, {"user", "q2"}, {"assistant", "a2"}, {"user", "q3"}});
    Parts want = {S(BOS), T("[INST] <<SYS>>\n" + kV2Sys + "\n<</SYS>>\n\nq1 [/INST] a1"), S(EOS), S(BOS),
                  T("[INST] q2 [/INST] a2"), S(EOS), S(BOS), T("[INST] q3 [/INST]")};
    EXPECT_EQ(parts, want);
    // Same as seed-features' string with </s><s> read as ids 2 and 1 (plus the tokenizer's BOS).
    EXPECT_EQ(parts_to_string(parts, BOS, EOS),
              "<s>[INST] <<SYS>>\n" + kV2Sys + "\n<</SYS>>\n\nq1 [/INST] a1</s><s>[INST] q2 [/INST] a2</s><s>[INST] q3 [/INST]");
}

TEST(ChatTemplateAlpaca2, EmptyAnswerHasNoSpace) {
    auto parts = render("alpaca-2", {{"user", "q1"}, {"assistant", ""}, {"user", "q2"}});
    Parts want = {S(BOS), T("[INST] <<SYS>>\n" + kV2Sys + "\n<</SYS>>\n\nq1 [/INST]"), S(EOS), S(BOS), T("[INST] q2 [/INST]")};
    EXPECT_EQ(parts, want);
}

TEST(ChatTemplateAlpaca2, SystemOverrideOnlyOnFirstTurn) {
    auto parts = render("alpaca-2", {{"system", "你是一个翻译。"}, {"user", "q1"}, {"assistant", "a1"}, {"user", "q2"}});
    EXPECT_EQ(parts_to_string(parts, BOS, EOS),
              "<s>[INST] <<SYS>>\n你是一个翻译。\n<</SYS>>\n\nq1 [/INST] a1</s><s>[INST] q2 [/INST]");
    auto nosys = render("alpaca-2", {{"system", ""}, {"user", "q1"}, {"assistant", "a1"}, {"user", "q2"}});
    EXPECT_EQ(parts_to_string(nosys, BOS, EOS), "<s>[INST] q1 [/INST] a1</s><s>[INST] q2 [/INST]");
}

TEST(ChatTemplateAlpaca2, LongSystemPrompt) {
    auto t = make_chat_template("alpaca-2-long");
    EXPECT_EQ(t->name(), "alpaca-2-long");
    EXPECT_EQ(t->default_system(), kV2LongSys);
    EXPECT_EQ(t->render_single("q", BOS, EOS),
              (Parts{S(BOS), T("[INST] <<SYS>>\n" + kV2LongSys + "\n<</SYS>>\n\nq [/INST]")}));
}

TEST(ChatTemplateAlpaca2, ConsecutiveUsersAndOtherIds) {
    auto parts = make_chat_template("alpaca-2")->render({{"user", "q1"}, {"user", "q2"}}, 7, 8);
    EXPECT_EQ(parts, (Parts{S(7), T("[INST] <<SYS>>\n" + kV2Sys + "\n<</SYS>>\n\nq1 [/INST]"), S(7), T("[INST] q2 [/INST]")}));
    EXPECT_EQ(parts_to_string({S(9)}, 7, 8), "<id:9>");
}

// ---------------------------------------------------------------------------------------------
// errors, names, vocab sizes

TEST(ChatTemplateErrors, BadConversations) {
    EXPECT_EQ(error_of([] { render("alpaca-2", {{"tool", "x"}, {"user", "q"}}); }),
              "unknown chat role 'tool' (expected system, user or assistant)");
    EXPECT_EQ(error_of([] { render("alpaca", {}); }), "the conversation has no user message");
    EXPECT_EQ(error_of([] { render("alpaca", {{"system", "s"}}); }), "the conversation has no user message");
    EXPECT_NE(error_of([] { render("alpaca-2", {{"user", "q"}, {"assistant", "a"}}); }).find("must end with a user message"),
              std::string::npos);
    EXPECT_NE(error_of([] { render("alpaca-2", {{"assistant", "a"}, {"user", "q"}}); }).find("must start with a user message"),
              std::string::npos);
}

TEST(ChatTemplateNames, UnknownNameListsKnownOnes) {
    EXPECT_EQ(chat_template_names(), (std::vector<std::string>{"alpaca", "alpaca-llamacpp", "alpaca-2", "alpaca-2-long"}));
    for (const auto& n : chat_template_names()) EXPECT_EQ(make_chat_template(n)->name(), n);
    EXPECT_EQ(error_of([] { make_chat_template("llama-3"); }),
              "unknown chat template 'llama-3' (known: alpaca, alpaca-llamacpp, alpaca-2, alpaca-2-long)");
}

TEST(ChatTemplateNames, TemplateForVocabSize) {
    EXPECT_EQ(template_for_vocab_size(49954), "alpaca");
    EXPECT_EQ(template_for_vocab_size(55296), "alpaca-2");
    EXPECT_EQ(template_for_vocab_size(49953), "");
    EXPECT_EQ(template_for_vocab_size(32000), "");
}

// ---------------------------------------------------------------------------------------------
// history truncation

namespace {
// Fake tokenizer: one token per byte of text, one per special.
size_t count_bytes(const std::vector<PromptPart>& parts) {
    size_t n = 0;
    for (const auto& p : parts) n += p.is_special() ? 1 : p.text.size();
    return n;
}
}  // namespace

TEST(ChatTemplateTruncate, DropsOldestTurnsKeepsSystemAndLast) {
    auto t = make_chat_template("alpaca-2");
    std::vector<ChatMessage> msgs = {{"system", "S"},      {"user", "q1"}, {"assistant", "a1"},
                                     {"user", "q2"},       {"assistant", "a2"}, {"user", "q3"}};
    size_t full = count_bytes(t->render(msgs, BOS, EOS));
    // Fits: unchanged.
    EXPECT_EQ(truncate_history(*t, msgs, BOS, EOS, full, count_bytes), msgs);

    // One byte short: the first turn (q1, a1) goes, the system prompt stays.
    auto one = truncate_history(*t, msgs, BOS, EOS, full - 1, count_bytes);
    std::vector<ChatMessage> want1 = {{"system", "S"}, {"user", "q2"}, {"assistant", "a2"}, {"user", "q3"}};
    EXPECT_EQ(one, want1);
    // The remaining first user turn now carries the <<SYS>> block.
    EXPECT_EQ(parts_to_string(t->render(one, BOS, EOS), BOS, EOS),
              "<s>[INST] <<SYS>>\nS\n<</SYS>>\n\nq2 [/INST] a2</s><s>[INST] q3 [/INST]");

    // Budget for the last turn alone.
    size_t last = count_bytes(t->render({{"system", "S"}, {"user", "q3"}}, BOS, EOS));
    std::vector<ChatMessage> want2 = {{"system", "S"}, {"user", "q3"}};
    EXPECT_EQ(truncate_history(*t, msgs, BOS, EOS, last, count_bytes), want2);

    // Even the last turn does not fit.
    std::string err = error_of([&] { truncate_history(*t, msgs, BOS, EOS, last - 1, count_bytes); });
    EXPECT_NE(err.find(std::to_string(last) + " tokens"), std::string::npos) << err;
    EXPECT_NE(err.find("budget of " + std::to_string(last - 1)), std::string::npos) << err;
}

TEST(ChatTemplateTruncate, AlpacaAndTurnsWithoutAnswers) {
    auto t = make_chat_template("alpaca");
    std::vector<ChatMessage> msgs = {{"user", "long question one"}, {"user", "q2"}, {"assistant", "a2"}, {"user", "q3"}};
    size_t full = count_bytes(t->render(msgs, BOS, EOS));
    auto kept = truncate_history(*t, msgs, BOS, EOS, full - 1, count_bytes);
    std::vector<ChatMessage> want = {{"user", "q2"}, {"assistant", "a2"}, {"user", "q3"}};
    EXPECT_EQ(kept, want);
    // Errors from render propagate.
    EXPECT_THROW(truncate_history(*t, {{"user", "q"}, {"assistant", "a"}}, BOS, EOS, 1000, count_bytes), Error);
}
