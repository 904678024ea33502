// Chat / instruction prompt templates of Chinese-Alpaca (v1) and Chinese-Alpaca-2 (v2), byte-exact
// (DESIGN.md "Prompt templates", seed-features §3).
//
// A rendered prompt is a list of PromptParts: plain text, or a special token given by id. BOS and
// EOS only ever appear as ids, never as the text "<s>"/"</s>", so nothing a user types can inject
// them. Each text part is meant to be tokenized on its own, exactly as HF's legacy slow
// LlamaTokenizer encodes each chunk between special tokens (each chunk gets its own dummy-prefix
// "▁"); the renderers therefore merge adjacent text into one part and split only at special ids.
//
// Decision: render() INCLUDES the leading BOS (as a special part) for every template, so the
// caller tokenizes the parts without adding BOS again. This equals HF `tokenizer(prompt)` with
// add_special_tokens=True, which is what every original script does.
//
// Conversations: any number of "system" messages (the LAST one's content replaces the template's
// default system prompt, as both original OpenAI servers do; an empty content means "no system
// prompt"), then "user"/"assistant" messages that must start and end with "user" (the rendered
// prompt ends with an open assistant turn). Consecutive messages of the same role are allowed and
// rendered one after the other. Unknown roles are an Error.
//
// Templates ("{sys}" = the system prompt, "{q}" user content, "{a}" assistant content):
//
//  "alpaca"           v1 as trained (training/build_dataset.py) + the v1 OpenAI server's multi-turn:
//                     BOS, "{sys}\n\n", then per message user → "### Instruction:\n{q}\n\n",
//                     assistant → "### Response: {a}\n\n", and finally "### Response: ".
//                     Single turn = the training prompt exactly. Default {sys}: "Below is an
//                     instruction that describes a task. Write a response that appropriately
//                     completes the request." An empty {sys} drops the "{sys}\n\n" block entirely.
//                     Past answers are plain text (no EOS), as in the original server.
//  "alpaca-llamacpp"  the llama.cpp `-ins` style that v1 inference_hf.py --with_prompt uses: "\n\n"
//                     after both headers. Single turn "{sys}\n\n### Instruction:\n\n{q}\n\n###
//                     Response:\n\n". Multi-turn continues as llama.cpp -ins did (each new input is
//                     wrapped "\n\n### Instruction:\n\n" + q + "\n\n### Response:\n\n" right after the
//                     reply), i.e. user → "### Instruction:\n\n{q}\n\n", assistant →
//                     "### Response:\n\n{a}\n\n", ending "### Response:\n\n". Same system rules.
//  "alpaca-2"         Llama-2 chat (v2 gradio demo / OpenAI server): BOS,
//                     "[INST] <<SYS>>\n{sys}\n<</SYS>>\n\n{q1} [/INST]" (empty {sys}:
//                     "[INST] {q1} [/INST]"); an assistant message → " {a}" (only if non-empty) then
//                     EOS; every later user message → BOS, "[INST] {q} [/INST]". Only the first
//                     user message carries the <<SYS>> block. Default {sys}:
//                     "You are a helpful assistant. 你是一个乐于助人的助手。"
//  "alpaca-2-long"    "alpaca-2" with the long-reply system prompt (prompts/alpaca-2-long.txt).
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace calpaca {

// Either text (to be tokenized as plain text, never parsing "<s>") or a special token id.
struct PromptPart {
    std::string text;
    int32_t special = -1;  // >= 0: this part is the token with that id and `text` is empty

    static PromptPart Text(std::string t) { return PromptPart{std::move(t), -1}; }
    static PromptPart Special(int32_t id) { return PromptPart{{}, id}; }
    bool is_special() const { return special >= 0; }
    bool operator==(const PromptPart&) const = default;
};

struct ChatMessage {
    std::string role;     // "system" | "user" | "assistant"
    std::string content;
    bool operator==(const ChatMessage&) const = default;
};

class ChatTemplate {
public:
    virtual ~ChatTemplate();
    virtual std::string name() const = 0;
    // The conversation ending with an open assistant turn, leading BOS included (see above).
    // Throws Error on an unknown role or a conversation that does not start and end with "user".
    virtual std::vector<PromptPart> render(const std::vector<ChatMessage>& msgs, int32_t bos,
                                           int32_t eos) const = 0;
    // The system prompt used when the conversation has no system message.
    virtual std::string default_system() const = 0;

    // Single instruction, as inference --with_prompt / training build it: {system (or the
    // default), user: instruction}.
    std::vector<PromptPart> render_single(const std::string& instruction, int32_t bos, int32_t eos,
                                          const std::optional<std::string>& system = std::nullopt) const;
};

// Known names: "alpaca", "alpaca-llamacpp", "alpaca-2", "alpaca-2-long".
// Throws Error listing the known names on an unknown one.
std::unique_ptr<ChatTemplate> make_chat_template(const std::string& name);
std::vector<std::string> chat_template_names();

// The template a model's vocabulary size implies: 49954 (Chinese-Alpaca) → "alpaca",
// 55296 (Chinese-LLaMA-2 / Alpaca-2) → "alpaca-2", anything else → "" (no chat template; e.g.
// 49953 is the v1 base model, which was never instruction-tuned).
std::string template_for_vocab_size(size_t n_vocab);

// The v1 training rule for an instruction with an optional input: input empty → instruction,
// else instruction + "\n" + input.
std::string join_instruction_input(const std::string& instruction, const std::string& input);

// Human-readable form of rendered parts for logs and prediction files: text as-is, bos/eos as
// "<s>"/"</s>", any other special id as "<id:N>".
std::string parts_to_string(const std::vector<PromptPart>& parts, int32_t bos, int32_t eos);

// Drops the oldest turns (a turn = one user message plus the assistant messages after it) while
// count_tokens(t.render(msgs, bos, eos)) > budget. System messages are never dropped, nor is the
// last turn. Returns the kept messages in their original order. Throws Error if even the last turn
// alone does not fit (the message gives both numbers). Also throws what render() throws.
std::vector<ChatMessage> truncate_history(const ChatTemplate& t, std::vector<ChatMessage> msgs,
                                          int32_t bos, int32_t eos, size_t budget,
                                          const std::function<size_t(const std::vector<PromptPart>&)>& count_tokens);

}  // namespace calpaca
