// The endpoints on the bundled demo model, through the scheduler but without HTTP: continuous
// batching gives the same tokens as one-at-a-time generation, streaming frames follow OpenAI's
// format, prefix reuse, context limits, queue limits, cancellation, constrained JSON, embeddings.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <thread>

#include "calpaca/base/threadpool.h"
#include "calpaca/generate/generator.h"
#include "calpaca/model/session.h"
#include "calpaca/serve/api.h"
#include "calpaca/serve/json_grammar.h"
#include "calpaca/serve/metrics.h"

using namespace calpaca;
using namespace calpaca::serve;
using namespace std::chrono_literals;

namespace {

const std::string kDemo = std::string(CALPACA_TEST_DATA) + "/models/calpaca-demo.gguf";

struct Server {
    explicit Server(SchedulerOptions so = {4, 256, DType::F16, 16, 64})
        : model(Model::load(kDemo)), pool(2), sched(*model, so, &pool, &metrics),
          api(*model, sched, metrics, ApiOptions{"demo", "", SamplingParams{}, 512, 16, {}}) {}
    std::unique_ptr<Model> model;
    ThreadPool pool;
    Metrics metrics;
    Scheduler sched;
    Api api;

    // waits (bounded) until every slot is free
    bool idle() {
        for (int i = 0; i < 400 && metrics.slots_busy.load() != 0; ++i) std::this_thread::sleep_for(10ms);
        return metrics.slots_busy.load() == 0;
    }
};

Json chat_req(const std::string& user, int max_tokens, const std::string& extra = "") {
    return Json::parse(R"({"messages":[{"role":"user","content":)" + Json(user).dump() +
                       R"(}],"temperature":0,"max_tokens":)" + std::to_string(max_tokens) + extra + "}");
}

// All frames of a stream (bounded in time), split into the JSON payloads of `data:` lines.
std::vector<std::string> drain(const std::shared_ptr<EventStream>& s) {
    std::string all;
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    while (s->next(all, 50ms))
        if (std::chrono::steady_clock::now() > deadline) ADD_FAILURE() << "stream did not finish";
    std::vector<std::string> out;
    size_t pos = 0;
    while (pos < all.size()) {
        size_t end = all.find("\n\n", pos);
        EXPECT_NE(end, std::string::npos) << "unterminated event";
        if (end == std::string::npos) break;
        std::string ev = all.substr(pos, end - pos);
        EXPECT_EQ(ev.rfind("data: ", 0), 0u) << ev;
        out.push_back(ev.substr(6));
        pos = end + 2;
    }
    return out;
}

std::string reference_reply(const Model& m, const std::string& user, int max_tokens) {
    const Tokenizer& tok = m.tokenizer();
    auto tmpl = make_chat_template("alpaca-2");
    auto ids = tokenize_parts(tok, tmpl->render({{"user", user}}, tok.bos(), tok.eos()));
    Session s(m, SessionOptions{256, DType::F16, false}, nullptr);
    std::vector<int32_t> cached;
    SamplingParams sp;
    sp.temperature = 0;
    Sampler sampler(sp, tok.size());
    GenerateParams gp;
    gp.max_new_tokens = max_tokens;
    gp.strip_leading_space = true;
    return generate(s, cached, ids, sampler, gp, nullptr).text;
}

}  // namespace

TEST(ServeApi, ConcurrentGreedyEqualsOneAtATime) {
    Server srv;
    const std::vector<std::string> users = {"你好", "介绍一下北京", "Write a poem about the sea, please.", "1+1=?",
                                            "今天天气怎么样？"};
    std::vector<std::string> got(users.size());
    std::vector<std::thread> th;
    for (size_t i = 0; i < users.size(); ++i)
        th.emplace_back([&, i] {
            Reply r = srv.api.chat(chat_req(users[i], 24 + static_cast<int>(i) * 3), nullptr);
            got[i] = r.body["choices"][0]["message"]["content"].get<std::string>();
            EXPECT_EQ(r.body["usage"]["completion_tokens"].get<int>(), 24 + static_cast<int>(i) * 3);
        });
    for (auto& t : th) t.join();
    for (size_t i = 0; i < users.size(); ++i)
        EXPECT_EQ(got[i], reference_reply(*srv.model, users[i], 24 + static_cast<int>(i) * 3)) << users[i];
    EXPECT_TRUE(srv.idle());
}

