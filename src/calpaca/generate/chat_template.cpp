#include "calpaca/generate/chat_template.h"

#include <fmt/format.h>

#include "calpaca/base/error.h"

namespace calpaca {

namespace {

const char* const kAlpacaSystem =
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.";
const char* const kAlpaca2System = "You are a helpful assistant. 你是一个乐于助人的助手。";
const char* const kAlpaca2LongSystem =
    "You are a helpful assistant. 你是一个乐于助人的助手。请你提供专业、有逻辑、内容真实、有价值的详细回复。";

// Appends parts, merging adjacent text so each text run is tokenized as one chunk.
class PartsBuilder {
public:
    void text(const std::string& t) {
        if (t.empty()) return;
        if (!parts_.empty() && !parts_.back().is_special())
            parts_.back().text += t;
        else
            parts_.push_back(PromptPart::Text(t));
    }
    void special(int32_t id) { parts_.push_back(PromptPart::Special(id)); }
    std::vector<PromptPart> take() { return std::move(parts_); }

private:
    std::vector<PromptPart> parts_;
};

struct Conversation {
    std::string system;
    std::vector<const ChatMessage*> turns;  // user / assistant only, in order
};

// Validates roles and shape; resolves the system prompt (last system message wins).
Conversation split(const std::vector<ChatMessage>& msgs, const std::string& default_system) {
    Conversation c;
    c.system = default_system;
    for (const auto& m : msgs) {
        if (m.role == "system")
            c.system = m.content;
        else if (m.role == "user" || m.role == "assistant")
            c.turns.push_back(&m);
        else
            fail("unknown chat role '{}' (expected system, user or assistant)", m.role);
    }
    if (c.turns.empty()) fail("the conversation has no user message");
    if (c.turns.front()->role != "user")
        fail("the conversation must start with a user message, not '{}'", c.turns.front()->role);
    if (c.turns.back()->role != "user")
        fail("the conversation must end with a user message (the reply is generated), not '{}'",
             c.turns.back()->role);
    return c;
}

// v1 Alpaca family: system block, then header/content blocks per message.
class AlpacaTemplate final : public ChatTemplate {
public:
    AlpacaTemplate(std::string name, std::string user_header, std::string assistant_header)
        : name_(std::move(name)), user_(std::move(user_header)), assistant_(std::move(assistant_header)) {}

    std::string name() const override { return name_; }
    std::string default_system() const override { return kAlpacaSystem; }

    std::vector<PromptPart> render(const std::vector<ChatMessage>& msgs, int32_t bos, int32_t eos) const override {
        Conversation c = split(msgs, default_system());
        PartsBuilder b;
        b.special(bos);
        if (!c.system.empty()) b.text(c.system + "\n\n");
        for (const ChatMessage* m : c.turns) {
            if (m->role == "user")
                b.text(user_ + m->content + "\n\n");
            else
                b.text(assistant_ + m->content + "\n\n");
        }
        b.text(assistant_);
        return b.take();
    }

private:
    std::string name_, user_, assistant_;
};

// v2: Llama-2 chat with the Alpaca-2 system prompt.
class Llama2Template final : public ChatTemplate {
public:
    Llama2Template(std::string name, std::string system) : name_(std::move(name)), system_(std::move(system)) {}

    std::string name() const override { return name_; }
    std::string default_system() const override { return system_; }

    std::vector<PromptPart> render(const std::vector<ChatMessage>& msgs, int32_t bos, int32_t eos) const override {
        Conversation c = split(msgs, default_system());
        PartsBuilder b;
        b.special(bos);
        bool first_user = true;
        for (const ChatMessage* m : c.turns) {
            if (m->role == "user") {
                if (first_user) {
                    if (c.system.empty())
                        b.text("[INST] " + m->content + " [/INST]");
                    else
                        b.text("[INST] <<SYS>>\n" + c.system + "\n<</SYS>>\n\n" + m->content + " [/INST]");
                    first_user = false;
                } else {
                    b.special(bos);
                    b.text("[INST] " + m->content + " [/INST]");
                }
            } else {
                if (!m->content.empty()) b.text(" " + m->content);
                b.special(eos);
            }
        }
        return b.take();
    }

private:
    std::string name_, system_;
};

}  // namespace

ChatTemplate::~ChatTemplate() = default;

std::vector<PromptPart> ChatTemplate::render_single(const std::string& instruction, int32_t bos, int32_t eos,
                                                    const std::optional<std::string>& system) const {
    std::vector<ChatMessage> msgs;
    if (system) msgs.push_back({"system", *system});
    msgs.push_back({"user", instruction});
    return render(msgs, bos, eos);
}

std::vector<std::string> chat_template_names() {
    return {"alpaca", "alpaca-llamacpp", "alpaca-2", "alpaca-2-long"};
}

std::unique_ptr<ChatTemplate> make_chat_template(const std::string& name) {
    if (name == "alpaca") return std::make_unique<AlpacaTemplate>(name, "### Instruction:\n", "### Response: ");
    if (name == "alpaca-llamacpp")
        return std::make_unique<AlpacaTemplate>(name, "### Instruction:\n\n", "### Response:\n\n");
    if (name == "alpaca-2") return std::make_unique<Llama2Template>(name, kAlpaca2System);
    if (name == "alpaca-2-long") return std::make_unique<Llama2Template>(name, kAlpaca2LongSystem);
    fail("unknown chat template '{}' (known: {})", name, fmt::join(chat_template_names(), ", "));
}

std::string template_for_vocab_size(size_t n_vocab) {
    if (n_vocab == 49954) return "alpaca";
    if (n_vocab == 55296) return "alpaca-2";
    return "";
}

std::string join_instruction_input(const std::string& instruction, const std::string& input) {
    return input.empty() ? instruction : instruction + "\n" + input;
}

std::string parts_to_string(const std::vector<PromptPart>& parts, int32_t bos, int32_t eos) {
    std::string s;
    for (const auto& p : parts) {
        if (!p.is_special())
            s += p.text;
        else if (p.special == bos)
            s += "<s>";
        else if (p.special == eos)
            s += "</s>";
        else
            s += fmt::format("<id:{}>", p.special);
    }
    return s;
}

std::vector<ChatMessage> truncate_history(const ChatTemplate& t, std::vector<ChatMessage> msgs, int32_t bos,
                                          int32_t eos, size_t budget,
                                          const std::function<size_t(const std::vector<PromptPart>&)>& count_tokens) {
    for (;;) {
        size_t n = count_tokens(t.render(msgs, bos, eos));  // also validates the conversation
        if (n <= budget) return msgs;
        // Indices of user messages: each starts a turn.
        std::vector<size_t> users;
        for (size_t i = 0; i < msgs.size(); ++i)
            if (msgs[i].role == "user") users.push_back(i);
        if (users.size() <= 1)
            fail("the prompt needs {} tokens even with only the last turn kept, more than the budget of {}", n,
                 budget);
        // Drop the first turn: the first user message and everything up to the next user message,
        // except system messages.
        std::vector<ChatMessage> kept;
        kept.reserve(msgs.size());
        for (size_t i = 0; i < msgs.size(); ++i)
            if (i < users[0] || i >= users[1] || msgs[i].role == "system") kept.push_back(std::move(msgs[i]));
        msgs = std::move(kept);
    }
}

}  // namespace calpaca
