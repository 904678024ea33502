// Request parsing: field types, ranges, OpenAI error objects naming the field, unknown fields.
#include <gtest/gtest.h>

#include <cmath>

#include "calpaca/serve/api.h"
#include "calpaca/serve/protocol.h"

using namespace calpaca;
using namespace calpaca::serve;

namespace {

ParseLimits limits() {
    ParseLimits l;
    l.n_vocab = 1000;
    return l;
}

// The ApiError a body produces (status 0 if none).
ApiError error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const ApiError& e) {
        return e;
    }
    return ApiError(0, "no error");
}

Json chat_body(const std::string& extra = "") {
    return Json::parse(R"({"model":"x","messages":[{"role":"user","content":"hi"}])" + extra + "}");
}

}  // namespace

TEST(ServeProtocol, ChatDefaultsAndFields) {
    SamplingParams d;
    auto r = parse_chat(chat_body(), d, limits());
    ASSERT_EQ(r.messages.size(), 1u);
    EXPECT_EQ(r.messages[0].role, "user");
    EXPECT_EQ(r.gen.sampling.temperature, d.temperature);
    EXPECT_FALSE(r.gen.max_tokens.has_value());
    EXPECT_EQ(r.gen.n, 1);
    r = parse_chat(chat_body(R"(,"temperature":0,"top_p":0.5,"top_k":7,"min_p":0.1,"repetition_penalty":1.3,
        "presence_penalty":-1,"frequency_penalty":2,"seed":42,"stop":"###","n":3,"max_completion_tokens":9,
        "logit_bias":{"5":-100,"6":2.5},"stream":true,"stream_options":{"include_usage":true},"user":"u",
        "logprobs":true,"top_logprobs":3,"some_future_field":{"x":1},"store":false)"),
                   d, limits());
    const auto& s = r.gen.sampling;
    EXPECT_EQ(s.temperature, 0.0f);
    EXPECT_FLOAT_EQ(s.top_p, 0.5f);
    EXPECT_EQ(s.top_k, 7);
    EXPECT_FLOAT_EQ(s.min_p, 0.1f);
    EXPECT_FLOAT_EQ(s.repetition_penalty, 1.3f);
    EXPECT_FLOAT_EQ(s.presence_penalty, -1.0f);
    EXPECT_FLOAT_EQ(s.frequency_penalty, 2.0f);
    EXPECT_TRUE(s.has_seed);
    EXPECT_EQ(s.seed, 42u);
    ASSERT_EQ(s.logit_bias.size(), 2u);
    EXPECT_TRUE(std::isinf(s.logit_bias[0].second));  // -100 bans
    EXPECT_FLOAT_EQ(s.logit_bias[1].second, 2.5f);
    EXPECT_EQ(r.gen.stop, std::vector<std::string>{"###"});
    EXPECT_EQ(r.gen.n, 3);
    EXPECT_EQ(r.gen.max_tokens, 9);
    EXPECT_TRUE(r.gen.stream);
    EXPECT_TRUE(r.gen.include_usage);
    EXPECT_EQ(r.gen.logprobs, 3);
}

TEST(ServeProtocol, ChatMessagesForms) {
    SamplingParams d;
    auto r = parse_chat(Json::parse(R"({"messages":[{"role":"developer","content":"sys"},
        {"role":"user","content":[{"type":"text","text":"你"},{"type":"text","text":"好"}]},
        {"role":"assistant","content":null},{"role":"user","message":"v1 style"}]})"),
                        d, limits());
    ASSERT_EQ(r.messages.size(), 4u);
    EXPECT_EQ(r.messages[0].role, "system");
    EXPECT_EQ(r.messages[1].content, "你好");
    EXPECT_EQ(r.messages[2].content, "");
    EXPECT_EQ(r.messages[3].content, "v1 style");
    r = parse_chat(Json::parse(R"({"messages":"just a string"})"), d, limits());
    EXPECT_EQ(r.messages[0].content, "just a string");
}