TEST(ServeApi, ChatStreamFollowsOpenAIChunkFormat) {
    Server srv;
    Reply plain = srv.api.chat(chat_req("你好", 12), nullptr);
    Reply r = srv.api.chat(chat_req("你好", 12, R"(,"stream":true,"stream_options":{"include_usage":true})"), nullptr);
    ASSERT_TRUE(r.stream);
    auto frames = drain(r.stream);
    ASSERT_GE(frames.size(), 4u);
    EXPECT_EQ(frames.back(), "[DONE]");
    std::string text, id;
    for (size_t i = 0; i + 1 < frames.size(); ++i) {
        Json c = Json::parse(frames[i]);
        if (i == 0) id = c["id"];
        EXPECT_EQ(c["id"], id);
        EXPECT_EQ(c["object"], "chat.completion.chunk");
        if (i + 2 == frames.size()) {  // the usage-only chunk
            EXPECT_TRUE(c["choices"].empty());
            EXPECT_EQ(c["usage"]["completion_tokens"], 12);
            EXPECT_EQ(c["usage"]["prompt_tokens"], plain.body["usage"]["prompt_tokens"]);
            continue;
        }
        EXPECT_TRUE(c["usage"].is_null());
        const Json& ch = c["choices"][0];
        if (i == 0) {
            EXPECT_EQ(ch["delta"]["role"], "assistant");
        } else {
            EXPECT_FALSE(ch["delta"].contains("role"));
        }
        if (i + 3 == frames.size()) {
            EXPECT_EQ(ch["finish_reason"], "length");
            EXPECT_TRUE(ch["delta"].empty());
        } else {
            EXPECT_TRUE(ch["finish_reason"].is_null());
            if (ch["delta"].contains("content")) text += ch["delta"]["content"].get<std::string>();
        }
    }
    EXPECT_EQ(text, plain.body["choices"][0]["message"]["content"].get<std::string>());
    // without include_usage: no usage field at all, and still [DONE]
    Reply r2 = srv.api.chat(chat_req("你好", 3, R"(,"stream":true)"), nullptr);
    auto f2 = drain(r2.stream);
    EXPECT_EQ(f2.back(), "[DONE]");
    EXPECT_FALSE(Json::parse(f2[0]).contains("usage"));
}

TEST(ServeApi, MultiTurnReusesTheCachedPrefix) {
    Server srv;
    Reply a = srv.api.chat(chat_req("介绍一下北京", 10), nullptr);
    const int p1 = a.body["usage"]["prompt_tokens"];
    const std::string reply = a.body["choices"][0]["message"]["content"];
    Json turn2 = Json::parse(R"({"temperature":0,"max_tokens":5,"messages":[]})");
    turn2["messages"] = Json::array({Json{{"role", "user"}, {"content", "介绍一下北京"}},
                                     Json{{"role", "assistant"}, {"content", reply}},
                                     Json{{"role", "user"}, {"content", "再说说上海"}}});
    Reply b = srv.api.chat(turn2, nullptr);
    const int cached = b.body["usage"]["prompt_tokens_details"]["cached_tokens"];
    EXPECT_GE(cached, p1);  // the whole first prompt (and part of the answer) came from the cache
    EXPECT_LT(cached, b.body["usage"]["prompt_tokens"].get<int>());
}

TEST(ServeApi, ContextLimits) {
    Server srv({2, 64, DType::F16, 4, 32});
    Reply r = srv.api.chat(chat_req("你好", 100000), nullptr);
    const int prompt = r.body["usage"]["prompt_tokens"];
    EXPECT_EQ(r.body["choices"][0]["finish_reason"], "length");
    EXPECT_EQ(r.body["usage"]["completion_tokens"].get<int>(), 64 - prompt + 1);
    std::string longtext;
    for (int i = 0; i < 40; ++i) longtext += "北京上海";
    try {
        srv.api.chat(chat_req(longtext, 10), nullptr);
        FAIL() << "a prompt longer than the context was accepted";
    } catch (const ApiError& e) {
        EXPECT_EQ(e.status, 400);
        EXPECT_EQ(e.code, "context_length_exceeded");
        EXPECT_EQ(e.param, "messages");
    }
}

