// Grammar engine, JSON / JSON-Schema grammars and the vocabulary trie behind response_format.
#include <gtest/gtest.h>

#include "calpaca/serve/grammar.h"
#include "calpaca/serve/json_grammar.h"
#include "calpaca/serve/token_trie.h"
#include "calpaca/tokenizer/tokenizer.h"

using namespace calpaca;
using namespace calpaca::serve;
using Json = nlohmann::ordered_json;

namespace {

bool accepts(const std::shared_ptr<const Grammar>& g, const std::string& s) {
    GrammarState st(g);
    return st.feed(s) && st.accepting();
}

// Every proper prefix of s keeps the state alive; the whole string is accepted and complete.
void expect_sentence(const std::shared_ptr<const Grammar>& g, const std::string& s) {
    GrammarState st(g);
    for (size_t i = 0; i < s.size(); ++i) {
        ASSERT_TRUE(st.feed(static_cast<uint8_t>(s[i]))) << "refused byte " << i << " of " << s;
        if (i + 1 < s.size()) {
            EXPECT_TRUE(st.can_continue());
        }
    }
    EXPECT_TRUE(st.accepting()) << s;
}

std::shared_ptr<const Grammar> schema(const std::string& text) { return json_schema_grammar(Json::parse(text)); }

}  // namespace

TEST(Grammar, BuilderRepetitionBounds) {
    GrammarBuilder b;
    const int root = b.rule({{b.rep({b.byte_range('a', 'a')}, 2, 4)}});
    auto g = b.finish(root);
    EXPECT_FALSE(accepts(g, "a"));
    EXPECT_TRUE(accepts(g, "aa"));
    EXPECT_TRUE(accepts(g, "aaaa"));
    EXPECT_FALSE(accepts(g, "aaaaa"));
    GrammarBuilder u;
    const int r2 = u.rule({{u.lit("x")[0], u.star(u.lit("ab")), u.lit("y")[0]}});
    auto g2 = u.finish(r2);
    EXPECT_TRUE(accepts(g2, "xy"));
    EXPECT_TRUE(accepts(g2, "xababy"));
    EXPECT_FALSE(accepts(g2, "xaby "));
    GrammarState st(g2);
    EXPECT_EQ(st.next_bytes().count(), 1u);
    EXPECT_TRUE(st.next_bytes().test('x'));
    // a long repetition runs in bounded stack depth (right recursion replaces its frame)
    std::string abab;
    for (int i = 0; i < 5000; ++i) abab += "ab";
    EXPECT_TRUE(accepts(g2, "x" + abab + "y"));
}

TEST(Grammar, UndefinedRuleIsAnError) {
    GrammarBuilder b;
    const int r = b.new_rule();
    EXPECT_THROW(b.finish(r), std::exception);
}

TEST(JsonObjectGrammar, AcceptsObjectsOnly) {
    auto g = json_object_grammar();
    for (const std::string s : {"{}", "{\"a\":1}", " {\"a\": [1, -2.5e+3, 0, \"x\\u00e9\\n\", true, false, null, {\"b\": {}}]}",
                                "{\"中文\": \"你好，世界\"}", "\n\n{ \"k\" : [ ] }"})
        expect_sentence(g, s);
    for (const std::string s : {"[1]", "\"x\"", "{\"a\" 1}", "{\"a\":01}", "{\"a\":1,}", "{a:1}", "{\"a\":1}x",
                                "{\"a\":tru}", "{\"a\":\"\x01\"}", "{\"a\":\"\\q\"}"})
        EXPECT_FALSE(accepts(g, s)) << s;
}