TEST(ServeProtocol, ErrorsNameTheField) {
    SamplingParams d;
    struct Case {
        std::string extra, param;
    };
    for (const Case& c : std::vector<Case>{{R"(,"temperature":3)", "temperature"},
                                           {R"(,"temperature":"hot")", "temperature"},
                                           {R"(,"top_p":1.5)", "top_p"},
                                           {R"(,"top_k":-1)", "top_k"},
                                           {R"(,"n":0)", "n"},
                                           {R"(,"max_tokens":0)", "max_tokens"},
                                           {R"(,"max_tokens":2.5)", "max_tokens"},
                                           {R"(,"stop":[1])", "stop[0]"},
                                           {R"(,"stop":{"a":1})", "stop"},
                                           {R"(,"logit_bias":{"abc":1})", "logit_bias.abc"},
                                           {R"(,"logit_bias":{"5000":1})", "logit_bias.5000"},
                                           {R"(,"logit_bias":{"5":200})", "logit_bias.5"},
                                           {R"(,"stream":"yes")", "stream"},
                                           {R"(,"stop":[")" + std::string(2000, 'x') + R"("])", "stop[0]"},
                                           {R"(,"stream_options":{"include_usage":1})", "stream_options.include_usage"},
                                           {R"(,"presence_penalty":-3)", "presence_penalty"},
                                           {R"(,"top_logprobs":3)", "top_logprobs"},
                                           {R"(,"tools":[{"type":"function"}])", "tools"},
                                           {R"(,"response_format":{"type":"xml"})", "response_format.type"},
                                           {R"(,"response_format":{"type":"json_schema"})", "response_format.json_schema"},
                                           {R"(,"response_format":{"type":"json_schema","json_schema":{"name":"x"}})",
                                            "response_format.json_schema.schema"},
                                           {R"(,"response_format":{"type":"json_schema","json_schema":{"schema":{"type":"string","pattern":"x"}}})",
                                            "response_format.json_schema.schema"}}) {
        ApiError e = error_of([&] { parse_chat(chat_body(c.extra), d, limits()); });
        EXPECT_EQ(e.status, 400) << c.extra;
        EXPECT_EQ(e.param, c.param) << c.extra << ": " << e.what();
        const Json b = e.body();
        EXPECT_EQ(b["error"]["type"], "invalid_request_error");
        EXPECT_EQ(b["error"]["param"], c.param);
        EXPECT_TRUE(b["error"]["message"].is_string());
    }
    for (const std::string body : {R"({})", R"({"messages":[]})", R"({"messages":[{"content":"x"}]})",
                                   R"({"messages":[{"role":"tool","content":"x"}]})",
                                   R"({"messages":[{"role":"user","content":[{"type":"image_url"}]}]})"}) {
        ApiError e = error_of([&] { parse_chat(Json::parse(body), d, limits()); });
        EXPECT_EQ(e.status, 400) << body;
        EXPECT_EQ(e.param.rfind("messages", 0), 0u) << body << " -> " << e.param;
    }
    ApiError e = error_of([&] { parse_body("{\"a\":"); });
    EXPECT_EQ(e.status, 400);
    EXPECT_EQ(error_of([&] { parse_body("[1,2]"); }).status, 400);
}

TEST(ServeProtocol, ResponseFormatGivesAGrammar) {
    EXPECT_EQ(parse_response_format(Json::parse(R"({"type":"text"})"), "rf"), nullptr);
    EXPECT_NE(parse_response_format(Json::parse(R"({"type":"json_object"})"), "rf"), nullptr);
    auto g = parse_response_format(
        Json::parse(R"({"type":"json_schema","json_schema":{"name":"a","strict":true,"schema":{"type":"object",
                    "properties":{"ok":{"type":"boolean"}},"required":["ok"],"additionalProperties":false}}})"),
        "rf");
    ASSERT_NE(g, nullptr);
    GrammarState st(g);
    EXPECT_TRUE(st.feed("{\"ok\":false}") && st.accepting());
    // llama.cpp forms
    EXPECT_NE(parse_response_format(Json::parse(R"({"type":"json_object","schema":{"type":"integer"}})"), "rf"), nullptr);
    EXPECT_NE(parse_response_format(Json::parse(R"({"type":"json_schema","schema":{"type":"integer"}})"), "rf"), nullptr);
}