TEST(ServeApi, QueueFullIs503AndCancelFreesTheSlot) {
    Server srv({1, 2048, DType::F16, 0, 16});
    Reply running = srv.api.chat(chat_req("你好", 2000, R"(,"stream":true,"temperature":0.8,"ignore_eos":true)"), nullptr);
    std::string first;
    ASSERT_TRUE(running.stream->next(first, 5000ms));  // the role chunk: the request is in
    for (int i = 0; i < 200 && srv.metrics.slots_busy.load() == 0; ++i) std::this_thread::sleep_for(5ms);
    try {
        srv.api.chat(chat_req("再来一个", 5), nullptr);
        FAIL() << "expected 503";
    } catch (const ApiError& e) {
        EXPECT_EQ(e.status, 503);
        EXPECT_EQ(e.code, "queue_full");
    }
    running.stream->cancel();
    EXPECT_TRUE(srv.idle());
    EXPECT_EQ(srv.metrics.sequences_finished("cancelled"), 1);
    Reply after = srv.api.chat(chat_req("再来一个", 5), nullptr);  // the slot is usable again
    EXPECT_EQ(after.body["usage"]["completion_tokens"], 5);
}

TEST(ServeApi, ClosedClientCancelsABlockingRequest) {
    Server srv({1, 2048, DType::F16, 4, 16});
    int polls = 0;
    try {
        srv.api.chat(chat_req("你好", 2000, R"(,"temperature":0.8,"ignore_eos":true)"), [&] { return ++polls > 3; });
        FAIL() << "expected the request to be cancelled";
    } catch (const ApiError& e) {
        EXPECT_EQ(e.status, 499);
    }
    EXPECT_TRUE(srv.idle());
    EXPECT_EQ(srv.metrics.sequences_finished("cancelled"), 1);
}

TEST(ServeApi, JsonSchemaIsEnforcedEvenAgainstTheModel) {
    Server srv;
    const Tokenizer& tok = srv.model->tokenizer();
    // push the model hard towards tokens that can never start the JSON value
    Json bias = Json::object();
    for (const char* word : {"Hello", "北京", "The"}) {
        auto ids = tok.encode(word);
        for (int32_t id : ids) bias[std::to_string(id)] = 100;
    }
    const std::string schema = R"({"type":"object","properties":{"city":{"type":"string","enum":["北京","上海","广州"]},
        "sunny":{"type":"boolean"},"rank":{"type":"integer"},"tags":{"type":"array","items":{"type":"string","maxLength":4},"maxItems":2}},
        "required":["city","sunny","rank","tags"],"additionalProperties":false})";
    for (int seed = 0; seed < 3; ++seed) {
        Json req = chat_req("天气如何？用JSON回答", 120);
        req["temperature"] = 0.7;
        req["seed"] = seed;
        req["logit_bias"] = bias;
        req["response_format"] = Json{{"type", "json_schema"}, {"json_schema", {{"name", "w"}, {"schema", Json::parse(schema)}}}};
        Reply r = srv.api.chat(req, nullptr);
        const std::string content = r.body["choices"][0]["message"]["content"];
        EXPECT_EQ(r.body["choices"][0]["finish_reason"], "stop") << content;
        Json v = Json::parse(content);  // throws if not JSON
        EXPECT_TRUE(v["city"] == "北京" || v["city"] == "上海" || v["city"] == "广州") << content;
        EXPECT_TRUE(v["sunny"].is_boolean());
        EXPECT_TRUE(v["rank"].is_number_integer());
        EXPECT_LE(v["tags"].size(), 2u);
    }
    // json_object: a complete object, or (cut by max_tokens) a valid beginning of one
    Json req = chat_req("JSON please", 40, R"(,"response_format":{"type":"json_object"},"temperature":0.9,"seed":5)");
    Reply r = srv.api.chat(req, nullptr);
    const std::string content = r.body["choices"][0]["message"]["content"];
    GrammarState st(json_object_grammar());
    EXPECT_TRUE(st.feed(content)) << content;
    if (r.body["choices"][0]["finish_reason"] == "stop") {
        EXPECT_TRUE(Json::accept(content)) << content;
    }
}