TEST(JsonObjectGrammar, BoundsWhitespaceNumbersAndUtf8) {
    auto g = json_object_grammar();
    EXPECT_TRUE(accepts(g, "    {}"));
    EXPECT_FALSE(accepts(g, "     {}"));                               // 5 leading blanks
    EXPECT_TRUE(accepts(g, "{" + std::string(20, ' ') + "}"));
    EXPECT_FALSE(accepts(g, "{" + std::string(21, ' ') + "}"));
    EXPECT_TRUE(accepts(g, "{\"n\":1234567890123456}"));               // 16 digits
    EXPECT_FALSE(accepts(g, "{\"n\":12345678901234567}"));             // 17
    EXPECT_FALSE(accepts(g, "{\"s\":\"\xC3(\"}"));                      // broken 2-byte sequence
    EXPECT_FALSE(accepts(g, "{\"s\":\"\xED\xA0\x80\"}"));               // UTF-16 surrogate
    EXPECT_FALSE(accepts(g, "{\"s\":\"\xC0\xAF\"}"));                   // overlong
    EXPECT_TRUE(accepts(g, "{\"s\":\"\xF0\x9F\x98\x80\"}"));            // emoji
    GrammarState st(g);
    st.feed("{\"a\":1}");
    EXPECT_TRUE(st.accepting());
    EXPECT_FALSE(st.can_continue());  // nothing may follow the object
}

TEST(JsonSchemaGrammar, ObjectPropertiesInOrderRequiredAndOptional) {
    auto g = schema(R"({"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"},
                       "tags":{"type":"array","items":{"type":"string"}}},"required":["name","age"]})");
    expect_sentence(g, R"({"name":"张三","age":30})");
    expect_sentence(g, R"({"name": "x", "age": -3, "tags": ["a", "b"]})");
    EXPECT_FALSE(accepts(g, R"({"age":30,"name":"x"})"));      // schema order
    EXPECT_FALSE(accepts(g, R"({"name":"x"})"));               // age is required
    EXPECT_FALSE(accepts(g, R"({"name":"x","age":1.5})"));     // integer
    EXPECT_FALSE(accepts(g, R"({"name":"x","age":1,"extra":1})"));
    EXPECT_FALSE(accepts(g, R"({ "name":"x","age":1})"));      // no free whitespace in schema mode
    auto opt = schema(R"({"properties":{"a":{"type":"integer"},"b":{"type":"integer"}}})");
    for (const std::string s : {"{}", R"({"a":1})", R"({"b":2})", R"({"a":1,"b":2})"}) EXPECT_TRUE(accepts(opt, s)) << s;
    EXPECT_FALSE(accepts(opt, R"({,"b":2})"));
}

TEST(JsonSchemaGrammar, ScalarsEnumsConstAndUnions) {
    EXPECT_TRUE(accepts(schema(R"({"enum":["北京","上海",3,null]})"), "\"上海\""));
    EXPECT_TRUE(accepts(schema(R"({"enum":["北京","上海",3,null]})"), "null"));
    EXPECT_FALSE(accepts(schema(R"({"enum":["北京","上海"]})"), "\"广州\""));
    EXPECT_TRUE(accepts(schema(R"({"const":{"a":[1,2]}})"), R"({"a":[1,2]})"));
    auto u = schema(R"({"anyOf":[{"type":"integer"},{"type":"string","maxLength":2}]})");
    EXPECT_TRUE(accepts(u, "12"));
    EXPECT_TRUE(accepts(u, "\"ab\""));
    EXPECT_FALSE(accepts(u, "\"abc\""));
    auto t = schema(R"({"type":["boolean","null"]})");
    EXPECT_TRUE(accepts(t, "true"));
    EXPECT_TRUE(accepts(t, "null"));
    EXPECT_FALSE(accepts(t, "0"));
    auto n = schema(R"({"type":"number","nullable":true})");
    EXPECT_TRUE(accepts(n, "-0.5e-7"));
    EXPECT_TRUE(accepts(n, "null"));
    auto s = schema(R"({"type":"string","minLength":2,"maxLength":3})");
    EXPECT_FALSE(accepts(s, "\"你\""));
    EXPECT_TRUE(accepts(s, "\"你好\""));        // characters, not bytes
    EXPECT_TRUE(accepts(s, "\"a\\nb\""));       // an escape is one character
    EXPECT_FALSE(accepts(s, "\"你好世界\""));
    EXPECT_TRUE(accepts(schema("true"), "[1,{\"a\":null}]"));
    EXPECT_TRUE(accepts(schema("{}"), "\"x\""));
}