TEST(ServeProtocol, CompletionPrompts) {
    SamplingParams d;
    auto r = parse_completion(Json::parse(R"({"prompt":"你好","echo":true,"logprobs":2,"max_tokens":0})"), d, limits());
    ASSERT_EQ(r.prompts.size(), 1u);
    EXPECT_FALSE(r.prompt_is_list);
    EXPECT_TRUE(r.prompts[0].starts_with_text());
    EXPECT_TRUE(r.gen.echo);
    EXPECT_EQ(r.gen.logprobs, 2);
    EXPECT_EQ(r.gen.max_tokens, 0);
    r = parse_completion(Json::parse(R"({"prompt":["a","b","c"]})"), d, limits());
    EXPECT_EQ(r.prompts.size(), 3u);
    EXPECT_TRUE(r.prompt_is_list);
    r = parse_completion(Json::parse(R"({"prompt":[1,2,3]})"), d, limits());
    ASSERT_EQ(r.prompts.size(), 1u);
    EXPECT_FALSE(r.prompts[0].pieces[0].is_text);
    EXPECT_EQ(r.prompts[0].pieces[0].ids, (std::vector<int32_t>{1, 2, 3}));
    r = parse_completion(Json::parse(R"({"prompt":[[1,2],[3]]})"), d, limits());
    EXPECT_EQ(r.prompts.size(), 2u);
    EXPECT_EQ(error_of([&] { parse_completion(Json::parse(R"({"prompt":[1,"a"]})"), d, limits()); }).param, "prompt");
    EXPECT_EQ(error_of([&] { parse_completion(Json::parse(R"({"prompt":[1,99999]})"), d, limits()); }).param, "prompt[1]");
    EXPECT_EQ(error_of([&] { parse_completion(Json::parse(R"({"prompt":"a","suffix":"b"})"), d, limits()); }).param, "suffix");
    EXPECT_EQ(error_of([&] { parse_completion(Json::parse(R"({"prompt":"a","best_of":3})"), d, limits()); }).param, "best_of");
    EXPECT_EQ(error_of([&] { parse_completion(Json::parse(R"({"prompt":"a","logprobs":30})"), d, limits()); }).param, "logprobs");
    // llama.cpp native: mixed prompts, n_predict -1, n_probs, [[id, false]] bans, repeat_last_n 0 disables
    r = parse_native_completion(Json::parse(R"({"prompt":[1,"text",7],"n_predict":-1,"n_probs":3,
                                              "logit_bias":[[5,false],[6,1.5]],"repeat_last_n":0,"repeat_penalty":1.5})"),
                                d, limits());
    ASSERT_EQ(r.prompts.size(), 1u);
    EXPECT_EQ(r.prompts[0].pieces.size(), 3u);
    EXPECT_EQ(r.gen.max_tokens, -1);
    EXPECT_EQ(r.gen.logprobs, 3);
    EXPECT_TRUE(std::isinf(r.gen.sampling.logit_bias[0].second));
    EXPECT_EQ(r.gen.sampling.repetition_penalty, 1.0f);
    EXPECT_EQ(error_of([&] { parse_native_completion(Json::parse(R"({"prompt":"a","grammar":"root ::= x"})"), d, limits()); }).param,
              "grammar");
}

TEST(ServeProtocol, EmbeddingsAndTokenize) {
    auto r = parse_embeddings(Json::parse(R"({"input":["a","b"],"encoding_format":"base64","model":"m"})"), 64, limits());
    EXPECT_EQ(r.inputs.size(), 2u);
    EXPECT_TRUE(r.base64);
    EXPECT_EQ(error_of([&] { parse_embeddings(Json::parse(R"({"input":"a","encoding_format":"hex"})"), 64, limits()); }).param,
              "encoding_format");
    EXPECT_EQ(error_of([&] { parse_embeddings(Json::parse(R"({"input":"a","dimensions":32})"), 64, limits()); }).param,
              "dimensions");
    EXPECT_EQ(error_of([&] { parse_embeddings(Json::parse(R"({"input":[]})"), 64, limits()); }).param, "input");
    EXPECT_NO_THROW(parse_embeddings(Json::parse(R"({"input":"a","dimensions":64})"), 64, limits()));
    auto t = parse_tokenize(Json::parse(R"({"content":"x","with_pieces":true})"));
    EXPECT_TRUE(t.with_pieces);
    EXPECT_EQ(error_of([&] { parse_tokenize(Json::parse(R"({"content":5})")); }).param, "content");
    EXPECT_EQ(parse_detokenize(Json::parse(R"({"tokens":[1,2]})"), limits()), (std::vector<int32_t>{1, 2}));
    EXPECT_EQ(error_of([&] { parse_detokenize(Json::parse(R"({"tokens":[1,-2]})"), limits()); }).param, "tokens[1]");
}

TEST(ServeProtocol, Base64IsLittleEndianFloat32) {
    // 1.0f = 00 00 80 3f, -2.0f = 00 00 00 c0
    EXPECT_EQ(base64_floats({1.0f}), "AACAPw==");
    EXPECT_EQ(base64_floats({1.0f, -2.0f}), "AACAPwAAAMA=");
    EXPECT_EQ(base64_floats({}), "");
}