TEST(ServeApi, EmbeddingsAreTheNormalizedMeanOfTheLastHiddenState) {
    Server srv;
    Reply r = srv.api.embeddings(Json::parse(R"({"input":["你好，世界","hello"]})"), nullptr);
    ASSERT_EQ(r.body["data"].size(), 2u);
    const Tokenizer& tok = srv.model->tokenizer();
    const int64_t E = srv.model->config().n_embd;
    int64_t total = 0;
    for (int i = 0; i < 2; ++i) {
        const std::string text = i == 0 ? "你好，世界" : "hello";
        auto ids = tok.encode(text, Tokenizer::Options{true, false, true});
        total += static_cast<int64_t>(ids.size());
        Session s(*srv.model, SessionOptions{256, DType::F16, false}, nullptr);
        s.eval(ids, true);  // every token's hidden state
        std::vector<double> mean(E, 0.0);
        for (size_t t = 0; t < ids.size(); ++t)
            for (int64_t k = 0; k < E; ++k) mean[k] += s.hidden()[t * E + k] / static_cast<double>(ids.size());
        double norm = 0;
        for (double x : mean) norm += x * x;
        norm = std::sqrt(norm);
        const Json& e = r.body["data"][i]["embedding"];
        ASSERT_EQ(static_cast<int64_t>(e.size()), E);
        for (int64_t k = 0; k < E; ++k) EXPECT_NEAR(e[k].get<double>(), mean[k] / norm, 1e-5);
    }
    EXPECT_EQ(r.body["usage"]["prompt_tokens"], total);
    Reply b = srv.api.embeddings(Json::parse(R"({"input":"hello","encoding_format":"base64"})"), nullptr);
    std::vector<float> v;
    for (const auto& x : r.body["data"][1]["embedding"]) v.push_back(x.get<float>());
    EXPECT_EQ(b.body["data"][0]["embedding"], base64_floats(v));
}

TEST(ServeApi, CompletionEchoLogprobsMatchTheModel) {
    Server srv;
    Reply r = srv.api.completions(Json::parse(R"({"prompt":"北京是中国的首都","max_tokens":0,"echo":true,"logprobs":1})"), nullptr);
    const Json& ch = r.body["choices"][0];
    EXPECT_EQ(ch["text"], "北京是中国的首都");
    const Tokenizer& tok = srv.model->tokenizer();
    auto ids = tok.encode("北京是中国的首都", Tokenizer::Options{true, false, true});
    Session s(*srv.model, SessionOptions{256, DType::F16, false}, nullptr);
    s.eval(ids, true);
    const int64_t V = srv.model->config().n_vocab;
    const Json& lp = ch["logprobs"]["token_logprobs"];
    ASSERT_EQ(lp.size(), ids.size() - 1);  // the BOS the server added is not echoed
    for (size_t k = 1; k < ids.size(); ++k) {
        const float* row = s.logits().data() + (k - 1) * V;
        double mx = row[0], sum = 0;
        for (int64_t j = 0; j < V; ++j) mx = std::max<double>(mx, row[j]);
        for (int64_t j = 0; j < V; ++j) sum += std::exp(row[j] - mx);
        EXPECT_NEAR(lp[k - 1].get<double>(), row[ids[k]] - mx - std::log(sum), 1e-4);
    }
    EXPECT_EQ(r.body["usage"]["completion_tokens"], 0);
    // array prompts: one choice per prompt, in order
    Reply m = srv.api.completions(Json::parse(R"({"prompt":["a","b","c"],"max_tokens":2,"temperature":0})"), nullptr);
    ASSERT_EQ(m.body["choices"].size(), 3u);
    for (int i = 0; i < 3; ++i) EXPECT_EQ(m.body["choices"][i]["index"], i);
    EXPECT_EQ(m.body["usage"]["completion_tokens"], 6);
}