TEST(JsonSchemaGrammar, ArraysAndRefs) {
    auto a = schema(R"({"type":"array","items":{"type":"integer"},"minItems":1,"maxItems":3})");
    EXPECT_FALSE(accepts(a, "[]"));
    EXPECT_TRUE(accepts(a, "[1]"));
    EXPECT_TRUE(accepts(a, "[1, 2,3]"));
    EXPECT_FALSE(accepts(a, "[1,2,3,4]"));
    auto tree = schema(R"({"$ref":"#/$defs/node","$defs":{"node":{"type":"object","properties":{
                         "v":{"type":"integer"},"kids":{"type":"array","items":{"$ref":"#/$defs/node"}}},"required":["v"]}}})");
    EXPECT_TRUE(accepts(tree, R"({"v":1,"kids":[{"v":2},{"v":3,"kids":[{"v":4}]}]})"));
    EXPECT_FALSE(accepts(tree, R"({"v":1,"kids":[{"x":2}]})"));
    auto none = schema(R"({"type":"object","additionalProperties":false})");
    EXPECT_TRUE(accepts(none, "{}"));
    EXPECT_FALSE(accepts(none, R"({"a":1})"));
    auto map = schema(R"({"type":"object","additionalProperties":{"type":"integer"}})");
    EXPECT_TRUE(accepts(map, R"({"x":1,"y":2})"));
    EXPECT_FALSE(accepts(map, R"({"x":"1"})"));
}

TEST(JsonSchemaGrammar, RefusesWhatItCannotEnforce) {
    for (const std::string s :
         {R"({"type":"string","pattern":"^a+$"})", R"({"type":"string","format":"date-time"})",
          R"({"type":"integer","minimum":0})", R"({"allOf":[{"type":"string"},{"maxLength":2}]})",
          R"({"$ref":"#/components/x"})", R"({"type":"object","required":["a"]})", R"({"type":"thing"})",
          R"({"type":"string","maxLength":100000})", "false", R"({"type":"array","uniqueItems":true})"}) {
        EXPECT_THROW(schema(s), SchemaError) << s;
    }
    // absurd nesting is refused before the (recursive) compiler sees it
    std::string deep;
    for (int i = 0; i < 100000; ++i) deep += R"({"items":)";
    deep += "{}";
    for (int i = 0; i < 100000; ++i) deep += "}";
    EXPECT_THROW(schema(deep), SchemaError);
    try {
        schema(R"({"type":"object","properties":{"when":{"type":"string","format":"date"}}})");
        FAIL();
    } catch (const SchemaError& e) {
        EXPECT_NE(std::string(e.what()).find("#/properties/when"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("format"), std::string::npos) << e.what();
    }
}

// The trie walk must find exactly the tokens that a one-by-one check accepts.
TEST(TokenTrie, AllowedEqualsBruteForce) {
    Tokenizer tok(load_vocab_spm(std::string(CALPACA_TEST_DATA) + "/tokenizers/chinese-llama-2/tokenizer.model"));
    TokenTrie trie(tok);
    EXPECT_EQ(trie.n_vocab(), tok.size());
    EXPECT_TRUE(trie.bytes(tok.bos()).empty());
    auto g = schema(R"({"type":"object","properties":{"city":{"type":"string","maxLength":4},"n":{"type":"number"}},
                       "required":["city","n"]})");
    std::vector<uint8_t> allowed;
    for (const std::string prefix : {"", "{\"ci", "{\"city\":\"北", "{\"city\":\"北\xE4", "{\"city\":\"a\",\"n\":1"}) {
        GrammarState st(g);
        ASSERT_TRUE(st.feed(prefix)) << prefix;
        trie.allowed(st, allowed);
        size_t n_allowed = 0;
        for (int32_t id = 0; id < static_cast<int32_t>(tok.size()); ++id) {
            ASSERT_EQ(allowed[id] != 0, trie.accepts(st, id)) << "prefix " << prefix << " token " << id;
            n_allowed += allowed[id];
        }
        EXPECT_GT(n_allowed, 0u) << prefix;
        EXPECT_LT(n_allowed, tok.size()) << prefix;
    }
}