TEST(ServeApi, SeededSamplingIsReproducibleAndChoicesDiffer) {
    Server srv;
    auto req = chat_req("讲个故事", 16, R"(,"temperature":1.0,"top_k":0,"top_p":1,"seed":123,"n":3)");
    Reply a = srv.api.chat(req, nullptr);
    Reply b = srv.api.chat(req, nullptr);
    ASSERT_EQ(a.body["choices"].size(), 3u);
    for (int i = 0; i < 3; ++i) EXPECT_EQ(a.body["choices"][i]["message"], b.body["choices"][i]["message"]);
    EXPECT_NE(a.body["choices"][0]["message"]["content"], a.body["choices"][1]["message"]["content"]);
    EXPECT_EQ(a.body["usage"]["completion_tokens"], 48);
}

TEST(ServeApi, NativeCompletionAndStops) {
    Server srv;
    Reply plain = srv.api.native_completion(Json::parse(R"({"prompt":"你好","n_predict":8,"temperature":0})"), nullptr);
    const std::string text = plain.body["content"];
    ASSERT_GE(text.size(), 4u);
    EXPECT_EQ(plain.body["stop_type"], "limit");
    EXPECT_EQ(plain.body["tokens_predicted"], 8);
    EXPECT_TRUE(plain.body["timings"].contains("predicted_per_second"));
    // a stop string taken from the greedy output ends generation before it, and is not emitted
    const std::string stop = text.substr(text.size() / 2, 2);
    Json req = Json::parse(R"({"prompt":"你好","n_predict":8,"temperature":0})");
    req["stop"] = Json::array({stop});
    Reply s = srv.api.native_completion(req, nullptr);
    EXPECT_EQ(s.body["stop_type"], "word");
    EXPECT_EQ(s.body["stopping_word"], stop);
    EXPECT_EQ(s.body["content"].get<std::string>(), text.substr(0, text.find(stop)));
    // streaming: content frames, then a final frame with stop=true; no [DONE]
    Reply st = srv.api.native_completion(Json::parse(R"({"prompt":"你好","n_predict":8,"temperature":0,"stream":true})"), nullptr);
    auto frames = drain(st.stream);
    std::string joined;
    for (size_t i = 0; i < frames.size(); ++i) {
        Json f = Json::parse(frames[i]);
        joined += f["content"].get<std::string>();
        EXPECT_EQ(f["stop"].get<bool>(), i + 1 == frames.size());
    }
    EXPECT_EQ(joined, text);
}

TEST(ServeApi, TokenizeDetokenizeModelsHealth) {
    Server srv;
    Json t = srv.api.tokenize(Json::parse(R"({"content":"你好 world","with_pieces":true})"));
    ASSERT_FALSE(t["tokens"].empty());
    std::vector<int32_t> ids;
    for (const auto& e : t["tokens"]) ids.push_back(e["id"]);
    Json d = srv.api.detokenize(Json{{"tokens", ids}});
    EXPECT_EQ(d["content"], "你好 world");
    // a character outside the vocabulary falls back to byte pieces: each comes back as its bytes
    Json rare = srv.api.tokenize(Json::parse(R"({"content":"\ud840\udc0b","with_pieces":true})"));  // U+2000B
    std::string bytes;
    int n_byte_pieces = 0;
    for (const auto& e : rare["tokens"]) {
        if (e["piece"].is_string()) {
            bytes += e["piece"].get<std::string>();
            continue;
        }
        ++n_byte_pieces;
        for (const auto& b : e["piece"]) bytes += static_cast<char>(b.get<int>());
    }
    EXPECT_EQ(n_byte_pieces, 4);
    EXPECT_EQ(bytes, " \xF0\xA0\x80\x8B");
    Json models = srv.api.models();
    EXPECT_EQ(models["data"][0]["id"], "demo");
    EXPECT_EQ(srv.api.health()["status"], "ok");
    EXPECT_EQ(srv.api.props()["chat_template"], "alpaca-2");
}
